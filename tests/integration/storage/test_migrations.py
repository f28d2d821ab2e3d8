"""Migrations apply, roll forward and match the Piccolo tables, on both engines."""

from __future__ import annotations

import contextlib
import io

import pytest
from piccolo.apps.migrations.commands.forwards import run_forwards
from piccolo.apps.migrations.tables import Migration

from api.db import (
    NotMigrated,
    all_tables,
    migrate,
    migration_status,
    require_migrated,
)
from vault.storage import Database


async def _columns(database: Database, table: str) -> set[str]:
    if database.dialect == "sqlite":
        rows = await database.fetch(f"PRAGMA table_info({table})")
        return {row["name"] for row in rows}
    rows = await database.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = $1 AND table_schema = current_schema()",
        table,
    )
    return {row["column_name"] for row in rows}


async def test_fresh_database_is_not_migrated(empty_database: Database) -> None:
    status = await migration_status(empty_database)
    assert status.applied == ()
    assert status.pending, "the project ships migrations"
    with pytest.raises(NotMigrated, match=r"not migrated .* run `oncevault init` first"):
        await require_migrated(empty_database)


async def test_migrations_apply_then_are_idempotent(empty_database: Database) -> None:
    applied = await migrate(empty_database)
    status = await migration_status(empty_database)
    assert list(status.applied) == applied
    assert status.pending == ()
    await require_migrated(empty_database)
    assert await migrate(empty_database) == []


async def test_migrations_roll_forward_one_at_a_time(empty_database: Database) -> None:
    """Apply each app's first migration only, then the rest: the state converges."""
    total = len((await migration_status(empty_database)).pending)
    # Piccolo's own existence check ignores the search path (another schema's table
    # would fool it); api.db.migrate does the same before calling the runner.
    await Migration.create_table(if_not_exists=True).run()
    with contextlib.redirect_stdout(io.StringIO()):
        for app in ("vault", "audit", "consent"):
            result = await run_forwards(app_name=app, migration_id="1")
            assert result.success
    middle = await migration_status(empty_database)
    assert 0 < len(middle.applied) <= total
    rest = await migrate(empty_database)
    final = await migration_status(empty_database)
    assert len(final.applied) == total
    assert set(rest) == set(middle.pending)


async def test_tables_match_the_migrated_schema(database: Database) -> None:
    for table in all_tables():
        name = table._meta.tablename
        expected = {column._meta.db_column_name for column in table._meta.columns}
        if name == "migration":
            continue  # Piccolo's own table, created by Piccolo
        assert await _columns(database, name) == expected, name


async def test_sqlite_uses_wal(database: Database) -> None:
    if database.dialect != "sqlite":
        pytest.skip("SQLite only")
    row = await database.fetchrow("PRAGMA journal_mode")
    assert row is not None
    assert next(iter(row.values())) == "wal"
