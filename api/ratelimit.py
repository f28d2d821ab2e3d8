"""Per-client rate limiting shared by every worker process (DESIGN sections 4 and 11).

A fixed one-minute window counter per (client, scope), kept in ``rate_buckets``:
never in process memory, so several workers count together. Each hit is one atomic
upsert (``INSERT ... ON CONFLICT ... DO UPDATE SET count = count + 1 RETURNING
count``):

- PostgreSQL: the statement runs on its own (autocommit), which is its own
  transaction: one round trip per hit.
- SQLite: inside :meth:`Database.transaction` (``BEGIN IMMEDIATE``), the repository's
  write discipline; there is no network, so the extra statements cost little.

``per_minute`` is ``ONCEVAULT_RATE_LIMIT_PER_MINUTE`` (0 = off: no database access at
all). A refused hit still counts, which changes nothing: the window is refused either
way until it ends. ``retry_after`` is the whole seconds to the start of the next
window, between 1 and 60.

Old windows are deleted opportunistically and in bounded batches: only by the first
hit of a window for a (client, scope) (count == 1), so the common case stays a single
statement, and at most :data:`PURGE_BATCH` rows per purge. Windows before the previous
one go (the previous one stays for a worker whose clock lags a little), so the table
holds about two rows per active (client, scope).

Inside a run of consented reads in one group-committed batch (an
:class:`audit.log.SharedScope` is current), the first hit of a bucket is the upsert,
which locks its row until COMMIT; the run's further hits of that bucket are counted
in memory on top of it and written by one ``UPDATE`` before the batch's append. The
decisions are the ones the upserts would have given.
"""

from __future__ import annotations

from dataclasses import dataclass

from api.repository import RateBucketRepository
from audit.log import SharedScope, shared_scope
from vault.clock import Clock
from vault.storage import Database

WINDOW_MS = 60_000

#: At most this many stale buckets are deleted by one purge.
PURGE_BATCH = 500


@dataclass(frozen=True)
class RateDecision:
    """``allowed``, or refused with ``retry_after`` seconds (1..60; 0 when allowed)."""

    allowed: bool
    retry_after: int


_ALLOWED = RateDecision(allowed=True, retry_after=0)


class RateLimiter:
    def __init__(self, database: Database, clock: Clock, per_minute: int) -> None:
        if per_minute < 0:
            raise ValueError("per_minute must be 0 (off) or positive")
        self.db = database
        self.clock = clock
        self.per_minute = per_minute
        self.buckets = RateBucketRepository(database)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    async def hit(self, client_id: str, scope: str) -> RateDecision:
        """Count one request of ``client_id`` in ``scope``; refuse past the limit.

        On SQLite the count and the sweep share one transaction; on PostgreSQL each
        statement is atomic by itself.
        """
        if not self.enabled:
            return _ALLOWED
        if self.db.dialect == "sqlite":
            async with self.db.transaction():
                return await self.hit_here(client_id, scope)
        return await self.hit_here(client_id, scope)

    async def hit_here(self, client_id: str, scope: str) -> RateDecision:
        """:meth:`hit` inside the caller's open transaction (a read's group-committed
        unit): the counter costs no transaction or COMMIT of its own."""
        if not self.enabled:
            return _ALLOWED
        now = self.clock.now_ms()
        window_start = now - now % WINDOW_MS
        shared = shared_scope()
        if shared is None:
            count = await self._count(client_id, scope, window_start)
        else:
            count = await self._count_shared(shared, client_id, scope, window_start)
        if count <= self.per_minute:
            return _ALLOWED
        remaining_ms = window_start + WINDOW_MS - now
        return RateDecision(allowed=False, retry_after=min(60, max(1, -(-remaining_ms // 1000))))

    async def _count_shared(
        self, shared: SharedScope, client_id: str, scope: str, window_start: int
    ) -> int:
        """:meth:`_count` in a run of reads: the bucket's first hit is the upsert (its
        row stays locked), the others are added in memory and written at the end."""
        buckets: dict[tuple[str, str, int], list[int]] | None = shared.values.get(self)
        if buckets is None:
            buckets = shared.values[self] = {}

            async def write() -> None:
                for (client, name, start), (_, pending) in buckets.items():
                    if pending:
                        await self.buckets.add(client, name, start, pending)

            shared.defer(write)
        key = (client_id, scope, window_start)
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = [await self._count(client_id, scope, window_start), 0]
            return buckets[key][0]
        bucket[0] += 1
        bucket[1] += 1
        return bucket[0]

    async def _count(self, client_id: str, scope: str, window_start: int) -> int:
        count = await self.buckets.increment(client_id, scope, window_start)
        if count == 1:
            # First hit of this window for this bucket: sweep buckets of windows before
            # the previous one (the previous window is kept for workers whose clocks lag).
            await self.buckets.purge_before(window_start - WINDOW_MS, limit=PURGE_BATCH)
        return count
