"""vault 0001: installation metadata."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from vault.migrate_sql import raw_sql_migration

ID = "2026-11-26T04:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "installation metadata"

_COMMON = [
    "CREATE TABLE oncevault_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
]


async def forwards() -> MigrationManager:
    return raw_sql_migration(
        migration_id=ID,
        app_name="vault",
        description=DESCRIPTION,
        sqlite=_COMMON,
        postgres=_COMMON,
    )
