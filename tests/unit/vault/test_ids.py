"""Ids: ``prefix_`` + 26 lowercase base32 characters, 130 random bits."""

from __future__ import annotations

import re
from collections import Counter

from api.middleware import new_request_id
from audit.models import is_token
from vault.models import new_id, random_base32

ID = re.compile(r"[a-z]+_[a-z2-7]{26}")


def test_ids_have_the_documented_shape_and_are_valid_in_audit_entries() -> None:
    for prefix in ("cit", "dek", "rec", "cns", "sug"):
        value = new_id(prefix)
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
