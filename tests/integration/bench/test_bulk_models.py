"""The two bulk-issuance floor tools of issue #11 measure what they say they measure.

bench/bulk_schema_model.py builds the schema the migrations build, writes the vault's
rows at the sizes the vault writes them, and its numbered variant keys every
per-citizen index by the citizen number; bench/bulk_wal_pages.py reads the frames of
a real WAL file, and only those of its current generation. Integration: SQLite files
and a migrated vault."""

from __future__ import annotations

import argparse
import random
import sqlite3
from pathlib import Path
from types import ModuleType

import pytest

from bench.bulk_batch import issue_income, issuer_intake
from vault.clock import SystemClock

BENCH = Path(__file__).resolve().parents[3] / "bench"
TABLES = ("citizens", "citizen_index", "deks", "records", "audit_entries", "audit_nodes")


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    import bulk_schema_model  # noqa: PLC0415 - importable only once bench/ is on the path

    return bulk_schema_model


@pytest.fixture
def wal(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    import bulk_wal_pages  # noqa: PLC0415 - importable only once bench/ is on the path

    return bulk_wal_pages


@pytest.fixture
async def vault_file(tmp_path: Path) -> Path:
    """A migrated vault that took a bulk load: 200 new citizens, then 100 new versions."""
    store = argparse.Namespace(postgres=None, synchronous="FULL")
    async with issuer_intake(store, tmp_path, SystemClock()) as intake:
        await issue_income(intake, range(200), 0, version=1)
        await issue_income(intake, range(100), 7, version=2)
    return tmp_path / "oncevault.sqlite"


def index_columns(db: sqlite3.Connection, table: str) -> dict[str, list[str]]:
    out = {}
    for _, name, *_ in db.execute(f"PRAGMA index_list({table})").fetchall():
        out[name] = [row[2] for row in db.execute(f"PRAGMA index_info({name})").fetchall()]
    return out


def shape(db: sqlite3.Connection) -> dict[str, object]:
    """Each bulk-written table's columns and its indexes' columns."""
    return {
        table: (
            [row[1:] for row in db.execute(f"PRAGMA table_info({table})").fetchall()],
            sorted(index_columns(db, table).values()),
        )
        for table in TABLES
    }


def test_today_schema_is_the_one_the_migrations_make(
    model: ModuleType, vault_file: Path, tmp_path: Path
) -> None:
    app = sqlite3.connect(vault_file)
    m = model.Model(tmp_path / "model.sqlite", numbered_keys=False)
    assert shape(m.db) == shape(app)
    assert ["citizen_id", "record_type"] in shape(app)["records"][1]  # records_latest


def test_model_rows_are_the_size_of_the_vaults(
    model: ModuleType, vault_file: Path, tmp_path: Path
) -> None:
    app = sqlite3.connect(vault_file)
    m = model.Model(tmp_path / "model.sqlite", numbered_keys=False)
    unit = model.Unit()
    m.new_citizens(unit)
    m.new_versions(random.Random(3).sample(range(model.BATCH), 500), unit)
    queries = {
        "ciphertext": "SELECT avg(length(ciphertext)) FROM records",
        "wrapped DEK": "SELECT avg(length(wrapped)) FROM deks",
        "dek id": "SELECT avg(length(dek_id)) FROM deks",
        "record id": "SELECT avg(length(record_id)) FROM records",
        "citizen id": "SELECT avg(length(citizen_id)) FROM citizens",
        "leaf": "SELECT avg(length(leaf)) FROM audit_entries WHERE action = 'record.put'",
        "nodes an entry": "SELECT (SELECT count(*) FROM audit_nodes) * 1.0 / count(*)"
        " FROM audit_entries",
    }
    for name, sql in queries.items():
        ours, theirs = m.db.execute(sql).fetchone()[0], app.execute(sql).fetchone()[0]
        assert theirs * 0.97 <= ours <= theirs * 1.03, (name, ours, theirs)
    one_latest = (
        "SELECT count(*) FROM records GROUP BY citizen_id, record_type"
        " HAVING sum(superseded_at IS NULL) != 1"
    )
    assert m.db.execute(one_latest).fetchall() == app.execute(one_latest).fetchall() == []
    per_record = "SELECT (SELECT count(*) FROM audit_entries WHERE action = 'record.put')"
    per_record += " - (SELECT count(*) FROM records)"
    assert m.db.execute(per_record).fetchone()[0] == app.execute(per_record).fetchone()[0] == 0
    m.db.close()


def test_numbered_schema_keys_every_vault_index_by_the_citizen_number(
    model: ModuleType, tmp_path: Path
) -> None:
    db = model.Model(tmp_path / "n.sqlite", numbered_keys=True).db
    citizens = {row[1]: row for row in db.execute("PRAGMA table_info(citizens)").fetchall()}
    assert citizens["citizen_no"][2] == "INTEGER" and citizens["citizen_no"][5] == 1
    assert list(index_columns(db, "citizens").values()) == [["citizen_id"]]
    today = model.Model(tmp_path / "t.sqlite", numbered_keys=False).db
    for table in ("citizen_index", "deks", "records"):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall()}
        assert "citizen_id" not in columns and "citizen_no" in columns
        keyed = [cols for cols in index_columns(db, table).values() if "citizen_no" in cols]
        assert keyed, table
        assert all(cols[0] == "citizen_no" for cols in keyed)
        assert len(index_columns(db, table)) == len(index_columns(today, table))  # rekeyed


