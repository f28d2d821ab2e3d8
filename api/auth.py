"""Who is calling: access tokens for clients (one verifier for every client route).

Handlers ask for a principal with a role; a missing, forged, expired, revoked or
foreign token is 401 ``invalid_token`` (or ``invalid_dpop_proof``), a valid token
without the role is 403 ``forbidden``. The client's live registration and the
revocation list are read on every request (DESIGN section 1: disabling takes effect
on the next request); the consented reads read them inside their own unit.

A refusal to an authenticated client (403 ``forbidden``, 429 ``rate_limited``) is
audited (DESIGN section 7) as a ``denied`` entry of the action the route performs,
declared by every client route as ``opt={"audit_action": ...}``; a 401 is not (the
caller is not known). Any later refusal to a caller once known (a 4xx the route or a
service raises without an entry of its own, a bad parameter included) is audited the
same way by :func:`audit_late_refusal`, Litestar's ``after_exception`` hook, for
clients and signed-in citizens alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from litestar import Request
from litestar.exceptions import ValidationException
from litestar.types import Scope

from api.bodies import validation_problem
from api.errors import STATUS
from api.idp import CitizenAuthError, CitizenPrincipal, require_fresh
from api.runtime import Runtime
from audit.models import EntryDraft, safe_token
from consent.tokens import AccessPrincipal, Forbidden, SignedToken
from vault.errors import OncevaultError

log = structlog.get_logger(__name__)

#: The route option naming the action a route's refusals are audited as.
AUDIT_ACTION = "audit_action"
#: The action of a refusal on a route that declares none.
REFUSED_ACTION = "request.refused"
#: ``scope["state"]`` key of the caller, once its token is verified.
CALLER = "caller"


@dataclass(frozen=True)
class Caller:
    """Who a request's refusals are audited as (DESIGN section 7: the caller is the
    actor; a citizen's entries name the citizen's own id)."""

    actor_type: Literal["client", "citizen"]
    actor_id: str
    client_id: str | None = None
    citizen_id: str | None = None


def request_id(request: Request[Any, Any, Any]) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def runtime_of(request: Request[Any, Any, Any]) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def client_principal(request: Request[Any, Any, Any], role: str) -> AccessPrincipal:
    """The verified caller, its rate limit counted."""
    runtime = runtime_of(request)
    assert runtime.tokens is not None
    principal = await runtime.tokens.verify(
        request.headers.get("authorization"),
        dpop_proof=request.headers.get("dpop"),
        htm=request.method,
        htu=runtime.settings.issuer + request.url.path,
    )
    client_id = principal.client.client_id
    request.scope.setdefault("state", {})[CALLER] = Caller("client", client_id, client_id)
    try:
        principal.require(role)
        await enforce_rate_limit(runtime, principal.client.client_id, "api")
    except (Forbidden, RateLimited) as refused:
        raise await audit_refusal(request, principal.client.client_id, refused) from None
    return principal


def refusal_draft(
    caller: Caller,
    action: str,
    code: str,
    request_id: str | None,
    record_type: str | None = None,
) -> EntryDraft:
    """The ``denied`` entry of a refusal to ``caller`` (DESIGN section 7: the caller is
    the actor, a citizen's own id its ``citizen_id``, no object it does not own). A
    refused ``data.read`` released nothing (``items`` is ``[]``)."""
    return EntryDraft(
        action=action,
        actor_type=caller.actor_type,
        actor_id=caller.actor_id,
        outcome="denied",
        citizen_id=caller.citizen_id,
        client_id=caller.client_id,
        record_type=safe_token(record_type),
        items=() if action == "data.read" else None,
        reason_code=code,
        request_id=request_id,
    )


async def audit_refusal(
    request: Request[Any, Any, Any],
    client_id: str,
    error: OncevaultError,
    *,
    action: str | None = None,
    record_type: str | None = None,
) -> OncevaultError:
    """Append the ``denied`` entry of ``error``, a refusal to the authenticated client
    ``client_id``, as ``action`` (by default the route's ``audit_action``); returns
    ``error`` carrying the entry's seq (the answer's ``X-Audit-Seq``). A refused
    ``data.read`` released nothing (``items`` is ``[]``) and names the one type it
    asked for, if any."""
    runtime = runtime_of(request)
    if action is None:
        action = request.route_handler.opt[AUDIT_ACTION]
    caller = Caller("client", client_id, client_id)
    draft = refusal_draft(caller, action, error.code, request_id(request), record_type)
    return await runtime.audit.record_refusal(draft, error)


def signed_token(request: Request[Any, Any, Any]) -> SignedToken:
    """The request's access token and DPoP proof, checked without the database
    (:meth:`consent.tokens.TokenService.check`). For the consented reads, whose unit
    reads the client's live registration and the revocation list with the consent
    (:class:`consent.reads.DataReader`), and records the proof's single use."""
    runtime = runtime_of(request)
    assert runtime.tokens is not None
    authorization, dpop = _first_headers(request.scope["headers"])
    return runtime.tokens.check(
        authorization,
        dpop_proof=dpop,
        htm=request.method,
        # Read only with a proof (a URL costs ~2 µs to build; check() reads htu only
        # when it checks a proof).
        htu=runtime.settings.issuer + request.url.path if dpop is not None else "",
    )


def _first_headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The first ``Authorization`` and ``DPoP`` values of raw ASGI headers, as
    ``request.headers.get`` reads them (names in any case, values as Latin-1), without
    building the request's ``Headers`` (~4 µs a consented read)."""
    authorization: str | None = None
    dpop: str | None = None
    for name, value in raw:
        lowered = name.lower()
        if lowered == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif lowered == b"dpop" and dpop is None:
            dpop = value.decode("latin-1")
    return authorization, dpop


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


def require(role: str) -> Callable[[Request[Any, Any, Any]], Awaitable[AccessPrincipal]]:
    """A dependency provider: ``Provide(require("consumer"))``."""

    async def provide(request: Request[Any, Any, Any]) -> AccessPrincipal:
        return await client_principal(request, role)

    return provide


def unit_gate(
    request: Request[Any, Any, Any], token: SignedToken
) -> Callable[[], Awaitable[OncevaultError | None]]:
    """What a consented read runs inside its unit once the caller is known: record
    the DPoP proof's single use, then count the rate limit. Returns the error to
    answer with (a replayed proof, the limit reached), or None."""
    runtime = runtime_of(request)
    client_id = token.client_id

    async def gate() -> OncevaultError | None:
        if token.proof_use is not None:
            assert runtime.tokens is not None
            replayed = await runtime.tokens.use_proof_here(token.proof_use)
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
    citizen_id = await runtime.vault.resolve(principal.subject, link=principal.link)
    caller = Caller("citizen", citizen_id, citizen_id=citizen_id)
    request.scope.setdefault("state", {})[CALLER] = caller
    return CitizenContext(principal=principal, citizen_id=citizen_id)


def _refusal_code(exc: BaseException) -> str | None:
    """The problem code of ``exc`` when it is answered as a refusal (a 4xx), else None
    (a 5xx is the platform's failure, not a refusal)."""
    if isinstance(exc, OncevaultError):
        status = STATUS.get(exc.code, STATUS["internal_error"])[0]
        return exc.code if 400 <= status < 500 else None
    if isinstance(exc, ValidationException):
        return validation_problem(exc)[0]
    return None


async def audit_late_refusal(exc: BaseException, scope: Scope) -> None:
    """Litestar's ``after_exception`` hook: a refusal to a known caller that no service
    audited gets its ``denied`` entry, as the route's action, before it is answered
    (the exception then carries ``audit_seq``: the answer's ``X-Audit-Seq``).

    If the entry cannot be written (the database is down), the refusal is answered
    all the same and the failure logged: a refusal releases nothing.
    """
    state = scope.get("state") or {}
    caller = state.get(CALLER)
    if not isinstance(caller, Caller) or getattr(exc, "audit_seq", None) is not None:
        return
    code = _refusal_code(exc)
    if code is None:
        return
    handler = scope.get("route_handler")
    opt = getattr(handler, "opt", None) or {}
    action = str(opt.get(AUDIT_ACTION, REFUSED_ACTION))
    draft = refusal_draft(caller, action, code, state.get("request_id"))
    runtime: Runtime = scope["litestar_app"].state.runtime
    try:
        seq = await runtime.audit.append_alone(draft)
    except OncevaultError as failure:  # the database: the refusal goes out unaudited
        log.warning("refusal.not_audited", code=code, error=failure.code)
        return
    setattr(exc, "audit_seq", seq)  # noqa: B010 - ValidationException has none
