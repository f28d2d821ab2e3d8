"""The two bulk-issuance floor tools of issue #11 measure what they say they measure:
bench/bulk_schema_model.py writes the rows the vault writes (the same tables, one
latest version per citizen and type, one audit entry a record) and its numbered
schema keys every per-citizen index by the citizen number; bench/bulk_wal_pages.py
reads every frame of a real WAL file."""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    import bulk_schema_model  # noqa: PLC0415

    return bulk_schema_model


@pytest.fixture
def wal(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    import bulk_wal_pages  # noqa: PLC0415

    return bulk_wal_pages


def index_columns(db: sqlite3.Connection, table: str) -> dict[str, list[str]]:
    out = {}
    for _, name, *_ in db.execute(f"PRAGMA index_list({table})").fetchall():
        out[name] = [row[2] for row in db.execute(f"PRAGMA index_info({name})").fetchall()]
    return out


TABLES = ("citizens", "citizen_index", "deks", "records", "audit_entries", "audit_nodes")


def shape(db: sqlite3.Connection) -> dict[str, object]:
    """Each bulk-written table's columns and its indexes' columns."""
    return {
        table: (
            [row[1:] for row in db.execute(f"PRAGMA table_info({table})").fetchall()],
            sorted(index_columns(db, table).values()),
        )
        for table in TABLES
    }


async def migrated(path: Path) -> None:
    from bench.read_batch import open_store  # noqa: PLC0415

    database, _ = await open_store(argparse.Namespace(postgres=None, synchronous="FULL"), path)
    await database.close()


def test_today_schema_is_the_one_the_migrations_make(model: ModuleType, tmp_path: Path) -> None:
    asyncio.run(migrated(tmp_path))
    app = sqlite3.connect(tmp_path / "oncevault.sqlite")
    m = model.Model(tmp_path / "model.sqlite", numbered_keys=False)
    assert shape(m.db) == shape(app)
    assert ["citizen_id", "record_type"] in shape(app)["records"][1]  # records_latest


def test_numbered_schema_keys_every_vault_index_by_the_citizen_number(
    model: ModuleType, tmp_path: Path
) -> None:
    db = model.Model(tmp_path / "n.sqlite", numbered_keys=True).db
    citizens = {row[1]: row for row in db.execute("PRAGMA table_info(citizens)").fetchall()}
    assert citizens["citizen_no"][2] == "INTEGER" and citizens["citizen_no"][5] == 1
    assert list(index_columns(db, "citizens").values()) == [["citizen_id"]]
    for table in ("citizen_index", "deks", "records"):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall()}
        assert "citizen_id" not in columns and "citizen_no" in columns
        keyed = [cols for cols in index_columns(db, table).values() if "citizen_no" in cols]
        assert keyed, table
        assert all(cols[0] == "citizen_no" for cols in keyed)
    today = model.Model(tmp_path / "t.sqlite", numbered_keys=False).db
    for table in ("citizen_index", "deks", "records"):  # the same indexes, rekeyed
        assert len(index_columns(db, table)) == len(index_columns(today, table))


@pytest.mark.parametrize("numbered", [False, True])
def test_model_writes_what_the_vault_writes(
    model: ModuleType, tmp_path: Path, numbered: bool
) -> None:
    m = model.Model(tmp_path / "w.sqlite", numbered_keys=numbered)
    m.new_citizens()
    m.new_citizens()
    chosen = random.Random(7).sample(range(2 * model.BATCH), model.BATCH)
    m.new_versions(chosen)
    count = lambda sql: m.db.execute(sql).fetchone()[0]  # noqa: E731
    assert count("SELECT count(*) FROM citizens") == 2 * model.BATCH
    assert count("SELECT count(*) FROM citizen_index") == 2 * model.BATCH
    assert count("SELECT count(*) FROM deks") == 2 * model.BATCH
    assert count("SELECT count(*) FROM records") == 3 * model.BATCH
    assert count("SELECT count(*) FROM records WHERE superseded_at IS NULL") == 2 * model.BATCH
    assert count("SELECT count(*) FROM records WHERE version = 2") == model.BATCH
    assert count("SELECT count(*) FROM audit_entries") == 3 * model.BATCH
    assert count("SELECT count(DISTINCT seq) FROM audit_entries") == 3 * model.BATCH
    m.db.close()


def test_wal_pages_reads_every_frame(wal: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (v BLOB)")
    db.execute("BEGIN")
    db.executemany("INSERT INTO t VALUES (?)", [(bytes(3000),) for _ in range(50)])
    db.execute("COMMIT")
    pages = wal.wal_pages(path)
    page_count = db.execute("PRAGMA page_count").fetchone()[0]
    _, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert len(pages) == frames > 50  # one page a 3,000-byte row, and more
    assert all(1 <= page <= page_count for page in pages)
    db.close()


def test_wal_pages_of_an_empty_wal(wal: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    (tmp_path / "e.sqlite-wal").write_bytes(b"")
    assert wal.wal_pages(path) == []
