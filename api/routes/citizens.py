"""Citizen routes: my records, my consents, receipts; every read of content audited."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter

from api.auth import AUDIT_ACTION, CitizenContext, citizen_context, request_id, runtime_of
from api.openapi import success
from api.responses import (
    CitizenConsent,
    ConsentList,
    Erasure,
    Kept,
    Me,
    Receipt,
    RecordList,
    RecordPut,
    RecordSummary,
    RecordWithData,
    SuggestionBody,
    SuggestionList,
)
from api.schemas import SelfAssertedIn, whole
from api.views import citizen_consent, iso_at
from consent.models import Consent
from vault.models import RecordMeta
from vault.service import Actor

CITIZEN = {"me": Provide(citizen_context)}
ID = Annotated[str, Parameter(max_length=64, pattern=whole(r"[A-Za-z0-9_.:-]+"))]
TYPE = Annotated[str, Parameter(max_length=64, pattern=whole(r"[a-z0-9_]+"))]
STATUS = Annotated[
    str | None,
    Parameter(
        required=False,
        pattern=whole("pending|active|rejected|revoked|expired|exhausted"),
    ),
]
VERSION = Annotated[int | None, Parameter(required=False, ge=1, le=1_000_000)]


def _actor(request: Request[Any, Any, Any], me: CitizenContext) -> Actor:
    return Actor("citizen", me.citizen_id, request_id(request))


def _record(meta: RecordMeta) -> RecordSummary:
    return RecordSummary(
        type=meta.record_type,
        version=meta.version,
        source=meta.source,
        attested=meta.attested,
        updated_at=iso_at(meta.created_at),
    )


async def _consents_view(
    request: Request[Any, Any, Any], consents: list[Consent]
) -> list[CitizenConsent]:
    runtime = runtime_of(request)
    assert runtime.clients is not None
    names = await runtime.clients.repo.names(sorted({c.client_id for c in consents}))
    catalogue = runtime.current_catalogue()
    out = []
    for consent in consents:
        purpose = catalogue.purposes.get(consent.purpose)
        out.append(
            citizen_consent(
                consent,
                client_name=names.get(consent.client_id, consent.client_id),
                purpose_title=purpose.title if purpose else consent.purpose,
            )
        )
    return out


@get("/v1/me", dependencies=CITIZEN, tags=["citizen"])
async def me_summary(request: Request[Any, Any, Any], me: NamedDependency[CitizenContext]) -> Me:
    """My citizen id, records (without data) and consents."""
    runtime = runtime_of(request)
    assert runtime.vault is not None
    assert runtime.consents is not None
    records = await runtime.vault.list_records(me.citizen_id)
    consents = await runtime.consents.list_for_citizen(me.citizen_id)
    return Me(
        citizen_id=me.citizen_id,
        records=[_record(r) for r in records],
        consents=await _consents_view(request, consents),
    )


@get("/v1/me/records", dependencies=CITIZEN, tags=["citizen"])
async def my_records(
    request: Request[Any, Any, Any], me: NamedDependency[CitizenContext]
) -> RecordList:
    """My records, latest versions, without data."""
    runtime = runtime_of(request)
    assert runtime.vault is not None
    return RecordList(records=[_record(r) for r in await runtime.vault.list_records(me.citizen_id)])


@get(
    "/v1/me/records/{record_type:str}",
    dependencies=CITIZEN,
    tags=["citizen"],
    opt={AUDIT_ACTION: "data.read"},
)
async def my_record(
    request: Request[Any, Any, Any], record_type: TYPE, me: NamedDependency[CitizenContext]
) -> Response[RecordWithData]:
    """The latest version with data; the read itself is audited."""
    runtime = runtime_of(request)
    assert runtime.vault is not None
    catalogue = runtime.current_catalogue()
    known = catalogue.record_types.get(record_type)
    fields = tuple(sorted(known.fields)) if known else ()
    content, seq = await runtime.vault.read(
        citizen_id=me.citizen_id, record_type=record_type, actor=_actor(request, me), fields=fields
    )
    meta = content.meta
    body = RecordWithData(
        type=meta.record_type,
        version=meta.version,
        source=meta.source,
        attested=meta.attested,
        updated_at=iso_at(meta.created_at),
        data=content.data,
    )
    return Response(body, headers={"X-Audit-Seq": str(seq)})


@put(
    "/v1/me/records/{record_type:str}",
    dependencies=CITIZEN,
    tags=["citizen"],
    responses={
        201: success(RecordPut, "a new version was stored"),
        200: success(RecordPut, "content unchanged: the latest version"),
    },
    opt={AUDIT_ACTION: "record.put"},
)
async def put_my_record(
    request: Request[Any, Any, Any],
    record_type: TYPE,
    data: JSONBody[SelfAssertedIn],
    me: NamedDependency[CitizenContext],
) -> Response[RecordPut]:
    """Write a self-asserted record (address, bank account, ...): 201 new version, 200 unchanged."""
    runtime = runtime_of(request)
    assert runtime.intake is not None
    result = await runtime.intake.self_assert(
        citizen_id=me.citizen_id, record_type=record_type, data=data.data, actor=_actor(request, me)
    )
    body = RecordPut(record_id=result.record_id, type=result.record_type, version=result.version)
    return Response(body, status_code=201 if result.created else 200)


@get(
    "/v1/me/consents", dependencies=CITIZEN, tags=["citizen"], opt={AUDIT_ACTION: "consent.viewed"}
)
async def my_consents(
    request: Request[Any, Any, Any], me: NamedDependency[CitizenContext], status: STATUS = None
) -> ConsentList:
    """My consents (with client name and purpose title), optionally by status."""
    runtime = runtime_of(request)
    assert runtime.consents is not None
    consents = await runtime.consents.list_for_citizen(me.citizen_id, status=status)
    return ConsentList(consents=await _consents_view(request, consents))


async def _transition(
    request: Request[Any, Any, Any], me: CitizenContext, consent_id: str, action: str
) -> CitizenConsent:
    runtime = runtime_of(request)
    assert runtime.consents is not None
    if action == "approve":
        me.require_fresh(runtime.clock.now_ms())
    method = {
        "approve": runtime.consents.approve,
        "reject": runtime.consents.reject,
        "revoke": runtime.consents.revoke,
    }[action]
    consent = await method(consent_id, citizen_id=me.citizen_id, actor=_actor(request, me))
    return (await _consents_view(request, [consent]))[0]


@post(
    "/v1/me/consents/{consent_id:str}/approve",
    dependencies=CITIZEN,
    tags=["citizen"],
    status_code=200,
    opt={AUDIT_ACTION: "consent.approved"},
)
async def approve(
    request: Request[Any, Any, Any], consent_id: ID, me: NamedDependency[CitizenContext]
) -> CitizenConsent:
    """Approve a pending request (needs a sign-in within the last 10 minutes)."""
    return await _transition(request, me, consent_id, "approve")


@post(
    "/v1/me/consents/{consent_id:str}/reject",
    dependencies=CITIZEN,
    tags=["citizen"],
    status_code=200,
    opt={AUDIT_ACTION: "consent.rejected"},
)
async def reject(
    request: Request[Any, Any, Any], consent_id: ID, me: NamedDependency[CitizenContext]
) -> CitizenConsent:
    """Reject a pending request."""
    return await _transition(request, me, consent_id, "reject")


@post(
    "/v1/me/consents/{consent_id:str}/revoke",
    dependencies=CITIZEN,
    tags=["citizen"],
    status_code=200,
    opt={AUDIT_ACTION: "consent.revoked"},
)
async def revoke(
    request: Request[Any, Any, Any], consent_id: ID, me: NamedDependency[CitizenContext]
) -> CitizenConsent:
    """Revoke an active consent: effective for the next read."""
    return await _transition(request, me, consent_id, "revoke")


@get(
    "/v1/me/consents/{consent_id:str}/receipt",
    dependencies=CITIZEN,
    tags=["citizen"],
    opt={AUDIT_ACTION: "consent.viewed"},
)
async def receipt(
    request: Request[Any, Any, Any],
    consent_id: ID,
    me: NamedDependency[CitizenContext],
    version: VERSION = None,
) -> Receipt:
    """The latest signed consent receipt, or ``?version=n``."""
    runtime = runtime_of(request)
    assert runtime.consents is not None
    found = await runtime.consents.receipt(consent_id, citizen_id=me.citizen_id, version=version)
    return Receipt(receipt=found.jws, version=found.version)


@delete(
    "/v1/me",
    dependencies=CITIZEN,
    tags=["citizen"],
    status_code=200,
    opt={AUDIT_ACTION: "record.erased"},
)
async def erase_me(request: Request[Any, Any, Any], me: NamedDependency[CitizenContext]) -> Erasure:
    """Erase me: revoke every pending and active consent, shred every erasable type,
    keep what a statute holds (type, until, reason), answer with a signed receipt.
    Needs a sign-in within the last 10 minutes."""
    runtime = runtime_of(request)
    assert runtime.erasure is not None
    me.require_fresh(runtime.clock.now_ms())
    outcome = await runtime.erasure.erase_citizen(
        citizen_id=me.citizen_id, actor=_actor(request, me)
    )
    return Erasure(
        erased=list(outcome.erased),
        kept=[Kept(type=k.type, until=iso_at(k.until), reason=k.reason) for k in outcome.kept],
        receipt=outcome.receipt,
    )


def _suggestion(s: Any, names: dict[str, str], titles: dict[str, str]) -> SuggestionBody:
    return SuggestionBody(
        suggestion_id=s.suggestion_id,
        rule=s.rule,
        client_id=s.client_id,
        client_name=names.get(s.client_id, s.client_id),
        purpose=s.purpose,
        purpose_title=titles.get(s.purpose, s.purpose),
        access=s.access,
        valid_days=s.valid_days,
        status=s.status,
        created_at=iso_at(s.created_at),
        consent_id=s.consent_id,
    )


@get("/v1/me/suggestions", dependencies=CITIZEN, tags=["citizen"])
async def my_suggestions(
    request: Request[Any, Any, Any], me: NamedDependency[CitizenContext]
) -> SuggestionList:
    """Proactive service suggestions from life events."""
    runtime = runtime_of(request)
    assert runtime.consents is not None
    assert runtime.clients is not None
    found = await runtime.consents.list_suggestions(me.citizen_id)
    names = await runtime.clients.repo.names(sorted({s.client_id for s in found}))
    titles = {name: p.title for name, p in runtime.current_catalogue().purposes.items()}
    return SuggestionList(suggestions=[_suggestion(s, names, titles) for s in found])


@post(
    "/v1/me/suggestions/{suggestion_id:str}/accept",
    dependencies=CITIZEN,
    tags=["citizen"],
    status_code=200,
    opt={AUDIT_ACTION: "suggestion.accepted"},
)
async def accept_suggestion(
    request: Request[Any, Any, Any], suggestion_id: ID, me: NamedDependency[CitizenContext]
) -> CitizenConsent:
    """One click: an active consent for the suggested service (fresh sign-in needed)."""
    runtime = runtime_of(request)
    assert runtime.consents is not None
    me.require_fresh(runtime.clock.now_ms())
    consent = await runtime.consents.accept_suggestion(
        suggestion_id, citizen_id=me.citizen_id, actor=_actor(request, me)
    )
    return (await _consents_view(request, [consent]))[0]


ROUTES = [
    erase_me,
    my_suggestions,
    accept_suggestion,
    me_summary,
    my_records,
    my_record,
    put_my_record,
    my_consents,
    approve,
    reject,
    revoke,
    receipt,
]
