"""The reference reading of a time-ordered id (``vault.models.new_ordered_id``),
written apart from the code it checks."""

from __future__ import annotations

#: The base32 alphabet in byte order.
SORTED_BASE32 = "234567abcdefghijklmnopqrstuvwxyz"


def ordered_head(value: str) -> str:
    """The 10 characters after ``prefix_``: the millisecond of an ordered id."""
    return value.split("_", 1)[1][:10]


def ordered_ms(value: str) -> int:
    """The millisecond an ordered id spells: its head as a base-32 number over the
    alphabet in byte order."""
    ms = 0
    for char in ordered_head(value):
        ms = ms * 32 + SORTED_BASE32.index(char)
    return ms
