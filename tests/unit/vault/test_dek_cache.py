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
    cache.put("dek_a", 2, b"n" * 32)  # the rewrapped key replaces the old one
    assert cache.get("dek_a", 1) is None
    assert cache.get("dek_a", 2) == b"n" * 32
    clock.advance(seconds=61)
    assert cache.get("dek_a", 2) is None  # expired
    assert (cache.hits, cache.misses) == (2, 3)


def test_expired_keys_leave_memory_without_being_asked_for() -> None:
    clock = ManualClock()
    cache = DekCache(clock=clock, ttl_seconds=60)
    for n in range(100):
        cache.put(f"dek_{n}", 1, bytes(32))
    clock.advance(seconds=61)
    cache.put("dek_new", 1, bytes(32))  # any use sweeps the expired ones
    assert list(cache._entries) == ["dek_new"]
    clock.advance(seconds=30)
    assert cache.get("dek_new", 1) is not None


def test_bounded_and_off() -> None:
    clock = ManualClock()
    cache = DekCache(clock=clock, ttl_seconds=60, max_entries=3)
    for n in range(5):
        cache.put(f"dek_{n}", 1, bytes(32))
    assert list(cache._entries) == ["dek_2", "dek_3", "dek_4"]
    off = DekCache(clock=clock, ttl_seconds=0)
    off.put("dek_a", 1, bytes(32))
    assert off.get("dek_a", 1) is None and not off._entries


def test_least_recently_used_goes_first_and_forget_drops_by_id() -> None:
    clock = ManualClock()
    cache = DekCache(clock=clock, ttl_seconds=60, max_entries=2)
    cache.put("dek_a", 1, b"a" * 32)
    cache.put("dek_b", 1, b"b" * 32)
    assert cache.get("dek_a", 1) == b"a" * 32  # a is now the most recent
    cache.put("dek_c", 7, b"c" * 32)
    assert list(cache._entries) == ["dek_a", "dek_c"]
    cache.forget(["dek_a", "dek_unknown"])
    assert cache.get("dek_a", 1) is None
    assert cache.get("dek_c", 7) == b"c" * 32


def test_a_key_expires_exactly_at_its_ttl_between_sweeps() -> None:
    """``get`` refuses an expired key itself, not only the once-per-TTL sweep: the
    key is put 30 s after the last sweep, so it expires half a TTL before the next."""
    clock = ManualClock()
    cache = DekCache(clock=clock, ttl_seconds=60)
    cache.put("dek_z", 1, bytes(32))  # sweeps now; the next sweep is due in 60 s
    clock.advance(seconds=30)
    cache.put("dek_a", 3, b"k" * 32)
    clock.advance(ms=59_999)
    assert cache.get("dek_a", 3) == b"k" * 32
    clock.advance(ms=1)
    assert cache.get("dek_a", 3) is None
    assert "dek_a" not in cache._entries
