"""Leaf bytes are the contract's encoding, byte for byte.

DESIGN section 7: a leaf is ``json.dumps(entry, sort_keys=True, separators=(",", ":"))``
of the entry, ASCII. `audit.models.leaf_bytes` encodes with msgspec (sorted keys),
which is only equal to that on valid entries (tokens, small non-negative integers,
null, lists, objects): every valid entry Hypothesis finds must encode the same as the
json module does, and every invalid one must be refused before it is encoded.
"""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given

from audit.models import (
    EntryDraft,
    InvalidEntry,
    Item,
    leaf_bytes,
)
from tests.helpers.entries import drafts, versions


def reference(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


@given(draft=drafts(), seq=versions, ts=versions)
def test_a_valid_entry_encodes_as_the_json_module_does(
    draft: EntryDraft, seq: int, ts: int
) -> None:
    entry = draft.to_entry(seq=seq, ts=ts)
    assert leaf_bytes(entry) == reference(entry)
    assert leaf_bytes(entry, validated=True) == reference(entry)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("citizen_id", "é"),  # the json module would write \u00e9, msgspec the UTF-8 bytes
        ("purpose", 'a"b'),
        ("request_id", "a\\b"),
        ("client_id", "line\n"),
        ("record_version", 2**53),
        ("record_version", 1.5),
        ("seq", -1),
        ("items", ()),  # only data.read entries list items (bytes: the test below)
    ],
)
def test_a_value_that_would_encode_differently_is_refused(field: str, value: object) -> None:
    entry = EntryDraft(action="record.put", actor_type="client", actor_id="nts").to_entry(
        seq=0, ts=0
    )
    entry[field] = value
    with pytest.raises(InvalidEntry):
        leaf_bytes(entry)


class Name(str):
    """A str subclass msgspec does not encode (an enum it would)."""


class Count(int):
    pass


def test_str_and_int_subclasses_encode_as_the_json_module_does() -> None:
    entry = EntryDraft(
        action="data.read",
        actor_type="client",
        actor_id=Name("kbank"),
        record_version=Count(3),
        items=(Item(Name("income_certificate"), Count(2), (Name("year"),)),),
    ).to_entry(seq=Count(7), ts=0)
    assert leaf_bytes(entry) == reference(entry)


def test_items_of_a_read_must_be_lists_of_objects() -> None:
    entry = EntryDraft(action="data.read", actor_type="client", actor_id="kbank").to_entry(
        seq=0, ts=0
    )
    proxy = MappingProxyType({"type": "t", "version": 1, "fields": ["year"]})
    for items in (b"", "ab", [b""], [{"type": "t", "version": 1, "fields": b""}], [proxy]):
        entry["items"] = items
        with pytest.raises(InvalidEntry):
            leaf_bytes(entry)
