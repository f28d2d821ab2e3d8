"""The access token and DPoP proof of a request, read from its raw ASGI headers
(``api.auth._first_headers``) exactly as Litestar's ``request.headers.get`` reads them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from litestar.datastructures import Headers

from api.auth import _first_headers

names = st.sampled_from(
    [b"authorization", b"Authorization", b"AUTHORIZATION", b"dpop", b"DPoP", b"DPOP"]
) | st.binary(min_size=1, max_size=16)
header_lists = st.lists(st.tuples(names, st.binary(max_size=24)), max_size=8)


@settings(max_examples=500, deadline=None)
@given(header_lists)
def test_the_first_values_are_litestars(raw: list[tuple[bytes, bytes]]) -> None:
    headers = Headers.from_scope({"type": "http", "headers": raw})  # type: ignore[typeddict-item]
    assert _first_headers(raw) == (headers.get("authorization"), headers.get("dpop"))


def test_the_first_of_repeated_headers_wins_and_names_match_in_any_case() -> None:
    raw = [
        (b"host", b"vault"),
        (b"DPoP", b"proof-1"),
        (b"Authorization", b"Bearer first"),
        (b"authorization", b"Bearer second"),
        (b"dpop", b"proof-2"),
    ]
    assert _first_headers(raw) == ("Bearer first", "proof-1")


def test_missing_headers_are_none_and_values_are_latin_1() -> None:
    assert _first_headers([(b"host", b"vault")]) == (None, None)
    assert _first_headers([(b"authorization", b"Bearer \xe9")]) == ("Bearer \xe9", None)
