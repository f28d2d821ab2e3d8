"""consent 0002: proactive suggestions from lifecycle rules."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from vault.migrate_sql import raw_sql_migration

ID = "2026-11-26T05:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "suggestions"


def _statements(bigint: str) -> list[str]:
    return [
        f"""CREATE TABLE suggestions (
            suggestion_id TEXT PRIMARY KEY,
            citizen_id TEXT NOT NULL,
            rule TEXT NOT NULL,
            client_id TEXT NOT NULL,
            purpose TEXT NOT NULL,
            access TEXT NOT NULL,
            valid_days INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open', 'accepted', 'dismissed')),
            created_at {bigint} NOT NULL,
            consent_id TEXT
        )""",
        "CREATE INDEX suggestions_citizen ON suggestions (citizen_id, created_at)",
        # At most one open suggestion per (citizen, rule).
        "CREATE UNIQUE INDEX suggestions_one_open ON suggestions (citizen_id, rule)"
        " WHERE status = 'open'",
    ]


async def forwards() -> MigrationManager:
    return raw_sql_migration(
        migration_id=ID,
        app_name="consent",
        description=DESCRIPTION,
        sqlite=_statements("INTEGER"),
        postgres=_statements("BIGINT"),
    )
