"""Cryptographic recipes of oncevault: the one home of ``cryptography.hazmat``.

Every other module builds on these small, hard-to-misuse recipes instead of
touching primitives. In the spirit of pyca/cryptography, the dangerous layer
stays here and the rest of the code base sees:

- **Encodings**: strict base64url, and :func:`encode_aad`, an injective
  (length-prefixed, typed, labelled) encoding of associated data.
- **Sealing**: :func:`seal` / :func:`open_` (AES-256-GCM, versioned format).
  Every failure to open raises the same opaque :class:`DecryptionError`.
- **Derivation and MACs**: HKDF-SHA256, HMAC-SHA256, blind indexes and
  content digests.
- **Signing**: Ed25519 signing keys (raw 32-byte seeds) and compact JWS
  (:func:`sign_jws`).
- **Verification**: :func:`verify_jws`, which reads like the numbered steps
  of its docstring, with the algorithm pinned by the key and never taken from
  the token; every failure raises :class:`InvalidJWS`.
- **Client keys**: JWKS validation for registration, RFC 7638 thumbprints,
  and helpers that create and use client keys (CLI, DPoP clients, tests).

Compact JWS parsing, header checks and algorithm pinning happen exactly once,
here, so none of pyjwt's lenient defaults (any ``typ``, ignored ``kid``/``jku``
headers, numeric-string ``exp``, duplicate JSON keys, ``b64``) can leak through;
the signature primitives themselves are pyjwt's algorithm objects (``EdDSA``,
``ES256`` with raw ``r||s``, ``PS256``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from typing import Any, Final, Literal, NoReturn, TypeAlias

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, RSAPSSAlgorithm

from vault.errors import DecryptionError, InvalidJWKS, InvalidJWS

__all__ = [
    "DEFAULT_MAX_JWS_SIZE",
    "KEY_SIZE",
    "RECORD_AAD_LABEL",
    "WRAP_AAD_LABEL",
    "ClientAlg",
    "RSAAlg",
    "b64url_decode",
    "b64url_encode",
    "blind_index",
    "constant_time_equal",
    "content_digest",
    "digest_key",
    "encode_aad",
    "generate_client_keypair",
    "generate_signing_key",
    "hkdf_sha256",
    "hmac_sha256",
    "jwk_thumbprint",
    "open_",
    "public_jwk",
    "public_jwk_from_pem",
    "random_key",
    "record_aad",
    "seal",
    "sign_jws",
    "sign_jws_with_pem",
    "validate_public_jwks",
    "verify_jws",
    "verify_jws_with_embedded_jwk",
    "wrap_aad",
]

KEY_SIZE: Final = 32
"""Size in bytes of every symmetric key: DEKs, KEKs, the index key, derived keys."""

DEFAULT_MAX_JWS_SIZE: Final = 8192
"""Largest compact JWS accepted, checked before any decoding (8 KiB)."""

ClientAlg: TypeAlias = Literal["EdDSA", "ES256", "PS256"]
"""The JWS algorithms oncevault accepts; each is pinned by the key type."""

RSAAlg: TypeAlias = Literal["PS256", "RS256"]
"""What an RSA key pins in :func:`verify_jws`: PS256 (clients), or RS256 (external IdPs only)."""

_PublicKey: TypeAlias = Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_PrivateKey: TypeAlias = Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


# --------------------------------------------------------------------------
# Keys and encodings
# --------------------------------------------------------------------------


def random_key() -> bytes:
    """Return a fresh random 32-byte symmetric key from the OS CSPRNG."""
    return os.urandom(KEY_SIZE)


_B64URL_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """Encode ``data`` as unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def seal_json(key: bytes, value: Mapping[str, object], aad: bytes) -> str:
    """A JSON object sealed with :func:`seal`, as base64url text (for cookies and
    short-lived state that travels through a browser)."""
    plaintext = json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return b64url_encode(seal(key, plaintext, aad))


