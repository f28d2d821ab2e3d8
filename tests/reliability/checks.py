"""The invariant checks of the reliability suite, shared by the real tests and their twins.

Every check is a pure function that returns a list of violations (readable strings;
empty means the invariant held). The tests against a real server assert the list is
empty; each twin removes a guard from the product in-process and asserts that the
*same* function reports the violation, so no check passes vacuously.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

Entries = Mapping[int, Mapping[str, Any]]

#: Actions that store a record version (DESIGN section 7).
WRITE_ACTIONS = frozenset({"record.put", "record.attested"})


@dataclass(frozen=True)
class Read:
    """One consumer read as the client saw it."""

    consent_id: str
    status: int
    seq: int | None
    request_id: str | None
    code: str | None = None


def observe(consent_id: str, response: httpx.Response) -> Read:
    seq = response.headers.get("x-audit-seq")
    code = None
    if response.status_code >= 400:
        try:
            code = response.json().get("code")
        except ValueError:
            code = None
    return Read(
        consent_id=consent_id,
        status=response.status_code,
        seq=int(seq) if seq is not None else None,
        request_id=response.headers.get("x-request-id"),
        code=code,
    )


def revocation_seqs(entries: Entries) -> dict[str, int]:
    """consent_id -> seq of its ``consent.revoked`` entry."""
    return {
        str(e["consent_id"]): seq
        for seq, e in entries.items()
        if e.get("action") == "consent.revoked" and e.get("outcome") == "ok"
    }


def read_violations(
    reads: Sequence[Read],
    entries: Entries,
    *,
    allowed: frozenset[int] = frozenset({200, 403}),
    exact_ok_count: bool = True,
) -> list[str]:
    """Invariants 2 and 3 for a set of consumer reads against the audit log.

    - every status is in ``allowed``;
    - every answered read (not 5xx) carries ``X-Audit-Seq``, and the seqs are unique;
    - the entry at that seq is this request's ``data.read`` (same request id), ``ok``
      for a 200 (naming the consent) and ``denied`` otherwise;
    - no 200, and no ``ok`` entry, is sequenced after its consent's revocation; a
      ``consent_revoked`` refusal is sequenced after it;
    - ``ok`` ``data.read`` entries = responses 200 (``exact_ok_count``), or at least as
      many (a 503 may follow a COMMIT that happened: the read was recorded, not served).
    """
    violations: list[str] = []
    revoked = revocation_seqs(entries)
    for r in reads:
        if r.status not in allowed:
            violations.append(f"status {r.status} ({r.code}) on a read of {r.consent_id}")
        if r.status < 500 and r.seq is None:
            violations.append(f"a {r.status} read of {r.consent_id} has no X-Audit-Seq")
    counts = Counter(r.seq for r in reads if r.seq is not None)
    for seq, n in sorted(counts.items()):
        if n > 1:
            violations.append(f"X-Audit-Seq {seq} answered {n} reads")
    for r in reads:
        if r.seq is None:
            continue
        entry = entries.get(r.seq)
        if entry is None:
            violations.append(f"X-Audit-Seq {r.seq} names no committed entry")
            continue
        if entry.get("action") != "data.read" or entry.get("request_id") != r.request_id:
            violations.append(
                f"X-Audit-Seq {r.seq} names {entry.get('action')} of another request,"
                f" not this read's data.read"
            )
            continue
        want = "ok" if r.status == 200 else "denied"
        if entry.get("outcome") != want:
            violations.append(f"a {r.status} read has a {entry.get('outcome')} entry at {r.seq}")
        if r.status == 200 and entry.get("consent_id") != r.consent_id:
            violations.append(f"the ok entry at {r.seq} names another consent")
        revoked_at = revoked.get(r.consent_id)
        if r.status == 200 and revoked_at is not None and r.seq > revoked_at:
            violations.append(
                f"a 200 sequenced at {r.seq}, after the revocation of {r.consent_id} at"
                f" {revoked_at}"
            )
        if r.code == "consent_revoked" and (revoked_at is None or r.seq < revoked_at):
            violations.append(f"consent_revoked at {r.seq} before any revocation")
    ok_entries = {
        seq: e
        for seq, e in entries.items()
        if e.get("action") == "data.read" and e.get("outcome") == "ok"
    }
    for seq, e in sorted(ok_entries.items()):
        revoked_at = revoked.get(str(e.get("consent_id")))
        if revoked_at is not None and seq > revoked_at:
            violations.append(f"an ok data.read entry at {seq} after its consent's revocation")
    served = sum(1 for r in reads if r.status == 200)
    if exact_ok_count and len(ok_entries) != served:
        violations.append(f"{len(ok_entries)} ok data.read entries for {served} responses 200")
    if not exact_ok_count and len(ok_entries) < served:
        violations.append(f"only {len(ok_entries)} ok data.read entries for {served} responses 200")
    return violations


def once_violations(reads: Sequence[Read]) -> list[str]:
    """N concurrent reads of one ``once`` consent: exactly one 200, the rest exhausted."""
    violations: list[str] = []
    served = [r for r in reads if r.status == 200]
    if len(served) != 1:
        violations.append(f"{len(served)} successful reads of a once consent (want 1)")
    for r in reads:
        if r.status != 200 and (r.status, r.code) != (403, "consent_exhausted"):
            violations.append(f"a once read answered {r.status} {r.code}")
    return violations


def seq_violations(seqs: Iterable[int], tree_size: int) -> list[str]:
    """The log's seqs are exactly 0..tree_size-1."""
    found = sorted(seqs)
    if found == list(range(tree_size)):
        return []
    missing = sorted(set(range(tree_size)) - set(found))[:5]
    extra = sorted(set(found) - set(range(tree_size)))[:5]
    dups = [s for s, n in Counter(found).items() if n > 1][:5]
    return [
        f"audit seqs are not 0..{tree_size - 1}: {len(found)} entries,"
        f" missing {missing}, beyond {extra}, duplicated {dups}"
    ]


