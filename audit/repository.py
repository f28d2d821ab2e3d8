"""Storage of the audit log: leaves, complete-subtree hashes, tree state, checkpoints.

Raw SQL (the append is on every request's hot path). Every method that writes
expects to run inside :meth:`vault.storage.Database.transaction`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from audit.merkle import Node
from audit.models import StoredEntry, parse_leaf
from vault.storage import IN_CHUNK, Database, marks

MAX_SEQ = 2**53 - 1

#: The columns ``audit verify`` checks against each leaf.
INDEXED_COLUMNS: tuple[str, ...] = (
    "ts",
    "action",
    "actor_type",
    "actor_id",
    "citizen_id",
    "client_id",
    "consent_id",
    "outcome",
    "request_id",
)


@dataclass(frozen=True)
class TreeState:
    size: int
    root_hash: bytes


@dataclass(frozen=True)
class CheckpointRow:
    tree_size: int
    root_hash: bytes
    timestamp: int
    jws: str


def _bytes(value: object) -> bytes:
    # asyncpg returns bytes, sqlite3 bytes (BLOB); be strict about anything else.
    if isinstance(value, memoryview):
        return value.tobytes()
    if not isinstance(value, bytes):
        raise TypeError("expected bytes from the database")
    return value


def _stored(row: dict[str, Any]) -> StoredEntry:
    leaf = _bytes(row["leaf"])
    return StoredEntry(
        seq=int(row["seq"]), leaf=leaf, leaf_hash=_bytes(row["leaf_hash"]), entry=parse_leaf(leaf)
    )


def _entry_values(entry: dict[str, Any], leaf: bytes, digest: bytes) -> tuple[Any, ...]:
    """An ``audit_entries`` row, in the column order of the inserts below."""
    return (
        entry["seq"],
        leaf,
        digest,
        entry["ts"],
        entry["action"],
        entry["actor"]["type"],
        entry["actor"]["id"],
        entry["citizen_id"],
        entry["client_id"],
        entry["consent_id"],
        entry["outcome"],
        entry["request_id"],
    )


class AuditRepository:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def lock_state_with_frontier(self) -> tuple[TreeState, bytes | None]:
        """Read the tree state, locking its row on PostgreSQL (SQLite holds the write lock),
        with the frontier kept in the state row (the hashes of
        ``merkle.frontier_nodes(size)``, concatenated; None in a log written before
        it was kept). Read in the row version the lock returns, so it is the latest
        writer's even when the statement waited for that writer."""
        suffix = " FOR UPDATE" if self.db.dialect == "postgres" else ""
        row = await self.db.fetchrow(
            "SELECT size, root_hash, frontier FROM audit_state WHERE id = 1" + suffix
        )
        if row is None:
            raise RuntimeError("audit_state row is missing")
        state = TreeState(size=int(row["size"]), root_hash=_bytes(row["root_hash"]))
        kept = row["frontier"]
        return state, None if kept is None else _bytes(kept)

    async def write_append(
        self,
        rows: Sequence[tuple[dict[str, Any], bytes, bytes]],
        nodes: Sequence[tuple[Node, bytes]],
        state: TreeState,
        frontier: bytes,
    ) -> None:
        """Insert the leaves and the completed subtree hashes and set the new state
        and its frontier: on PostgreSQL one statement (two data-modifying CTEs and
        the update), on SQLite the three statements."""
        if self.db.dialect != "postgres":
            await self.insert_entries(rows)
            await self.insert_nodes(nodes)
            await self.set_state(state, frontier)
            return
        columns: list[list[Any]] = [[] for _ in range(12)]
        for row in rows:
            for column, value in zip(columns, _entry_values(*row), strict=True):
                column.append(value)
        types = ["bigint", "bytea", "bytea", "bigint"] + ["text"] * 8
        unnest = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
        await self.db.execute(
            "WITH leaves AS ("
            " INSERT INTO audit_entries (seq, leaf, leaf_hash, ts, action, actor_type,"
            " actor_id, citizen_id, client_id, consent_id, outcome, request_id)"
            f" SELECT * FROM unnest({unnest})"
            "), subtrees AS ("
            " INSERT INTO audit_nodes (pos, level, idx, hash)"
            " SELECT * FROM unnest($13::bigint[], $14::integer[], $15::bigint[], $16::bytea[])"
            ") UPDATE audit_state SET size = $17, root_hash = $18, frontier = $19 WHERE id = 1",
            *columns,
            [node.position for node, _ in nodes],
            [node.level for node, _ in nodes],
            [node.index for node, _ in nodes],
            [digest for _, digest in nodes],
            state.size,
            state.root_hash,
            frontier,
        )

    async def state(self) -> TreeState:
        row = await self.db.fetchrow("SELECT size, root_hash FROM audit_state WHERE id = 1")
        if row is None:
            raise RuntimeError("audit_state row is missing")
        return TreeState(size=int(row["size"]), root_hash=_bytes(row["root_hash"]))

    async def latest_seq_of(self, actions: Sequence[str]) -> int | None:
        """The seq of the newest entry of one of ``actions`` (the ``(action, seq)``
        index answers it), or None when there is none."""
        if not actions:
            return None
        row = await self.db.fetchrow(
            f"SELECT max(seq) AS seq FROM audit_entries WHERE action IN ({marks(len(actions))})",
            *actions,
        )
        return None if row is None or row["seq"] is None else int(row["seq"])

    async def set_state(self, state: TreeState, frontier: bytes) -> None:
        await self.db.execute(
            "UPDATE audit_state SET size = $1, root_hash = $2, frontier = $3 WHERE id = 1",
            state.size,
            state.root_hash,
            frontier,
        )

    async def insert_entries(self, rows: Sequence[tuple[dict[str, Any], bytes, bytes]]) -> None:
        """Insert ``(entry, leaf, leaf_hash)`` rows."""
        await self.db.executemany(
            "INSERT INTO audit_entries (seq, leaf, leaf_hash, ts, action, actor_type, actor_id,"
            " citizen_id, client_id, consent_id, outcome, request_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            [_entry_values(*row) for row in rows],
        )

    async def insert_nodes(self, nodes: Sequence[tuple[Node, bytes]]) -> None:
        await self.db.executemany(
            "INSERT INTO audit_nodes (pos, level, idx, hash) VALUES ($1, $2, $3, $4)",
            [(node.position, node.level, node.index, digest) for node, digest in nodes],
        )

    async def nodes(self, wanted: Iterable[Node]) -> dict[Node, bytes]:
        """Fetch complete-subtree hashes by position: one query on PostgreSQL, one per
        ``IN_CHUNK`` nodes on SQLite (a proof needs about two per level). A row whose
        ``(level, idx)`` is not the node its position names counts as missing."""
        by_position = {node.position: node for node in wanted}
        positions = list(by_position)
        rows: list[dict[str, Any]] = []
        if self.db.dialect == "postgres":  # one statement text whatever the count
            if positions:
                rows = await self.db.fetch(
                    "SELECT pos, level, idx, hash FROM audit_nodes WHERE pos = ANY($1::bigint[])",
                    positions,
                )
        else:
            for start in range(0, len(positions), IN_CHUNK):
                chunk = positions[start : start + IN_CHUNK]
                rows += await self.db.fetch(
                    "SELECT pos, level, idx, hash FROM audit_nodes"
                    f" WHERE pos IN ({marks(len(chunk))})",
                    *chunk,
                )
        found: dict[Node, bytes] = {}
        for row in rows:
            node = by_position[int(row["pos"])]
            if (int(row["level"]), int(row["idx"])) == (node.level, node.index):
                found[node] = _bytes(row["hash"])  # else as missing: never another's hash
        return found

    async def entries(
        self,
        *,
        after: int | None = None,
        limit: int = 100,
        citizen_id: str | None = None,
        client_id: str | None = None,
        action: str | None = None,
        before: int | None = None,
        newest_first: bool = False,
    ) -> list[StoredEntry]:
        clauses: list[str] = []
        args: list[object] = []
        for column, value in (
            ("citizen_id", citizen_id),
            ("client_id", client_id),
            ("action", action),
        ):
            if value is not None:
                args.append(value)
                clauses.append(f"{column} = ${len(args)}")
        if after is not None:
            args.append(after)
            clauses.append(f"seq > ${len(args)}")
        if before is not None:
            args.append(before)
            clauses.append(f"seq < ${len(args)}")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "DESC" if newest_first else "ASC"
        args.append(limit)
        rows = await self.db.fetch(
            f"SELECT seq, leaf, leaf_hash FROM audit_entries {where}"
            f" ORDER BY seq {order} LIMIT ${len(args)}",
            *args,
        )
        return [_stored(row) for row in rows]

    async def entry(self, seq: int) -> StoredEntry | None:
        row = await self.db.fetchrow(
            "SELECT seq, leaf, leaf_hash FROM audit_entries WHERE seq = $1", seq
        )
        return _stored(row) if row else None

    async def scan(self, *, after: int = -1, limit: int = 10_000) -> list[dict[str, Any]]:
        """Raw rows (every column) in seq order, for ``audit verify``."""
        columns = ", ".join(("seq", "leaf", "leaf_hash", *INDEXED_COLUMNS))
        return await self.db.fetch(
            f"SELECT {columns} FROM audit_entries WHERE seq > $1 ORDER BY seq LIMIT $2",
            after,
            limit,
        )

    async def count(self) -> int:
        row = await self.db.fetchrow("SELECT count(*) AS n FROM audit_entries")
        return int(row["n"]) if row else 0

    # -- checkpoints ---------------------------------------------------------

    async def insert_checkpoint(self, checkpoint: CheckpointRow) -> bool:
        rows = await self.db.fetch(
            "INSERT INTO audit_checkpoints (tree_size, root_hash, ts, jws) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (tree_size) DO NOTHING RETURNING tree_size",
            checkpoint.tree_size,
            checkpoint.root_hash,
            checkpoint.timestamp,
            checkpoint.jws,
        )
        return bool(rows)

    async def latest_checkpoint(self) -> CheckpointRow | None:
        row = await self.db.fetchrow(
            "SELECT tree_size, root_hash, ts, jws FROM audit_checkpoints"
            " ORDER BY tree_size DESC LIMIT 1"
        )
        return _checkpoint(row) if row else None

    async def checkpoints(self) -> list[CheckpointRow]:
        rows = await self.db.fetch(
            "SELECT tree_size, root_hash, ts, jws FROM audit_checkpoints ORDER BY tree_size"
        )
        return [_checkpoint(row) for row in rows]


def _checkpoint(row: dict[str, Any]) -> CheckpointRow:
    return CheckpointRow(
        tree_size=int(row["tree_size"]),
        root_hash=_bytes(row["root_hash"]),
        timestamp=int(row["ts"]),
        jws=str(row["jws"]),
    )
