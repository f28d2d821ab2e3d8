"""audit 0002: the tree state keeps its frontier (the hashes an append extends).

An append needs the hashes of the complete subtrees that make up the tree (one per
set bit of its size). Kept in the locked state row, they are read with the lock, in
the row version the lock returns: no read of ``audit_nodes`` after another writer
appended. NULL (a log written before this migration) until the next append sets it;
the appender checks it against ``root_hash`` and reads ``audit_nodes`` when it is
missing or does not match.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from vault.migrate_sql import raw_sql_migration

ID = "2026-11-26T18:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "audit state frontier"

SQLITE = ["ALTER TABLE audit_state ADD COLUMN frontier BLOB"]
POSTGRES = ["ALTER TABLE audit_state ADD COLUMN frontier BYTEA"]


async def forwards() -> MigrationManager:
    return raw_sql_migration(
        migration_id=ID, app_name="audit", description=DESCRIPTION, sqlite=SQLITE, postgres=POSTGRES
    )
