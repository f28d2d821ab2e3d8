"""OAuth tokens: client authentication, access-token issuance and verification, DPoP.

Clients authenticate with ``private_key_jwt`` (RFC 7523) and get RFC 9068 access
tokens (``typ: at+jwt``, EdDSA with the current ``at-`` key, at most 300 s). A token
for reading citizen data is bound to one consent through RFC 9396
``authorization_details``. DPoP (RFC 9449) binds a token to the client's key.

Every check reads like the spec and fails closed with one error type per audience:
:class:`OAuthError` at the token endpoint (RFC 6749 bodies), :class:`TokenInvalid`
(401 ``invalid_token``) and :class:`DPoPInvalid` (401 ``invalid_dpop_proof``) on
resource requests. Replay stores and revocations live in the database, so they
hold across workers and restarts.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from audit.log import AuditLog
from audit.models import EntryDraft, safe_token
from consent.models import Client, Status
from consent.repository import ClientRepository, ConsentRepository, ReplayRepository
from vault import crypto
from vault.clock import Clock
from vault.errors import InvalidJWS, OncevaultError
from vault.keyring import Keyring
from vault.models import new_id

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - a media type, not a secret
DPOP_TYP = "dpop+jwt"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_LIFETIME = 300
MAX_ASSERTION_LIFETIME = 300
MAX_TOKEN_BYTES = 8192

#: Access tokens whose verified signature a worker remembers (about 2 KiB each).
VERIFIED_SIGNATURES_CACHED = 4096
SKEW = 30
DPOP_WINDOW = 60
CONSENT_DETAIL_TYPE = "oncevault_consent"


class OAuthError(OncevaultError):
    """An RFC 6749 error at the token endpoint."""

    def __init__(self, error: str, description: str, *, status: int | None = None) -> None:
        super().__init__(description, code=error)
        self.error = error
        self.description = description
        self.status = status or (401 if error == "invalid_client" else 400)


class TokenInvalid(OncevaultError):
    """The access token is not acceptable."""

    code = "invalid_token"


class DPoPInvalid(OncevaultError):
    """The DPoP proof is not acceptable."""

    code = "invalid_dpop_proof"


class Forbidden(OncevaultError):
    """The client does not hold the role this route needs."""

    code = "forbidden"


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    token_type: str
    expires_in: int
    scope: str
    authorization_details: list[dict[str, str]] | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "scope": self.scope,
        }
        if self.authorization_details is not None:
            body["authorization_details"] = self.authorization_details
        return body


@dataclass(frozen=True)
class ProofUse:
    """A verified DPoP proof whose single use is still to be recorded (``jti`` in
    ``scope`` until ``expires_at``), inside the caller's unit of work."""

    scope: str
    jti: str
    expires_at: int
    now: int


class AccessPrincipal(msgspec.Struct, frozen=True):
    """A verified access token plus the client's live registration."""

    client: Client
    scope: frozenset[str]
    consent_id: str | None
    jti: str
    expires_at: int

    def require(self, role: str) -> None:
        """Raise Forbidden unless the token grants ``role`` and the client holds it."""
        if role not in self.scope:
            raise Forbidden(f"this route needs the {role} role")


@dataclass(frozen=True)
class SignedToken:
    """An access token that passed every check needing no database
    (:meth:`TokenService.check`). Not a caller yet: the client may have been disabled
    or the token revoked since it was issued, so :meth:`principal` must be given what
    the database says now, read on this request."""

    client_id: str
    jti: str
    scope: frozenset[str]  # as claimed; the client's live roles narrow it
    consent_id: str | None
    expires_at: int
    proof_use: ProofUse | None  # a DPoP proof whose single use is still to be recorded

    def principal(self, client: Client | None, *, revoked: bool) -> AccessPrincipal:
        """The caller, given the client's live registration (None: deleted) and whether
        this token's ``jti`` is revoked. Raises TokenInvalid."""
        if revoked:
            raise TokenInvalid("token revoked")
        if client is None or client.client_id != self.client_id or not client.may_obtain_tokens:
            raise TokenInvalid("client disabled")
        return AccessPrincipal(
            client=client,
            scope=self.scope & client.roles,
            consent_id=self.consent_id,
            jti=self.jti,
            expires_at=self.expires_at,
        )


