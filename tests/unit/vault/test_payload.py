"""A version's plaintext read back (``vault.service._open_payload``): msgspec reads it,
and whatever it reads must equal what ``json.loads`` read before."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.errors import DecryptionError
from vault.service import _open_payload, _sealed_payload

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities too: json.dumps writes them, msgspec refuses them
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and the types of numbers compared too."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@settings(max_examples=400, deadline=None)
@given(values, st.booleans())
def test_any_json_text_reads_as_the_json_module_reads_it(value: Any, ascii_only: bool) -> None:
    # json.dumps writes NaN and infinities too, which msgspec refuses: the fallback.
    text = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    assert same(_open_payload(text), json.loads(text))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(), values, max_size=5), values)
def test_what_a_version_seals_reads_back(data: dict[str, Any], attestation: Any) -> None:
    # As they reach a version: data validated (finite numbers), the attestation as
    # decoded from the request's JSON.
    finite = json.loads(json.dumps(data), parse_constant=lambda _: None)
    attested = json.loads(json.dumps(attestation), parse_constant=lambda _: None)
    plaintext = _sealed_payload(finite, attested)
    opened = _open_payload(plaintext)
    assert same(opened, json.loads(plaintext))
    assert same(opened["data"], finite)
    assert same(opened["attestation"], attested)


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":NaN}',
        b'{"a":1e400}',
        b'\xef\xbb\xbf{"a":1}',
        b'{"a":"\\ud800"}',
        b'{"a":-Infinity}',
        b'{"data":{"n":"\xed\xa0\x80"}}',  # a surrogate as UTF-8 bytes: msgspec refuses it
    ],
)
def test_what_msgspec_refuses_is_read_by_the_json_module(text: bytes) -> None:
    assert same(_open_payload(text), json.loads(text))


@pytest.mark.parametrize(
    "text",
    [b"", b"{", b'{"a":}', b"\xff\xfe", b"[1,]", b'{"a":1}x', b'{"data":{"n":"\xff"}}'],
)
def test_malformed_plaintext_is_a_decryption_error(text: bytes) -> None:
    with pytest.raises(DecryptionError):
        _open_payload(text)
