"""api 0001: idempotency keys and rate-limit buckets (shared by every worker)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from vault.migrate_sql import raw_sql_migration

ID = "2026-11-26T06:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "idempotency keys and rate buckets"


def _statements(*, blob: str, bigint: str) -> list[str]:
    return [
        # One row per (client, Idempotency-Key). status 0 is an in-progress claim whose
        # response holds the claiming worker's random token; otherwise the HTTP status
        # and the stored response body. Only SHA-256 of the request body is kept.
        f"""CREATE TABLE idempotency_keys (
            client_id TEXT NOT NULL,
            key TEXT NOT NULL,
            method_path TEXT NOT NULL,
            body_digest {blob} NOT NULL,
            status INTEGER NOT NULL CHECK (status = 0 OR status BETWEEN 100 AND 599),
            response {blob} NOT NULL,
            content_type TEXT NOT NULL,
            headers TEXT NOT NULL,
            created_at {bigint} NOT NULL,
            PRIMARY KEY (client_id, key)
        )""",
        "CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)",
        # Fixed one-minute windows; window_start is in epoch milliseconds.
        f"""CREATE TABLE rate_buckets (
            client_id TEXT NOT NULL,
            scope TEXT NOT NULL,
            window_start {bigint} NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (client_id, scope, window_start)
        )""",
        "CREATE INDEX rate_buckets_window ON rate_buckets (window_start)",
    ]


async def forwards() -> MigrationManager:
    return raw_sql_migration(
        migration_id=ID,
        app_name="api",
        description=DESCRIPTION,
        sqlite=_statements(blob="BLOB", bigint="INTEGER"),
        postgres=_statements(blob="BYTEA", bigint="BIGINT"),
    )
