"""vault 0003: erasure holds (types kept by statutory retention after an erasure)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from vault.migrate_sql import raw_sql_migration

ID = "2026-11-26T06:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "erasure holds"


def _statements(bigint: str) -> list[str]:
    return [
        f"""CREATE TABLE erasure_holds (
            citizen_id TEXT NOT NULL,
            record_type TEXT NOT NULL,
            until {bigint} NOT NULL,
            PRIMARY KEY (citizen_id, record_type)
        )""",
        "CREATE INDEX erasure_holds_until ON erasure_holds (until)",
    ]


async def forwards() -> MigrationManager:
    return raw_sql_migration(
        migration_id=ID,
        app_name="vault",
        description=DESCRIPTION,
        sqlite=_statements("INTEGER"),
        postgres=_statements("BIGINT"),
    )
