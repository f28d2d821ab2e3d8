"""Piccolo tables of the api package (storage shape only; the migration is the schema).

Both tables hold request-handling state that every worker process must share
(DESIGN section 4: rate-limit buckets are never cached per process). Only
:mod:`api.repository` reads or writes them, with raw SQL.
"""

from __future__ import annotations

from piccolo.columns import BigInt, Bytea, Integer, Text
from piccolo.table import Table


class IdempotencyKeyRow(Table, tablename="idempotency_keys"):
    """The real key is (client_id, key); Piccolo needs one pk column."""

    client_id = Text(primary_key=True)
    key = Text()
    method_path = Text()
    body_digest = Bytea()
    status = Integer()
    response = Bytea()
    content_type = Text()
    headers = Text()
    created_at = BigInt()


class RateBucketRow(Table, tablename="rate_buckets"):
    """The real key is (client_id, scope, window_start); Piccolo needs one pk column."""

    client_id = Text(primary_key=True)
    scope = Text()
    window_start = BigInt()
    # ``count`` would shadow Table.count(); the column keeps its name in the database.
    hits = Integer(db_column_name="count")


TABLES: tuple[type[Table], ...] = (IdempotencyKeyRow, RateBucketRow)
