"""Piccolo tables of the vault: storage shape only, no behaviour.

The schema itself is created by the raw-SQL migrations in ``piccolo_migrations/``
(one statement list per engine, so constraints and indexes are exact); these classes
mirror it for Piccolo queries, and ``tests/integration/test_migrations.py`` checks
that the two agree on both engines.
"""

from __future__ import annotations

from piccolo.columns import Text
from piccolo.table import Table


class InstanceMeta(Table, tablename="oncevault_meta"):
    """Facts about this installation (``instance_id``, ``initialised_at``, ...)."""

    key = Text(primary_key=True)
    value = Text()


TABLES: tuple[type[Table], ...] = (InstanceMeta,)
