"""consent 0003: client registry, assertion and DPoP replay stores, revoked tokens."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from vault.migrate_sql import raw_sql_migration

ID = "2026-11-26T05:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "clients and token state"


def _statements(bigint: str) -> list[str]:
    return [
        f"""CREATE TABLE clients (
            client_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('agency', 'private')),
            roles TEXT NOT NULL,
            jwks TEXT NOT NULL,
            approved INTEGER NOT NULL,
            enabled INTEGER NOT NULL,
            dpop_required INTEGER NOT NULL,
            created_at {bigint} NOT NULL,
            updated_at {bigint} NOT NULL
        )""",
        # Single-use identifiers (client assertion jti, DPoP proof jti), kept until expiry.
        f"""CREATE TABLE replay_guard (
            scope TEXT NOT NULL,
            jti TEXT NOT NULL,
            expires_at {bigint} NOT NULL,
            PRIMARY KEY (scope, jti)
        )""",
        "CREATE INDEX replay_guard_expiry ON replay_guard (expires_at)",
        f"""CREATE TABLE revoked_tokens (
            jti TEXT PRIMARY KEY,
            expires_at {bigint} NOT NULL
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
