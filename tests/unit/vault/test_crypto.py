"""Symmetric recipes of vault/crypto.py: encodings, associated data, sealing, derivation.

JWS, JWKs and client keys are in test_crypto_jws.py.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault import crypto
from vault.errors import DecryptionError

FAST = settings(max_examples=60, deadline=None)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def assert_decryption_error(excinfo: pytest.ExceptionInfo[DecryptionError]) -> None:
    """Every failure to open is the same opaque error, with no library exception attached."""
    exc = excinfo.value
    assert type(exc) is DecryptionError
    assert str(exc) == "decryption failed"
    assert exc.code == "decryption_failed"
    assert exc.__cause__ is None
    assert exc.__context__ is None


# --------------------------------------------------------------------------
# random_key and base64url
# --------------------------------------------------------------------------


def test_random_key_is_32_fresh_bytes() -> None:
    keys = {crypto.random_key() for _ in range(8)}
    assert len(keys) == 8
    assert all(len(k) == crypto.KEY_SIZE == 32 for k in keys)


@FAST
@given(st.binary(max_size=80))
def test_b64url_round_trip(data: bytes) -> None:
    text = crypto.b64url_encode(data)
    assert "=" not in text
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert crypto.b64url_decode(text) == data


def test_b64url_known_values() -> None:
    assert crypto.b64url_encode(b"") == ""
    assert crypto.b64url_encode(b"\xfb\xff") == "-_8"
    assert crypto.b64url_decode("-_8") == b"\xfb\xff"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("QQ==", "padding"),
        ("QR", "non-canonical trailing bits"),
        ("A", "impossible length"),
        ("+/8", "standard alphabet"),
        ("QU E", "whitespace"),
        ("QUE\n", "newline"),
        ("QUÉ", "non-ASCII"),
        ("QU.E", "dot"),
    ],
)
def test_b64url_decode_is_strict(text: str, why: str) -> None:
    with pytest.raises(ValueError, match="not base64url"):
        crypto.b64url_decode(text)


# --------------------------------------------------------------------------
# encode_aad, record_aad, wrap_aad
# --------------------------------------------------------------------------


def decode_aad(data: bytes) -> tuple[str, tuple[str | int | bytes, ...]]:
    """Reference decoder: parsing back proves the encoding is injective."""
    elements: list[tuple[bytes, bytes]] = []
    pos = 0
    while pos < len(data):
        tag, length = data[pos : pos + 1], int.from_bytes(data[pos + 1 : pos + 5], "big")
        body = data[pos + 5 : pos + 5 + length]
        assert len(body) == length
        elements.append((tag, body))
        pos += 5 + length
    (label_tag, label), *rest = elements
    assert label_tag == b"L"
    parts: list[str | int | bytes] = []
    for tag, body in rest:
        if tag == b"s":
            parts.append(body.decode("utf-8"))
        elif tag == b"i":
            assert len(body) == 8
            parts.append(int.from_bytes(body, "big", signed=True))
        else:
            assert tag == b"b"
            parts.append(body)
    return label.decode("utf-8"), tuple(parts)


def test_encode_aad_layout_is_pinned() -> None:
    # Stored ciphertexts depend on these exact bytes: changing them is a format break.
    assert crypto.encode_aad("x", "a", 1, b"b", -1) == (
        b"L\x00\x00\x00\x01x"
        + b"s\x00\x00\x00\x01a"
        + b"i\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x01"
        + b"b\x00\x00\x00\x01b"
        + b"i\x00\x00\x00\x08\xff\xff\xff\xff\xff\xff\xff\xff"
    )
    assert crypto.record_aad("c", "t", 2, "r") == crypto.encode_aad(
        "oncevault/rec/v1", "c", "t", 2, "r"
    )
    assert crypto.wrap_aad("c", "t", 3) == crypto.encode_aad("oncevault/dek/v1", "c", "t", 3)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("l", "a", "bc"), ("l", "ab", "c")),
        (("l", "1"), ("l", b"1")),
        (("l", "1"), ("l", 1)),
        (("l", b"1"), ("l", 1)),
        (("l", ""), ("l", b"")),
        (("l",), ("l", "")),
        (("ab",), ("a", "b")),
        (("l", "a", ""), ("l", "", "a")),
        (("l", 0), ("l", "\x00" * 8)),
        (("l", 0), ("l", b"\x00" * 8)),
        (("oncevault/rec/v1", "c", "t", 1, "r"), ("oncevault/dek/v1", "c", "t", 1)),
    ],
)
def test_encode_aad_tricky_pairs_differ(
    first: tuple[str, *tuple[str | int | bytes, ...]],
    second: tuple[str, *tuple[str | int | bytes, ...]],
) -> None:
    assert crypto.encode_aad(*first) != crypto.encode_aad(*second)


aad_parts = st.lists(
    st.one_of(
        st.text(max_size=6),
        st.binary(max_size=6),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
    ),
    max_size=4,
)
aad_labels = st.text(min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(aad_labels, aad_parts, aad_labels, aad_parts)
def test_encode_aad_never_collides(
    label1: str, parts1: list[str | int | bytes], label2: str, parts2: list[str | int | bytes]
) -> None:
    tuple1, tuple2 = (label1, *parts1), (label2, *parts2)
    if crypto.encode_aad(label1, *parts1) == crypto.encode_aad(label2, *parts2):
        assert [(type(v), v) for v in tuple1] == [(type(v), v) for v in tuple2]


def split_at(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    return [text[a:b] for a, b in itertools.pairwise([0, *points, len(text)])]


@FAST
@given(
    st.text(max_size=8),
    st.lists(st.integers(0, 8), max_size=4),
    st.lists(st.integers(0, 8), max_size=4),
    st.booleans(),
)
def test_encode_aad_repartitioned_text_never_collides(
    text: str, cuts1: list[int], cuts2: list[int], as_bytes: bool
) -> None:
    # Random pairs rarely share bytes; re-splitting the same text is the hard case.
    parts1: list[str | int | bytes] = list(split_at(text, cuts1))
    parts2: list[str | int | bytes] = [p.encode() if as_bytes else p for p in split_at(text, cuts2)]
    if parts1 != parts2:
        assert crypto.encode_aad("l", *parts1) != crypto.encode_aad("l", *parts2)
    assert crypto.encode_aad("l" + text) != crypto.encode_aad("l", text)


@FAST
@given(aad_labels, aad_parts)
def test_encode_aad_decodes_back(label: str, parts: list[str | int | bytes]) -> None:
    assert decode_aad(crypto.encode_aad(label, *parts)) == (label, tuple(parts))


@pytest.mark.parametrize("value", [-(2**63), 2**63 - 1, 0])
def test_encode_aad_accepts_int64_bounds(value: int) -> None:
    assert decode_aad(crypto.encode_aad("l", value)) == ("l", (value,))


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_encode_aad_rejects_ints_outside_int64(value: int) -> None:
    with pytest.raises(ValueError, match="int64"):
        crypto.encode_aad("l", value)


@pytest.mark.parametrize("value", [True, False, 1.0, None, ["a"]])
def test_encode_aad_rejects_other_types(value: object) -> None:
    with pytest.raises(TypeError, match="str, int or bytes"):
        crypto.encode_aad("l", value)  # type: ignore[arg-type]


def test_encode_aad_needs_a_label() -> None:
    with pytest.raises(ValueError, match="label"):
        crypto.encode_aad("")


RECORD = ("citizen-1", "income_certificate", 3, "rec-42")


@pytest.mark.parametrize(
    "changed",
    [
        ("citizen-2", "income_certificate", 3, "rec-42"),
        ("citizen-1", "address", 3, "rec-42"),
        ("citizen-1", "income_certificate", 4, "rec-42"),
        ("citizen-1", "income_certificate", 3, "rec-43"),
        ("citizen-1income_certificate", "", 3, "rec-42"),
    ],
)
def test_record_ciphertext_does_not_open_under_another_row(
    changed: tuple[str, str, int, str],
) -> None:
    sealed = crypto.seal(KEY, b'{"income": 1}', crypto.record_aad(*RECORD))
    assert crypto.open_(KEY, sealed, crypto.record_aad(*RECORD)) == b'{"income": 1}'
    with pytest.raises(DecryptionError) as excinfo:
        crypto.open_(KEY, sealed, crypto.record_aad(*changed))
    assert_decryption_error(excinfo)


@pytest.mark.parametrize(
    "changed",
    [
        ("citizen-2", "income_certificate", 1),
        ("citizen-1", "address", 1),
        ("citizen-1", "income_certificate", 2),
    ],
)
def test_wrapped_dek_does_not_open_under_another_context(changed: tuple[str, str, int]) -> None:
    dek = crypto.random_key()
    wrapped = crypto.seal(KEY, dek, crypto.wrap_aad("citizen-1", "income_certificate", 1))
    assert crypto.open_(KEY, wrapped, crypto.wrap_aad("citizen-1", "income_certificate", 1)) == dek
    with pytest.raises(DecryptionError) as excinfo:
        crypto.open_(KEY, wrapped, crypto.wrap_aad(*changed))
    assert_decryption_error(excinfo)


def test_record_and_wrap_contexts_never_meet() -> None:
    sealed = crypto.seal(KEY, b"x", crypto.wrap_aad("c", "t", 1))
    with pytest.raises(DecryptionError):
        crypto.open_(KEY, sealed, crypto.record_aad("c", "t", 1, ""))


# --------------------------------------------------------------------------
# seal / open_
# --------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=300), st.binary(max_size=64))
def test_seal_open_round_trip(plaintext: bytes, aad: bytes) -> None:
    sealed = crypto.seal(KEY, plaintext, aad)
    assert len(sealed) == 1 + 12 + len(plaintext) + 16
    assert sealed[0] == 0x01
    assert crypto.open_(KEY, sealed, aad) == plaintext


def test_seal_uses_a_fresh_nonce_each_time() -> None:
    sealed = {crypto.seal(KEY, b"same", b"aad") for _ in range(16)}
    assert len(sealed) == 16
    assert len({s[1:13] for s in sealed}) == 16


def test_open_matches_the_gcm_reference_vector() -> None:
    # McGrew & Viega, "The Galois/Counter Mode of Operation", AES-256 test case 14.
    ciphertext = bytes.fromhex("cea7403d4d606b6e074ec5d3baf39d18")
    tag = bytes.fromhex("d0d1c8a799996bf0265b98b5d48ab919")
    sealed = b"\x01" + bytes(12) + ciphertext + tag
    assert crypto.open_(bytes(32), sealed, b"") == bytes(16)


def test_flipping_any_byte_fails() -> None:
    sealed = crypto.seal(KEY, b"short secret", b"aad")
    for position, mask in itertools.product(range(len(sealed)), (0x01, 0x80, 0xFF)):
        tampered = bytearray(sealed)
        tampered[position] ^= mask
        with pytest.raises(DecryptionError) as excinfo:
            crypto.open_(KEY, bytes(tampered), b"aad")
        assert_decryption_error(excinfo)


def test_every_truncation_and_extension_fails() -> None:
    sealed = crypto.seal(KEY, b"short secret", b"aad")
    candidates = [sealed[:n] for n in range(len(sealed))] + [sealed + b"\x00", b"\x00" + sealed]
    for candidate in candidates:
        with pytest.raises(DecryptionError) as excinfo:
            crypto.open_(KEY, candidate, b"aad")
        assert_decryption_error(excinfo)


@pytest.mark.parametrize(
    ("key", "aad"),
    [
        (OTHER_KEY, b"aad"),
        (KEY, b"other aad"),
        (KEY, b""),
        (KEY[:16], b"aad"),
        (KEY[:24], b"aad"),
        (KEY[:31], b"aad"),
        (KEY + b"\x00", b"aad"),
        (b"", b"aad"),
    ],
    ids=["wrong-key", "wrong-aad", "empty-aad", "aes128", "aes192", "31", "33", "empty-key"],
)
def test_wrong_key_or_aad_fails(key: bytes, aad: bytes) -> None:
    sealed = crypto.seal(KEY, b"secret", b"aad")
    with pytest.raises(DecryptionError) as excinfo:
        crypto.open_(key, sealed, aad)
    assert_decryption_error(excinfo)


@pytest.mark.parametrize("format_byte", [0x00, 0x02, 0xFF])
def test_unknown_format_byte_fails_even_with_a_valid_tail(format_byte: int) -> None:
    sealed = crypto.seal(KEY, b"secret", b"aad")
    with pytest.raises(DecryptionError) as excinfo:
        crypto.open_(KEY, bytes([format_byte]) + sealed[1:], b"aad")
    assert_decryption_error(excinfo)


@pytest.mark.parametrize("sealed", [b"", b"\x01", b"\x01" + bytes(27)])
def test_short_input_fails(sealed: bytes) -> None:
    with pytest.raises(DecryptionError) as excinfo:
        crypto.open_(KEY, sealed, b"aad")
    assert_decryption_error(excinfo)


def test_non_bytes_input_fails_the_same_way() -> None:
    with pytest.raises(DecryptionError) as excinfo:
        crypto.open_("k" * 32, crypto.seal(KEY, b"x", b""), b"")  # type: ignore[arg-type]
    assert_decryption_error(excinfo)


@pytest.mark.parametrize("key", [b"", KEY[:16], KEY + b"\x00"])
def test_seal_refuses_a_key_of_the_wrong_size(key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.seal(key, b"x", b"")


# --------------------------------------------------------------------------
# HKDF, HMAC, blind indexes, content digests
# --------------------------------------------------------------------------


def test_hkdf_sha256_rfc5869_case_3() -> None:
    # RFC 5869 A.3: zero-length salt (same as no salt) and info.
    okm = crypto.hkdf_sha256(bytes([0x0B] * 22), b"", 42)
    assert okm.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


def test_hkdf_sha256_defaults_and_info_separation() -> None:
    assert len(crypto.hkdf_sha256(KEY, b"a")) == 32
    assert crypto.hkdf_sha256(KEY, b"a") != crypto.hkdf_sha256(KEY, b"b")
    assert crypto.hkdf_sha256(KEY, b"a", 16) == crypto.hkdf_sha256(KEY, b"a")[:16]


def test_hmac_sha256_rfc4231_case_2() -> None:
    mac = crypto.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert mac.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_constant_time_equal() -> None:
    assert crypto.constant_time_equal(b"abc", b"abc")
    assert not crypto.constant_time_equal(b"abc", b"abd")
    assert not crypto.constant_time_equal(b"abc", b"abcd")
    assert crypto.constant_time_equal(b"", b"")


def test_digest_key_and_content_digest_recipes() -> None:
    dek = crypto.random_key()
    assert crypto.digest_key(dek) == crypto.hkdf_sha256(dek, b"oncevault/digest/v1")
    assert crypto.digest_key(dek) != dek
    body = b'{"a":1}'
    assert crypto.content_digest(dek, body) == crypto.hmac_sha256(crypto.digest_key(dek), body)
    assert crypto.content_digest(dek, body) == crypto.content_digest(dek, body)
    assert crypto.content_digest(dek, body) != crypto.content_digest(crypto.random_key(), body)
    assert crypto.content_digest(dek, body) != crypto.content_digest(dek, b'{"a":2}')


def test_blind_index_recipe() -> None:
    assert crypto.blind_index(KEY, "nid", "900101-1234567") == crypto.hmac_sha256(
        KEY, b"nid:900101-1234567"
    )
    assert crypto.blind_index(KEY, "ci", "\uc2dc\ubbfc") == crypto.hmac_sha256(
        KEY, "ci:\uc2dc\ubbfc".encode()
    )


def test_blind_index_is_deterministic_and_separated() -> None:
    nid = crypto.blind_index(KEY, "nid", "v")
    assert nid == crypto.blind_index(KEY, "nid", "v")
    assert nid != crypto.blind_index(KEY, "ci", "v")
    assert nid != crypto.blind_index(OTHER_KEY, "nid", "v")
    assert nid != crypto.blind_index(KEY, "nid", "w")
    assert len(nid) == 32


@pytest.mark.parametrize("kind", ["", "NID", "nid ", "x", "ci:nid"])
def test_blind_index_kind_is_validated(kind: str) -> None:
    with pytest.raises(ValueError, match='"nid" or "ci"'):
        crypto.blind_index(KEY, kind, "v")


@pytest.mark.parametrize("key", [b"", b"short", KEY + b"\x00"])
def test_keyed_digests_refuse_bad_key_sizes(key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.blind_index(key, "nid", "v")
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.content_digest(key, b"{}")


def test_sha256_b64url_is_the_rfc_7636_s256_challenge() -> None:
    # RFC 7636 Appendix B.
    assert (
        crypto.sha256_b64url("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_seal_json_round_trip_and_every_refusal() -> None:
    key, aad = crypto.random_key(), b"aad"
    text = crypto.seal_json(key, {"a": 1, "b": ["x"]}, aad)
    assert crypto.open_json(key, text, aad) == {"a": 1, "b": ["x"]}
    flipped = text[:-2] + ("A" if text[-2] != "A" else "B") + text[-1]
    not_an_object = crypto.b64url_encode(crypto.seal(key, b"[1]", aad))
    for bad_key, bad_text, bad_aad, max_len in (
        (key, text, b"other", 4096),  # another context
        (crypto.random_key(), text, aad, 4096),  # another key
        (key, flipped, aad, 4096),  # tampered
        (key, "%%%", aad, 4096),  # not base64url
        (key, text, aad, len(text) - 1),  # too long
        (key, not_an_object, aad, 4096),  # JSON, but not an object
    ):
        with pytest.raises(DecryptionError):
            crypto.open_json(bad_key, bad_text, bad_aad, max_len=max_len)
