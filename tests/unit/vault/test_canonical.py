"""``vault.service.canonical``: RFC 8785 bytes of a record's data, whichever encoder
writes them.

The content digest of every stored version is keyed over these bytes, so the fast
path (msgspec) must write exactly what ``rfc8785`` writes, or a re-issued unchanged
record would count as changed. Each test compares with ``rfc8785.dumps`` itself.
"""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from vault import service
from vault.service import canonical

SAFE = 2**53 - 1

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-SAFE, max_value=SAFE)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
# Keys: any text (non-ASCII and astral keys sort by UTF-16 code units in JCS).
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
plain_text = st.text(
    st.characters(codec="utf-8", categories=["L", "M", "N", "P", "S"]) | st.just(" "),
    max_size=12,
)
plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-SAFE, max_value=SAFE) | plain_text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(st.characters(min_codepoint=32, max_codepoint=126)), inner, max_size=4
        )
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(), values, max_size=6))
def test_any_json_object_is_encoded_as_rfc8785_encodes_it(data: dict[str, Any]) -> None:
    try:
        expected = rfc8785.dumps(data)
    except rfc8785.CanonicalizationError:
        with pytest.raises(rfc8785.CanonicalizationError):
            canonical(data)
        return
    assert canonical(data) == expected


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(st.characters(min_codepoint=32, max_codepoint=126)), plain_values))
def test_plain_objects_take_the_fast_path_and_match(data: dict[str, Any]) -> None:
    # Not vacuous: these are exactly the values the fast path takes.
    assert service._plain(data)
    assert canonical(data) == rfc8785.dumps(data)


@pytest.mark.parametrize(
    "data",
    [
        {"name": 'quote " and backslash \\ and slash /'},
        {"name": "Jüri Õunapuu", "city": "Tartu", "sign": "€", "clef": "\U0001d11e"},
        {"b": 1, "a": [True, None, False, {"d": -SAFE, "c": SAFE}]},
        {"": "", "A": "upper before lower", "a": 0},
    ],
)
def test_plain_edge_cases_take_the_fast_path(data: dict[str, Any]) -> None:
    assert service._plain(data)
    assert canonical(data) == rfc8785.dumps(data)


@pytest.mark.parametrize(
    "data",
    [
        {"income": 1.5},  # JCS spells numbers as ECMAScript does
        {"income": 1e21},
        {"note": "tab\there"},  # control characters: \t, \u001f spellings
        {"note": "\u001f"},
        {"note": "del\x7f"},
        {"note": "line\u2028separator"},
        {"\ue000": 1, "\U0001f600": 2},  # UTF-16 order differs from code points
        {"key é": 1},
        {"tuple": (1, 2)},
    ],
)
def test_everything_else_goes_to_rfc8785(data: dict[str, Any]) -> None:
    assert not service._plain(data)
    assert canonical(data) == rfc8785.dumps(data)


@pytest.mark.parametrize("number", [SAFE + 1, -SAFE - 1, 2**64])
def test_integers_past_two_to_the_53_are_refused_as_before(number: int) -> None:
    assert not service._plain({"n": number})
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical({"n": number})


def test_utf16_key_order_is_kept_where_it_differs_from_code_points() -> None:
    # U+E000 sorts before U+1F600 by code point but after it by UTF-16 code units.
    assert canonical({"\ue000": 1, "\U0001f600": 2}) == ('{"\U0001f600":2,"\ue000":1}'.encode())
