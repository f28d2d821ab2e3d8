"""Storage of idempotency keys and rate-limit buckets (raw SQL, both engines).

The only module that touches ``idempotency_keys`` and ``rate_buckets``. Methods run
single statements on the caller's transaction when there is one; the callers
(:mod:`api.idempotency`, :mod:`api.ratelimit`) decide the transaction boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vault.errors import StorageError
from vault.storage import Database

_IDEMPOTENCY_COLUMNS = (
    "client_id, key, method_path, body_digest, status, response, content_type, headers, created_at"
)


def _skip_locked(database: Database) -> str:
    """Purges on PostgreSQL skip rows another purge holds: never wait, never deadlock."""
    return " FOR UPDATE SKIP LOCKED" if database.dialect == "postgres" else ""


@dataclass(frozen=True)
class IdempotencyRow:
    """One stored row. ``status == 0``: in progress, ``response`` is the claim token."""

    client_id: str
    key: str
    method_path: str
    body_digest: bytes
    status: int
    response: bytes
    content_type: str
    headers: str
    created_at: int


def _row(row: dict[str, Any]) -> IdempotencyRow:
    return IdempotencyRow(
        client_id=str(row["client_id"]),
        key=str(row["key"]),
        method_path=str(row["method_path"]),
        body_digest=bytes(row["body_digest"]),
        status=int(row["status"]),
        response=bytes(row["response"]),
        content_type=str(row["content_type"]),
        headers=str(row["headers"]),
        created_at=int(row["created_at"]),
    )


class IdempotencyRepository:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def get(self, client_id: str, key: str) -> IdempotencyRow | None:
        row = await self.db.fetchrow(
            f"SELECT {_IDEMPOTENCY_COLUMNS} FROM idempotency_keys"
            " WHERE client_id = $1 AND key = $2",
            client_id,
            key,
        )
        return _row(row) if row else None

    async def insert(self, row: IdempotencyRow) -> bool:
        """Insert unless the key exists; True when this row is now the stored one."""
        rows = await self.db.fetch(
            f"INSERT INTO idempotency_keys ({_IDEMPOTENCY_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (client_id, key) DO NOTHING RETURNING key",
            row.client_id,
            row.key,
            row.method_path,
            row.body_digest,
            row.status,
            row.response,
            row.content_type,
            row.headers,
            row.created_at,
        )
        return bool(rows)

    async def replace(self, row: IdempotencyRow, *, expected: IdempotencyRow) -> bool:
        """Overwrite ``expected`` with ``row`` if it is still exactly what is stored.

        A compare-and-set on (status, response, created_at): False when another worker
        changed or removed the row first.
        """
        rows = await self.db.fetch(
            "UPDATE idempotency_keys SET method_path = $3, body_digest = $4, status = $5,"
            " response = $6, content_type = $7, headers = $8, created_at = $9"
            " WHERE client_id = $1 AND key = $2"
            " AND status = $10 AND response = $11 AND created_at = $12"
            " RETURNING key",
            row.client_id,
            row.key,
            row.method_path,
            row.body_digest,
            row.status,
            row.response,
            row.content_type,
            row.headers,
            row.created_at,
            expected.status,
            expected.response,
            expected.created_at,
        )
        return bool(rows)

    async def complete(
        self,
        client_id: str,
        key: str,
        token: bytes,
        *,
        status: int,
        response: bytes,
        content_type: str,
        headers: str,
    ) -> bool:
        """Turn our in-progress claim into the stored response; False if it is not ours."""
        rows = await self.db.fetch(
            "UPDATE idempotency_keys SET status = $4, response = $5, content_type = $6,"
            " headers = $7 WHERE client_id = $1 AND key = $2 AND status = 0 AND response = $3"
            " RETURNING key",
            client_id,
            key,
            token,
            status,
            response,
            content_type,
            headers,
        )
        return bool(rows)

    async def release(self, client_id: str, key: str, token: bytes) -> None:
        """Delete our in-progress claim (and nothing else)."""
        await self.db.execute(
            "DELETE FROM idempotency_keys"
            " WHERE client_id = $1 AND key = $2 AND status = 0 AND response = $3",
            client_id,
            key,
            token,
        )

    async def purge_created_before(self, before: int, *, limit: int) -> None:
        """Delete at most ``limit`` rows created before ``before`` (expired keys)."""
        await self.db.execute(
            "DELETE FROM idempotency_keys WHERE (client_id, key) IN"
            " (SELECT client_id, key FROM idempotency_keys WHERE created_at < $1"
            f" LIMIT $2{_skip_locked(self.db)})",
            before,
            limit,
        )


class RateBucketRepository:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def increment(self, client_id: str, scope: str, window_start: int) -> int:
        """Count one hit in the window, atomically; the window's count after it."""
        row = await self.db.fetchrow(
            "INSERT INTO rate_buckets (client_id, scope, window_start, count)"
            " VALUES ($1, $2, $3, 1)"
            " ON CONFLICT (client_id, scope, window_start)"
            " DO UPDATE SET count = rate_buckets.count + 1 RETURNING count",
            client_id,
            scope,
            window_start,
        )
        assert row is not None
        return int(row["count"])

    async def add(self, client_id: str, scope: str, window_start: int, hits: int) -> None:
        """Add ``hits`` to a bucket that exists (its first hit was :meth:`increment`,
        whose row lock the caller still holds); a missing bucket is a StorageError."""
        rows = await self.db.fetch(
            "UPDATE rate_buckets SET count = count + $4"
            " WHERE client_id = $1 AND scope = $2 AND window_start = $3 RETURNING count",
            client_id,
            scope,
            window_start,
            hits,
        )
        if not rows:
            raise StorageError("a rate-limit bucket vanished before its hits were counted")

    async def purge_before(self, window_start: int, *, limit: int) -> None:
        """Delete at most ``limit`` buckets of windows that started before ``window_start``."""
        await self.db.execute(
            "DELETE FROM rate_buckets WHERE (client_id, scope, window_start) IN"
            " (SELECT client_id, scope, window_start FROM rate_buckets"
            f" WHERE window_start < $1 LIMIT $2{_skip_locked(self.db)})",
            window_start,
            limit,
        )
