"""How long a read unit holds SQLite's write lock: one aiosqlite hop per statement
(today's shape) against one thread call per batch (plain ``sqlite3``).

Usage: .venv/bin/python bench/vs_openbao_unit.py DATA_DIR/oncevault.sqlite [--batches 20]

Give the database of a data dir that ``bench/vs_openbao.py --keep`` left behind (it
has consents and records); the file is copied to a temporary directory first, so the
original is not changed. Each unit runs the statements of a consented read's unit
(``SAVEPOINT``, tree state, consent, latest record, the counting ``UPDATE``, the
entry and node inserts, the state update, ``RELEASE``) inside ``BEGIN IMMEDIATE`` …
``COMMIT`` (the fsync included), for batches of 1, 16 and 64 units. It also times a
single point ``SELECT`` both ways and opening an aiosqlite connection. The event loop
is otherwise idle here; inside the server it is not, so the server's numbers are
worse (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import aiosqlite

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit.merkle import Node

CONSENT_COLUMNS = (
    "consent_id, citizen_id, client_id, purpose, items, access, max_fetches, valid_days,"
    " valid_from, valid_until, legal_basis, case_reference, created_at, policy_version,"
    " status, fetch_count, receipt_version"
)
RECORD_COLUMNS = (
    "record_id, citizen_id, record_type, version, dek_id, ciphertext, content_digest,"
    " source, attested, created_at"
)
STATE = "SELECT size, root_hash FROM audit_state WHERE id = 1"
CONSENT = f"SELECT {CONSENT_COLUMNS} FROM consents WHERE consent_id = ?"
LATEST = (
    f"SELECT {RECORD_COLUMNS} FROM records WHERE citizen_id = ?"
    " AND record_type = 'income_certificate' AND superseded_at IS NULL"
)
COUNT = (
    "UPDATE consents SET fetch_count = fetch_count + 1, updated_at = ?"
    " WHERE consent_id = ? AND status = 'active' RETURNING fetch_count, status"
)
ENTRY = (
    "INSERT INTO audit_entries (seq, leaf, leaf_hash, ts, action, actor_type, actor_id,"
    " citizen_id, client_id, consent_id, outcome, request_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
NODE = "INSERT OR REPLACE INTO audit_nodes (pos, level, idx, hash) VALUES (?, ?, ?, ?)"
SET_STATE = "UPDATE audit_state SET size = ?, root_hash = ? WHERE id = 1"


def leaf(seq: int, consent_id: str, citizen_id: str) -> bytes:
    entry = {
        "seq": seq,
        "ts": int(time.time() * 1000),
        "action": "data.read",
        "actor": {"type": "client", "id": "kbank"},
        "citizen_id": citizen_id,
        "consent_id": consent_id,
        "items": [{"type": "income_certificate", "version": 1, "fields": ["employer", "year"]}],
        "outcome": "ok",
        "request_id": "req_" + "x" * 26,
    }
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()


def entry_row(seq: int, consent_id: str, citizen_id: str) -> tuple[object, ...]:
    data = leaf(seq, consent_id, citizen_id)
    digest = hashlib.sha256(b"\0" + data).digest()
    return (seq, data, digest, 1, "data.read", "client", "kbank", citizen_id, "kbank",
            consent_id, "ok", "req")  # fmt: skip


def sync_batch(db: sqlite3.Connection, pairs: list[tuple[str, str]], start: int, n: int) -> None:
    db.execute("BEGIN IMMEDIATE")
    size = db.execute(STATE).fetchone()[0]
    for k in range(n):
        consent_id, citizen_id = pairs[(start + k) % len(pairs)]
        db.execute(f"SAVEPOINT unit_{k}")
        db.execute(STATE).fetchall()
        db.execute(CONSENT, (consent_id,)).fetchall()
        db.execute(LATEST, (citizen_id,)).fetchall()
        db.execute(COUNT, (1, consent_id)).fetchall()
        row = entry_row(size, consent_id, citizen_id)
        db.executemany(ENTRY, [row])
        db.executemany(NODE, [(Node(0, size).position, 0, size, row[2])])
        db.execute(SET_STATE, (size + 1, row[2]))
        db.execute(f"RELEASE SAVEPOINT unit_{k}")
        size += 1
    db.execute("COMMIT")


async def fetch(db: aiosqlite.Connection, sql: str, args: tuple[object, ...] = ()) -> list[object]:
    async with db.execute(sql, args) as cursor:
        return list(await cursor.fetchall())


async def async_batch(
    db: aiosqlite.Connection, pairs: list[tuple[str, str]], start: int, n: int
) -> None:
    await db.execute("BEGIN IMMEDIATE")
    size = (await fetch(db, STATE))[0][0]  # type: ignore[index]
    for k in range(n):
        consent_id, citizen_id = pairs[(start + k) % len(pairs)]
        await db.execute(f"SAVEPOINT unit_{k}")
        await fetch(db, STATE)
        await fetch(db, CONSENT, (consent_id,))
        await fetch(db, LATEST, (citizen_id,))
        await fetch(db, COUNT, (1, consent_id))
        row = entry_row(size, consent_id, citizen_id)
        await db.executemany(ENTRY, [row])
        await db.executemany(NODE, [(Node(0, size).position, 0, size, row[2])])
        await db.execute(SET_STATE, (size + 1, row[2]))
        await db.execute(f"RELEASE SAVEPOINT unit_{k}")
        size += 1
    await db.execute("COMMIT")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database", type=Path)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    batches: int = args.batches
    with tempfile.TemporaryDirectory(prefix="vs_openbao_unit_") as tmp:
        path = Path(tmp) / "copy.sqlite"
        source = sqlite3.connect(f"file:{args.database}?mode=ro", uri=True)
        target = sqlite3.connect(path)
        source.backup(target)
        source.close()
        target.execute("PRAGMA journal_mode=WAL")
        target.close()
        with sqlite3.connect(path) as db:
            pairs = [
                (str(a), str(b))
                for a, b in db.execute("SELECT consent_id, citizen_id FROM consents")
            ]
        if not pairs:
            raise SystemExit("no consents in this database")

        db = sqlite3.connect(path, isolation_level=None)
        t0 = time.perf_counter()
        for _ in range(2000):
            db.execute(STATE).fetchall()
        direct = (time.perf_counter() - t0) / 2000

        async def hops() -> tuple[float, float]:
            conn = await aiosqlite.connect(path, isolation_level=None)
            t0 = time.perf_counter()
            for _ in range(2000):
                await fetch(conn, STATE)
            hop = (time.perf_counter() - t0) / 2000
            await conn.close()
            t0 = time.perf_counter()
            for _ in range(50):
                other = await aiosqlite.connect(path)
                await other.execute("PRAGMA foreign_keys = 1")
                await other.close()
            return hop, (time.perf_counter() - t0) / 50

        hop, opening = asyncio.run(hops())
        print(
            f"point SELECT: sqlite3 {direct * 1e6:.1f} µs, aiosqlite {hop * 1e6:.1f} µs; "
            f"new aiosqlite connection {opening * 1e3:.2f} ms"
        )
        for n in (1, 16, 64):
            t0 = time.perf_counter()
            for b in range(batches):
                sync_batch(db, pairs, b * n, n)
            one_call = (time.perf_counter() - t0) / (n * batches)

            async def run_async(n: int = n) -> float:
                conn = await aiosqlite.connect(path, isolation_level=None)
                t0 = time.perf_counter()
                for b in range(batches):
                    await async_batch(conn, pairs, b * n, n)
                await conn.close()
                return (time.perf_counter() - t0) / (n * batches)

            per_statement = asyncio.run(run_async())
            print(
                f"batch of {n:2d}: one thread call per batch {one_call * 1e3:.3f} ms/unit "
                f"({1 / one_call:,.0f}/s); one aiosqlite hop per statement "
                f"{per_statement * 1e3:.3f} ms/unit ({1 / per_statement:,.0f}/s)"
            )
        db.close()
        print(f"load avg {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
