"""Citizen sign-in: verifying identity-provider tokens, and the development IdP.

Citizens authenticate with a JWT from a trusted identity provider (DESIGN
sections 1 and 6). :class:`CitizenTokenVerifier` checks one, reading like the
spec:

1. the token is a string of at most 8 KiB (checked before any decoding);
2. the compact JWS verifies against a trusted key chosen by ``kid``, with the
   algorithm pinned by the key (:func:`vault.crypto.verify_jws`): EdDSA for
   Ed25519, ES256 for P-256 and RS256 for the external IdP's RSA keys;
   ``none``, ``HS*``, ``jku``/``x5u``/``jwk``/``x5c`` headers are refused;
3. the header ``typ`` is absent or ``JWT``;
4. ``iss`` is exactly the issuer that owns the key: ``ONCEVAULT_IDP_ISSUER``
   for keys from ``ONCEVAULT_IDP_JWKS_FILE``, or, only while
   ``ONCEVAULT_DEV_IDP`` is on, the development IdP's issuer for its key;
5. ``aud`` is that issuer's audience (``ONCEVAULT_IDP_AUDIENCE``, or
   :data:`DEV_AUDIENCE`): a string equal to it, or a one-element list holding
   it; any other list is refused;
6. ``exp`` and ``iat`` are integers (not strings, floats or booleans);
   ``now < exp + 30 s``; ``iat <= now + 30 s``; ``iat < exp`` and
   ``exp - iat <= 3600``; ``nbf`` (optional) ``<= now + 30 s``;
   ``auth_time`` (optional) an integer not in the future;
7. the citizen is ``ONCEVAULT_IDP_CI_CLAIM`` when that is set and present
   (``Subject("ci", ...)``), else ``ONCEVAULT_IDP_NID_CLAIM`` (default
   ``sub``) parsed as a resident registration number.

Every failure raises :class:`CitizenAuthError` (``invalid_token``) with a short
reason that never quotes the token or the identifier. :func:`require_fresh`
raises :class:`StaleAuthentication` (``insufficient_user_authentication``)
when the sign-in is older than 10 minutes, for approving, accepting a
suggestion and erasing.

:class:`DevIdP` is the built-in development IdP (``ONCEVAULT_DEV_IDP=1``): an
Ed25519 key in ``<data_dir>/dev-idp/key.json``, issuer
``<ONCEVAULT_ISSUER>/dev-idp``; its HTTP side (OIDC code flow with PKCE) is
:mod:`api.routes.dev_idp`. Its tokens are never accepted while the flag is off.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from api.secretfiles import create_private_file, read_private_file
from api.settings import Settings, SettingsError
from vault import crypto
from vault.errors import InvalidJWKS, InvalidJWS, InvalidSubject, OncevaultError
from vault.models import Subject

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "DEV_AUDIENCE",
    "DEV_KID_PREFIX",
    "DEV_TOKEN_LIFETIME",
    "FRESH_AUTH_SECONDS",
    "MAX_LIFETIME_SECONDS",
    "MAX_TOKEN_SIZE",
    "CitizenAuthError",
    "CitizenPrincipal",
    "CitizenTokenVerifier",
    "DevIdP",
    "StaleAuthentication",
    "dev_issuer",
    "dev_token",
    "load_idp_jwks",
    "require_fresh",
]

MAX_TOKEN_SIZE: Final = 8192
"""Largest citizen token accepted (8 KiB), checked before any decoding."""

CLOCK_SKEW_SECONDS: Final = 30
"""Leeway for ``exp``, ``iat``, ``nbf`` and ``auth_time`` against our clock."""

MAX_LIFETIME_SECONDS: Final = 3600
"""Longest accepted ``exp - iat`` (DESIGN section 6: at most 1 h)."""

FRESH_AUTH_SECONDS: Final = 600
"""How recent ``auth_time`` must be for approve, accept and erase (10 minutes)."""

DEV_AUDIENCE: Final = "oncevault"
"""Audience of the development IdP's tokens (and the client id of the web sign-in)."""

DEV_KID_PREFIX: Final = "dev-"
"""Prefix of the development IdP's key id."""

