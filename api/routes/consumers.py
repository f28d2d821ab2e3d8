"""Consumer routes: consent requests, own consents, consented data."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter

from api.auth import (
    AUDIT_ACTION,
    audit_refusal,
    request_id,
    require,
    runtime_of,
    signed_token,
    unit_gate,
)
from api.openapi import success
from api.replay import idempotent
from api.responses import ConsentBody, DataRead, DataReadOne, Event, EventPage
from api.schemas import ConsentRequestIn, whole
from api.views import consent_body, iso_at
from consent.errors import ScopeNotConsented
from consent.service import iso
from consent.tokens import AccessPrincipal, Forbidden, SignedToken
from vault.models import Subject
from vault.service import Actor

CONSUMER = {"principal": Provide(require("consumer"))}
#: The consented reads check the caller's live registration, count the rate limit
#: and record a DPoP proof's single use inside their own unit (no statement or
#: COMMIT of their own): the dependency checks only what needs no database.
READER = {"token": Provide(signed_token, sync_to_thread=False)}
ID = Annotated[str, Parameter(max_length=64, pattern=whole(r"[A-Za-z0-9_.:-]+"))]
#: A record type in a path: api/fastread.py checks the same before it answers.
TYPE_PATTERN = whole(r"[a-z0-9_]+")
TYPE_MAX_LENGTH = 64
#: The role a consented read needs.
READ_ROLE = "consumer"
TYPE = Annotated[str, Parameter(max_length=TYPE_MAX_LENGTH, pattern=TYPE_PATTERN)]


@post(
    "/v1/consent-requests",
    dependencies=CONSUMER,
    tags=["consumer"],
    opt={AUDIT_ACTION: "consent.requested"},
    status_code=201,
    responses={
        201: success(ConsentBody, "a new request (active for a statute purpose)"),
        200: success(ConsentBody, "the existing pending request"),
    },
)
async def request_consent(
    request: Request[Any, Any, Any],
    data: JSONBody[ConsentRequestIn],
    principal: NamedDependency[AccessPrincipal],
) -> Response[Any]:
    """Ask a citizen for consent: 201 pending (active for a statute purpose), 200 the
    existing pending request. Known and unknown subjects are answered alike."""
    runtime = runtime_of(request)
    assert runtime.consents is not None
    assert runtime.vault is not None
    consents = runtime.consents
    vault = runtime.vault
    client_id = principal.client.client_id

    async def produce() -> tuple[ConsentBody, int]:
        subject = Subject.parse(data.subject.as_mapping())
        citizen_id = await vault.resolve(subject)  # lazily created: no enumeration
        consent, created = await consents.request(
            citizen_id=citizen_id,
            client_id=client_id,
            purpose=data.purpose,
            items=[{"type": item.type, "fields": item.fields} for item in data.items],
            access=data.access,
            valid_days=data.valid_days,
            max_fetches=data.max_fetches,
            case_reference=data.case_reference,
            actor=Actor("client", client_id, request_id(request)),
        )
        return consent_body(consent), 201 if created else 200

    return await idempotent(request, client_id, produce)


@get(
    "/v1/consents/{consent_id:str}",
    dependencies=CONSUMER,
    tags=["consumer"],
    opt={AUDIT_ACTION: "consent.viewed"},
)
async def get_consent(
    request: Request[Any, Any, Any], consent_id: ID, principal: NamedDependency[AccessPrincipal]
) -> ConsentBody:
    """One of the calling client's own consents; another client's is 404."""
    runtime = runtime_of(request)
    assert runtime.consents is not None
    actor = Actor("client", principal.client.client_id, request_id(request))
    consent = await runtime.consents.get_for_client(
        consent_id, client_id=principal.client.client_id, actor=actor
    )
    return consent_body(consent)


def _item(item: Any) -> dict[str, Any]:
    return {
        "type": item.type,
        "version": item.version,
        "data": item.data,
        "source": item.source,
        "attested": item.attested,
        "updated_at": iso(item.updated_at),
    }


async def answer_read(
    request: Request[Any, Any, Any], token: SignedToken, types: list[str] | None
) -> tuple[dict[str, Any], int]:
    """The consented read's body and its ``X-Audit-Seq``: every consented item that
    exists (``types=None``) or the one asked for, with only the released fields.

    Both the route handlers below and :mod:`api.fastread` (which answers these routes
    in front of Litestar's per-route layers) answer with this."""
    runtime = runtime_of(request)
    assert runtime.reader is not None
    assert runtime.tokens is not None
    if token.consent_id is None:
        # Not a read of a consent: refused as any other route refuses, on the live
        # registration (401 before 403 before "not bound"); a refusal to the
        # authenticated client is audited as a read.
        principal = await runtime.tokens.caller(token)
        try:
            principal.require(READ_ROLE)
            raise ScopeNotConsented("this token is not bound to a consent")
        except (Forbidden, ScopeNotConsented) as refused:
            single = types[0] if types is not None and len(types) == 1 else None
            raise await audit_refusal(
                request,
                principal.client.client_id,
                refused,
                action="data.read",
                record_type=single,
            ) from None
    result = await runtime.reader.read(
        consent_id=token.consent_id,
        token=token,
        role=READ_ROLE,
        types=types,
        request_id=request_id(request),
        gate=unit_gate(request, token),
    )
    if types is None:
        body = {"consent_id": result.consent_id, "items": [_item(i) for i in result.items]}
    else:
        body = {"consent_id": result.consent_id, **_item(result.items[0])}
    return body, result.audit_seq


@get(
    "/v1/data",
    dependencies=READER,
    tags=["consumer"],
    responses={200: success(DataRead, "the released items")},
    opt={"consented_read": "all", AUDIT_ACTION: "data.read"},
)
async def read_all(
    request: Request[Any, Any, Any], token: NamedDependency[SignedToken]
) -> Response[dict[str, Any]]:
    """Every consented item that exists, with only the released fields."""
    body, audit_seq = await answer_read(request, token, None)
    return Response(body, headers={"X-Audit-Seq": str(audit_seq)})


@get(
    "/v1/data/{record_type:str}",
    dependencies=READER,
    tags=["consumer"],
    responses={200: success(DataReadOne, "the released item")},
    opt={"consented_read": "one", AUDIT_ACTION: "data.read"},
)
async def read_one(
    request: Request[Any, Any, Any],
    record_type: TYPE,
    token: NamedDependency[SignedToken],
) -> Response[dict[str, Any]]:
    """One consented item, with only the released fields."""
    body, audit_seq = await answer_read(request, token, [record_type])
    return Response(body, headers={"X-Audit-Seq": str(audit_seq)})


AFTER = Annotated[int, Parameter(ge=0, le=2**53 - 1)]
LIMIT = Annotated[int, Parameter(ge=1, le=1000)]


@get("/v1/events", dependencies=CONSUMER, tags=["consumer"], opt={AUDIT_ACTION: "events.read"})
async def events(
    request: Request[Any, Any, Any],
    principal: NamedDependency[AccessPrincipal],
    after: AFTER = 0,
    limit: LIMIT = 100,
) -> EventPage:
    """consent.* events for my consents and record.updated for types my standing
    consents cover, oldest first, ``seq > after``; ``next`` is the cursor."""
    runtime = runtime_of(request)
    assert runtime.consents is not None
    found = await runtime.consents.events_for(principal.client.client_id, after=after, limit=limit)
    return EventPage(
        events=[
            Event(
                seq=e.seq,
                type=e.type,
                consent_id=e.consent_id,
                record_type=e.record_type,
                version=e.version,
                at=iso_at(e.at),
            )
            for e in found
        ],
        next=found[-1].seq if found else after,
    )


ROUTES = [request_consent, get_consent, read_all, read_one, events]
