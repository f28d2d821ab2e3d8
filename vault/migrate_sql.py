"""Helper for raw-SQL Piccolo migrations: one statement list per engine."""

from __future__ import annotations

from collections.abc import Sequence

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder


def raw_sql_migration(
    *,
    migration_id: str,
    app_name: str,
    description: str,
    sqlite: Sequence[str],
    postgres: Sequence[str],
) -> MigrationManager:
    """A migration that runs the statements for the active engine, in one transaction."""
    manager = MigrationManager(
        migration_id=migration_id, app_name=app_name, description=description
    )

    async def run() -> None:
        engine = engine_finder()
        if engine is None:  # pragma: no cover - api.db always binds one
            raise RuntimeError("no database engine bound")
        statements = postgres if engine.engine_type == "postgres" else sqlite
        for statement in statements:
            await engine.run_ddl(statement)

    manager.add_raw(run)
    return manager
