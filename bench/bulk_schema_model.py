"""What SQLite alone needs for one bulk-issuance batch, with today's schema and with
one keyed by a sequential citizen number: the floor under ``bench/scale.py``'s rate.

Bulk issuance through ``POST /v1/records:batch`` is bound by SQLite's single write
lock (docs/performance.md, "Fourteenth session"). This model runs only the SQL a
1,000-record batch writes under that lock, with none of the application's Python,
on a file of the same shape: the vault's and the audit log's tables and indexes made
by their own migrations' SQLite statements, an audit entry a record, two tree nodes
an entry and the tree state. Each batch is one ``BEGIN IMMEDIATE`` … ``COMMIT`` in WAL
mode with ``synchronous=FULL`` and the writer's 20,000-page checkpoint threshold; the
rows are built before it (the vault seals before it takes the lock), and only the
statements and the COMMIT are timed.

*today*: every per-citizen index is keyed by the random ``citizen_id`` (DESIGN fixes
its format), so each new citizen writes into a random page of eight indexes (with
the blind index and the record id). *numbered*: citizens get an ``INTEGER PRIMARY
KEY`` in creation order, the citizen id a unique index of its own, and the
per-citizen indexes of the vault's tables use the number (the audit entries keep the
id: it is in the entry). New citizens then append at the right edge of those indexes.

After ``--size`` records (one citizen each, 1,000 a batch), ``--measured`` batches of
new citizens and then ``--measured`` batches of new versions for 1,000 citizens drawn
at random (an issuer's update does not arrive in the vault's order; ``--seed``, the
same for both) are timed; the two schemas alternate ``--pairs`` times. Prints each
run's mean wall-clock and CPU milliseconds a batch (the CPU is this one thread's:
SQLite runs in it).

Usage: ``.venv/bin/python bench/bulk_schema_model.py [--size 100000] [--pairs 2]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit.piccolo_migrations import audit_2026_11_26t05_00_00_000000 as audit_0001
from audit.piccolo_migrations import audit_2026_11_26t18_30_00_000000 as audit_0002
from audit.piccolo_migrations import audit_2026_11_27t01_30_00_000000 as audit_0003
from vault.models import new_id, new_ordered_id
from vault.piccolo_migrations import vault_2026_11_26t05_10_00_000000 as vault_0002

BATCH = 1_000
TYPE = "income_certificate"
#: What the vault stores for bench/benchlib.py's ~1 KiB income record, measured on a
#: bulk load (tests/integration/bench/test_bulk_models.py holds them to it): the
#: ciphertext, the wrapped DEK's text, an audit entry's leaf.
CIPHERTEXT_BYTES = 1_081
WRAPPED_CHARS = 91
LEAF_BYTES = 305

AuditRows = tuple[list[tuple[object, ...]], list[tuple[object, ...]], tuple[object, ...]]


def schema(*, numbered: bool) -> list[str]:
    """The statements that make the model's file: the vault's and the audit log's
    migrations for SQLite, as the project runs them (the vault's rewritten by
    :func:`numbered_statement` for the numbered schema)."""
    vault = vault_0002._statements(blob="BLOB", bigint="INTEGER")
    if numbered:
        vault = [numbered_statement(statement) for statement in vault]
    return [*vault, *audit_0001.SQLITE, *audit_0002.SQLITE, *audit_0003.SQLITE]


def numbered_statement(statement: str) -> str:
    """One of the vault's statements with the per-citizen keys on a citizen number:
    ``citizens`` gets an ``INTEGER PRIMARY KEY`` and keeps its id in a unique column,
    and every other table's ``citizen_id`` column and index become ``citizen_no``."""
    if statement.lstrip().startswith("CREATE TABLE citizens ("):
        return statement.replace(
            "citizen_id TEXT PRIMARY KEY",
            "citizen_no INTEGER PRIMARY KEY, citizen_id TEXT NOT NULL UNIQUE",
        )
    return statement.replace("citizen_id TEXT NOT NULL", "citizen_no INTEGER NOT NULL").replace(
        "(citizen_id", "(citizen_no"
    )


