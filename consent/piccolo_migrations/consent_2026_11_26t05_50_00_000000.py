"""consent 0004: the per-client event feed ("tell us once")."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from vault.migrate_sql import raw_sql_migration

ID = "2026-11-26T05:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "events"

_COLUMNS = """
    client_id TEXT NOT NULL,
    type TEXT NOT NULL,
    consent_id TEXT,
    record_type TEXT,
    version INTEGER,
    at {bigint} NOT NULL
"""

SQLITE = [
    "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    + _COLUMNS.format(bigint="INTEGER")
    + ")",
    "CREATE INDEX events_client ON events (client_id, seq)",
]
POSTGRES = [
    "CREATE TABLE events (seq BIGSERIAL PRIMARY KEY," + _COLUMNS.format(bigint="BIGINT") + ")",
    "CREATE INDEX events_client ON events (client_id, seq)",
]


async def forwards() -> MigrationManager:
    return raw_sql_migration(
        migration_id=ID, app_name="consent", description=DESCRIPTION, sqlite=SQLITE, postgres=POSTGRES
    )