DEV_TOKEN_LIFETIME: Final = 900
"""Lifetime of the development IdP's tokens (15 minutes)."""

DEV_IDP_DIR: Final = "dev-idp"
DEV_KEY_FILE: Final = "key.json"

# Claims whose meaning is fixed; an identifier claim may not be one of them.
_RESERVED_CLAIMS: Final = frozenset(
    {"iss", "aud", "exp", "iat", "nbf", "jti", "auth_time", "nonce", "azp", "typ"}
)
_PRIVATE_JWK_MEMBERS: Final = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_PINNED_ALG_BY_KTY: Final[Mapping[str, str]] = {"OKP": "EdDSA", "EC": "ES256", "RSA": "RS256"}
_MAX_JWKS_FILE_SIZE: Final = 1 << 20
_MAX_TIME: Final = 2**40  # year ~36,800: any larger "time" is garbage, not a date
_SEAL_AAD_LABEL: Final = "oncevault/dev-idp/v1"


# --------------------------------------------------------------------------
# Principal and errors
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CitizenPrincipal:
    """A verified citizen: who, according to which IdP, signed in when, valid until.

    The identifier stays inside ``subject`` (whose repr never shows it).
    """

    subject: Subject
    issuer: str
    auth_time: int | None
    """When the citizen authenticated at the IdP (epoch seconds), if the IdP said."""
    expires_at: int
    """The token's ``exp`` (epoch seconds)."""
    link: Subject | None = None
    """The CI the IdP asserted beside the resident number (``subject``), when
    ``ONCEVAULT_IDP_CI_CLAIM`` is set: the same person, linked to the same citizen."""

    def __repr__(self) -> str:
        return (
            f"CitizenPrincipal(kind={self.subject.kind!r}, issuer={self.issuer!r}, "
            f"auth_time={self.auth_time!r}, expires_at={self.expires_at!r})"
        )


class CitizenAuthError(OncevaultError):
    """The citizen token is not valid."""

    code = "invalid_token"


class StaleAuthentication(OncevaultError):
    """A fresh sign-in is required."""

    code = "insufficient_user_authentication"


def require_fresh(
    principal: CitizenPrincipal, *, now: int, max_age: int = FRESH_AUTH_SECONDS
) -> None:
    """Require a sign-in within the last ``max_age`` seconds (inclusive).

    Raises:
        StaleAuthentication: ``auth_time`` is missing or older than ``max_age``.
    """
    if principal.auth_time is None:
        raise StaleAuthentication("this action needs a fresh sign-in (no auth_time in the token)")
    if now - principal.auth_time > max_age:
        raise StaleAuthentication(f"this action needs a sign-in within the last {max_age} seconds")


# --------------------------------------------------------------------------
# The external IdP's keys
# --------------------------------------------------------------------------


def load_idp_jwks(path: Path) -> dict[str, dict[str, Any]]:
    """Read and validate the external IdP's JWKS file; return ``{kid: public jwk}``.

    Keys marked ``"use": "enc"`` are skipped (they never verify a signature).
    Every other key must be a valid public signing key (Ed25519, P-256, or RSA
    of 2048 to 8192 bits) with a unique ``kid``; a declared ``alg`` must be the
    one its type pins (EdDSA, ES256, RS256). Private members are refused in
    every key, skipped ones included.

    Raises:
        SettingsError: naming ``ONCEVAULT_IDP_JWKS_FILE`` and the problem.
    """
    name = "ONCEVAULT_IDP_JWKS_FILE"
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_JWKS_FILE_SIZE + 1)
    except OSError as exc:
        raise SettingsError(f"{name}: {path} cannot be read ({exc.__class__.__name__})") from None
    if len(raw) > _MAX_JWKS_FILE_SIZE:
        raise SettingsError(f"{name}: {path} is larger than 1 MiB")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SettingsError(f"{name}: {path} is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise SettingsError(f'{name}: {path} must be a JWKS (an object with a "keys" array)')
    signing: list[dict[str, Any]] = []
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict):
            raise SettingsError(f"{name}: key {index} is not a JSON object")
        private = [member for member in _PRIVATE_JWK_MEMBERS if member in jwk]
        if private:
            raise SettingsError(f"{name}: key {index} holds a private member {private[0]!r}")
        if jwk.get("use") == "enc":
            continue
        kty = jwk.get("kty")
        pinned = _PINNED_ALG_BY_KTY.get(kty) if isinstance(kty, str) else None
        declared = jwk.get("alg")
        if pinned is not None and declared is not None and declared != pinned:
            raise SettingsError(f"{name}: key {index} declares alg other than {pinned}")
        # The type pins the algorithm; validate_public_jwks knows RSA as PS256, so the
        # declared alg (checked above) is dropped and verify_jws pins RS256 for RSA.
        signing.append({member: value for member, value in jwk.items() if member != "alg"})
    if not signing:
        raise SettingsError(f"{name}: {path} has no signing keys")
    try:
        return crypto.validate_public_jwks({"keys": signing})
    except InvalidJWKS as exc:
        raise SettingsError(f"{name}: signing {exc}") from None