def status_violations(
    statuses: Iterable[int], allowed: frozenset[int], *, what: str = "response"
) -> list[str]:
    counts = Counter(statuses)
    return [f"{n} x {what} {s}" for s, n in sorted(counts.items()) if s not in allowed]


# -- crash recovery ------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """An acknowledged write: the issuer got 201/200 for this content."""

    nid: str
    record_type: str
    version: int
    data: Mapping[str, Any]


def acked_write_violations(
    acked: Sequence[Write], found: Mapping[tuple[str, str], tuple[int, Mapping[str, Any]] | None]
) -> list[str]:
    """Every acknowledged write survived: the latest version read back is at least the
    acknowledged one, and equal content when it is the same version."""
    violations: list[str] = []
    latest: dict[tuple[str, str], Write] = {}
    for w in acked:
        key = (w.nid, w.record_type)
        if key not in latest or w.version > latest[key].version:
            latest[key] = w
    for key, w in sorted(latest.items()):
        got = found.get(key)
        if got is None:
            violations.append(f"acknowledged {w.record_type} v{w.version} is gone")
            continue
        version, data = got
        if version < w.version:
            violations.append(f"acknowledged {w.record_type} v{w.version} read back as v{version}")
        elif version == w.version and dict(data) != dict(w.data):
            violations.append(f"acknowledged {w.record_type} v{w.version} has other content")
    return violations


def record_entry_violations(records: Sequence[Mapping[str, Any]], entries: Entries) -> list[str]:
    """No record version without its ``record.put``/``record.attested`` entry (same
    citizen, type and version, outcome ok)."""
    written = {
        (e.get("citizen_id"), e.get("record_type"), e.get("record_version"))
        for e in entries.values()
        if e.get("action") in WRITE_ACTIONS and e.get("outcome") == "ok"
    }
    return [
        f"record {r['record_id']} ({r['record_type']} v{r['version']}) has no write entry"
        for r in records
        if (r["citizen_id"], r["record_type"], int(r["version"])) not in written
    ]


def ledger_violations(
    ledger: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    deks: Sequence[Mapping[str, Any]],
    index_citizens: Iterable[str],
) -> list[str]:
    """The erasure ledger and the database agree: nothing an erasure shredded (rows of
    its citizen and types made at or before it; the blind indexes when it removed them)
    is still in the database."""
    violations: list[str] = []
    indexed = set(index_citizens)
    for entry in ledger:
        citizen = entry["citizen_id"]
        types = set(entry.get("types", []))
        at = int(entry["at"])
        for kind, rows in (("record", records), ("DEK", deks)):
            left = [
                r
                for r in rows
                if r["citizen_id"] == citizen
                and r["record_type"] in types
                and int(r["created_at"]) <= at
            ]
            if left:
                violations.append(f"{len(left)} {kind} row(s) survive an erasure in the ledger")
        if entry.get("index_removed") and citizen in indexed:
            newer = [r for r in records if r["citizen_id"] == citizen and int(r["created_at"]) > at]
            if not newer:
                violations.append("a blind index survives an erasure that removed it")
    return violations


def read_ledger(kek_dir: Path) -> list[dict[str, Any]]:
    """The local erasure ledger (complete lines only, as the product reads it).

    Deliberately not ``LocalLedger.erasures()``: the crash checks judge the product's
    ledger, so they read the file with their own few lines rather than trust its reader.
    """
    import json  # noqa: PLC0415 - only this helper parses the file

    path = kek_dir / "erasures.jsonl"
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # a torn last line (no newline) was never acknowledged
    return [json.loads(line) for line in lines if line.strip()]


# -- plaintext hygiene --------------------------------------------------------------------


def encodings(value: str) -> set[bytes]:
    """The byte forms a string can take in files: UTF-8, JSON ``\\u`` escapes, UTF-16."""
    import json  # noqa: PLC0415

    forms = {value.encode("utf-8"), value.encode("utf-16-le"), value.encode("utf-16-be")}
    forms.add(json.dumps(value, ensure_ascii=True)[1:-1].encode("ascii"))
    return {f for f in forms if len(f) >= 4}


def canary_violations(canaries: Mapping[str, str], blobs: Mapping[str, bytes]) -> list[str]:
    """No canary (name -> value) appears in any blob (name -> bytes), in any encoding.

    Violations name the canary and the blob, never the value.
    """
    violations: list[str] = []
    for where, blob in sorted(blobs.items()):
        for name, value in sorted(canaries.items()):
            if any(form in blob for form in encodings(value)):
                violations.append(f"canary {name} in plaintext in {where}")
    return violations


def files_under(*roots: Path) -> dict[str, bytes]:
    """Every regular file's bytes under ``roots`` (the WAL, the ledger, checkpoints ...)."""
    blobs: dict[str, bytes] = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            blobs[str(path)] = path.read_bytes()
    return blobs


def log_events(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a server's log (granian's own lines are plain text), parsed:
    match on values, never on the lines' whitespace."""
    import json  # noqa: PLC0415

    # "\n" only: str.splitlines() also splits on characters a JSON string may hold.
    return [json.loads(line) for line in text.split("\n") if line.startswith("{")]


def access_statuses(text: str) -> list[int]:
    """The status of every access line (``http.request``) of a server's log."""
    return [int(e["status"]) for e in log_events(text) if e.get("event") == "http.request"]
