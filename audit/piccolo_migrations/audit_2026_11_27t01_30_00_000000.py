"""audit 0003: subtree hashes keyed by their position in append order.

``audit_nodes`` was keyed by ``(level, idx)``: an append of a batch of leaves
completes nodes on every level up to the tree's height, and each level's newest
nodes sit on a page of their own, so a batch rewrote ~13 pages of the table (on
SQLite, 4 KiB each into the WAL before the COMMIT's fsync, while the write lock is
held). Keyed by ``merkle.Node.position`` (post-order, the order appends create
nodes), the nodes of a batch are adjacent and go onto one or two pages.

The position is computed here in SQL from ``level`` and ``idx``, which stay as
columns: with ``end = (idx + 1) << level``, ``position = 2 * end - popcount(end) -
trailing_zeros(end) + level - 1``, where ``trailing_zeros(x) = popcount((x & -x) -
1)`` and ``popcount`` is the sum of the 63 value bits (both engines, no extension).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from vault.migrate_sql import raw_sql_migration

ID = "2026-11-27T01:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "audit nodes keyed by position"


def _popcount(value: str) -> str:
    return "(" + " + ".join(f"(({value} >> {bit}) & 1)" for bit in range(63)) + ")"


_POSITION = f"2 * e - {_popcount('e')} - {_popcount('((e & -e) - 1)')} + level - 1"
_COPY = (
    "INSERT INTO audit_nodes_by_position (pos, level, idx, hash)"
    f" SELECT {_POSITION}, level, idx, hash"
    " FROM (SELECT level, idx, hash, ((idx + 1) << level) AS e FROM audit_nodes) AS n"
    " ORDER BY 1"
)

SQLITE = [
    """CREATE TABLE audit_nodes_by_position (
        pos INTEGER PRIMARY KEY,
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL
    )""",
    _COPY,
    "DROP TABLE audit_nodes",
    "ALTER TABLE audit_nodes_by_position RENAME TO audit_nodes",
]

POSTGRES = [
    """CREATE TABLE audit_nodes_by_position (
        pos BIGINT NOT NULL,
        level INTEGER NOT NULL,
        idx BIGINT NOT NULL,
        hash BYTEA NOT NULL,
        CONSTRAINT audit_nodes_by_position_pkey PRIMARY KEY (pos)
    )""",
    _COPY,
    "DROP TABLE audit_nodes",
    "ALTER TABLE audit_nodes_by_position RENAME TO audit_nodes",
    "ALTER INDEX audit_nodes_by_position_pkey RENAME TO audit_nodes_pkey",
]


async def forwards() -> MigrationManager:
    return raw_sql_migration(
        migration_id=ID, app_name="audit", description=DESCRIPTION, sqlite=SQLITE, postgres=POSTGRES
    )
