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
from audit import merkle
from audit.log import AuditLog
from vault.clock import ManualClock
from vault.storage import Database

#: The last audit migration before subtree hashes were keyed by position.
BEFORE_POSITIONS = "2026-11-26T18:30:00:000000"


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


async def test_audit_nodes_move_to_their_positions_with_the_log_intact(
    empty_database: Database,
) -> None:
    """audit 0003 rekeys a log written under ``(level, idx)``: every node lands on
    ``Node.position`` (computed in SQL), nothing is lost, and proofs still verify."""
    await Migration.create_table(if_not_exists=True).run()
    with contextlib.redirect_stdout(io.StringIO()):
        for app in ("vault", "consent"):
            assert (await run_forwards(app_name=app, migration_id="all")).success
        assert (await run_forwards(app_name="audit", migration_id=BEFORE_POSITIONS)).success
    assert "pos" not in await _columns(empty_database, "audit_nodes")
    size = 1000
    leaves = [merkle.leaf_hash(b"entry %d" % i) for i in range(size)]
    created, frontier = merkle.append_nodes([], 0, leaves)
    # Nodes no real log of this size has, with large coordinates: the SQL popcount
    # and trailing zeros over every bit a position uses.
    far = [merkle.Node(0, 2**40 - 1), merkle.Node(21, 2**40 + 5), merkle.Node(40, 3)]
    rows = [(n.level, n.index, h) for n, h in created] + [
        (n.level, n.index, b"\0" * 32) for n in far
    ]
    root = merkle.root_from_frontier(frontier)
    async with empty_database.transaction():
        await empty_database.executemany(
            "INSERT INTO audit_nodes (level, idx, hash) VALUES ($1, $2, $3)", rows
        )
        await empty_database.execute(
            "UPDATE audit_state SET size = $1, root_hash = $2 WHERE id = 1", size, root
        )
    await migrate(empty_database)

    stored = await empty_database.fetch("SELECT pos, level, idx FROM audit_nodes")
    assert len(stored) == len(rows)
    for row in stored:
        assert int(row["pos"]) == merkle.Node(int(row["level"]), int(row["idx"])).position
    log = AuditLog(database=empty_database, clock=ManualClock())
    assert await log.root_at(size) == root
    for index in (0, 511, 999):
        proof = await log.inclusion_proof(index, size)
        merkle.verify_inclusion(leaves[index], index, size, proof, root)