# --------------------------------------------------------------------------
# The verifier
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Trust:
    """What a key vouches for: tokens of this issuer, for this audience."""

    issuer: str
    audience: str


def _int_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    if name not in claims:
        if required:
            raise CitizenAuthError(f"missing {name}")
        return None
    value = claims[name]
    if type(value) is not int:  # bool, float and numeric strings are all refused
        raise CitizenAuthError(f"{name} is not an integer")
    if not 0 <= value <= _MAX_TIME:
        raise CitizenAuthError(f"{name} out of range")
    return value


def _check_identifier_claim(setting: str, claim: str) -> None:
    if not claim or claim in _RESERVED_CLAIMS:
        raise SettingsError(f"{setting}: must name an identifier claim, not a registered one")


class CitizenTokenVerifier:
    """Verifies citizen bearer tokens; build one per process and reuse it.

    Keys are read once, here: the external IdP's from ``ONCEVAULT_IDP_JWKS_FILE``
    when ``ONCEVAULT_IDP_ISSUER`` is set, and the development IdP's only while
    ``settings.dev_idp`` is true (``dev_idp`` is loaded from the data directory
    when not given, and ignored when the flag is off).

    Raises:
        SettingsError: an unusable JWKS file, a bad claim name, a kid shared by
            both IdPs, or a development IdP for another issuer.
    """

    def __init__(self, settings: Settings, *, dev_idp: DevIdP | None = None) -> None:
        _check_identifier_claim("ONCEVAULT_IDP_NID_CLAIM", settings.idp_nid_claim)
        if settings.idp_ci_claim is not None:
            _check_identifier_claim("ONCEVAULT_IDP_CI_CLAIM", settings.idp_ci_claim)
            if settings.idp_ci_claim == settings.idp_nid_claim:
                raise SettingsError("ONCEVAULT_IDP_CI_CLAIM: must differ from the nid claim")
        self._nid_claim = settings.idp_nid_claim
        self._ci_claim = settings.idp_ci_claim
        self._keys: dict[str, Mapping[str, Any]] = {}
        self._trust: dict[str, _Trust] = {}

        if settings.idp_issuer is not None:
            if settings.idp_jwks_file is None or not settings.idp_audience:
                raise SettingsError(
                    "ONCEVAULT_IDP_ISSUER: needs ONCEVAULT_IDP_JWKS_FILE and ONCEVAULT_IDP_AUDIENCE"
                )
            external = _Trust(settings.idp_issuer, settings.idp_audience)
            for kid, jwk in load_idp_jwks(settings.idp_jwks_file).items():
                self._keys[kid] = jwk
                self._trust[kid] = external

        if settings.dev_idp:
            if dev_idp is None:
                dev_idp = DevIdP.load_or_create(
                    settings.data_dir, settings.issuer, nid_claim=settings.idp_nid_claim
                )
            if dev_idp.issuer != dev_issuer(settings.issuer):
                raise SettingsError("ONCEVAULT_DEV_IDP: the development IdP has another issuer")
            if dev_idp.issuer == settings.idp_issuer:
                raise SettingsError(
                    "ONCEVAULT_IDP_ISSUER: must differ from the development IdP's issuer"
                )
            for jwk in dev_idp.jwks()["keys"]:
                if jwk["kid"] in self._keys:
                    raise SettingsError(
                        "ONCEVAULT_IDP_JWKS_FILE: a kid clashes with the development IdP's key"
                    )
                self._keys[jwk["kid"]] = jwk
                self._trust[jwk["kid"]] = _Trust(dev_idp.issuer, DEV_AUDIENCE)

    @property
    def issuers(self) -> frozenset[str]:
        """The issuers whose tokens are accepted (empty: no IdP configured)."""
        return frozenset(trust.issuer for trust in self._trust.values())

    def verify(self, token: str, *, now: int) -> CitizenPrincipal:
        """Verify a citizen token at time ``now`` (epoch seconds).

        Raises:
            CitizenAuthError: for every failure, with a short reason.
        """
        return self.verify_with_claims(token, now=now)[0]

    def verify_with_claims(
        self, token: str, *, now: int
    ) -> tuple[CitizenPrincipal, Mapping[str, Any]]:
        """:meth:`verify`, and the verified payload (an id_token's ``nonce`` and ``azp``
        are checked by the sign-in that asked for it).

        Raises:
            CitizenAuthError: for every failure, with a short reason.
        """
        # 1. A string of at most 8 KiB, before anything decodes it.
        if not isinstance(token, str):
            raise CitizenAuthError("token is not a string")
        if len(token) > MAX_TOKEN_SIZE:
            raise CitizenAuthError("token too large")
        if not self._keys:
            raise CitizenAuthError("no identity provider is configured")
        # 2. Signature by a trusted key; the key pins the algorithm.
        try:
            header, claims = crypto.verify_jws(
                token, keys=self._keys, typ=None, max_size=MAX_TOKEN_SIZE, rsa_alg="RS256"
            )
        except InvalidJWS as exc:
            raise CitizenAuthError(str(exc)) from None
        # 3. typ absent or JWT.
        if "typ" in header and header["typ"] != "JWT":
            raise CitizenAuthError("wrong typ")
        # 4. The issuer that owns the key, exactly.
        trust = self._trust[header["kid"]]
        if claims.get("iss") != trust.issuer:
            raise CitizenAuthError("untrusted issuer")
        # 5. Our audience: a string, or a one-element list.
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) == 1:
            audience = audience[0]
        if not isinstance(audience, str) or audience != trust.audience:
            raise CitizenAuthError("wrong audience")
        # 6. Times: integers, current, at most an hour long.
        expires_at = _int_claim(claims, "exp", required=True)
        issued_at = _int_claim(claims, "iat", required=True)
        not_before = _int_claim(claims, "nbf", required=False)
        auth_time = _int_claim(claims, "auth_time", required=False)
        assert expires_at is not None
        assert issued_at is not None
        if now >= expires_at + CLOCK_SKEW_SECONDS:
            raise CitizenAuthError("token expired")
        if issued_at > now + CLOCK_SKEW_SECONDS:
            raise CitizenAuthError("token issued in the future")
        if not_before is not None and not_before > now + CLOCK_SKEW_SECONDS:
            raise CitizenAuthError("token not yet valid")
        if expires_at <= issued_at:
            raise CitizenAuthError("exp is not after iat")
        if expires_at - issued_at > MAX_LIFETIME_SECONDS:
            raise CitizenAuthError("token lifetime over 1 hour")
        if auth_time is not None and auth_time > now + CLOCK_SKEW_SECONDS:
            raise CitizenAuthError("auth_time in the future")
        # 7. Who: the resident number, with the CI beside it when configured and present
        #    (one person: the vault links both to one citizen); the CI alone else.
        subject, link = self._subjects(claims)
        principal = CitizenPrincipal(
            subject=subject,
            issuer=trust.issuer,
            auth_time=auth_time,
            expires_at=expires_at,
            link=link,
        )
        return principal, claims

    def _subjects(self, claims: Mapping[str, Any]) -> tuple[Subject, Subject | None]:
        ci: Subject | None = None
        if self._ci_claim is not None and self._ci_claim in claims:
            try:
                ci = Subject.parse({"ci": claims[self._ci_claim]})
            except InvalidSubject:
                raise CitizenAuthError("malformed ci claim") from None
        if self._nid_claim not in claims:
            if ci is None:
                raise CitizenAuthError("no citizen identifier in the token")
            return ci, None
        try:
            return Subject.parse({"nid": claims[self._nid_claim]}), ci
        except InvalidSubject:
            raise CitizenAuthError("malformed citizen identifier") from None


