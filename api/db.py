"""Opening the database and running migrations (the one place that knows every app)."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from api import piccolo_conf
from api.settings import DatabaseURL
from vault.errors import StorageError
from vault.storage import Database

os.environ.setdefault("PICCOLO_CONF", "api.piccolo_conf")

# Imported after PICCOLO_CONF is set: Piccolo resolves the conf module lazily.
from piccolo.apps.migrations.commands.base import BaseMigrationManager
from piccolo.apps.migrations.commands.forwards import run_forwards
from piccolo.apps.migrations.tables import Migration
from piccolo.table import Table

log = structlog.get_logger(__name__)


class NotMigrated(StorageError):
    """The database schema is missing migrations."""


@dataclass(frozen=True)
class MigrationStatus:
    applied: tuple[str, ...]
    pending: tuple[str, ...]


def all_tables() -> list[type[Table]]:
    """Every table of every registered app, plus Piccolo's migration table."""
    registry = piccolo_conf.APP_REGISTRY
    tables: list[type[Table]] = [Migration]
    for app_config in registry.app_configs.values():
        tables.extend(app_config.table_classes)
    return tables


def open_database(
    url: DatabaseURL,
    *,
    schema: str | None = None,
    pool_size: int = 10,
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL",
) -> Database:
    """Build the process's :class:`Database` and bind every table and Piccolo to it."""
    if url.dialect == "sqlite":
        database = Database(
            dialect="sqlite", sqlite_path=url.sqlite_path, sqlite_synchronous=sqlite_synchronous
        )
    else:
        database = Database(
            dialect="postgres", postgres_dsn=url.url, postgres_schema=schema, pool_size=pool_size
        )
    bind(database)
    return database


def bind(database: Database) -> None:
    """Make ``database`` the one Piccolo sees (tables and migration runner)."""
    piccolo_conf.DB = database.engine
    database.bind(all_tables())


async def _table_exists(database: Database, name: str) -> bool:
    # Piccolo's table_exists() ignores the search path: it would see another schema's table.
    if database.dialect == "sqlite":
        row = await database.fetchrow(
            "SELECT 1 AS found FROM sqlite_master WHERE type = 'table' AND name = $1", name
        )
    else:
        row = await database.fetchrow("SELECT to_regclass($1) IS NOT NULL AS found", name)
        return bool(row and row["found"])
    return row is not None


def _app_names() -> list[str]:
    names: list[str] = BaseMigrationManager().get_sorted_app_names()
    return names


async def migration_status(database: Database) -> MigrationStatus:
    """Which migrations ran and which are pending, for every app."""
    bind(database)
    manager = BaseMigrationManager()
    ran: set[tuple[str, str]] = set()
    if await _table_exists(database, Migration._meta.tablename):
        rows: list[dict[str, Any]] = await Migration.select(
            Migration.app_name, Migration.name
        ).run()
        ran = {(row["app_name"], row["name"]) for row in rows}
    applied: list[str] = []
    pending: list[str] = []
    for app_name in _app_names():
        app_config = manager.get_app_config(app_name=app_name)
        modules = manager.get_migration_modules(app_config.resolved_migrations_folder_path)
        for migration_id in manager.get_migration_ids(modules):
            label = f"{app_name}:{migration_id}"
            (applied if (app_name, migration_id) in ran else pending).append(label)
    return MigrationStatus(applied=tuple(applied), pending=tuple(pending))


async def migrate(database: Database) -> list[str]:
    """Apply every pending migration; return the ones applied (``app:id``)."""
    before = await migration_status(database)
    if not before.pending:
        return []
    # Piccolo's own existence check ignores the search path (it would see another
    # schema's table); create its bookkeeping table where our search path points.
    await Migration.create_table(if_not_exists=True).run()  # type: ignore[no-untyped-call]
    # Piccolo's runner prints progress with emoji; keep it off our stdout.
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = await run_forwards(app_name="all")
    if not result.success:
        raise StorageError(f"migration failed: {result.message}")
    log.info("db.migrated", applied=list(before.pending))
    return list(before.pending)


async def require_migrated(database: Database) -> None:
    """Raise :class:`NotMigrated` naming how to fix it when migrations are pending."""
    status = await migration_status(database)
    if status.pending:
        raise NotMigrated(
            f"database is not migrated ({len(status.pending)} pending, first "
            f"{status.pending[0]}); run `oncevault init` first"
        )
