"""vault 0002: citizens, blind indexes, platform secrets, signing keys, DEKs, records."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from vault.migrate_sql import raw_sql_migration

ID = "2026-11-26T05:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "encrypted per-citizen store"


def _statements(*, blob: str, bigint: str) -> list[str]:
    return [
        f"""CREATE TABLE citizens (
            citizen_id TEXT PRIMARY KEY,
            created_at {bigint} NOT NULL
        )""",
        f"""CREATE TABLE citizen_index (
            blind_index {blob} PRIMARY KEY,
            citizen_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('nid', 'ci'))
        )""",
        "CREATE INDEX citizen_index_citizen ON citizen_index (citizen_id)",
        f"""CREATE TABLE platform_secrets (
            name TEXT PRIMARY KEY,
            wrapped TEXT NOT NULL,
            kek_version INTEGER NOT NULL,
            generation INTEGER NOT NULL,
            created_at {bigint} NOT NULL
        )""",
        f"""CREATE TABLE signing_keys (
            kid TEXT PRIMARY KEY,
            use TEXT NOT NULL CHECK (use IN ('at', 'rc', 'cp')),
            wrapped TEXT NOT NULL,
            public_jwk TEXT NOT NULL,
            kek_version INTEGER NOT NULL,
            generation INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('current', 'retired')),
            created_at {bigint} NOT NULL,
            retired_at {bigint}
        )""",
        "CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (use)"
        " WHERE status = 'current'",
        f"""CREATE TABLE deks (
            dek_id TEXT PRIMARY KEY,
            citizen_id TEXT NOT NULL,
            record_type TEXT NOT NULL,
            dek_version INTEGER NOT NULL,
            wrapped TEXT NOT NULL,
            kek_version INTEGER NOT NULL,
            generation INTEGER NOT NULL,
            created_at {bigint} NOT NULL,
            UNIQUE (citizen_id, record_type, dek_version)
        )""",
        "CREATE INDEX deks_kek_version ON deks (kek_version)",
        f"""CREATE TABLE records (
            record_id TEXT PRIMARY KEY,
            citizen_id TEXT NOT NULL,
            record_type TEXT NOT NULL,
            version INTEGER NOT NULL,
            dek_id TEXT NOT NULL,
            ciphertext {blob} NOT NULL,
            content_digest {blob} NOT NULL,
            source TEXT NOT NULL,
            attested INTEGER NOT NULL,
            created_at {bigint} NOT NULL,
            superseded_at {bigint},
            UNIQUE (citizen_id, record_type, version)
        )""",
        # At most one latest version per (citizen, type), whatever the races.
        "CREATE UNIQUE INDEX records_latest ON records (citizen_id, record_type)"
        " WHERE superseded_at IS NULL",
    ]


async def forwards() -> MigrationManager:
    return raw_sql_migration(
        migration_id=ID,
        app_name="vault",
        description=DESCRIPTION,
        sqlite=_statements(blob="BLOB", bigint="INTEGER"),
        postgres=_statements(blob="BYTEA", bigint="BIGINT"),
    )