class Unit:
    """The wall-clock and CPU seconds of the timed windows of a run (its units)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)


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
        for statement in schema(numbered=numbered_keys):
            self.db.execute(statement)
        self.citizens: list[str] = []
        self.seq = 0
        self.nodes = 0

    def key(self, index: int) -> object:
        """The per-citizen key of the ``index``-th citizen: its number or its id."""
        return index + 1 if self.numbered else self.citizens[index]

    def audit_rows(self, citizen_ids: list[str], now: int) -> AuditRows:
        """The entries, tree nodes and tree state of one batch, built before its unit."""
        entries = []
        for citizen_id in citizen_ids:
            entries.append(
                (self.seq, os.urandom(LEAF_BYTES), os.urandom(32), now, "record.put", "client",
                 "nts", citizen_id, "nts", None, "ok", None)
            )  # fmt: skip
            self.seq += 1
        # Two tree nodes an entry (its leaf, and on average one parent), in append
        # order as audit_nodes keeps them.
        nodes = []
        for _ in range(2 * len(citizen_ids)):
            nodes.append((self.nodes, 0, self.nodes, os.urandom(32)))
            self.nodes += 1
        return entries, nodes, (self.seq, os.urandom(32), os.urandom(32 * 17))

    def write_audit(self, rows: AuditRows) -> None:
        entries, nodes, state = rows
        self.db.executemany(
            "INSERT INTO audit_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", entries
        )
        self.db.executemany("INSERT INTO audit_nodes VALUES (?, ?, ?, ?)", nodes)
        self.db.execute(
            "UPDATE audit_state SET size = ?, root_hash = ?, frontier = ? WHERE id = 1", state
        )

    def new_citizens(self, unit: Unit) -> None:
        """One batch of 1,000 new citizens, a record each, its unit timed into ``unit``."""
        now = int(time.time() * 1000)
        first = len(self.citizens)
        ids = [new_id("cit") for _ in range(BATCH)]
        self.citizens += ids
        keys = [self.key(first + i) for i in range(BATCH)]
        if self.numbered:
            insert_citizens = "INSERT INTO citizens VALUES (?, ?, ?)"
            citizens = [(k, c, now) for k, c in zip(keys, ids, strict=True)]
        else:
            insert_citizens = "INSERT INTO citizens VALUES (?, ?)"
            citizens = [(c, now) for c in ids]
        blind = [(os.urandom(32), k) for k in keys]
        deks = [
            (new_ordered_id("dek", now), k, TYPE, 1, "w" * WRAPPED_CHARS, 1, 1, now) for k in keys
        ]
        records = [
            (new_id("rec"), k, TYPE, d[0], os.urandom(CIPHERTEXT_BYTES), os.urandom(32), now)
            for k, d in zip(keys, deks, strict=True)
        ]
        audit = self.audit_rows(ids, now)
        with unit.timed():
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(insert_citizens, citizens)
            self.db.executemany("INSERT INTO citizen_index VALUES (?, ?, 'nid')", blind)
            self.db.executemany("INSERT INTO deks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", deks)
            self.db.executemany(
                "INSERT INTO records VALUES (?, ?, ?, 1, ?, ?, ?, 'nts', 1, ?, NULL)", records
            )
            self.write_audit(audit)
            self.db.execute("COMMIT")

    def new_versions(self, indexes: list[int], unit: Unit) -> None:
        """A new version for each of ``indexes``' citizens, its unit (which reads each
        latest version, as the vault's unit reads the heads) timed into ``unit``."""
        now = int(time.time() * 1000)
        keys = [self.key(index) for index in indexes]
        sealed = [(new_id("rec"), os.urandom(CIPHERTEXT_BYTES), os.urandom(32)) for _ in keys]
        audit = self.audit_rows([self.citizens[i] for i in indexes], now)
        column = "citizen_no" if self.numbered else "citizen_id"
        with unit.timed():
            self.db.execute("BEGIN IMMEDIATE")
            heads = [
                self.db.execute(
                    f"SELECT record_id, version, dek_id FROM records WHERE {column} = ?"
                    " AND record_type = ? AND superseded_at IS NULL",
                    (key, TYPE),
                ).fetchone()
                for key in keys
            ]
            self.db.executemany(
                "UPDATE records SET superseded_at = ? WHERE record_id = ?",
                [(now, record_id) for record_id, _, _ in heads],
            )
            self.db.executemany(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, 'nts', 1, ?, NULL)",
                [
                    (record_id, key, TYPE, version + 1, dek_id, ciphertext, digest, now)
                    for key, (_, version, dek_id), (record_id, ciphertext, digest) in zip(
                        keys, heads, sealed, strict=True
                    )
                ],
            )
            self.write_audit(audit)
            self.db.execute("COMMIT")


def run(schema: str, args: argparse.Namespace) -> tuple[Unit, Unit]:
    """One schema's run: the timed units of its new citizens and of its new versions."""
    created, updated = Unit(), Unit()
    with tempfile.TemporaryDirectory() as tmp:
        model = Model(Path(tmp) / "model.sqlite", numbered_keys=schema == "numbered")
        try:
            untimed = Unit()
            for _ in range(args.size // BATCH):
                model.new_citizens(untimed)
            for _ in range(args.measured):
                model.new_citizens(created)
            draw = random.Random(args.seed)  # both schemas update the same citizens
            size = len(model.citizens)
            for _ in range(args.measured):
                model.new_versions(draw.sample(range(size), BATCH), updated)
        finally:
            model.db.close()
    return created, updated


def describe(unit: Unit) -> str:
    """A phase's mean wall-clock and CPU milliseconds a batch, and the rate."""
    wall, cpu = statistics.mean(unit.wall) * 1000, statistics.mean(unit.cpu) * 1000
    return f"{wall:6.1f} ms a batch ({BATCH / wall * 1000:6,.0f} records/s, CPU {cpu:5.1f} ms)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="records before timing")
    parser.add_argument("--measured", type=int, default=10, help="batches timed a phase")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11, help="of the updated citizens' draw")
    args = parser.parse_args()
    print(f"{args.size:,} records, then {args.measured} timed batches of {BATCH:,} a phase")
    for _ in range(args.pairs):
        for schema in ("today", "numbered"):
            created, updated = run(schema, args)
            print(
                f"  {schema:8s}  new citizens {describe(created)}"
                f"  new versions at random {describe(updated)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