def open_json(key: bytes, text: str, aad: bytes, *, max_len: int = 4096) -> dict[str, Any]:
    """The object sealed by :func:`seal_json` under the same key and ``aad``.

    Raises:
        DecryptionError: for every failure (too long, malformed, tampered, foreign).
    """
    if not isinstance(text, str) or len(text) > max_len:
        raise DecryptionError
    try:
        value = json.loads(open_(key, b64url_decode(text), aad).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise DecryptionError from None
    if not isinstance(value, dict):
        raise DecryptionError
    return value


def sha256_b64url(text: str) -> str:
    """base64url(SHA-256(ASCII ``text``)): a PKCE S256 challenge (RFC 7636 §4.2) and a
    DPoP ``ath`` (RFC 9449 §4.2)."""
    return b64url_encode(hashlib.sha256(text.encode("ascii")).digest())


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url strictly.

    Refuses padding, whitespace, characters outside the URL-safe alphabet,
    impossible lengths and non-canonical encodings (non-zero trailing bits),
    so each byte string has exactly one accepted text form.

    Raises:
        ValueError: ``text`` is not canonical unpadded base64url.
    """
    if not isinstance(text, str) or _B64URL_ALPHABET.fullmatch(text) is None:
        raise ValueError("not base64url")
    if len(text) % 4 == 1:
        raise ValueError("not base64url: impossible length")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:  # pragma: no cover - the alphabet check above prevents it
        raise ValueError("not base64url") from None
    if b64url_encode(data) != text:
        raise ValueError("not base64url: non-canonical encoding")
    return data


# Associated data: each element is a 1-byte type tag, a 4-byte big-endian length
# and the bytes. The label always comes first under its own tag, so the encoding
# of (label, *parts) is a prefix-free sequence that decodes back to one tuple.
_AAD_TAG_LABEL: Final = b"L"
_AAD_TAG_STR: Final = b"s"
_AAD_TAG_INT: Final = b"i"
_AAD_TAG_BYTES: Final = b"b"
_AAD_MAX_ELEMENT: Final = 2**32 - 1
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

RECORD_AAD_LABEL: Final = "oncevault/rec/v1"
WRAP_AAD_LABEL: Final = "oncevault/dek/v1"


def _aad_element(tag: bytes, data: bytes) -> bytes:
    if len(data) > _AAD_MAX_ELEMENT:
        raise ValueError("associated data element too long")
    return tag + len(data).to_bytes(4, "big") + data


def encode_aad(label: str, *parts: str | int | bytes) -> bytes:
    """Encode a label and parts as associated data, injectively.

    Every element is a type tag (``L`` label, ``s`` str as UTF-8, ``i`` int as
    8-byte big-endian two's complement, ``b`` bytes), a 4-byte big-endian
    length and the payload. Two different ``(label, parts)`` tuples never
    encode the same: ``("a", "bc")`` differs from ``("ab", "c")``, and ``"1"``,
    ``b"1"`` and ``1`` differ from each other.

    Raises:
        ValueError: empty label, an int outside int64, an unencodable string.
        TypeError: a part that is not str, int or bytes (bool included).
    """
    if not isinstance(label, str) or not label:
        raise ValueError("associated data needs a non-empty label")
    out = [_aad_element(_AAD_TAG_LABEL, label.encode("utf-8"))]
    for part in parts:
        if isinstance(part, bool):
            # bool is an int subclass; True and 1 must not silently share an encoding.
            raise TypeError("associated data parts must be str, int or bytes, not bool")
        if isinstance(part, str):
            out.append(_aad_element(_AAD_TAG_STR, part.encode("utf-8")))
        elif isinstance(part, int):
            if not _INT64_MIN <= part <= _INT64_MAX:
                raise ValueError("associated data int outside the int64 range")
            out.append(_aad_element(_AAD_TAG_INT, part.to_bytes(8, "big", signed=True)))
        elif isinstance(part, bytes | bytearray | memoryview):
            out.append(_aad_element(_AAD_TAG_BYTES, bytes(part)))
        else:
            raise TypeError("associated data parts must be str, int or bytes")
    return b"".join(out)


def record_aad(citizen_id: str, record_type: str, version: int, record_id: str) -> bytes:
    """Associated data binding a record ciphertext to its row (``oncevault/rec/v1``)."""
    return encode_aad(RECORD_AAD_LABEL, citizen_id, record_type, version, record_id)


def wrap_aad(citizen_id: str, record_type: str, dek_version: int) -> bytes:
    """Associated data binding a wrapped DEK to citizen, type and version (``oncevault/dek/v1``)."""
    return encode_aad(WRAP_AAD_LABEL, citizen_id, record_type, dek_version)


# --------------------------------------------------------------------------
# Sealing: AES-256-GCM
# --------------------------------------------------------------------------

_SEAL_FORMAT_V1: Final = b"\x01"
_NONCE_SIZE: Final = 12
_GCM_TAG_SIZE: Final = 16
_SEALED_MIN_SIZE: Final = len(_SEAL_FORMAT_V1) + _NONCE_SIZE + _GCM_TAG_SIZE


def _require_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes")


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` bound to ``aad`` with AES-256-GCM.

    Output: format byte ``0x01`` || 12-byte random nonce || ciphertext || 16-byte tag.
    Random 96-bit nonces are safe for far more messages than one DEK ever seals.

    Raises:
        ValueError: ``key`` is not 32 bytes.
    """
    _require_key(key)
    nonce = os.urandom(_NONCE_SIZE)
    return _SEAL_FORMAT_V1 + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Open a value made by :func:`seal` with the same key and associated data.

    Raises:
        DecryptionError: for every failure (key size, length, format byte, tag,
            associated data), always with the same message.
    """
    try:
        if (
            len(key) == KEY_SIZE
            and len(sealed) >= _SEALED_MIN_SIZE
            and sealed[:1] == _SEAL_FORMAT_V1
        ):
            nonce = sealed[1 : 1 + _NONCE_SIZE]
            return AESGCM(key).decrypt(nonce, sealed[1 + _NONCE_SIZE :], aad)
    except (InvalidTag, ValueError, TypeError, OverflowError):
        pass
    raise DecryptionError


# --------------------------------------------------------------------------
# Derivation and MACs
# --------------------------------------------------------------------------

_BLIND_INDEX_KINDS: Final = frozenset({"nid", "ci"})
_DIGEST_KEY_INFO: Final = b"oncevault/digest/v1"
_REQUEST_DIGEST_KEY_INFO: Final = b"oncevault/request-digest/v1"
REQUEST_DIGEST_LABEL: Final = "oncevault/request/v1"


def hkdf_sha256(key: bytes, info: bytes, length: int = KEY_SIZE) -> bytes:
    """Derive ``length`` bytes from ``key`` with HKDF-SHA256 (no salt) and ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """Return HMAC-SHA256(key, message)."""
    return hmac.digest(key, message, "sha256")


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings in time independent of where they differ."""
    return hmac.compare_digest(a, b)


def digest_key(dek: bytes) -> bytes:
    """Derive the content-digest key of a DEK (HKDF info ``oncevault/digest/v1``).

    Raises:
        ValueError: ``dek`` is not 32 bytes.
    """
    _require_key(dek)
    return hkdf_sha256(dek, _DIGEST_KEY_INFO)


def request_digest_key(index_key: bytes) -> bytes:
    """Derive the key of :func:`request_digest` from the platform's index key (HKDF
    info ``oncevault/request-digest/v1``: never the blind indexes' own key).

    Raises:
        ValueError: ``index_key`` is not 32 bytes.
    """
    _require_key(index_key)
    return hkdf_sha256(index_key, _REQUEST_DIGEST_KEY_INFO)


def request_digest(key: bytes, client_id: str, method_path: str, body: bytes) -> bytes:
    """A keyed digest of one client's request (what an ``Idempotency-Key`` is checked
    against): HMAC-SHA256 over the injective encoding of client, ``METHOD /path`` and
    body. Unkeyed, a body's digest would let whoever holds the database test guesses of
    what it held (a national id in a known template) offline.

    Raises:
        ValueError: ``key`` is not 32 bytes.
    """
    _require_key(key)
    return hmac_sha256(key, encode_aad(REQUEST_DIGEST_LABEL, client_id, method_path, body))


def blind_index(index_key: bytes, kind: str, value: str) -> bytes:
    """Return the blind index of an identifier: HMAC-SHA256(index_key, "kind:value").

    ``kind`` is ``"nid"`` (national identifier) or ``"ci"`` (connecting information).

    Raises:
        ValueError: unknown ``kind`` or an ``index_key`` that is not 32 bytes.
    """
    if kind not in _BLIND_INDEX_KINDS:
        raise ValueError('blind index kind must be "nid" or "ci"')
    _require_key(index_key)
    return hmac_sha256(index_key, f"{kind}:{value}".encode())


def content_digest(dek: bytes, canonical_json: bytes) -> bytes:
    """Keyed digest of a record's canonical JSON: HMAC-SHA256(digest_key(dek), json).

    Keyed by the DEK, so it cannot be checked against guesses once the DEK is
    shredded.
    """
    return keyed_content_digest(digest_key(dek), canonical_json)


def keyed_content_digest(key: bytes, canonical_json: bytes) -> bytes:
    """:func:`content_digest` with the DEK's digest key already derived
    (:func:`digest_key`), for many records under one DEK."""
    return hmac_sha256(key, canonical_json)


# --------------------------------------------------------------------------
# Signing keys (Ed25519) and JWKs
# --------------------------------------------------------------------------


def _ed25519_private(private_key: bytes) -> Ed25519PrivateKey:
    if not isinstance(private_key, bytes) or len(private_key) != 32:
        raise ValueError("Ed25519 private key must be a 32-byte seed")
    return Ed25519PrivateKey.from_private_bytes(private_key)


def generate_signing_key() -> bytes:
    """Return a new Ed25519 private key as its raw 32-byte seed (callers store it wrapped)."""
    return Ed25519PrivateKey.generate().private_bytes_raw()


def public_jwk(private_key: bytes, kid: str, use: str = "sig") -> dict[str, str]:
    """Public JWK of an Ed25519 seed, as published in oncevault's JWKS."""
    public = _ed25519_private(private_key).public_key().public_bytes_raw()
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(public),
        "kid": kid,
        "use": use,
        "alg": "EdDSA",
    }


