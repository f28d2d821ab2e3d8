"""``Database.truncate_wal`` on each engine: SQLite copies the WAL into the file and
truncates it to zero; PostgreSQL has no such file and sends nothing. (A reader keeping
SQLite's WAL busy: tests/integration/storage/test_sqlite_connections.py.)"""

from __future__ import annotations

import pytest

from vault.storage import Database


async def test_truncate_wal_empties_sqlites_wal_and_sends_nothing_to_postgresql(
    empty_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = empty_database
    async with database.transaction():
        await database.execute("CREATE TABLE w (n BIGINT PRIMARY KEY)")
        await database.executemany("INSERT INTO w (n) VALUES ($1)", [(i,) for i in range(500)])
    if database.dialect == "sqlite":
        assert database.sqlite_path is not None
        wal = database.sqlite_path.with_name(database.sqlite_path.name + "-wal")
        assert wal.stat().st_size > 0
        assert await database.truncate_wal(attempts=1) is True
        assert wal.stat().st_size == 0
    else:

        async def no_statement(*_: object) -> object:
            raise AssertionError("truncate_wal sent a statement to PostgreSQL")

        monkeypatch.setattr(database, "fetch", no_statement)
        monkeypatch.setattr(database, "execute", no_statement)
        assert await database.truncate_wal(attempts=1) is True
    monkeypatch.undo()
    assert await database.fetchrow("SELECT count(*) AS n FROM w") == {"n": 500}
