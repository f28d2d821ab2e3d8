"""What SQLite alone needs for one bulk-issuance batch, with today's schema and with
one keyed by a sequential citizen number: the floor under ``bench/scale.py``'s rate.

Bulk issuance through ``POST /v1/records:batch`` is bound by SQLite's single write
lock (docs/performance.md, "Fourteenth session"). This model runs only the SQL a
1,000-record batch writes under that lock, with none of the application's Python,
on a file of the same shape: the vault's tables and indexes exactly as
vault/piccolo_migrations/ declares them, the audit entries with their three indexes,
and two tree nodes an entry. Each batch is one ``BEGIN IMMEDIATE`` … ``COMMIT`` in WAL
mode with ``synchronous=FULL`` and the writer's 20,000-page checkpoint threshold.

``--schema today``: every per-citizen index is keyed by the random ``citizen_id``
(DESIGN fixes its format), so each new citizen writes into random pages of seven
indexes. ``--schema numbered``: citizens get an ``INTEGER PRIMARY KEY`` in creation
order, the citizen id a unique index of its own, and the per-citizen indexes of the
vault's tables use the number (the audit entries keep the id: it is in the entry).
New citizens then append at the right edge of those indexes.

After ``--size`` records (one citizen each, 1,000 a batch), ``--measured`` batches of
new citizens and then ``--measured`` batches of new versions for 1,000 citizens drawn
at random (an issuer's update does not arrive in the vault's order) are timed; the
two schemas alternate ``--pairs`` times. Prints each run's mean milliseconds a batch.

Usage: ``.venv/bin/python bench/bulk_schema_model.py [--size 100000] [--pairs 2]``
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

BATCH = 1_000
TYPE = "income_certificate"

_VAULT = """
CREATE TABLE citizens (citizen_id TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
CREATE TABLE citizen_index (blind_index BLOB PRIMARY KEY, citizen_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('nid', 'ci')));
CREATE INDEX citizen_index_citizen ON citizen_index (citizen_id);
CREATE TABLE deks (dek_id TEXT PRIMARY KEY, citizen_id TEXT NOT NULL,
    record_type TEXT NOT NULL, dek_version INTEGER NOT NULL, wrapped TEXT NOT NULL,
    kek_version INTEGER NOT NULL, generation INTEGER NOT NULL, created_at INTEGER NOT NULL,
    UNIQUE (citizen_id, record_type, dek_version));
CREATE INDEX deks_kek_version ON deks (kek_version);
CREATE TABLE records (record_id TEXT PRIMARY KEY, citizen_id TEXT NOT NULL,
    record_type TEXT NOT NULL, version INTEGER NOT NULL, dek_id TEXT NOT NULL,
    ciphertext BLOB NOT NULL, content_digest BLOB NOT NULL, source TEXT NOT NULL,
    attested INTEGER NOT NULL, created_at INTEGER NOT NULL, superseded_at INTEGER,
    UNIQUE (citizen_id, record_type, version));
CREATE UNIQUE INDEX records_latest ON records (citizen_id, record_type)
    WHERE superseded_at IS NULL;
"""

_AUDIT = """
CREATE TABLE audit_entries (seq INTEGER PRIMARY KEY, leaf BLOB NOT NULL,
    leaf_hash BLOB NOT NULL, ts INTEGER NOT NULL, action TEXT NOT NULL,
    actor_type TEXT NOT NULL, actor_id TEXT, citizen_id TEXT, client_id TEXT,
    consent_id TEXT, outcome TEXT NOT NULL, request_id TEXT);
CREATE INDEX audit_entries_citizen ON audit_entries (citizen_id, seq)
    WHERE citizen_id IS NOT NULL;
CREATE INDEX audit_entries_client ON audit_entries (client_id, seq)
    WHERE client_id IS NOT NULL;
CREATE INDEX audit_entries_action ON audit_entries (action, seq);
CREATE TABLE audit_nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL,
    hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID;
"""


def numbered(ddl: str) -> str:
    """The vault's tables with every per-citizen key on a sequential citizen number."""
    ddl = ddl.replace(
        "citizens (citizen_id TEXT PRIMARY KEY,",
        "citizens (citizen_no INTEGER PRIMARY KEY, citizen_id TEXT NOT NULL UNIQUE,",
    )
    for table in ("citizen_index (blind_index BLOB PRIMARY KEY,", "deks (dek_id TEXT PRIMARY KEY,"):
        ddl = ddl.replace(f"{table} citizen_id TEXT", f"{table} citizen_no INTEGER")
    ddl = ddl.replace(
        "records (record_id TEXT PRIMARY KEY, citizen_id TEXT",
        "records (record_id TEXT PRIMARY KEY, citizen_no INTEGER",
    )
    ddl = ddl.replace("(citizen_id)", "(citizen_no)").replace(
        "(citizen_id, record_type", "(citizen_no, record_type"
    )
    assert "citizen_id TEXT NOT NULL UNIQUE" in ddl and ddl.count("citizen_id") == 1, ddl
    return ddl


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(13)}"


