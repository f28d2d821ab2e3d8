"""consent 0001: consents and their receipts."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from vault.migrate_sql import raw_sql_migration

ID = "2026-11-26T05:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "consents and receipts"


def _statements(bigint: str) -> list[str]:
    return [
        f"""CREATE TABLE consents (
            consent_id TEXT PRIMARY KEY,
            citizen_id TEXT NOT NULL,
            client_id TEXT NOT NULL,
            purpose TEXT NOT NULL,
            items TEXT NOT NULL,
            access TEXT NOT NULL CHECK (access IN ('once', 'standing')),
            max_fetches INTEGER,
            valid_days INTEGER NOT NULL,
            valid_from {bigint},
            valid_until {bigint},
            legal_basis TEXT NOT NULL CHECK (legal_basis IN ('consent', 'statute')),
            case_reference TEXT,
            created_at {bigint} NOT NULL,
            policy_version TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN
                ('pending', 'active', 'rejected', 'revoked', 'expired', 'exhausted')),
            fetch_count INTEGER NOT NULL DEFAULT 0,
            receipt_version INTEGER NOT NULL DEFAULT 0,
            updated_at {bigint} NOT NULL
        )""",
        "CREATE INDEX consents_citizen ON consents (citizen_id, status)",
        "CREATE INDEX consents_client ON consents (client_id, created_at)",
        # One pending request per (client, citizen, purpose), whatever the races.
        "CREATE UNIQUE INDEX consents_one_pending ON consents (client_id, citizen_id, purpose)"
        " WHERE status = 'pending'",
        f"""CREATE TABLE consent_receipts (
            consent_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            status TEXT NOT NULL,
            issued_at {bigint} NOT NULL,
            jws TEXT NOT NULL,
            PRIMARY KEY (consent_id, version)
        )""",
    ]


async def forwards() -> MigrationManager:
    return raw_sql_migration(
        migration_id=ID,
        app_name="consent",
        description=DESCRIPTION,
        sqlite=_statements("INTEGER"),
        postgres=_statements("BIGINT"),
    )
