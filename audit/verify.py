"""Offline verification of the audit log, from the database or from an export file.

The verifier reads like its steps:

1. entries arrive in ``seq`` order with no gap: row ``i`` has ``seq == i``;
2. each leaf parses, names its own ``seq``, and obeys the entry rules;
3. the stored leaf hash equals ``H(0x00 || leaf)``;
4. every indexed column equals the value inside the leaf;
5. the stored complete-subtree hashes and tree state equal the recomputed tree;
6. every stored checkpoint verifies with a published ``cp-`` key, names this origin,
   and its root equals the recomputed root at its size;
7. every trusted checkpoint given by the auditor does the same; one larger than
   the log proves truncation.

The first failure stops verification: ``first bad seq N`` for steps 1-5,
``bad checkpoint at size N`` for steps 6-7.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audit import merkle
from audit.checkpoints import CHECKPOINT_TYP, Checkpoint
from audit.models import InvalidEntry, leaf_bytes, parse_leaf, validate_entry
from audit.repository import INDEXED_COLUMNS, AuditRepository
from vault import crypto
from vault.errors import InvalidJWS


@dataclass(frozen=True)
class VerifyResult:
    tree_size: int
    ok: bool
    message: str
    first_bad_seq: int | None = None
    bad_checkpoint: int | None = None


class _Bad(Exception):
    def __init__(self, *, seq: int | None = None, checkpoint: int | None = None, why: str) -> None:
        super().__init__(why)
        self.seq = seq
        self.checkpoint = checkpoint
        self.why = why


def _column_values(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "ts": entry["ts"],
        "action": entry["action"],
        "actor_type": entry["actor"]["type"],
        "actor_id": entry["actor"]["id"],
        "citizen_id": entry["citizen_id"],
        "client_id": entry["client_id"],
        "consent_id": entry["consent_id"],
        "outcome": entry["outcome"],
        "request_id": entry["request_id"],
    }


class TreeBuilder:
    """Recomputes the tree leaf by leaf, keeping the roots at the sizes asked for."""

    def __init__(self, wanted_sizes: Iterable[int]) -> None:
        self.size = 0
        self.frontier: list[bytes] = []
        self.wanted = set(wanted_sizes)
        self.roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT}
        self.new_nodes: list[tuple[merkle.Node, bytes]] = []

    def add(self, leaf_hash: bytes) -> None:
        nodes, self.frontier = merkle.append_nodes(self.frontier, self.size, [leaf_hash])
        self.new_nodes.extend(nodes)
        self.size += 1
        if self.size in self.wanted:
            self.roots[self.size] = merkle.root_from_frontier(self.frontier)

    def root(self) -> bytes:
        return merkle.root_from_frontier(self.frontier)


def _check_leaf(seq: int, leaf: bytes, stored_hash: bytes | None) -> tuple[dict[str, Any], bytes]:
    try:
        entry = parse_leaf(leaf)
        validate_entry(entry)
    except (InvalidEntry, ValueError, KeyError, TypeError):
        raise _Bad(seq=seq, why="leaf does not parse as an entry") from None
    if entry["seq"] != seq:
        raise _Bad(seq=seq, why=f"leaf names seq {entry['seq']}")
    if leaf_bytes(entry) != leaf:
        raise _Bad(seq=seq, why="leaf is not in canonical form")
    digest = merkle.leaf_hash(leaf)
    if stored_hash is not None and stored_hash != digest:
        raise _Bad(seq=seq, why="stored leaf hash differs")
    return entry, digest


def _check_checkpoint(
    checkpoint: Checkpoint,
    *,
    keys: Mapping[str, Mapping[str, Any]],
    origin: str | None,
    roots: Mapping[int, bytes],
    log_size: int,
) -> None:
    size = checkpoint.tree_size
    try:
        _, payload = crypto.verify_jws(
            checkpoint.jws, keys=keys, typ=CHECKPOINT_TYP, allowed_kid_prefix="cp-"
        )
    except InvalidJWS:
        raise _Bad(checkpoint=size, why="signature does not verify") from None
    expected = {
        "tree_size": checkpoint.tree_size,
        "root_hash": checkpoint.root_hash.hex(),
        "timestamp": checkpoint.timestamp,
    }
    if any(payload.get(k) != v for k, v in expected.items()):
        raise _Bad(checkpoint=size, why="stored fields differ from the signed payload")
    if origin is not None and payload.get("origin") != origin:
        raise _Bad(checkpoint=size, why="signed for another origin")
    if size > log_size:
        raise _Bad(checkpoint=size, why=f"the log has only {log_size} entries (truncated)")
    if roots.get(size) != checkpoint.root_hash:
        raise _Bad(checkpoint=size, why="root differs from the recomputed tree")


def _progress(done: int, total: int, *, enabled: bool) -> None:
    if enabled and total and (done % 100_000 == 0 or done == total):
        width = 30
        filled = width * done // total
        sys.stderr.write(f"\rverifying [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


async def verify_database(
    repo: AuditRepository,
    *,
    jwks: Mapping[str, Any],
    origin: str | None,
    trusted: Sequence[Checkpoint] = (),
    progress: bool = False,
    page: int = 5_000,
) -> VerifyResult:
    """Verify the log stored in the database (steps 1-7)."""
    checkpoints = [Checkpoint.from_row(row) for row in await repo.checkpoints()]
    state = await repo.state()
    total = max(state.size, await repo.count())
    builder = TreeBuilder([c.tree_size for c in (*checkpoints, *trusted)] + [state.size])
    try:
        async for rows in _pages(repo, page):
            try:
                for row in rows:
                    _check_row(row, builder)
                    _progress(builder.size, total, enabled=progress)
            except _Bad:
                # An earlier leaf's subtree hashes may be the first thing wrong.
                await _check_nodes(repo, builder)
                raise
            await _check_nodes(repo, builder)
        if builder.size != state.size:
            raise _Bad(seq=min(builder.size, state.size), why="tree state size differs")
        if builder.root() != state.root_hash:
            raise _Bad(seq=max(0, state.size - 1), why="tree state root differs")
        keys = _checkpoint_keys(jwks)
        for checkpoint in [*checkpoints, *trusted]:
            _check_checkpoint(
                checkpoint, keys=keys, origin=origin, roots=builder.roots, log_size=builder.size
            )
    except _Bad as bad:
        return _failure(bad, builder.size)
    return VerifyResult(
        tree_size=builder.size, ok=True, message=f"verified tree size {builder.size}"
    )


def _check_row(row: Mapping[str, Any], builder: TreeBuilder) -> None:
    """Steps 1-4 for one stored row."""
    seq = int(row["seq"])
    if seq != builder.size:
        raise _Bad(seq=builder.size, why="entry missing or out of order")
    entry, digest = _check_leaf(seq, bytes(row["leaf"]), bytes(row["leaf_hash"]))
    columns = _column_values(entry)
    for column in INDEXED_COLUMNS:
        if row[column] != columns[column]:
            raise _Bad(seq=seq, why=f"column {column} differs from the leaf")
    builder.add(digest)


async def _pages(repo: AuditRepository, page: int) -> AsyncIterator[list[dict[str, Any]]]:
    after = -1
    while True:
        rows = await repo.scan(after=after, limit=page)
        if not rows:
            return
        yield rows
        after = int(rows[-1]["seq"])


async def _check_nodes(repo: AuditRepository, builder: TreeBuilder) -> None:
    """Step 5 for the nodes completed since the last page."""
    nodes, builder.new_nodes = builder.new_nodes, []
    for start in range(0, len(nodes), 400):
        chunk = nodes[start : start + 400]
        stored = await repo.nodes(node for node, _ in chunk)
        for node, digest in chunk:
            if stored.get(node) != digest:
                raise _Bad(seq=node.start, why=f"stored subtree hash at level {node.level} differs")


def _checkpoint_keys(jwks: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    keys = jwks.get("keys", [])
    return {
        str(key["kid"]): key
        for key in keys
        if isinstance(key, Mapping) and str(key.get("kid", "")).startswith("cp-")
    }


def _failure(bad: _Bad, size: int) -> VerifyResult:
    if bad.checkpoint is not None:
        return VerifyResult(
            tree_size=size,
            ok=False,
            message=f"bad checkpoint at size {bad.checkpoint}: {bad.why}",
            bad_checkpoint=bad.checkpoint,
        )
    return VerifyResult(
        tree_size=size,
        ok=False,
        message=f"first bad seq {bad.seq}: {bad.why}",
        first_bad_seq=bad.seq,
    )


# -- export files -------------------------------------------------------------------------


def export_lines(
    entries: Iterable[tuple[int, bytes, bytes]],
    checkpoints: Iterable[Checkpoint],
    jwks: Mapping[str, Any],
) -> Iterable[str]:
    """The JSONL export of DESIGN section 7: entries, checkpoints, then the JWKS."""
    for seq, leaf, digest in entries:
        yield json.dumps(
            {"seq": seq, "leaf_hash": digest.hex(), "entry": parse_leaf(leaf)},
            sort_keys=True,
            separators=(",", ":"),
        )
    for checkpoint in checkpoints:
        yield json.dumps({"checkpoint": checkpoint.as_json()}, sort_keys=True)
    yield json.dumps({"jwks": jwks}, sort_keys=True)


def verify_export(
    lines: Iterable[str],
    *,
    trusted: Sequence[Checkpoint] = (),
    origin: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Verify an export file's entries, checkpoints and JWKS (and trusted checkpoints)."""
    rows: list[tuple[int, bytes, bytes]] = []
    checkpoints: list[Checkpoint] = []
    jwks: Mapping[str, Any] | None = None
    try:
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise _Bad(seq=len(rows), why=f"line {number + 1} is not JSON") from None
            if "checkpoint" in item:
                checkpoints.append(Checkpoint.from_json(json.dumps(item["checkpoint"])))
            elif "jwks" in item:
                jwks = item["jwks"]
            else:
                seq = item.get("seq")
                entry = item.get("entry")
                if not isinstance(seq, int) or not isinstance(entry, dict):
                    raise _Bad(seq=len(rows), why=f"line {number + 1} is not an entry")
                try:
                    leaf = leaf_bytes(entry)
                except (InvalidEntry, KeyError, TypeError):
                    raise _Bad(seq=seq, why="entry breaks the leaf rules") from None
                rows.append((seq, leaf, bytes.fromhex(str(item.get("leaf_hash", "")))))
        builder = TreeBuilder([c.tree_size for c in (*checkpoints, *trusted)])
        for seq, leaf, stored_hash in rows:
            if seq != builder.size:
                raise _Bad(seq=builder.size, why="entry missing or out of order")
            _, digest = _check_leaf(seq, leaf, stored_hash)
            builder.add(digest)
            if progress is not None:
                progress(builder.size)
        if jwks is None:
            raise _Bad(checkpoint=0, why="the export has no JWKS")
        keys = _checkpoint_keys(jwks)
        for checkpoint in [*checkpoints, *trusted]:
            _check_checkpoint(
                checkpoint, keys=keys, origin=origin, roots=builder.roots, log_size=builder.size
            )
    except _Bad as bad:
        return _failure(bad, len(rows))
    return VerifyResult(
        tree_size=builder.size, ok=True, message=f"verified tree size {builder.size}"
    )
