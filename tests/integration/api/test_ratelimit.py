"""The database-backed rate limiter, on both engines (DESIGN sections 4, 10 and 11)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from api.ratelimit import WINDOW_MS, RateDecision, RateLimiter
from vault.clock import ManualClock
from vault.storage import Database


@pytest.fixture
def clock() -> ManualClock:
    """A clock 15.5 s into a one-minute window."""
    start = 1_780_000_000_000
    return ManualClock(start - start % WINDOW_MS + 15_500)


@pytest.fixture
async def other(database: Database) -> AsyncIterator[Database]:
    """A second worker's handle on the same database."""
    twin = database.clone()
    await twin.start()
    try:
        yield twin
    finally:
        await twin.close()


async def _buckets(database: Database) -> list[dict[str, object]]:
    return await database.fetch(
        "SELECT client_id, scope, window_start, count FROM rate_buckets"
        " ORDER BY client_id, scope, window_start"
    )


async def test_allows_per_minute_then_refuses_with_retry_after(
    database: Database, clock: ManualClock
) -> None:
    limiter = RateLimiter(database, clock, per_minute=5)
    for _ in range(5):
        assert await limiter.hit("kbank", "api") == RateDecision(allowed=True, retry_after=0)
    refused = await limiter.hit("kbank", "api")
    assert not refused.allowed
    assert refused.retry_after == 45  # 44.5 s to the next window, rounded up
    clock.advance(seconds=44)
    late = await limiter.hit("kbank", "api")
    assert not late.allowed
    assert late.retry_after == 1  # 0.5 s left: never 0


async def test_retry_after_stays_within_1_to_60(database: Database, clock: ManualClock) -> None:
    limiter = RateLimiter(database, clock, per_minute=1)
    clock.advance(ms=-15_500)  # exactly at a window start
    assert (await limiter.hit("c", "s")).allowed
    first = await limiter.hit("c", "s")
    assert first.retry_after == 60
    clock.advance(ms=WINDOW_MS - 1)  # the last millisecond of the window
    last = await limiter.hit("c", "s")
    assert not last.allowed
    assert last.retry_after == 1


async def test_resets_in_the_next_window(database: Database, clock: ManualClock) -> None:
    limiter = RateLimiter(database, clock, per_minute=3)
    for _ in range(3):
        assert (await limiter.hit("kbank", "api")).allowed
    assert not (await limiter.hit("kbank", "api")).allowed
    clock.advance(seconds=45)  # 0.5 s into the next window
    for _ in range(3):
        assert (await limiter.hit("kbank", "api")).allowed
    assert not (await limiter.hit("kbank", "api")).allowed


async def test_buckets_are_per_client_and_per_scope(database: Database, clock: ManualClock) -> None:
    limiter = RateLimiter(database, clock, per_minute=2)
    for _ in range(2):
        assert (await limiter.hit("kbank", "api")).allowed
    assert not (await limiter.hit("kbank", "api")).allowed
    # Another client, and another scope of the same client, have buckets of their own.
    assert (await limiter.hit("hana", "api")).allowed
    assert (await limiter.hit("kbank", "token")).allowed
    assert (await limiter.hit("kbank", "token")).allowed
    assert not (await limiter.hit("kbank", "token")).allowed
    assert (await limiter.hit("hana", "api")).allowed
    assert not (await limiter.hit("hana", "api")).allowed


async def test_shared_between_workers(
    database: Database, other: Database, clock: ManualClock
) -> None:
    """Two limiters on two database handles (two worker processes) count together."""
    first = RateLimiter(database, clock, per_minute=4)
    second = RateLimiter(other, clock, per_minute=4)
    assert (await first.hit("kbank", "api")).allowed
    assert (await second.hit("kbank", "api")).allowed
    assert (await first.hit("kbank", "api")).allowed
    assert (await second.hit("kbank", "api")).allowed
    assert not (await first.hit("kbank", "api")).allowed
    assert not (await second.hit("kbank", "api")).allowed


async def test_concurrent_hits_never_exceed_the_limit(
    database: Database, other: Database, clock: ManualClock
) -> None:
    limiters = [RateLimiter(database, clock, per_minute=15), RateLimiter(other, clock, 15)]
    decisions = await asyncio.gather(*(limiters[i % 2].hit("kbank", "api") for i in range(40)))
    assert sum(d.allowed for d in decisions) == 15
    assert all(d.retry_after == 45 for d in decisions if not d.allowed)
    [bucket] = await _buckets(database)
    assert bucket["count"] == 40


async def test_disabled_at_zero(database: Database, clock: ManualClock) -> None:
    limiter = RateLimiter(database, clock, per_minute=0)
    assert not limiter.enabled
    for _ in range(50):
        assert await limiter.hit("kbank", "api") == RateDecision(allowed=True, retry_after=0)
    assert await _buckets(database) == []  # not even counted


async def test_negative_limit_is_refused(database: Database, clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="per_minute"):
        RateLimiter(database, clock, per_minute=-1)


async def test_old_windows_are_deleted(database: Database, clock: ManualClock) -> None:
    limiter = RateLimiter(database, clock, per_minute=10)
    await limiter.hit("kbank", "api")
    await limiter.hit("hana", "api")
    clock.advance(ms=WINDOW_MS)
    await limiter.hit("kbank", "api")
    # The previous window is kept (a worker whose clock lags may still count in it).
    assert len(await _buckets(database)) == 3
    clock.advance(ms=WINDOW_MS)
    await limiter.hit("kbank", "api")
    rows = await _buckets(database)
    now = clock.now_ms()
    current = now - now % WINDOW_MS
    assert {(r["client_id"], r["window_start"]) for r in rows} == {
        ("kbank", current - WINDOW_MS),
        ("kbank", current),
    }
    # Within a window, hits after the first are one upsert each: nothing is purged.
    await database.execute(
        "INSERT INTO rate_buckets (client_id, scope, window_start, count) VALUES ($1, $2, $3, $4)",
        "stale",
        "api",
        current - 10 * WINDOW_MS,
        1,
    )
    await limiter.hit("kbank", "api")
    assert len(await _buckets(database)) == 3