@pytest.mark.parametrize("numbered", [False, True])
def test_model_versions_follow_the_latest(
    model: ModuleType, tmp_path: Path, numbered: bool
) -> None:
    m = model.Model(tmp_path / "w.sqlite", numbered_keys=numbered)
    unit = model.Unit()
    m.new_citizens(unit)
    m.new_citizens(unit)
    chosen = random.Random(7).sample(range(2 * model.BATCH), model.BATCH)
    m.new_versions(chosen, unit)
    m.new_versions(chosen[:10], unit)
    # Each unit is timed once, and its thread's CPU never exceeds its wall clock.
    assert len(unit.wall) == len(unit.cpu) == 4
    assert all(0 < cpu <= wall * 1.05 for wall, cpu in zip(unit.wall, unit.cpu, strict=True))

    def one(sql: str) -> object:
        return m.db.execute(sql).fetchone()[0]

    assert one("SELECT count(*) FROM records") == 3 * model.BATCH + 10
    assert one("SELECT count(*) FROM records WHERE superseded_at IS NULL") == 2 * model.BATCH
    assert one("SELECT max(version) FROM records") == 3
    assert one("SELECT count(DISTINCT seq) FROM audit_entries") == 3 * model.BATCH + 10
    assert one("SELECT count(DISTINCT dek_id) FROM deks") == 2 * model.BATCH
    m.db.close()


def wal_file(path: Path, rows: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (v BLOB)")
    db.execute("BEGIN")
    db.executemany("INSERT INTO t VALUES (?)", [(bytes(3000),) for _ in range(rows)])
    db.execute("COMMIT")
    return db


def test_wal_pages_reads_every_frame(wal: ModuleType, tmp_path: Path) -> None:
    db = wal_file(tmp_path / "f.sqlite", 50)
    page_size, pages = wal.wal_pages(tmp_path / "f.sqlite")
    page_count = db.execute("PRAGMA page_count").fetchone()[0]
    _, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert page_size == db.execute("PRAGMA page_size").fetchone()[0]
    assert len(pages) == frames > 50  # a page a 3,000-byte row, and more
    assert all(1 <= page <= page_count for page in pages)
    db.close()


def test_wal_pages_skips_the_frames_of_an_earlier_generation(
    wal: ModuleType, tmp_path: Path
) -> None:
    """After a checkpoint the WAL restarts from its beginning under new salts; the
    longer tail of the previous generation stays in the file and is not counted."""
    path = tmp_path / "g.sqlite"
    db = wal_file(path, 100)
    _, first = wal.wal_pages(path)
    busy, _, _ = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    assert busy == 0
    db.execute("INSERT INTO t VALUES (?)", (bytes(10),))
    size_on_disk = (tmp_path / "g.sqlite-wal").stat().st_size
    _, second = wal.wal_pages(path)
    _, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert len(first) > 100 and size_on_disk > len(second) * 4096  # the old tail is there
    assert len(second) == frames < 5
    db.close()


def test_wal_pages_of_a_missing_or_empty_wal(wal: ModuleType, tmp_path: Path) -> None:
    assert wal.wal_pages(tmp_path / "none.sqlite") == (0, [])
    (tmp_path / "e.sqlite-wal").write_bytes(b"")
    assert wal.wal_pages(tmp_path / "e.sqlite") == (0, [])
