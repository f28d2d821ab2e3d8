"""Issuer routes: attested records in, one at a time or in batches."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody

from api.auth import AUDIT_ACTION, request_id, require, runtime_of
from api.openapi import success
from api.replay import idempotent
from api.responses import BatchResult, BatchResults, RecordPut
from api.schemas import MAX_BATCH, BatchIn, RecordIn
from consent.intake import IssueRequest
from consent.tokens import AccessPrincipal
from vault.errors import OncevaultError
from vault.models import PutResult
from vault.service import Actor

ISSUER = {"principal": Provide(require("issuer"))}


def _put_body(result: Any) -> RecordPut:
    return RecordPut(record_id=result.record_id, type=result.record_type, version=result.version)


@post(
    "/v1/records",
    dependencies=ISSUER,
    tags=["issuer"],
    opt={AUDIT_ACTION: "record.put"},
    status_code=201,
    responses={
        201: success(RecordPut, "a new version was stored"),
        200: success(RecordPut, "content unchanged: the latest version"),
    },
)
async def put_record(
    request: Request[Any, Any, Any],
    data: JSONBody[RecordIn],
    principal: NamedDependency[AccessPrincipal],
) -> Response[dict[str, Any]]:
    """Store an attested record: 201 with the new version, 200 when the content is unchanged."""
    runtime = runtime_of(request)
    assert runtime.intake is not None
    intake = runtime.intake
    client_id = principal.client.client_id

    async def produce() -> tuple[RecordPut, int]:
        result = await intake.issue(
            client_id=client_id,
            subject=data.subject.as_mapping(),
            record_type=data.type,
            data=data.data,
            attestation=data.attestation,
            actor=Actor("client", client_id, request_id(request)),
        )
        return _put_body(result), 201 if result.created else 200

    return await idempotent(request, client_id, produce)


@post(
    "/v1/records:batch",
    dependencies=ISSUER,
    tags=["issuer"],
    opt={AUDIT_ACTION: "record.put"},
    status_code=200,
    request_max_body_size=16 << 20,
    responses={200: success(BatchResults, "one result per record, in order")},
)
async def put_records(
    request: Request[Any, Any, Any],
    data: JSONBody[BatchIn],
    principal: NamedDependency[AccessPrincipal],
) -> Response[Any]:
    """Up to 1,000 records; one result per record (status 201, 200, 403 or 422)."""
    if len(data.records) > MAX_BATCH:
        raise OncevaultError(f"records: at most {MAX_BATCH} per batch", code="validation_error")
    runtime = runtime_of(request)
    assert runtime.intake is not None
    intake = runtime.intake
    client_id = principal.client.client_id
    actor = Actor("client", client_id, request_id(request))

    def result_of(index: int, result: PutResult | OncevaultError) -> BatchResult:
        if isinstance(result, OncevaultError):
            status = {"type_not_issuable": 403, "validation_error": 422}.get(result.code, 422)
            return BatchResult(index=index, status=status, code=result.code)
        return BatchResult(
            index=index,
            status=201 if result.created else 200,
            record_id=result.record_id,
            type=result.record_type,
            version=result.version,
        )

    async def produce() -> tuple[BatchResults, int]:
        results = await intake.issue_many(
            client_id=client_id,
            records=[
                IssueRequest(
                    subject=record.subject.as_mapping(),
                    record_type=record.type,
                    data=record.data,
                    attestation=record.attestation,
                )
                for record in data.records
            ],
            actor=actor,
        )
        return BatchResults(results=[result_of(i, r) for i, r in enumerate(results)]), 200

    return await idempotent(request, client_id, produce)


ROUTES = [put_record, put_records]
