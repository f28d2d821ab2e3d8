"""The in-memory DEK cache: keyed by (dek id, generation), bounded, and no unwrapped
key stays in memory much past its TTL."""

from __future__ import annotations

from vault.clock import ManualClock
from vault.service import DekCache


def test_hits_misses_and_generation() -> None:
    clock = ManualClock()
    cache = DekCache(clock=clock, ttl_seconds=60)
    cache.put("dek_a", 1, b"k" * 32)
    assert cache.get("dek_a", 1) == b"k" * 32
    assert cache.get("dek_a", 2) is None  # a rewrapped row is another key
    clock.advance(seconds=61)
    assert cache.get("dek_a", 1) is None
    assert (cache.hits, cache.misses) == (1, 2)


def test_expired_keys_leave_memory_without_being_asked_for() -> None:
    clock = ManualClock()
    cache = DekCache(clock=clock, ttl_seconds=60)
    for n in range(100):
        cache.put(f"dek_{n}", 1, bytes(32))
    clock.advance(seconds=61)
    cache.put("dek_new", 1, bytes(32))  # any use sweeps the expired ones
    assert list(cache._entries) == [("dek_new", 1)]
    clock.advance(seconds=30)
    assert cache.get("dek_new", 1) is not None


def test_bounded_and_off() -> None:
    clock = ManualClock()
    cache = DekCache(clock=clock, ttl_seconds=60, max_entries=3)
    for n in range(5):
        cache.put(f"dek_{n}", 1, bytes(32))
    assert [k for k, _ in cache._entries] == ["dek_2", "dek_3", "dek_4"]
    off = DekCache(clock=clock, ttl_seconds=0)
    off.put("dek_a", 1, bytes(32))
    assert off.get("dek_a", 1) is None and not off._entries