class Model:
    def __init__(self, path: Path, *, numbered_keys: bool) -> None:
        self.numbered = numbered_keys
        self.db = sqlite3.connect(path, isolation_level=None)
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "wal_autocheckpoint=20000",
            "cache_size=-16384",
            "secure_delete=ON",
        ):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.executescript((numbered(_VAULT) if numbered_keys else _VAULT) + _AUDIT)
        self.citizens: list[str] = []
        self.seq = 0
        self.deks = 0

    def key(self, index: int) -> object:
        """The per-citizen key of the ``index``-th citizen: its number or its id."""
        return index + 1 if self.numbered else self.citizens[index]

    def audit(self, citizen_ids: list[str], now: int) -> None:
        entries = []
        for citizen_id in citizen_ids:
            entries.append(
                (self.seq, os.urandom(330), os.urandom(32), now, "record.put", "client", "nts",
                 citizen_id, "nts", None, "ok", None)
            )  # fmt: skip
            self.seq += 1
        self.db.executemany(
            "INSERT INTO audit_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", entries
        )
        first = self.seq - len(citizen_ids)
        nodes = [(0, first + i, os.urandom(32)) for i in range(len(citizen_ids))]
        nodes += [(1, (first + i) // 2, os.urandom(32)) for i in range(0, len(citizen_ids), 2)]
        self.db.executemany("INSERT OR REPLACE INTO audit_nodes VALUES (?, ?, ?)", nodes)

    def new_citizens(self) -> float:
        start = time.perf_counter()
        self.db.execute("BEGIN IMMEDIATE")
        now = int(time.time() * 1000)
        first = len(self.citizens)
        ids = [new_id("cit") for _ in range(BATCH)]
        self.citizens += ids
        keys = [self.key(first + i) for i in range(BATCH)]
        if self.numbered:
            self.db.executemany(
                "INSERT INTO citizens VALUES (?, ?, ?)",
                [(k, c, now) for k, c in zip(keys, ids, strict=True)],
            )
        else:
            self.db.executemany("INSERT INTO citizens VALUES (?, ?)", [(c, now) for c in ids])
        self.db.executemany(
            "INSERT INTO citizen_index VALUES (?, ?, 'nid')", [(os.urandom(32), k) for k in keys]
        )
        deks = []
        for k in keys:
            self.deks += 1  # time-ordered, as vault.models.new_ordered_id makes them
            deks.append((f"dek_{now:013d}{self.deks:09d}", k, TYPE, 1, "w" * 120, 1, 1, now))
        self.db.executemany("INSERT INTO deks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", deks)
        self.db.executemany(
            "INSERT INTO records VALUES (?, ?, ?, 1, ?, ?, ?, 'nts', 1, ?, NULL)",
            [
                (new_id("rec"), k, TYPE, d[0], os.urandom(1400), os.urandom(32), now)
                for k, d in zip(keys, deks, strict=True)
            ],
        )
        self.audit(ids, now)
        self.db.execute("COMMIT")
        return time.perf_counter() - start

    def new_versions(self, indexes: list[int]) -> float:
        start = time.perf_counter()
        self.db.execute("BEGIN IMMEDIATE")
        now = int(time.time() * 1000)
        column = "citizen_no" if self.numbered else "citizen_id"
        heads = []
        for index in indexes:
            key = self.key(index)
            record_id, version, dek_id = self.db.execute(
                f"SELECT record_id, version, dek_id FROM records WHERE {column} = ?"
                " AND record_type = ? AND superseded_at IS NULL",
                (key, TYPE),
            ).fetchone()
            heads.append((key, record_id, version, dek_id))
        self.db.executemany(
            "UPDATE records SET superseded_at = ? WHERE record_id = ?",
            [(now, record_id) for _, record_id, _, _ in heads],
        )
        self.db.executemany(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, 'nts', 1, ?, NULL)",
            [
                (new_id("rec"), key, TYPE, version + 1, dek_id, os.urandom(1400),
                 os.urandom(32), now)
                for key, _, version, dek_id in heads
            ],
        )  # fmt: skip
        self.audit([self.citizens[i] for i in indexes], now)
        self.db.execute("COMMIT")
        return time.perf_counter() - start


def run(schema: str, args: argparse.Namespace) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        model = Model(Path(tmp) / "model.sqlite", numbered_keys=schema == "numbered")
        for _ in range(args.size // BATCH):
            model.new_citizens()
        created = statistics.mean(model.new_citizens() for _ in range(args.measured))
        size = len(model.citizens)
        updated = statistics.mean(
            model.new_versions(random.sample(range(size), BATCH)) for _ in range(args.measured)
        )
        model.db.close()
    return created * 1000, updated * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="records before timing")
    parser.add_argument("--measured", type=int, default=10, help="batches timed a phase")
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    print(f"{args.size:,} records, then {args.measured} timed batches of {BATCH:,} a phase")
    for _ in range(args.pairs):
        for schema in ("today", "numbered"):
            created, updated = run(schema, args)
            print(
                f"  {schema:8s}  new citizens {created:6.1f} ms a batch"
                f" ({BATCH / created * 1000:,.0f} records/s)"
                f"  new versions at random {updated:6.1f} ms a batch"
                f" ({BATCH / updated * 1000:,.0f} records/s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