def _int_claim(payload: Mapping[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _unverified_payload(token: str) -> dict[str, Any]:
    """The payload of a compact JWS, only to find whose keys verify it."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        value = json.loads(crypto.b64url_decode(parts[1]))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def access_token_hash(token: str) -> str:
    """``ath`` of RFC 9449: base64url(SHA-256(token))."""
    return crypto.sha256_b64url(token)


class TokenService:
    def __init__(
        self,
        *,
        clients: ClientRepository,
        consents: ConsentRepository,
        replay: ReplayRepository,
        audit: AuditLog,
        clock: Clock,
        keyring: Keyring,
        issuer: str,
    ) -> None:
        self.clients = clients
        self.consents = consents
        self.replay = replay
        self.audit = audit
        self.clock = clock
        self.keyring = keyring
        self.issuer = issuer
        self.token_endpoint = issuer + "/oauth/token"
        # Verified signatures, never authorization: token -> (kid, claims). Every
        # claim check, the revoked-jti lookup and the live client run on each call.
        self._verified: dict[str, tuple[str, dict[str, Any]]] = {}

    # -- client authentication (RFC 7523) ------------------------------------------------

    async def authenticate_client(self, form: Mapping[str, str]) -> Client:
        """Steps of RFC 7523 §3 with the DESIGN section 6 limits; any failure is invalid_client."""
        client, jti, expires = await self._check_assertion(form)
        now = self.clock.now_ms()
        if not await self.replay.use_once(f"assertion:{client.client_id}", jti, expires, now):
            raise OAuthError("invalid_client", "assertion replayed")
        return client

    async def _check_assertion(self, form: Mapping[str, str]) -> tuple[Client, str, int]:
        """Steps 1-3 (no replay check yet); returns the client, the jti and its expiry (ms)."""
        now = self.clock.now_ms() // 1000
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_client", "client_assertion_type must be jwt-bearer")
        assertion = form.get("client_assertion", "")
        if not assertion or len(assertion) > MAX_TOKEN_BYTES:
            raise OAuthError("invalid_client", "client_assertion missing or too large")
        # 1. Whose assertion is it? (read unverified, only to pick the keys)
        claimed = _unverified_payload(assertion).get("iss")
        client = await self.clients.get(claimed) if isinstance(claimed, str) else None
        if client is None or not client.may_obtain_tokens:
            raise OAuthError("invalid_client", "unknown, disabled or unapproved client")
        if form.get("client_id") not in (None, client.client_id):
            raise OAuthError("invalid_client", "client_id does not match the assertion")
        # 2. Signature with the client's registered keys, algorithm pinned by the key.
        try:
            _, claims = crypto.verify_jws(assertion, keys=client.jwks, typ=None, kid_optional=True)
        except InvalidJWS as exc:
            raise OAuthError("invalid_client", f"assertion: {exc}") from None
        # 3. Claims.
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise OAuthError("invalid_client", "iss and sub must both be the client id")
        audience = claims.get("aud")
        if not isinstance(audience, str) or audience not in (self.issuer, self.token_endpoint):
            raise OAuthError("invalid_client", "aud must be the issuer or the token endpoint")
        exp = _int_claim(claims, "exp")
        if exp is None or exp <= now - SKEW:
            raise OAuthError("invalid_client", "assertion expired or without exp")
        if exp > now + MAX_ASSERTION_LIFETIME + SKEW:
            raise OAuthError("invalid_client", "assertion exp more than 5 minutes ahead")
        if "iat" in claims and _int_claim(claims, "iat") is None:
            raise OAuthError("invalid_client", "iat must be a number")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
            raise OAuthError("invalid_client", "jti missing")
        return client, jti, (exp + SKEW) * 1000

    # -- issuance ----------------------------------------------------------------------------

    async def issue(
        self,
        form: Mapping[str, str],
        *,
        dpop_proof: str | None,
        request_id: str | None,
        gate: Callable[[str], Awaitable[None]] | None = None,
    ) -> TokenResponse:
        """Authenticate, then issue. ``gate(client_id)`` runs after authentication (rate
        limits are per authenticated client, so nobody can spend another's budget).

        The assertion's single use, the consent check and the ``token.issued`` (or
        ``token.refused``) entry share one group-committed unit.
        """
        client, jti, expires = await self._check_assertion(form)
        if gate is not None:
            await gate(client.client_id)
        jkt: str | None = None
        if dpop_proof is not None:
            jkt = await self.verify_dpop(
                dpop_proof, htm="POST", htu=self.token_endpoint, token=None
            )

        async def work() -> tuple[TokenResponse | OAuthError, list[EntryDraft]]:
            now = self.clock.now_ms()
            if not await self.replay.use_once_here(
                f"assertion:{client.client_id}", jti, expires, now
            ):
                return OAuthError("invalid_client", "assertion replayed"), []
            try:
                response = await self._issue_for(client, form, jkt)
            except OAuthError as exc:
                return exc, [
                    self._draft(client, "token.refused", None, exc.error, request_id, "denied")
                ]
            consent_id = (
                response.authorization_details[0]["consent_id"]
                if response.authorization_details
                else None
            )
            return response, [
                self._draft(client, "token.issued", consent_id, None, request_id, "ok")
            ]

        value, _ = await self.audit.run(work)
        if isinstance(value, OAuthError):
            raise value
        return value

    async def _issue_for(
        self, client: Client, form: Mapping[str, str], jkt: str | None
    ) -> TokenResponse:
        now = self.clock.now_ms() // 1000
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "only client_credentials")
        requested = form.get("scope")
        scope = frozenset(requested.split()) if requested else client.roles
        if not scope or not scope <= client.roles:
            raise OAuthError("invalid_scope", "scope must be a subset of the client's roles")
        details = await self._consent_details(client, form.get("authorization_details"), scope)
        if jkt is None and client.dpop_required:
            raise OAuthError("invalid_request", "this client must use DPoP")
        claims: dict[str, object] = {
            "iss": self.issuer,
            "aud": self.issuer,
            "sub": client.client_id,
            "client_id": client.client_id,
            "scope": " ".join(sorted(scope)),
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
            "jti": new_id("at"),
        }
        if details is not None:
            claims["authorization_details"] = details
            claims["consent_id"] = details[0]["consent_id"]
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        token = self.keyring.sign("at", claims, typ=ACCESS_TOKEN_TYP)
        return TokenResponse(
            access_token=token,
            token_type="DPoP" if jkt else "Bearer",
            expires_in=TOKEN_LIFETIME,
            scope=" ".join(sorted(scope)),
            authorization_details=details,
        )

    async def _consent_details(
        self, client: Client, raw: str | None, scope: frozenset[str]
    ) -> list[dict[str, str]] | None:
        if raw is None:
            return None
        try:
            details = json.loads(raw)
        except ValueError:
            raise OAuthError("invalid_request", "authorization_details is not JSON") from None
        if (
            not isinstance(details, list)
            or len(details) != 1
            or not isinstance(details[0], dict)
            or details[0].get("type") != CONSENT_DETAIL_TYPE
            or set(details[0]) != {"type", "consent_id"}
            or not isinstance(details[0]["consent_id"], str)
        ):
            raise OAuthError(
                "invalid_request", "authorization_details: one oncevault_consent with consent_id"
            )
        if "consumer" not in scope:
            raise OAuthError("invalid_scope", "a consent-bound token needs the consumer scope")
        consent_id = details[0]["consent_id"]
        consent = await self.consents.get(consent_id) if len(consent_id) <= 64 else None
        if consent is None or consent.client_id != client.client_id:
            raise OAuthError("invalid_grant", "no such consent for this client")
        if consent.effective_status(self.clock.now_ms()) != Status.ACTIVE:
            raise OAuthError("invalid_grant", "the consent is not active")
        return [{"type": CONSENT_DETAIL_TYPE, "consent_id": consent_id}]

    def _draft(  # noqa: PLR0917 - the entry's fields in order
        self,
        client: Client,
        action: str,
        consent_id: str | None,
        reason: str | None,
        request_id: str | None,
        outcome: str,
    ) -> EntryDraft:
        return EntryDraft(
            action=action,
            actor_type="client",
            actor_id=client.client_id,
            outcome=outcome,  # type: ignore[arg-type]
            client_id=client.client_id,
            consent_id=safe_token(consent_id),
            reason_code=reason,
            request_id=request_id,
        )

    # -- verification ---------------------------------------------------------------------------

    async def verify(
        self,
        authorization: str | None,
        *,
        dpop_proof: str | None,
        htm: str,
        htu: str,
    ) -> AccessPrincipal:
        """Verify the ``Authorization`` header of a resource request (DESIGN section 6):
        :meth:`check`, then the live registration and revocation list in one query,
        then a DPoP proof's single use, in a transaction of its own. (The consented
        reads do these steps themselves, inside their unit: consent/reads.py.)"""
        token = self.check(authorization, dpop_proof=dpop_proof, htm=htm, htu=htu)
        principal = await self.caller(token)
        if token.proof_use is not None:
            refused = await self._use_proof(token.proof_use, here=False)
            if refused is not None:
                raise refused
        return principal

    async def caller(self, token: SignedToken) -> AccessPrincipal:
        """The caller of a checked token: the client's live registration and the
        revocation list, in one query (disabled, unapproved or deleted clients and
        revoked tokens fail now). Raises TokenInvalid."""
        client, revoked = await self.clients.get_for_token(token.client_id, token.jti)
        return token.principal(client, revoked=revoked)

    def check(
        self, authorization: str | None, *, dpop_proof: str | None, htm: str, htu: str
    ) -> SignedToken:
        """Every check of an access token that needs no database: the signature under
        the current key, issuer, audience, lifetime, subject, and a DPoP proof (all but
        its single use). Raises TokenInvalid or DPoPInvalid.

        What it returns is not yet a caller: :meth:`SignedToken.principal` must be
        given the client's live registration and the token's revocation status."""
        now = self.clock.now_ms() // 1000
        if not authorization:
            raise TokenInvalid("missing access token")
        scheme, _, token = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme not in ("bearer", "dpop") or not token:
            raise TokenInvalid("use Bearer or DPoP")
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenInvalid("token too large")
        claims = self._verified_claims(token)
        if claims.get("iss") != self.issuer:
            raise TokenInvalid("wrong issuer")
        if claims.get("aud") != self.issuer:  # a list is wrong too
            raise TokenInvalid("wrong audience")
        exp, iat = _int_claim(claims, "exp"), _int_claim(claims, "iat")
        if exp is None or iat is None:
            raise TokenInvalid("exp and iat must be numbers")
        if exp - iat > TOKEN_LIFETIME or exp <= iat:
            raise TokenInvalid("lifetime over 300 s")
        if exp <= now or iat > now + SKEW:
            raise TokenInvalid("token expired or not yet valid")
        client_id = claims.get("client_id")
        if not isinstance(client_id, str) or claims.get("sub") != client_id:
            raise TokenInvalid("sub must be the client id")
        jti = claims.get("jti")
        if not isinstance(jti, str):
            raise TokenInvalid("jti missing")
        scope_claim = claims.get("scope")
        if not isinstance(scope_claim, str):
            raise TokenInvalid("scope missing")
        cnf = claims.get("cnf")
        proof_use: ProofUse | None = None
        if cnf is not None:
            jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
            if scheme != "dpop" or not isinstance(jkt, str):
                raise TokenInvalid("a DPoP-bound token must be sent with the DPoP scheme")
            if dpop_proof is None:
                raise DPoPInvalid("missing DPoP proof")
            proof_jkt, proof_use = self._check_dpop(dpop_proof, htm=htm, htu=htu, token=token)
            if proof_jkt != jkt:
                raise DPoPInvalid("proof key does not match the token")
        elif scheme != "bearer":
            raise TokenInvalid("an unbound token uses the Bearer scheme")
        consent_id = claims.get("consent_id")
        return SignedToken(
            client_id=client_id,
            jti=jti,
            scope=frozenset(scope_claim.split()),
            consent_id=consent_id if isinstance(consent_id, str) else None,
            expires_at=exp,
            proof_use=proof_use,
        )

    def _verified_claims(self, token: str) -> dict[str, Any]:
        """The payload of an access token whose signature verifies under the current
        ``at-`` key. A signature once verified is remembered (bounded, keyed by the
        whole token and the key id) because it cannot change; nothing else is."""
        current = self.keyring.current_kid("at")
        cached = self._verified.get(token)
        if cached is not None and cached[0] == current:
            return cached[1]
        keys = {current: self.keyring.public_keys("at")[current]}
        try:
            _, claims = crypto.verify_jws(
                token, keys=keys, typ=ACCESS_TOKEN_TYP, allowed_kid_prefix="at-"
            )
        except InvalidJWS as exc:
            raise TokenInvalid(str(exc)) from None
        if len(self._verified) >= VERIFIED_SIGNATURES_CACHED:
            now = self.clock.now_ms() // 1000
            live = [
                (t, entry)
                for t, entry in self._verified.items()
                if (_int_claim(entry[1], "exp") or 0) > now
            ]
            # Still full: keep the newest three quarters (insertion order).
            self._verified = dict(live[-(VERIFIED_SIGNATURES_CACHED * 3 // 4) :])
        self._verified[token] = (current, claims)
        return claims

    async def verify_dpop(self, proof: str, *, htm: str, htu: str, token: str | None) -> str:
        """RFC 9449 §4.3; returns the proof key's thumbprint. Refusals raise DPoPInvalid
        (OAuthError ``invalid_dpop_proof`` at the token endpoint)."""
        try:
            jkt, use = self._check_dpop(proof, htm=htm, htu=htu, token=token)
            refused = await self._use_proof(use, here=False)
            if refused is not None:
                raise refused
            return jkt
        except DPoPInvalid as exc:
            if token is None:  # at the token endpoint: an RFC 6749-style error
                raise OAuthError("invalid_dpop_proof", str(exc)) from None
            raise

    async def use_proof_here(self, use: ProofUse) -> DPoPInvalid | None:
        """Record a deferred proof's single use inside the caller's transaction; the
        refusal to answer with when the proof was seen before."""
        return await self._use_proof(use, here=True)

    async def _use_proof(self, use: ProofUse, *, here: bool) -> DPoPInvalid | None:
        record = self.replay.use_once_here if here else self.replay.use_once
        if not await record(use.scope, use.jti, use.expires_at, use.now):
            return DPoPInvalid("proof replayed")
        return None

    def _check_dpop(
        self, proof: str, *, htm: str, htu: str, token: str | None
    ) -> tuple[str, ProofUse]:
        """Every check of RFC 9449 §4.3 but the replay: the thumbprint and the use to record."""
        now = self.clock.now_ms() // 1000
        try:
            header, claims = crypto.verify_jws_with_embedded_jwk(proof, typ=DPOP_TYP)
        except InvalidJWS as exc:
            raise DPoPInvalid(f"proof: {exc}") from None
        if claims.get("htm") != htm:
            raise DPoPInvalid("htm does not match the request")
        if claims.get("htu") != htu:
            raise DPoPInvalid("htu does not match the request")
        iat = _int_claim(claims, "iat")
        if iat is None or abs(now - iat) > DPOP_WINDOW:
            raise DPoPInvalid("proof iat outside the accepted window")
        if token is not None and claims.get("ath") != access_token_hash(token):
            raise DPoPInvalid("ath does not match the access token")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
            raise DPoPInvalid("proof jti missing")
        jkt = crypto.jwk_thumbprint(header["jwk"])
        # The use is remembered past the last second the proof is accepted: a proof
        # dated ahead (iat up to now + DPOP_WINDOW) stays acceptable until
        # iat + DPOP_WINDOW, so the row must outlive that, not now + DPOP_WINDOW.
        expires = (max(now, iat) + DPOP_WINDOW + SKEW) * 1000
        return jkt, ProofUse(f"dpop:{jkt}", jti, expires, now * 1000)

    # -- revocation (RFC 7009) --------------------------------------------------------------------

    async def revoke(self, form: Mapping[str, str], *, request_id: str | None = None) -> None:
        """Revoke one of the authenticated client's own access tokens, with a
        ``token.revoked`` entry in the same unit.

        Per RFC 7009 an unknown or foreign token is not an error: nothing happens.
        """
        client = await self.authenticate_client(form)
        token = form.get("token", "")
        if not token or len(token) > MAX_TOKEN_BYTES:
            return
        try:
            _, claims = crypto.verify_jws(
                token,
                keys=self.keyring.public_keys("at"),
                typ=ACCESS_TOKEN_TYP,
                allowed_kid_prefix="at-",
            )
        except InvalidJWS:
            return
        jti, exp = claims.get("jti"), _int_claim(claims, "exp")
        if claims.get("client_id") != client.client_id or not isinstance(jti, str) or exp is None:
            return
        consent_id = claims.get("consent_id")

        async def work() -> tuple[None, list[EntryDraft]]:
            # A state change, so an entry (DESIGN section 7); revoking again changes nothing.
            if not await self.replay.revoke_here(jti, exp * 1000):
                return None, []
            bound = consent_id if isinstance(consent_id, str) else None
            return None, [self._draft(client, "token.revoked", bound, None, request_id, "ok")]

        await self.audit.run(work)
