"""Test clients of the platform: key pairs, registrations, assertions, tokens, DPoP."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vault import crypto
from vault.service import Actor

if TYPE_CHECKING:
    from api.runtime import Runtime


@dataclass
class TestClient:
    __test__ = False  # a helper, not a test class

    client_id: str
    alg: str = "EdDSA"
    roles: tuple[str, ...] = ("consumer",)
    kind: str = "agency"
    dpop_required: bool = False
    private_pem: bytes = b""
    public_jwk: dict[str, Any] = field(default_factory=dict)
    dpop_pem: bytes = b""
    dpop_jwk: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.private_pem:
            self.private_pem, self.public_jwk = crypto.generate_client_keypair(self.alg)  # type: ignore[arg-type]
            self.dpop_pem, self.dpop_jwk = crypto.generate_client_keypair("ES256")

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    def assertion(self, audience: str, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "iat": now,
            "exp": now + 120,
            "jti": secrets.token_urlsafe(16),
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return crypto.sign_jws_with_pem(
            claims,
            private_pem=self.private_pem,
            kid=self.public_jwk["kid"],
            typ="JWT",
            alg=self.alg,
        )

    def token_form(
        self,
        issuer: str,
        *,
        scope: str | None = None,
        consent_id: str | None = None,
        **overrides: Any,
    ) -> dict[str, str]:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.assertion(issuer + "/oauth/token", **overrides),
        }
        if scope is not None:
            form["scope"] = scope
        if consent_id is not None:
            form["authorization_details"] = json.dumps(
                [{"type": "oncevault_consent", "consent_id": consent_id}]
            )
        return form

    def dpop(self, method: str, url: str, *, token: str | None = None, **overrides: Any) -> str:
        claims: dict[str, Any] = {
            "htm": method,
            "htu": url,
            "iat": int(time.time()),
            "jti": secrets.token_urlsafe(16),
        }
        if token is not None:
            claims["ath"] = crypto.b64url_encode(hashlib.sha256(token.encode()).digest())
        claims.update(overrides)
        public = {k: v for k, v in self.dpop_jwk.items() if k in ("kty", "crv", "x", "y")}
        return crypto.sign_jws_with_pem(
            claims,
            private_pem=self.dpop_pem,
            kid=None,
            typ="dpop+jwt",
            alg="ES256",
            extra_headers={"jwk": public},
        )


async def register(runtime: Runtime, client: TestClient, *, approved: bool = True) -> TestClient:
    """Register ``client`` as an operator would (``oncevault clients add``): its roles,
    kind, public key and DPoP requirement."""
    assert runtime.clients is not None
    await runtime.clients.add(
        client_id=client.client_id,
        name=client.client_id.upper(),
        kind=client.kind,
        roles=client.roles,
        jwks=client.jwks,
        approved=approved,
        dpop_required=client.dpop_required,
        actor=Actor("operator", "test"),
    )
    return client
