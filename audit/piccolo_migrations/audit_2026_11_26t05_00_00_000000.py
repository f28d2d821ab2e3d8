"""audit 0001: entries (leaf bytes verbatim), complete-subtree hashes, tree state, checkpoints."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from vault.migrate_sql import raw_sql_migration

ID = "2026-11-26T05:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "audit log"

EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

_INDEXES = [
    "CREATE INDEX audit_entries_citizen ON audit_entries (citizen_id, seq) "
    "WHERE citizen_id IS NOT NULL",
    "CREATE INDEX audit_entries_client ON audit_entries (client_id, seq) "
    "WHERE client_id IS NOT NULL",
    "CREATE INDEX audit_entries_action ON audit_entries (action, seq)",
]

SQLITE = [
    """CREATE TABLE audit_entries (
        seq INTEGER PRIMARY KEY,
        leaf BLOB NOT NULL,
        leaf_hash BLOB NOT NULL,
        ts INTEGER NOT NULL,
        action TEXT NOT NULL,
        actor_type TEXT NOT NULL,
        actor_id TEXT,
        citizen_id TEXT,
        client_id TEXT,
        consent_id TEXT,
        outcome TEXT NOT NULL,
        request_id TEXT
    )""",
    *_INDEXES,
    """CREATE TABLE audit_nodes (
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID""",
    """CREATE TABLE audit_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        size INTEGER NOT NULL,
        root_hash BLOB NOT NULL
    )""",
    f"INSERT INTO audit_state (id, size, root_hash) VALUES (1, 0, x'{EMPTY_ROOT}')",
    """CREATE TABLE audit_checkpoints (
        tree_size INTEGER PRIMARY KEY,
        root_hash BLOB NOT NULL,
        ts INTEGER NOT NULL,
        jws TEXT NOT NULL
    )""",
]

POSTGRES = [
    """CREATE TABLE audit_entries (
        seq BIGINT PRIMARY KEY,
        leaf BYTEA NOT NULL,
        leaf_hash BYTEA NOT NULL,
        ts BIGINT NOT NULL,
        action TEXT NOT NULL,
        actor_type TEXT NOT NULL,
        actor_id TEXT,
        citizen_id TEXT,
        client_id TEXT,
        consent_id TEXT,
        outcome TEXT NOT NULL,
        request_id TEXT
    )""",
    *_INDEXES,
    """CREATE TABLE audit_nodes (
        level INTEGER NOT NULL,
        idx BIGINT NOT NULL,
        hash BYTEA NOT NULL,
        PRIMARY KEY (level, idx)
    )""",
    """CREATE TABLE audit_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        size BIGINT NOT NULL,
        root_hash BYTEA NOT NULL
    )""",
    f"INSERT INTO audit_state (id, size, root_hash) VALUES (1, 0, decode('{EMPTY_ROOT}', 'hex'))",
    """CREATE TABLE audit_checkpoints (
        tree_size BIGINT PRIMARY KEY,
        root_hash BYTEA NOT NULL,
        ts BIGINT NOT NULL,
        jws TEXT NOT NULL
    )""",
]


async def forwards() -> MigrationManager:
    return raw_sql_migration(
        migration_id=ID, app_name="audit", description=DESCRIPTION, sqlite=SQLITE, postgres=POSTGRES
    )
