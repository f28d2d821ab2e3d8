"""Ids: ``prefix_`` + 26 lowercase base32 characters: 130 random bits, or (DEKs) the
millisecond then 80 random bits."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.middleware import new_request_id
from audit.models import is_token
from tests.helpers.ids import SORTED_BASE32, ordered_ms
from vault.models import new_id, new_ordered_id, random_base32

ID = re.compile(r"[a-z]+_[a-z2-7]{26}")


def test_ids_have_the_documented_shape_and_are_valid_in_audit_entries() -> None:
    for prefix in ("cit", "dek", "rec", "cns", "sug"):
        for value in (new_id(prefix), new_ordered_id(prefix, time.time_ns() // 1_000_000)):
            assert ID.fullmatch(value), value
            assert value.startswith(prefix + "_") and len(value) == len(prefix) + 27
            assert is_token(value)
    assert ID.fullmatch(new_request_id())
    assert new_request_id().startswith("req_")


def test_every_character_is_uniform_over_the_alphabet() -> None:
    """32 symbols, 5 bits each: over 8,000 ids (208,000 characters) each symbol appears
    6,500 times on average; a biased mapping (e.g. a byte modulo a non-power of two)
    would move some by far more than the ±5 % allowed here (about 8 standard
    deviations)."""
    counts = Counter("".join(random_base32() for _ in range(8000)))
    assert set(counts) == set("abcdefghijklmnopqrstuvwxyz234567")
    assert all(abs(n - 6500) < 325 for n in counts.values()), counts


def test_ids_do_not_repeat() -> None:
    assert len({new_id("rec") for _ in range(50_000)}) == 50_000


# -- time-ordered ids (DEKs) ------------------------------------------


def test_ordered_ids_have_the_id_shape_and_carry_the_millisecond() -> None:
    now = time.time_ns() // 1_000_000
    value = new_ordered_id("dek", now)
    assert ID.fullmatch(value), value
    assert len(value) == len("dek_") + 26
    assert is_token(value)
    assert ordered_ms(value) == now
    assert ordered_ms(new_ordered_id("dek", 0)) == 0
    assert new_ordered_id("dek", 0).startswith("dek_2222222222")
    assert ordered_ms(new_ordered_id("dek", (1 << 50) - 1)) == (1 << 50) - 1


@given(
    st.integers(min_value=0, max_value=(1 << 50) - 1),
    st.integers(min_value=0, max_value=(1 << 50) - 1),
)
def test_ordered_ids_sort_as_their_times(a: int, b: int) -> None:
    """Byte order of the ids (SQLite's TEXT order, PostgreSQL's with COLLATE "C") is
    time order; equal milliseconds order by the random part."""
    first, second = new_ordered_id("rec", a), new_ordered_id("rec", b)
    assert ordered_ms(first) == a and ordered_ms(second) == b
    if a < b:
        assert first.encode() < second.encode()
    elif a > b:
        assert first.encode() > second.encode()


def test_ordered_ids_outside_50_bits_of_milliseconds_are_refused() -> None:
    for bad in (-1, 1 << 50, 1.0, True, "1"):
        with pytest.raises(ValueError, match="out of range"):
            new_ordered_id("dek", bad)  # type: ignore[arg-type]


def test_ordered_ids_keep_80_random_bits_within_a_millisecond() -> None:
    values = [new_ordered_id("rec", 1_800_000_000_000) for _ in range(20_000)]
    assert len(set(values)) == 20_000
    assert len({value[:14] for value in values}) == 1  # one millisecond, one head
    counts = Counter("".join(value[14:] for value in values))  # 320,000 characters
    assert set(counts) == set(SORTED_BASE32)
    assert all(abs(n - 10_000) < 500 for n in counts.values()), counts
