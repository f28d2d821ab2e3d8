"""Who is calling: access tokens for clients (one verifier for every client route).

Handlers ask for a principal with a role; a missing, forged, expired, revoked or
foreign token is 401 ``invalid_token`` (or ``invalid_dpop_proof``), a valid token
without the role is 403 ``forbidden``. The client's live registration is read on
every request (DESIGN section 1: disabling takes effect on the next request).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar import Request

from api.idp import CitizenAuthError, CitizenPrincipal, require_fresh
from api.runtime import Runtime
from consent.tokens import AccessPrincipal, Forbidden
from vault.errors import OncevaultError


def request_id(request: Request[Any, Any, Any]) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def runtime_of(request: Request[Any, Any, Any]) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def client_principal(
    request: Request[Any, Any, Any], role: str, *, in_unit: bool = False
) -> AccessPrincipal:
    """The verified caller. ``in_unit=True``: the route's own group-committed unit
    counts the rate limit and records the DPoP proof's single use (:func:`unit_gate`),
    so neither costs a transaction and COMMIT of its own."""
    runtime = runtime_of(request)
    assert runtime.tokens is not None
    principal = await runtime.tokens.verify(
        request.headers.get("authorization"),
        dpop_proof=request.headers.get("dpop"),
        htm=request.method,
        htu=runtime.settings.issuer + request.url.path,
        defer_proof_use=in_unit,
    )
    if role not in principal.scope:
        raise Forbidden(f"this route needs the {role} role")
    if not in_unit:
        await enforce_rate_limit(runtime, principal.client.client_id, "api")
    return principal


class RateLimited(OncevaultError):
    """Too many requests from this client this minute."""

    code = "rate_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__("rate limit reached; retry after the Retry-After seconds")
        self.retry_after = retry_after


async def enforce_rate_limit(runtime: Runtime, client_id: str, scope: str) -> None:
    limiter = runtime.rate_limiter
    if limiter is None or not limiter.enabled:
        return
    decision = await limiter.hit(client_id, scope)
    if not decision.allowed:
        raise RateLimited(decision.retry_after)


def require(
    role: str, *, in_unit: bool = False
) -> Callable[[Request[Any, Any, Any]], Awaitable[AccessPrincipal]]:
    """A dependency provider: ``Provide(require("consumer"))``.

    ``in_unit=True`` is for routes that run :func:`unit_gate` inside their own
    group-committed unit (the consented reads): the rate limit and a DPoP proof's
    single use are recorded there, at no extra COMMIT.
    """

    async def provide(request: Request[Any, Any, Any]) -> AccessPrincipal:
        return await client_principal(request, role, in_unit=in_unit)

    return provide


def unit_gate(
    request: Request[Any, Any, Any], principal: AccessPrincipal
) -> Callable[[], Awaitable[OncevaultError | None]]:
    """What a ``require(..., in_unit=True)`` route runs first inside its unit: record
    the DPoP proof's single use, then count the rate limit. Returns the error to
    answer with (a replayed proof, the limit reached), or None."""
    runtime = runtime_of(request)
    client_id = principal.client.client_id

    async def gate() -> OncevaultError | None:
        if principal.proof_use is not None:
            assert runtime.tokens is not None
            replayed = await runtime.tokens.use_proof_here(principal.proof_use)
            if replayed is not None:
                return replayed
        limiter = runtime.rate_limiter
        if limiter is None or not limiter.enabled:
            return None
        decision = await limiter.hit_here(client_id, "read")
        return None if decision.allowed else RateLimited(decision.retry_after)

    return gate


@dataclass(frozen=True)
class CitizenContext:
    principal: CitizenPrincipal
    citizen_id: str

    def require_fresh(self, now_ms: int) -> None:
        """Approve, accept and erase need a sign-in within the last 10 minutes."""
        require_fresh(self.principal, now=now_ms // 1000)


async def citizen_context(request: Request[Any, Any, Any]) -> CitizenContext:
    """The signed-in citizen (a token from the trusted IdP, or the development IdP)."""
    runtime = runtime_of(request)
    assert runtime.citizens is not None
    assert runtime.vault is not None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise CitizenAuthError("missing citizen token")
    principal = runtime.citizens.verify(token, now=runtime.clock.now_ms() // 1000)
    citizen_id = await runtime.vault.resolve(principal.subject)
    return CitizenContext(principal=principal, citizen_id=citizen_id)