def _public_jwk_members(key: _PublicKey) -> dict[str, str]:
    """The RFC 7517/8037 public members (no kid/use/alg) of a public key."""
    if isinstance(key, Ed25519PublicKey):
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(key.public_bytes_raw())}
    if isinstance(key, ec.EllipticCurvePublicKey):
        numbers = key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url_encode(numbers.x.to_bytes(32, "big")),
            "y": b64url_encode(numbers.y.to_bytes(32, "big")),
        }
    numbers_rsa = key.public_numbers()
    return {"kty": "RSA", "n": _b64url_uint(numbers_rsa.n), "e": _b64url_uint(numbers_rsa.e)}


def _b64url_uint(value: int) -> str:
    return b64url_encode(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


_THUMBPRINT_MEMBERS: Final[Mapping[str, tuple[str, ...]]] = {
    "OKP": ("crv", "kty", "x"),
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK, base64url (DPoP ``cnf.jkt``).

    Raises:
        ValueError: unsupported ``kty`` or a required member missing or not a string.
    """
    kty = jwk.get("kty")
    required = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if required is None:
        raise ValueError("thumbprint: unsupported kty")
    members: dict[str, str] = {}
    for name in required:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise ValueError(f"thumbprint: member {name!r} missing or not a string")
        members[name] = value
    encoded = json.dumps(members, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return b64url_encode(hashlib.sha256(encoded.encode("utf-8")).digest())


# --------------------------------------------------------------------------
# Public JWKs: validation and loading (the algorithm is pinned by the key)
# --------------------------------------------------------------------------

_PRIVATE_MEMBERS: Final = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_RSA_MIN_BITS: Final = 2048
_RSA_MAX_BITS: Final = 8192


class _UnusableJWK(Exception):
    """Internal: a JWK is refused; the message names the problem (no key material)."""


def _show(value: object) -> str:
    """Short printable form of a client-supplied name for error messages."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _jwk_bytes(jwk: Mapping[str, Any], name: str, size: int | None = None) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise _UnusableJWK(f"member {name!r} missing or not a string")
    try:
        data = b64url_decode(value)
    except ValueError:
        raise _UnusableJWK(f"member {name!r} is not base64url") from None
    if size is not None and len(data) != size:
        raise _UnusableJWK(f"member {name!r} must be {size} bytes")
    return data


def _jwk_uint(jwk: Mapping[str, Any], name: str) -> int:
    data = _jwk_bytes(jwk, name)
    if not data or (len(data) > 1 and data[0] == 0):
        raise _UnusableJWK(f"member {name!r} is not a minimal unsigned integer")
    return int.from_bytes(data, "big")


@functools.lru_cache(maxsize=512)
def _build_public_key(kty: str, x: bytes, y: bytes, n: int, e: int) -> _PublicKey:
    """Construct (and cache) a public key object from validated members."""
    if kty == "OKP":
        return Ed25519PublicKey.from_public_bytes(x)
    if kty == "EC":
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
        except ValueError:
            raise _UnusableJWK("not a point on P-256") from None
    if n % 2 == 0 or e < 3 or e % 2 == 0 or e >= n:
        raise _UnusableJWK("invalid RSA public key")
    return rsa.RSAPublicNumbers(e, n).public_key()


def _load_public_jwk(jwk: Mapping[str, Any]) -> tuple[ClientAlg, _PublicKey]:
    """Check a public JWK and return (pinned alg, public key).

    Raises:
        _UnusableJWK: with a message naming the problem.
    """
    if not isinstance(jwk, Mapping):
        raise _UnusableJWK("not a JSON object")
    kty = jwk.get("kty")
    if kty == "oct":
        raise _UnusableJWK('symmetric ("oct") keys are not allowed')
    for member in _PRIVATE_MEMBERS:
        if member in jwk:
            raise _UnusableJWK(f"private member {member!r} is not allowed")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise _UnusableJWK('use must be "sig"')
    key_ops = jwk.get("key_ops")
    if key_ops is not None and key_ops != ["verify"]:
        raise _UnusableJWK('key_ops must be ["verify"]')

    alg: ClientAlg
    crv = jwk.get("crv")
    x = y = b""
    n = e = 0
    if kty == "OKP":
        if crv != "Ed25519":
            raise _UnusableJWK(f"unsupported OKP crv {_show(crv)} (only Ed25519)")
        alg, x = "EdDSA", _jwk_bytes(jwk, "x", 32)
    elif kty == "EC":
        if crv != "P-256":
            raise _UnusableJWK(f"unsupported EC crv {_show(crv)} (only P-256)")
        alg, x, y = "ES256", _jwk_bytes(jwk, "x", 32), _jwk_bytes(jwk, "y", 32)
    elif kty == "RSA":
        alg, n, e = "PS256", _jwk_uint(jwk, "n"), _jwk_uint(jwk, "e")
        if n.bit_length() < _RSA_MIN_BITS:
            raise _UnusableJWK(f"RSA modulus must be at least {_RSA_MIN_BITS} bits")
        if n.bit_length() > _RSA_MAX_BITS:
            raise _UnusableJWK(f"RSA modulus must be at most {_RSA_MAX_BITS} bits")
    else:
        raise _UnusableJWK(f"unsupported kty {_show(kty)}")

    declared = jwk.get("alg")
    if declared is not None and declared != alg:
        raise _UnusableJWK(f'alg must be "{alg}" for this key type')
    return alg, _build_public_key(kty, x, y, n, e)


def validate_public_jwks(jwks: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate a client's JWKS offered at registration; return ``{kid: jwk}``.

    Accepted keys: OKP/Ed25519, EC/P-256, RSA with a 2048- to 8192-bit modulus;
    each with a unique non-empty ``kid``, ``use`` "sig" if present, ``alg``
    (if present) equal to the algorithm pinned by its type (EdDSA, ES256,
    PS256). Symmetric keys, private members and malformed base64url are refused.

    Raises:
        InvalidJWKS: with a message naming the key (index and kid) and the problem.
    """
    if not isinstance(jwks, Mapping):
        raise InvalidJWKS("JWKS must be a JSON object")
    keys = jwks.get("keys")
    if not isinstance(keys, list) or not keys:
        raise InvalidJWKS('JWKS must have a non-empty "keys" array')
    result: dict[str, dict[str, Any]] = {}
    for index, jwk in enumerate(keys):
        if not isinstance(jwk, Mapping):
            raise InvalidJWKS(f"key {index}: not a JSON object")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidJWKS(f"key {index}: kid is required")
        where = f"key {index} (kid {_show(kid)})"
        if kid in result:
            raise InvalidJWKS(f"{where}: duplicate kid")
        try:
            _load_public_jwk(jwk)
        except _UnusableJWK as exc:
            raise InvalidJWKS(f"{where}: {exc}") from None
        result[kid] = dict(jwk)
    return result


# --------------------------------------------------------------------------
# JWS signing
# --------------------------------------------------------------------------


def _json_bytes(value: Mapping[str, object]) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# The signature primitives are pyjwt's algorithm objects (raw r||s for ES256,
# PSS with a digest-sized salt for PS256); parsing and every header rule stay here.
_JWT_ALGORITHMS: Final[dict[ClientAlg, Any]] = {
    "EdDSA": OKPAlgorithm(),
    "ES256": ECAlgorithm(ECAlgorithm.SHA256),
    "PS256": RSAPSSAlgorithm(RSAPSSAlgorithm.SHA256),
}


def _sign_with(key: _PrivateKey, alg: ClientAlg, data: bytes) -> bytes:
    expected = {"EdDSA": Ed25519PrivateKey, "ES256": ec.EllipticCurvePrivateKey}.get(alg)
    if expected is None:
        expected = rsa.RSAPrivateKey
    if not isinstance(key, expected):  # pragma: no cover - callers check
        raise ValueError("private key does not match alg")
    signature: bytes = _JWT_ALGORITHMS[alg].sign(data, key)
    return signature


def _compact_jws(
    header: Mapping[str, object], payload: Mapping[str, object], key: _PrivateKey, alg: ClientAlg
) -> str:
    signing_input = b64url_encode(_json_bytes(header)) + "." + b64url_encode(_json_bytes(payload))
    signature = _sign_with(key, alg, signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)


def sign_jws(payload: Mapping[str, object], *, private_key: bytes, kid: str, typ: str) -> str:
    """Sign ``payload`` as a compact JWS with an Ed25519 seed.

    Header ``{"alg": "EdDSA", "kid": kid, "typ": typ}``; header and payload are
    JSON with sorted keys and compact separators.

    Raises:
        ValueError: ``private_key`` is not a 32-byte seed, or the payload is not JSON-able.
    """
    key = _ed25519_private(private_key)
    return _compact_jws({"alg": "EdDSA", "kid": kid, "typ": typ}, payload, key, "EdDSA")


# --------------------------------------------------------------------------
# JWS verification
# --------------------------------------------------------------------------

# jwk is allowed only by verify_jws_with_embedded_jwk. b64 (RFC 7797) would
# change how other verifiers read the payload; we refuse it outright.
_FORBIDDEN_HEADERS: Final = ("jku", "x5u", "jwk", "x5c", "crit", "b64")


class _DuplicateKey(Exception):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise _DuplicateKey
        result[name] = value
    return result


def _refuse_constant(_name: str) -> NoReturn:
    raise ValueError("NaN and Infinity are not JSON")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_refuse_constant,
        )
    except _DuplicateKey:
        raise InvalidJWS(f"duplicate member in {what}") from None
    except (ValueError, RecursionError):
        raise InvalidJWS(f"malformed {what}") from None
    if not isinstance(value, dict):
        raise InvalidJWS(f"{what} is not a JSON object")
    return value


def _parse_compact(token: str, max_size: int) -> tuple[bytes, dict[str, Any], bytes, bytes]:
    """Steps 1-3: size, three base64url segments, header object.

    Returns (signing input, header, payload bytes, signature).
    """
    # 1. Size first, before any decoding. len(str) <= len(utf-8 bytes), and
    #    non-ASCII is refused below, so this bounds the byte length too.
    if not isinstance(token, str):
        raise InvalidJWS("token is not a string")
    if len(token) > max_size:
        raise InvalidJWS("token too large")
    if not token.isascii():
        raise InvalidJWS("malformed token")
    # 2. Exactly three base64url segments; header and signature non-empty.
    segments = token.split(".")
    if len(segments) != 3 or not segments[0] or not segments[2]:
        raise InvalidJWS("malformed token")
    try:
        header_bytes, payload_bytes, signature = (b64url_decode(s) for s in segments)
    except ValueError:
        raise InvalidJWS("malformed token") from None
    # 3. The header is a JSON object without duplicate members.
    header = _json_object(header_bytes, "header")
    signing_input = (segments[0] + "." + segments[1]).encode("ascii")
    return signing_input, header, payload_bytes, signature


def _check_header(header: Mapping[str, Any], typ: str | None, *, allow_jwk: bool) -> None:
    """Steps 4-5: forbidden headers, exact typ."""
    for name in _FORBIDDEN_HEADERS:
        if name in header and not (allow_jwk and name == "jwk"):
            raise InvalidJWS(f"forbidden header {name}")
    if typ is not None and header.get("typ") != typ:
        raise InvalidJWS("wrong typ")


# RS256 (PKCS#1 v1.5) verifies only, and only when a caller pins it for RSA keys
# (``verify_jws(..., rsa_alg="RS256")``, for an OpenID provider's keys).
_VERIFY_ALGORITHMS: Final[dict[str, Any]] = {
    **{str(alg): algorithm for alg, algorithm in _JWT_ALGORITHMS.items()},
    "RS256": RSAAlgorithm(RSAAlgorithm.SHA256),
}


def _verify_signature(key: _PublicKey, alg: str, data: bytes, signature: bytes) -> bool:
    if alg == "ES256" and len(signature) != 64:
        return False
    try:
        return bool(_VERIFY_ALGORITHMS[alg].verify(data, key, signature))
    except (InvalidSignature, ValueError, TypeError):
        return False


def _finish(
    jwk: Mapping[str, Any],
    header: dict[str, Any],
    signing_input: bytes,
    payload_bytes: bytes,
    signature: bytes,
    *,
    rsa_alg: RSAAlg = "PS256",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Steps 7-9: alg pinned by the key, signature, payload object."""
    # 7. The key decides the algorithm; the header must agree.
    try:
        if rsa_alg == "RS256" and isinstance(jwk, Mapping) and jwk.get("kty") == "RSA":
            if jwk.get("alg", "RS256") != "RS256":
                raise _UnusableJWK("alg must be RS256 for this key")
            jwk = {name: value for name, value in jwk.items() if name != "alg"}
        alg, key = _load_public_jwk(jwk)
    except _UnusableJWK:
        raise InvalidJWS("unusable key") from None
    pinned: str = rsa_alg if alg == "PS256" else alg
    if header.get("alg") != pinned:
        raise InvalidJWS("alg not allowed for this key")
    # 8. Signature over the exact header and payload segments.
    if not _verify_signature(key, pinned, signing_input, signature):
        raise InvalidJWS("bad signature")
    # 9. The payload is a JSON object without duplicate members.
    return header, _json_object(payload_bytes, "payload")


def verify_jws(
    token: str,
    *,
    keys: Mapping[str, Mapping[str, Any]],
    typ: str | None,
    max_size: int = DEFAULT_MAX_JWS_SIZE,
    allowed_kid_prefix: str | None = None,
    rsa_alg: RSAAlg = "PS256",
    kid_optional: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify a compact JWS against public JWKs by kid; return ``(header, payload)``.

    Steps, each failure raising :class:`InvalidJWS` with a short reason that
    never echoes token content:

    1. the token is at most ``max_size`` bytes, checked before any decoding;
    2. it has three strict base64url segments;
    3. the header is a JSON object without duplicate members;
    4. no ``jku``, ``x5u``, ``jwk``, ``x5c``, ``crit`` or ``b64`` header;
    5. when ``typ`` is given, the header ``typ`` equals it exactly;
    6. ``kid`` is present, starts with ``allowed_kid_prefix`` when given, and is in ``keys``;
    7. the key pins the algorithm (OKP/Ed25519: EdDSA, EC/P-256: ES256,
       RSA: PS256) and the header ``alg`` must equal it, so ``none``, ``HS*``
       and ``RS*`` are refused; the key itself must be a valid public JWK.
       ``rsa_alg="RS256"`` pins RS256 instead for RSA keys (then a key's own
       ``alg``, if any, must say RS256): for an external OpenID provider's
       keys only, never for clients;
    8. the signature verifies;
    9. the payload is a JSON object without duplicate members.

    ``kid_optional=True`` (client assertions: RFC 7523 does not require a kid, and
    common clients such as Authlib omit it) lets a token without ``kid`` be tried
    against each of ``keys`` in turn; each key still pins its own algorithm.

    No claims are checked here: ``exp``, ``iat``, ``aud`` and the rest are the
    caller's job.

    Raises:
        InvalidJWS: any failure, with a short reason.
        ValueError: ``rsa_alg`` is neither PS256 nor RS256 (a programming error).
    """
    if rsa_alg not in ("PS256", "RS256"):
        raise ValueError("rsa_alg must be PS256 or RS256")
    signing_input, header, payload_bytes, signature = _parse_compact(token, max_size)
    _check_header(header, typ, allow_jwk=False)
    # 6. kid selects the key, within the allowed prefix.
    kid = header.get("kid")
    if kid is None and kid_optional and allowed_kid_prefix is None:
        for candidate in keys.values():
            try:
                return _finish(
                    candidate, header, signing_input, payload_bytes, signature, rsa_alg=rsa_alg
                )
            except InvalidJWS:
                continue
        raise InvalidJWS("no key verifies")
    if not isinstance(kid, str) or not kid:
        raise InvalidJWS("missing kid")
    if allowed_kid_prefix is not None and not kid.startswith(allowed_kid_prefix):
        raise InvalidJWS("kid not allowed")
    jwk = keys.get(kid)
    if jwk is None:
        raise InvalidJWS("unknown kid")
    return _finish(jwk, header, signing_input, payload_bytes, signature, rsa_alg=rsa_alg)


def verify_jws_with_embedded_jwk(
    token: str, *, typ: str, max_size: int = DEFAULT_MAX_JWS_SIZE
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify a JWS signed by the public key in its own ``jwk`` header (RFC 9449 DPoP proofs).

    The same steps as :func:`verify_jws`, except that step 6 takes the key from
    the ``jwk`` header instead of a ``kid``: it must be a valid public JWK (no
    private members, supported type), and it pins the algorithm as in step 7.
    ``typ`` is required here (``"dpop+jwt"`` for DPoP). Proving possession says
    nothing about *whose* key it is: the caller compares ``jwk_thumbprint(header["jwk"])``
    with the token's ``cnf.jkt``.

    Raises:
        InvalidJWS: any failure, with a short reason.
    """
    signing_input, header, payload_bytes, signature = _parse_compact(token, max_size)
    _check_header(header, typ, allow_jwk=True)
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise InvalidJWS("missing jwk")
    return _finish(jwk, header, signing_input, payload_bytes, signature)


# --------------------------------------------------------------------------
# Client keys: creation and signing (CLI `oncevault assertion`, DPoP clients, tests)
# --------------------------------------------------------------------------


def _load_private_pem(private_pem: bytes) -> _PrivateKey:
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError):
        raise ValueError("not an unencrypted PEM private key") from None
    if isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return key
    raise ValueError("unsupported private key type")


def _alg_of(key: _PrivateKey) -> ClientAlg:
    if isinstance(key, Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("EC keys must be on P-256")
        return "ES256"
    if key.key_size < _RSA_MIN_BITS:
        raise ValueError(f"RSA keys must be at least {_RSA_MIN_BITS} bits")
    return "PS256"


def public_jwk_from_pem(private_pem: bytes, *, kid: str | None = None) -> dict[str, str]:
    """Public JWK (with ``use`` and ``alg``) of a PEM private key.

    ``kid`` defaults to the key's RFC 7638 thumbprint.

    Raises:
        ValueError: not an unencrypted PEM Ed25519, P-256 or RSA (>= 2048 bits) key.
    """
    key = _load_private_pem(private_pem)
    alg = _alg_of(key)
    jwk = _public_jwk_members(key.public_key())
    jwk["kid"] = kid if kid is not None else jwk_thumbprint(jwk)
    jwk["use"] = "sig"
    jwk["alg"] = alg
    return jwk


def generate_client_keypair(alg: ClientAlg) -> tuple[bytes, dict[str, str]]:
    """Create a client key for ``alg``; return (PKCS#8 PEM private key, public JWK).

    The JWK's ``kid`` is its RFC 7638 thumbprint; RSA keys are 2048 bits.
    """
    key: _PrivateKey
    if alg == "EdDSA":
        key = Ed25519PrivateKey.generate()
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif alg == "PS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_MIN_BITS)
    else:
        raise ValueError("alg must be EdDSA, ES256 or PS256")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, public_jwk_from_pem(pem)


def sign_jws_with_pem(
    payload: Mapping[str, object],
    *,
    private_pem: bytes,
    kid: str | None,
    typ: str | None,
    alg: str,
    extra_headers: Mapping[str, object] | None = None,
) -> str:
    """Sign ``payload`` as a compact JWS with a client's PEM private key.

    ``alg`` must match the key (EdDSA: Ed25519, ES256: P-256, PS256: RSA >= 2048
    bits). The header holds ``alg``, ``kid`` and ``typ`` when not None, plus
    ``extra_headers`` (e.g. ``{"jwk": public_jwk}`` for a DPoP proof), which may
    not override those three.

    Raises:
        ValueError: unknown alg, a key that does not match it, or a clashing extra header.
    """
    key = _load_private_pem(private_pem)
    pinned = _alg_of(key)
    if alg != pinned:
        raise ValueError(f"alg {alg!r} does not match the key (expected {pinned})")
    header: dict[str, object] = {"alg": pinned}
    if kid is not None:
        header["kid"] = kid
    if typ is not None:
        header["typ"] = typ
    for name, value in (extra_headers or {}).items():
        if name in ("alg", "kid", "typ"):
            raise ValueError(f"extra_headers may not set {name!r}")
        header[name] = value
    return _compact_jws(header, payload, key, pinned)