# --------------------------------------------------------------------------
# The development IdP
# --------------------------------------------------------------------------


def dev_issuer(platform_issuer: str) -> str:
    """The development IdP's issuer: ``<ONCEVAULT_ISSUER>/dev-idp``."""
    return platform_issuer.rstrip("/") + "/" + DEV_IDP_DIR


SealPurpose = Literal["code", "form"]


class DevIdP:
    """The built-in development identity provider (``ONCEVAULT_DEV_IDP=1``).

    Holds one Ed25519 key (kid ``dev-`` + the start of its RFC 7638
    thumbprint). It mints citizen tokens (:meth:`mint`), publishes its public
    key (:meth:`jwks`) and seals the stateless values of its OIDC endpoints
    (:meth:`seal`, :meth:`unseal`) with keys derived from its own by HKDF, so
    several server workers agree without sharing memory.
    """

    __slots__ = ("_seal_keys", "_seed", "_sub_key", "issuer", "kid", "nid_claim")

    def __init__(self, *, seed: bytes, issuer: str, nid_claim: str = "sub") -> None:
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise ValueError("the development IdP key must be a 32-byte Ed25519 seed")
        _check_identifier_claim("ONCEVAULT_IDP_NID_CLAIM", nid_claim)
        self._seed = seed
        self.issuer = issuer
        self.nid_claim = nid_claim
        thumbprint = crypto.jwk_thumbprint(crypto.public_jwk(seed, "x"))
        self.kid = DEV_KID_PREFIX + thumbprint[:16]
        self._sub_key = crypto.hkdf_sha256(seed, b"oncevault/dev-idp/sub/v1")
        self._seal_keys: dict[str, bytes] = {
            purpose: crypto.hkdf_sha256(seed, f"oncevault/dev-idp/{purpose}/v1".encode())
            for purpose in ("code", "form")
        }

    def __repr__(self) -> str:
        return f"DevIdP(issuer={self.issuer!r}, kid={self.kid!r})"

    @classmethod
    def load_or_create(cls, data_dir: Path, issuer_base: str, *, nid_claim: str = "sub") -> DevIdP:
        """Load the key from ``<data_dir>/dev-idp/key.json``, creating it on first use.

        The directory is 0700 and the file 0600; creation is atomic (a file
        linked into place), so concurrent workers end up with the same key.

        Raises:
            SettingsError: no data directory, loose permissions, or an unreadable key file.
        """
        if not data_dir.is_dir():
            raise SettingsError(
                f"ONCEVAULT_DATA_DIR: {data_dir} does not exist; run `oncevault init` first"
            )
        directory = data_dir / DEV_IDP_DIR
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise SettingsError(f"{directory}: not a directory")
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise SettingsError(f"{directory}: must be mode 0700 (it holds the dev IdP key)")
        path = directory / DEV_KEY_FILE
        if not path.exists():
            _create_key_file(path)
        return cls(seed=_read_key_file(path), issuer=dev_issuer(issuer_base), nid_claim=nid_claim)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWKS of the development IdP."""
        return {"keys": [crypto.public_jwk(self._seed, self.kid)]}

    def mint(
        self,
        subject_nid: str,
        *,
        now: int,
        lifetime: int = DEV_TOKEN_LIFETIME,
        auth_time: int | None = None,
    ) -> str:
        """A citizen token (``aud`` :data:`DEV_AUDIENCE`) for a resident registration number.

        Claims: ``iss, sub, aud, iat, exp, auth_time, jti`` and ``nid``. ``sub``
        is the nid when the nid claim is ``sub``; otherwise ``sub`` is an opaque
        per-citizen value and the nid is also put under the configured claim.

        Raises:
            InvalidSubject: not a resident registration number (the value is not quoted).
            ValueError: ``lifetime`` outside 1..3600 s.
        """
        return self.mint_for(
            subject_nid, now=now, audience=DEV_AUDIENCE, lifetime=lifetime, auth_time=auth_time
        )

    def mint_for(
        self,
        subject_nid: str,
        *,
        now: int,
        audience: str,
        lifetime: int = DEV_TOKEN_LIFETIME,
        auth_time: int | None = None,
        nonce: str | None = None,
    ) -> str:
        """As :meth:`mint`, for another audience (an OIDC client) and with a ``nonce``."""
        nid = Subject.parse({"nid": subject_nid}).value
        if type(lifetime) is not int or not 1 <= lifetime <= MAX_LIFETIME_SECONDS:
            raise ValueError(f"lifetime must be 1..{MAX_LIFETIME_SECONDS} seconds")
        claims: dict[str, object] = {
            "iss": self.issuer,
            "aud": audience,
            "iat": now,
            "exp": now + lifetime,
            "auth_time": now if auth_time is None else auth_time,
            "jti": secrets.token_urlsafe(16),
            "nid": nid,
        }
        if self.nid_claim == "sub":
            claims["sub"] = nid
        else:
            digest = crypto.hmac_sha256(self._sub_key, nid.encode("ascii"))
            claims["sub"] = "dev-" + crypto.b64url_encode(digest[:18])
            claims[self.nid_claim] = nid
        if nonce is not None:
            claims["nonce"] = nonce
        return crypto.sign_jws(claims, private_key=self._seed, kid=self.kid, typ="JWT")

    def seal(self, purpose: SealPurpose, value: Mapping[str, object]) -> str:
        """Seal a JSON object for ``purpose`` (AES-256-GCM); return base64url text."""
        aad = crypto.encode_aad(_SEAL_AAD_LABEL, purpose, self.issuer)
        return crypto.seal_json(self._seal_keys[purpose], value, aad)

    def unseal(self, purpose: SealPurpose, text: str) -> dict[str, Any]:
        """Open a value made by :meth:`seal` for the same ``purpose``.

        Raises:
            DecryptionError: for every failure (tampered, foreign, wrong purpose, malformed).
        """
        aad = crypto.encode_aad(_SEAL_AAD_LABEL, purpose, self.issuer)
        return crypto.open_json(self._seal_keys[purpose], text, aad)


def _create_key_file(path: Path) -> None:
    document = {
        "kty": "OKP",
        "crv": "Ed25519",
        "seed": crypto.b64url_encode(crypto.generate_signing_key()),
        "created_at": int(time.time()),
        "note": "oncevault development IdP key; never use it in production",
    }
    create_private_file(path, (json.dumps(document) + "\n").encode("utf-8"))


def _read_key_file(path: Path) -> bytes:
    raw = read_private_file(path, max_size=4096, holds="the dev IdP key")
    try:
        document = json.loads(raw.decode("utf-8"))
        seed = crypto.b64url_decode(document["seed"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise SettingsError(f"{path}: not a development IdP key file") from None
    if len(seed) != 32:
        raise SettingsError(f"{path}: not a development IdP key file")
    return seed


# --------------------------------------------------------------------------
# `oncevault dev-token --nid NID`
# --------------------------------------------------------------------------


def dev_token(
    settings: Settings, nid: str, *, now: int | None = None, lifetime: int = DEV_TOKEN_LIFETIME
) -> str:
    """A citizen token from the development IdP in the data directory (for the CLI).

    Raises:
        SettingsError: the development IdP is off, the data directory is missing,
            or ``nid`` is not a resident registration number (never quoted).
    """
    if not settings.dev_idp:
        raise SettingsError(
            "ONCEVAULT_DEV_IDP: the development IdP is off; dev-token needs ONCEVAULT_DEV_IDP=1"
        )
    idp = DevIdP.load_or_create(
        settings.data_dir, settings.issuer, nid_claim=settings.idp_nid_claim
    )
    try:
        return idp.mint(nid, now=int(time.time()) if now is None else now, lifetime=lifetime)
    except InvalidSubject:
        raise SettingsError(
            "--nid: expected a resident registration number (13 digits, YYMMDD-NNNNNNN)"
        ) from None
