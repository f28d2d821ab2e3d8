"""JOSE recipes of vault/crypto.py: JWS, JWKS validation, thumbprints and client keys."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

# pyjwt is an independent JOSE implementation: the tests use it to forge
# genuinely RS256-signed tokens and to check interoperability both ways.
import jwt  # noqa: TID251
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault import crypto
from vault.errors import InvalidJWKS, InvalidJWS

AT_SEED = bytes(range(32))
AT_JWK = crypto.public_jwk(AT_SEED, "at-1")
RC_SEED = bytes(range(100, 132))
KEYS: dict[str, Mapping[str, Any]] = {"at-1": AT_JWK, "rc-1": crypto.public_jwk(RC_SEED, "rc-1")}
MARKER = "SECRETMARKER"  # placed in tokens; must never appear in an error message


def b64json(value: object) -> str:
    return crypto.b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def raw_token(
    header: bytes | Mapping[str, Any], payload: bytes | object, *, seed: bytes = AT_SEED
) -> str:
    """A token with exactly these header and payload bytes, validly signed with an Ed25519 seed."""
    header_seg = crypto.b64url_encode(header) if isinstance(header, bytes) else b64json(header)
    payload_seg = crypto.b64url_encode(payload) if isinstance(payload, bytes) else b64json(payload)
    signing_input = f"{header_seg}.{payload_seg}"
    # Raw signing through the module's private helper: hostile tokens need arbitrary bytes.
    signature = crypto._ed25519_private(seed).sign(signing_input.encode())
    return f"{signing_input}.{crypto.b64url_encode(signature)}"


def at_header(**changes: Any) -> dict[str, Any]:
    header = {"alg": "EdDSA", "kid": "at-1", "typ": "at+jwt"}
    header.update(changes)
    return {k: v for k, v in header.items() if v is not None}


def verify_at(token: str, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    options: dict[str, Any] = {"keys": KEYS, "typ": "at+jwt", "allowed_kid_prefix": "at-"}
    options.update(kwargs)
    return crypto.verify_jws(token, **options)


def refused(token: str, message: str, **kwargs: Any) -> None:
    with pytest.raises(InvalidJWS) as excinfo:
        verify_at(token, **kwargs)
    assert str(excinfo.value) == message
    assert excinfo.value.code == "invalid_token"
    assert MARKER not in str(excinfo.value)
    assert excinfo.value.__cause__ is None


@pytest.fixture(scope="module")
def client_keys() -> dict[str, tuple[bytes, dict[str, str]]]:
    return {alg: crypto.generate_client_keypair(alg) for alg in ("EdDSA", "ES256", "PS256")}


# --------------------------------------------------------------------------
# sign_jws / verify_jws round trip
# --------------------------------------------------------------------------


def test_sign_jws_shape_and_round_trip() -> None:
    payload = {
        "sub": "client-1",
        "aud": "https://vault.example",
        "n": 1,
        "z": [1, {"b": 2, "a": 1}],
    }
    token = crypto.sign_jws(payload, private_key=AT_SEED, kid="at-1", typ="at+jwt")
    header_seg, payload_seg, signature_seg = token.split(".")
    assert crypto.b64url_decode(header_seg) == b'{"alg":"EdDSA","kid":"at-1","typ":"at+jwt"}'
    assert crypto.b64url_decode(payload_seg) == (
        b'{"aud":"https://vault.example","n":1,"sub":"client-1","z":[1,{"a":1,"b":2}]}'
    )
    assert len(crypto.b64url_decode(signature_seg)) == 64
    header, verified = verify_at(token)
    assert header == {"alg": "EdDSA", "kid": "at-1", "typ": "at+jwt"}
    assert verified == payload


def test_sign_jws_is_deterministic_and_utf8() -> None:
    payload = {"name": "\ud64d\uae38\ub3d9"}
    token = crypto.sign_jws(payload, private_key=AT_SEED, kid="at-1", typ="at+jwt")
    assert token == crypto.sign_jws(payload, private_key=AT_SEED, kid="at-1", typ="at+jwt")
    assert crypto.b64url_decode(token.split(".")[1]) == '{"name":"\ud64d\uae38\ub3d9"}'.encode()
    assert verify_at(token)[1] == payload


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12)),
        max_size=6,
    )
)
def test_verify_jws_round_trip_any_payload(payload: dict[str, Any]) -> None:
    token = crypto.sign_jws(payload, private_key=AT_SEED, kid="at-1", typ="at+jwt")
    assert verify_at(token)[1] == payload


def test_typ_none_skips_the_typ_check() -> None:
    for typ in ("at+jwt", "anything"):
        token = crypto.sign_jws({}, private_key=AT_SEED, kid="at-1", typ=typ)
        assert verify_at(token, typ=None)[0]["typ"] == typ
    assert verify_at(raw_token(at_header(typ=None), {}), typ=None)[0] == {
        "alg": "EdDSA",
        "kid": "at-1",
    }


def test_any_single_character_change_is_refused() -> None:
    token = crypto.sign_jws({"sub": "c1"}, private_key=AT_SEED, kid="at-1", typ="at+jwt")
    for position, char in enumerate(token):
        for replacement in {"A", "B", "g", "_", "."} - {char}:
            tampered = token[:position] + replacement + token[position + 1 :]
            with pytest.raises(InvalidJWS):
                verify_at(tampered)


def test_sign_jws_refuses_a_bad_seed() -> None:
    with pytest.raises(ValueError, match="32-byte seed"):
        crypto.sign_jws({}, private_key=b"short", kid="at-1", typ="at+jwt")


def test_public_jwk_shape() -> None:
    jwk = crypto.public_jwk(AT_SEED, "cp-7", use="sig")
    assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"}
    assert (jwk["kty"], jwk["crv"], jwk["kid"], jwk["use"], jwk["alg"]) == (
        "OKP",
        "Ed25519",
        "cp-7",
        "sig",
        "EdDSA",
    )
    assert len(crypto.b64url_decode(jwk["x"])) == 32
    assert crypto.validate_public_jwks({"keys": [jwk]}) == {"cp-7": jwk}


def test_generate_signing_key_is_a_fresh_seed() -> None:
    seeds = {crypto.generate_signing_key() for _ in range(4)}
    assert len(seeds) == 4
    assert all(len(s) == 32 for s in seeds)


# --------------------------------------------------------------------------
# verify_jws refusals, in the order of its steps
# --------------------------------------------------------------------------


def test_oversize_token_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_decode(_text: str) -> bytes:
        raise AssertionError("decoded an oversize token")

    big = crypto.sign_jws({"pad": "x" * 9000}, private_key=AT_SEED, kid="at-1", typ="at+jwt")
    monkeypatch.setattr(crypto, "b64url_decode", must_not_decode)
    refused(big, "token too large")
    refused("a" * 8193, "token too large")
    refused("." * 3_000_000, "token too large")


def test_size_limit_is_inclusive_and_adjustable() -> None:
    def padded(pad: int) -> str:
        return crypto.sign_jws({"p": "x" * pad}, private_key=AT_SEED, kid="at-1", typ="at+jwt")

    low, high = 0, 8192  # invariant: len(padded(low)) <= 8192 < len(padded(high))
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if len(padded(middle)) <= 8192 else (low, middle)
    assert verify_at(padded(low))[1] == {"p": "x" * low}
    refused(padded(high), "token too large")
    small = crypto.sign_jws({}, private_key=AT_SEED, kid="at-1", typ="at+jwt")
    assert verify_at(small, max_size=len(small))[1] == {}
    refused(small, "token too large", max_size=len(small) - 1)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        ".eyJ9.c2ln",
        "eyJ9.eyJ9.",
        "eyJhbGciOiJFZERTQSJ9.e30.c2ln=",
        "eyJhbGciOiJFZERTQSJ9.e30=.c2ln",
        "eyJhbGciOiJFZERTQSJ9.e3+.c2ln",
        "eyJhbGciOiJFZERTQSJ9.e30.c2l\u00f1",
        " eyJhbGciOiJFZERTQSJ9.e30.c2ln",
    ],
)
def test_malformed_compact_serialisation(token: str) -> None:
    refused(token, "malformed token")


def test_non_string_token() -> None:
    with pytest.raises(InvalidJWS, match="token is not a string"):
        crypto.verify_jws(b"a.b.c", keys=KEYS, typ=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"not json", "malformed header"),
        (b'{"alg":"EdDSA","kid":"at-1"', "malformed header"),
        (b"\xff\xfe{}", "malformed header"),
        (b"[1]", "header is not a JSON object"),
        (b'"at+jwt"', "header is not a JSON object"),
        (b'{"alg":"EdDSA","kid":"at-1","typ":"at+jwt","kid":"at-1"}', "duplicate member in header"),
        (b'{"alg":"none","alg":"EdDSA","kid":"at-1","typ":"at+jwt"}', "duplicate member in header"),
        (b'{"alg":"EdDSA","kid":"at-1","typ":"at+jwt","x":NaN}', "malformed header"),
    ],
)
def test_bad_headers(header: bytes, message: str) -> None:
    refused(raw_token(header, {}), message)


def test_deeply_nested_header_is_refused_cleanly() -> None:
    header = b'{"alg":"EdDSA","kid":"at-1","typ":"at+jwt","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    refused(raw_token(header, {}), "malformed header", max_size=100_000)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", f"https://{MARKER}.example/jwks"),
        ("x5u", f"https://{MARKER}.example/cert"),
        ("jwk", AT_JWK),
        ("x5c", [MARKER]),
        ("crit", ["exp"]),
        ("b64", False),
    ],
)
def test_forbidden_headers(name: str, value: object) -> None:
    refused(raw_token(at_header(**{name: value}), {}), f"forbidden header {name}")


@pytest.mark.parametrize(
    "typ",
    ["AT+JWT", "application/at+jwt", "at+jwt ", "jwt", "consent-receipt+jwt", MARKER, 1, None],
)
def test_wrong_or_missing_typ(typ: object) -> None:
    header = at_header(typ=typ)
    if typ is None:
        assert "typ" not in header
    refused(raw_token(header, {}), "wrong typ")


@pytest.mark.parametrize(
    ("kid", "message"),
    [
        (None, "missing kid"),
        ("", "missing kid"),
        (1, "missing kid"),
        (["at-1"], "missing kid"),
        (f"at-{MARKER}", "unknown kid"),
        ("rc-1", "kid not allowed"),
        ("AT-1", "kid not allowed"),
    ],
)
def test_kid_selection(kid: object, message: str) -> None:
    refused(raw_token(at_header(kid=kid), {}), message)


def test_kid_prefix_is_optional() -> None:
    token = crypto.sign_jws({}, private_key=RC_SEED, kid="rc-1", typ="at+jwt")
    assert verify_at(token, allowed_kid_prefix=None)[0]["kid"] == "rc-1"
    refused(token, "kid not allowed")


def test_alg_none_is_refused() -> None:
    header_seg = b64json({"alg": "none", "kid": "at-1", "typ": "at+jwt"})
    unsigned = f"{header_seg}.{b64json({'sub': 'x'})}."
    refused(unsigned, "malformed token")
    refused(unsigned + "c2ln", "alg not allowed for this key")


@pytest.mark.parametrize(
    "alg", ["HS256", "HS512", "RS256", "PS256", "ES256", "Ed25519", "eddsa", None]
)
def test_header_alg_must_equal_the_key_alg(alg: str | None) -> None:
    refused(raw_token(at_header(alg=alg), {}), "alg not allowed for this key")


@pytest.mark.parametrize(
    "secret",
    [
        crypto.b64url_decode(AT_JWK["x"]),
        AT_JWK["x"].encode(),
        json.dumps(AT_JWK).encode(),
    ],
    ids=["raw-public-key", "x-text", "jwk-json"],
)
def test_hs256_signed_with_the_public_key_is_refused(secret: bytes) -> None:
    signing_input = f"{b64json(at_header(alg='HS256'))}.{b64json({'sub': 'x'})}"
    mac = crypto.hmac_sha256(secret, signing_input.encode())
    refused(f"{signing_input}.{crypto.b64url_encode(mac)}", "alg not allowed for this key")


def test_signature_from_another_key_under_the_same_kid() -> None:
    forged = crypto.sign_jws(
        {}, private_key=crypto.generate_signing_key(), kid="at-1", typ="at+jwt"
    )
    refused(forged, "bad signature")


def test_tampered_payload_and_header() -> None:
    token = crypto.sign_jws({"scope": "consumer"}, private_key=AT_SEED, kid="at-1", typ="at+jwt")
    header_seg, _payload_seg, signature_seg = token.split(".")
    refused(f"{header_seg}.{b64json({'scope': 'auditor'})}.{signature_seg}", "bad signature")
    widened = b64json({"alg": "EdDSA", "kid": "at-1", "typ": "at+jwt", "x": 1})
    refused(f"{widened}.{token.split('.')[1]}.{signature_seg}", "bad signature")


def test_token_of_one_kind_is_not_accepted_as_another() -> None:
    receipt = crypto.sign_jws({}, private_key=RC_SEED, kid="rc-1", typ="consent-receipt+jwt")
    refused(receipt, "wrong typ")
    refused(receipt, "kid not allowed", typ="consent-receipt+jwt")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"[1,2]", "payload is not a JSON object"),
        (b'"sub"', "payload is not a JSON object"),
        (b"1", "payload is not a JSON object"),
        (b"null", "payload is not a JSON object"),
        (b"", "malformed payload"),
        (b"{", "malformed payload"),
        (b'{"exp":Infinity}', "malformed payload"),
        (b"\xc3\x28", "malformed payload"),
        (b'{"sub":"a","sub":"b"}', "duplicate member in payload"),
        (b'{"a":{"x":1,"x":2}}', "duplicate member in payload"),
    ],
)
def test_bad_payloads_even_when_signed(payload: bytes, message: str) -> None:
    refused(raw_token(at_header(), payload), message)


def test_unusable_keys_in_the_key_set_are_refused() -> None:
    private = dict(AT_JWK, d=crypto.b64url_encode(AT_SEED))
    refused(raw_token(at_header(), {}), "unusable key", keys={"at-1": private})
    wrong_alg = dict(AT_JWK, alg="ES256")
    refused(raw_token(at_header(), {}), "unusable key", keys={"at-1": wrong_alg})
    oct_key = {"kty": "oct", "k": crypto.b64url_encode(AT_SEED)}
    refused(raw_token(at_header(alg="HS256"), {}), "unusable key", keys={"at-1": oct_key})


# --------------------------------------------------------------------------
# Client algorithms: ES256 and PS256 pinned by the key type
# --------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "PS256"])
def test_client_keys_verify_with_their_pinned_alg(
    client_keys: dict[str, tuple[bytes, dict[str, str]]], alg: str
) -> None:
    pem, jwk = client_keys[alg]
    token = crypto.sign_jws_with_pem(
        {"iss": "c1", "sub": "c1"}, private_pem=pem, kid=jwk["kid"], typ=None, alg=alg
    )
    header, payload = crypto.verify_jws(token, keys={jwk["kid"]: jwk}, typ=None)
    assert header == {"alg": alg, "kid": jwk["kid"]}
    assert payload == {"iss": "c1", "sub": "c1"}


def test_rs256_token_for_an_rsa_key_is_refused(
    client_keys: dict[str, tuple[bytes, dict[str, str]]],
) -> None:
    pem, jwk = client_keys["PS256"]
    # A genuine RS256 (PKCS#1 v1.5) signature by the right key: only the pin refuses it.
    token = jwt.encode({"sub": "c1"}, pem, algorithm="RS256", headers={"kid": jwk["kid"]})
    with pytest.raises(InvalidJWS, match=r"^alg not allowed for this key$"):
        crypto.verify_jws(token, keys={jwk["kid"]: jwk}, typ=None)


def test_alg_mismatch_between_client_key_types(
    client_keys: dict[str, tuple[bytes, dict[str, str]]],
) -> None:
    es_pem, es_jwk = client_keys["ES256"]
    _ps_pem, ps_jwk = client_keys["PS256"]
    ed_pem, _ed_jwk = client_keys["EdDSA"]
    es_token = crypto.sign_jws_with_pem({}, private_pem=es_pem, kid="k", typ=None, alg="ES256")
    ed_token = crypto.sign_jws_with_pem({}, private_pem=ed_pem, kid="k", typ=None, alg="EdDSA")
    for token, jwk in [(es_token, ps_jwk), (ed_token, es_jwk), (es_token, AT_JWK)]:
        with pytest.raises(InvalidJWS, match=r"^alg not allowed for this key$"):
            crypto.verify_jws(token, keys={"k": jwk}, typ=None)


def test_es256_signature_must_be_raw_64_bytes(
    client_keys: dict[str, tuple[bytes, dict[str, str]]],
) -> None:
    pem, jwk = client_keys["ES256"]
    token = crypto.sign_jws_with_pem({}, private_pem=pem, kid="k", typ=None, alg="ES256")
    header_seg, payload_seg, signature_seg = token.split(".")
    signature = crypto.b64url_decode(signature_seg)
    for bad in (signature[:63], signature + b"\x00", bytes(64)):
        tampered = f"{header_seg}.{payload_seg}.{crypto.b64url_encode(bad)}"
        with pytest.raises(InvalidJWS, match=r"^bad signature$"):
            crypto.verify_jws(tampered, keys={"k": jwk}, typ=None)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "PS256"])
def test_interoperates_with_pyjwt(
    client_keys: dict[str, tuple[bytes, dict[str, str]]], alg: str
) -> None:
    pem, jwk = client_keys[alg]
    ours = crypto.sign_jws_with_pem({"a": 1}, private_pem=pem, kid=jwk["kid"], typ="x+jwt", alg=alg)
    decoded = jwt.PyJWS().decode_complete(ours, key=jwt.PyJWK(jwk).key, algorithms=[alg])
    assert decoded["payload"] == b'{"a":1}'
    theirs = jwt.encode({"b": 2}, pem, algorithm=alg, headers={"kid": jwk["kid"], "typ": "x+jwt"})
    assert crypto.verify_jws(theirs, keys={jwk["kid"]: jwk}, typ="x+jwt")[1] == {"b": 2}


# --------------------------------------------------------------------------
# verify_jws_with_embedded_jwk (DPoP proofs)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "PS256"])
def test_embedded_jwk_proof_round_trip(
    client_keys: dict[str, tuple[bytes, dict[str, str]]], alg: str
) -> None:
    pem, jwk = client_keys[alg]
    public = {k: v for k, v in jwk.items() if k not in ("kid", "use", "alg")}
    proof = crypto.sign_jws_with_pem(
        {"htm": "POST", "htu": "https://vault.example/token", "jti": "j1", "iat": 1},
        private_pem=pem,
        kid=None,
        typ="dpop+jwt",
        alg=alg,
        extra_headers={"jwk": public},
    )
    header, payload = crypto.verify_jws_with_embedded_jwk(proof, typ="dpop+jwt")
    assert header == {"alg": alg, "typ": "dpop+jwt", "jwk": public}
    assert payload["htm"] == "POST"
    assert crypto.jwk_thumbprint(header["jwk"]) == jwk["kid"]


def test_embedded_jwk_refusals(client_keys: dict[str, tuple[bytes, dict[str, str]]]) -> None:
    pem, jwk = client_keys["EdDSA"]
    other_pem, _ = client_keys["ES256"]

    def proof(**extra: Any) -> str:
        return crypto.sign_jws_with_pem(
            {}, private_pem=pem, kid=None, typ="dpop+jwt", alg="EdDSA", extra_headers=extra
        )

    def refuses(token: str, message: str, typ: str = "dpop+jwt") -> None:
        with pytest.raises(InvalidJWS) as excinfo:
            crypto.verify_jws_with_embedded_jwk(token, typ=typ)
        assert str(excinfo.value) == message

    refuses(proof(), "missing jwk")
    refuses(proof(jwk="not an object"), "missing jwk")
    refuses(proof(jwk=jwk), "wrong typ", typ="at+jwt")
    refuses(proof(jwk=dict(jwk, d="AAAA")), "unusable key")
    refuses(proof(jwk=jwk, jku="https://x.example"), "forbidden header jku")
    refuses(proof(jwk=client_keys["ES256"][1]), "alg not allowed for this key")
    swapped = crypto.sign_jws_with_pem(
        {}, private_pem=other_pem, kid=None, typ="dpop+jwt", alg="ES256", extra_headers={"jwk": jwk}
    )
    refuses(swapped, "alg not allowed for this key")
    stranger_pem, stranger_jwk = crypto.generate_client_keypair("EdDSA")
    impostor = crypto.sign_jws_with_pem(
        {},
        private_pem=stranger_pem,
        kid=None,
        typ="dpop+jwt",
        alg="EdDSA",
        extra_headers={"jwk": jwk},
    )
    refuses(impostor, "bad signature")
    assert crypto.jwk_thumbprint(stranger_jwk) != crypto.jwk_thumbprint(jwk)


def test_verify_jws_still_refuses_an_embedded_jwk(
    client_keys: dict[str, tuple[bytes, dict[str, str]]],
) -> None:
    pem, jwk = client_keys["EdDSA"]
    token = crypto.sign_jws_with_pem(
        {}, private_pem=pem, kid=jwk["kid"], typ="dpop+jwt", alg="EdDSA", extra_headers={"jwk": jwk}
    )
    with pytest.raises(InvalidJWS, match=r"^forbidden header jwk$"):
        crypto.verify_jws(token, keys={jwk["kid"]: jwk}, typ="dpop+jwt")


# --------------------------------------------------------------------------
# Client key helpers
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("alg", "kty"), [("EdDSA", "OKP"), ("ES256", "EC"), ("PS256", "RSA")])
def test_generate_client_keypair(
    client_keys: dict[str, tuple[bytes, dict[str, str]]], alg: str, kty: str
) -> None:
    pem, jwk = client_keys[alg]
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert jwk["kty"] == kty
    assert jwk["alg"] == alg
    assert jwk["use"] == "sig"
    assert jwk["kid"] == crypto.jwk_thumbprint(jwk)
    assert crypto.public_jwk_from_pem(pem) == jwk
    assert crypto.public_jwk_from_pem(pem, kid="mine")["kid"] == "mine"
    assert crypto.validate_public_jwks({"keys": [jwk]}) == {jwk["kid"]: jwk}
    if kty == "RSA":
        assert len(crypto.b64url_decode(jwk["n"])) == 256


def test_generate_client_keypair_refuses_other_algs() -> None:
    with pytest.raises(ValueError, match="EdDSA, ES256 or PS256"):
        crypto.generate_client_keypair("RS256")  # type: ignore[arg-type]


def test_sign_jws_with_pem_headers(client_keys: dict[str, tuple[bytes, dict[str, str]]]) -> None:
    pem, _jwk = client_keys["EdDSA"]
    token = crypto.sign_jws_with_pem(
        {}, private_pem=pem, kid="k1", typ="t", alg="EdDSA", extra_headers={"nonce": "n"}
    )
    assert json.loads(crypto.b64url_decode(token.split(".")[0])) == {
        "alg": "EdDSA",
        "kid": "k1",
        "typ": "t",
        "nonce": "n",
    }
    bare = crypto.sign_jws_with_pem({}, private_pem=pem, kid=None, typ=None, alg="EdDSA")
    assert crypto.b64url_decode(bare.split(".")[0]) == b'{"alg":"EdDSA"}'


@pytest.mark.parametrize(
    ("key_alg", "alg", "extra", "message"),
    [
        ("EdDSA", "ES256", None, "does not match the key"),
        ("PS256", "RS256", None, "does not match the key"),
        ("ES256", "HS256", None, "does not match the key"),
        ("EdDSA", "none", None, "does not match the key"),
        ("EdDSA", "EdDSA", {"alg": "none"}, "may not set 'alg'"),
        ("EdDSA", "EdDSA", {"kid": "x"}, "may not set 'kid'"),
        ("EdDSA", "EdDSA", {"typ": "x"}, "may not set 'typ'"),
    ],
)
def test_sign_jws_with_pem_refusals(
    client_keys: dict[str, tuple[bytes, dict[str, str]]],
    key_alg: str,
    alg: str,
    extra: dict[str, str] | None,
    message: str,
) -> None:
    pem, _jwk = client_keys[key_alg]
    with pytest.raises(ValueError, match=message):
        crypto.sign_jws_with_pem(
            {}, private_pem=pem, kid="k", typ=None, alg=alg, extra_headers=extra
        )


def test_sign_jws_with_pem_refuses_garbage_pem() -> None:
    with pytest.raises(ValueError, match="PEM private key"):
        crypto.sign_jws_with_pem({}, private_pem=b"nope", kid="k", typ=None, alg="EdDSA")


# --------------------------------------------------------------------------
# validate_public_jwks
# --------------------------------------------------------------------------

RFC7638_JWK = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
        "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
        "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}


def ok_keys(client_keys: dict[str, tuple[bytes, dict[str, str]]]) -> list[dict[str, str]]:
    return [dict(client_keys[alg][1], kid=f"k-{alg}") for alg in ("EdDSA", "ES256", "PS256")]


def test_validate_public_jwks_accepts_the_three_key_types(
    client_keys: dict[str, tuple[bytes, dict[str, str]]],
) -> None:
    keys = ok_keys(client_keys)
    bare = [{k: v for k, v in key.items() if k not in ("use", "alg")} for key in keys]
    for offered in (keys, bare):
        result = crypto.validate_public_jwks({"keys": offered})
        assert result == {key["kid"]: key for key in offered}
        assert all(result[key["kid"]] is not key for key in offered)


def mutate(jwk: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    result = dict(jwk)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def rsa_1024(jwk: Mapping[str, Any]) -> dict[str, Any]:
    modulus = crypto.b64url_decode(jwk["n"])[:128]
    return mutate(jwk, n=crypto.b64url_encode(modulus[:-1] + bytes([modulus[-1] | 1])))


JWK_REFUSALS: list[tuple[str, str, Callable[[dict[str, dict[str, Any]]], dict[str, Any]], str]] = [
    (
        "private-d",
        "EdDSA",
        lambda k: mutate(k["EdDSA"], d="AAAA"),
        "private member 'd' is not allowed",
    ),
    (
        "private-p",
        "PS256",
        lambda k: mutate(k["PS256"], p="AQAB"),
        "private member 'p' is not allowed",
    ),
    (
        "private-qi",
        "PS256",
        lambda k: mutate(k["PS256"], qi="AQAB"),
        "private member 'qi' is not allowed",
    ),
    (
        "private-oth",
        "PS256",
        lambda k: mutate(k["PS256"], oth=[]),
        "private member 'oth' is not allowed",
    ),
    (
        "private-k",
        "EdDSA",
        lambda k: mutate(k["EdDSA"], k="AAAA"),
        "private member 'k' is not allowed",
    ),
    (
        "oct",
        "EdDSA",
        lambda k: {"kty": "oct", "kid": "k-EdDSA", "k": "c2VjcmV0"},
        'symmetric ("oct") keys are not allowed',
    ),
    ("rsa-1024", "PS256", lambda k: rsa_1024(k["PS256"]), "RSA modulus must be at least 2048 bits"),
    (
        "rsa-leading-zero",
        "PS256",
        lambda k: mutate(
            k["PS256"], n=crypto.b64url_encode(b"\0" + crypto.b64url_decode(k["PS256"]["n"]))
        ),
        "member 'n' is not a minimal unsigned integer",
    ),
    ("rsa-e-even", "PS256", lambda k: mutate(k["PS256"], e="AQAA"), "invalid RSA public key"),
    (
        "rsa-e-padded",
        "PS256",
        lambda k: mutate(k["PS256"], e="AAEAAQ"),
        "member 'e' is not a minimal unsigned integer",
    ),
    (
        "rsa-rs256",
        "PS256",
        lambda k: mutate(k["PS256"], alg="RS256"),
        'alg must be "PS256" for this key type',
    ),
    (
        "ec-p384",
        "ES256",
        lambda k: mutate(k["ES256"], crv="P-384"),
        "unsupported EC crv 'P-384' (only P-256)",
    ),
    ("ec-secp256k1", "ES256", lambda k: mutate(k["ES256"], crv="secp256k1"), "unsupported EC crv"),
    (
        "ec-off-curve",
        "ES256",
        lambda k: mutate(k["ES256"], y=k["ES256"]["x"]),
        "not a point on P-256",
    ),
    (
        "ec-missing-y",
        "ES256",
        lambda k: mutate(k["ES256"], y=None),
        "member 'y' missing or not a string",
    ),
    (
        "okp-x25519",
        "EdDSA",
        lambda k: mutate(k["EdDSA"], crv="X25519"),
        "unsupported OKP crv 'X25519' (only Ed25519)",
    ),
    (
        "okp-ed448",
        "EdDSA",
        lambda k: mutate(k["EdDSA"], crv="Ed448"),
        "unsupported OKP crv 'Ed448'",
    ),
    ("okp-short-x", "EdDSA", lambda k: mutate(k["EdDSA"], x="AAAA"), "member 'x' must be 32 bytes"),
    (
        "okp-padded-x",
        "EdDSA",
        lambda k: mutate(k["EdDSA"], x=k["EdDSA"]["x"] + "="),
        "member 'x' is not base64url",
    ),
    (
        "okp-std-b64",
        "EdDSA",
        lambda k: mutate(k["EdDSA"], x="+" + k["EdDSA"]["x"][1:]),
        "member 'x' is not base64url",
    ),
    (
        "okp-x-number",
        "EdDSA",
        lambda k: mutate(k["EdDSA"], x=1),
        "member 'x' missing or not a string",
    ),
    ("unknown-kty", "EdDSA", lambda k: mutate(k["EdDSA"], kty="XYZ"), "unsupported kty 'XYZ'"),
    ("missing-kty", "EdDSA", lambda k: mutate(k["EdDSA"], kty=None), "unsupported kty None"),
    ("use-enc", "EdDSA", lambda k: mutate(k["EdDSA"], use="enc"), 'use must be "sig"'),
    (
        "key-ops-sign",
        "EdDSA",
        lambda k: mutate(k["EdDSA"], key_ops=["sign"]),
        'key_ops must be ["verify"]',
    ),
    (
        "eddsa-alg-es256",
        "EdDSA",
        lambda k: mutate(k["EdDSA"], alg="ES256"),
        'alg must be "EdDSA" for this key type',
    ),
]


@pytest.mark.parametrize(
    ("kid_alg", "build", "message"),
    [case[1:] for case in JWK_REFUSALS],
    ids=[case[0] for case in JWK_REFUSALS],
)
def test_validate_public_jwks_refusals(
    client_keys: dict[str, tuple[bytes, dict[str, str]]],
    kid_alg: str,
    build: Callable[[dict[str, dict[str, Any]]], dict[str, Any]],
    message: str,
) -> None:
    keys = {alg: dict(jwk, kid=f"k-{alg}") for alg, (_pem, jwk) in client_keys.items()}
    bad = build(keys)
    good = keys["ES256"] if kid_alg != "ES256" else keys["EdDSA"]
    with pytest.raises(InvalidJWKS) as excinfo:
        crypto.validate_public_jwks({"keys": [good, bad]})
    assert str(excinfo.value).startswith(f"key 1 (kid 'k-{kid_alg}'): {message}")
    assert excinfo.value.code == "invalid_jwks"


@pytest.mark.parametrize(
    ("jwks", "message"),
    [
        ({}, 'JWKS must have a non-empty "keys" array'),
        ({"keys": []}, 'JWKS must have a non-empty "keys" array'),
        ({"keys": {"kid": "a"}}, 'JWKS must have a non-empty "keys" array'),
        ({"keys": ["a"]}, "key 0: not a JSON object"),
        ({"keys": [{"kty": "OKP"}]}, "key 0: kid is required"),
        ({"keys": [{"kid": ""}]}, "key 0: kid is required"),
        ({"keys": [{"kid": 7}]}, "key 0: kid is required"),
        ([], "JWKS must be a JSON object"),
    ],
)
def test_validate_public_jwks_shape(jwks: Any, message: str) -> None:
    with pytest.raises(InvalidJWKS) as excinfo:
        crypto.validate_public_jwks(jwks)
    assert str(excinfo.value) == message


def test_validate_public_jwks_refuses_duplicate_kids(
    client_keys: dict[str, tuple[bytes, dict[str, str]]],
) -> None:
    first = dict(client_keys["EdDSA"][1], kid="same")
    second = dict(client_keys["ES256"][1], kid="same")
    with pytest.raises(InvalidJWKS) as excinfo:
        crypto.validate_public_jwks({"keys": [first, second]})
    assert str(excinfo.value) == "key 1 (kid 'same'): duplicate kid"


def test_validate_public_jwks_shortens_long_kids() -> None:
    with pytest.raises(InvalidJWKS) as excinfo:
        crypto.validate_public_jwks({"keys": [{"kid": "k" * 500, "kty": "oct", "k": "AA"}]})
    assert len(str(excinfo.value)) < 120


def test_validated_keys_verify_tokens(client_keys: dict[str, tuple[bytes, dict[str, str]]]) -> None:
    registered = crypto.validate_public_jwks({"keys": ok_keys(client_keys)})
    for alg in ("EdDSA", "ES256", "PS256"):
        token = crypto.sign_jws_with_pem(
            {"jti": alg}, private_pem=client_keys[alg][0], kid=f"k-{alg}", typ=None, alg=alg
        )
        assert crypto.verify_jws(token, keys=registered, typ=None)[1] == {"jti": alg}


# --------------------------------------------------------------------------
# jwk_thumbprint
# --------------------------------------------------------------------------


def test_jwk_thumbprint_rfc7638_example() -> None:
    assert crypto.jwk_thumbprint(RFC7638_JWK) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    reordered = {"e": "AQAB", "kid": "other", "n": RFC7638_JWK["n"], "kty": "RSA", "use": "sig"}
    assert crypto.jwk_thumbprint(reordered) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_jwk_thumbprint_rfc8037_okp_example() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert crypto.jwk_thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_the_rfc7638_key_is_refused_for_use_because_it_declares_rs256() -> None:
    with pytest.raises(InvalidJWKS, match='alg must be "PS256"'):
        crypto.validate_public_jwks({"keys": [RFC7638_JWK]})
    accepted = crypto.validate_public_jwks({"keys": [mutate(RFC7638_JWK, alg=None)]})
    assert list(accepted) == ["2011-04-29"]


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ({"kty": "oct", "k": "AAAA"}, "unsupported kty"),
        ({"crv": "Ed25519", "x": "AAAA"}, "unsupported kty"),
        ({"kty": "EC", "crv": "P-256", "x": "AAAA"}, "member 'y' missing"),
        ({"kty": "RSA", "n": "AAAA", "e": 65537}, "member 'e' missing or not a string"),
    ],
)
def test_jwk_thumbprint_refusals(jwk: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        crypto.jwk_thumbprint(jwk)


# --------------------------------------------------------------------------
# rsa_alg="RS256": an external OpenID provider's RSA keys (api/idp.py only)
# --------------------------------------------------------------------------


def test_rsa_alg_rs256_accepts_rs256_and_refuses_ps256(
    client_keys: dict[str, tuple[bytes, dict[str, str]]],
) -> None:
    pem, jwk = client_keys["PS256"]
    rs256 = jwt.encode({"sub": "c1"}, pem, algorithm="RS256", headers={"kid": jwk["kid"]})
    ps256 = crypto.sign_jws_with_pem(
        {"sub": "c1"}, private_pem=pem, kid=jwk["kid"], typ=None, alg="PS256"
    )
    bare = {k: v for k, v in jwk.items() if k != "alg"}
    for key in (bare, {**bare, "alg": "RS256"}):
        header, payload = crypto.verify_jws(
            rs256, keys={jwk["kid"]: key}, typ=None, rsa_alg="RS256"
        )
        assert header["alg"] == "RS256"
        assert payload == {"sub": "c1"}
        with pytest.raises(InvalidJWS, match=r"^alg not allowed for this key$"):
            crypto.verify_jws(ps256, keys={jwk["kid"]: key}, typ=None, rsa_alg="RS256")
    # The default stays PS256, and RS256 stays refused there.
    assert crypto.verify_jws(ps256, keys={jwk["kid"]: jwk}, typ=None)[1] == {"sub": "c1"}
    with pytest.raises(InvalidJWS, match=r"^alg not allowed for this key$"):
        crypto.verify_jws(rs256, keys={jwk["kid"]: bare}, typ=None)


def test_rsa_alg_rs256_refuses_a_key_declaring_ps256(
    client_keys: dict[str, tuple[bytes, dict[str, str]]],
) -> None:
    pem, jwk = client_keys["PS256"]
    token = jwt.encode({}, pem, algorithm="RS256", headers={"kid": jwk["kid"]})
    assert jwk["alg"] == "PS256"
    with pytest.raises(InvalidJWS, match=r"^unusable key$"):
        crypto.verify_jws(token, keys={jwk["kid"]: jwk}, typ=None, rsa_alg="RS256")


def test_rsa_alg_rs256_detects_tampering(
    client_keys: dict[str, tuple[bytes, dict[str, str]]],
) -> None:
    pem, jwk = client_keys["PS256"]
    token = jwt.encode({"a": 1}, pem, algorithm="RS256", headers={"kid": jwk["kid"]})
    header_seg, _payload_seg, signature_seg = token.split(".")
    tampered = f"{header_seg}.{b64json({'a': 2})}.{signature_seg}"
    with pytest.raises(InvalidJWS, match=r"^bad signature$"):
        crypto.verify_jws(
            tampered, keys={jwk["kid"]: jwk | {"alg": "RS256"}}, typ=None, rsa_alg="RS256"
        )


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_rsa_alg_does_not_touch_other_key_types(
    client_keys: dict[str, tuple[bytes, dict[str, str]]], alg: str
) -> None:
    pem, jwk = client_keys[alg]
    token = crypto.sign_jws_with_pem({}, private_pem=pem, kid=jwk["kid"], typ=None, alg=alg)
    assert crypto.verify_jws(token, keys={jwk["kid"]: jwk}, typ=None, rsa_alg="RS256")[1] == {}
    forged = jwt.encode({}, client_keys["PS256"][0], algorithm="RS256", headers={"kid": jwk["kid"]})
    with pytest.raises(InvalidJWS, match=r"^alg not allowed for this key$"):
        crypto.verify_jws(forged, keys={jwk["kid"]: jwk}, typ=None, rsa_alg="RS256")


def test_rsa_alg_must_be_ps256_or_rs256() -> None:
    token = crypto.sign_jws({}, private_key=AT_SEED, kid="at-1", typ="at+jwt")
    with pytest.raises(ValueError, match="rsa_alg"):
        crypto.verify_jws(token, keys=KEYS, typ=None, rsa_alg="RS512")  # type: ignore[arg-type]
