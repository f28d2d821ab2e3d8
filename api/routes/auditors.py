"""Audit routes: entries and proofs for auditors, the public checkpoint, the citizen's log."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.params import Parameter

from api.auth import (
    AUDIT_ACTION,
    CitizenContext,
    citizen_context,
    request_id,
    require,
    runtime_of,
)
from api.openapi import success
from api.responses import Checkpoint, ConsistencyProof, InclusionProof, ServedEntryPage
from api.schemas import whole
from audit.models import StoredEntry
from consent.tokens import AccessPrincipal
from vault.errors import OncevaultError

AUDITOR = {"principal": Provide(require("auditor"))}
CITIZEN = {"me": Provide(citizen_context)}
MAX_SEQ = 2**53 - 1
#: ``schema_extra``: Litestar 2.25 leaves a falsy ``ge`` out of an optional parameter's
#: schema; ``ge=0`` is enforced all the same (400 ``malformed_request``).
SEQ = Annotated[
    int | None, Parameter(required=False, ge=0, le=MAX_SEQ, schema_extra={"minimum": 0})
]
LIMIT = Annotated[int, Parameter(ge=1, le=1000)]
FILTER = Annotated[
    str | None, Parameter(required=False, max_length=128, pattern=whole(r"[A-Za-z0-9_.:-]+"))
]
#: A citizen filter is a citizen id (DESIGN section 3): the query's own entry keeps it
#: for good, so a national id pasted into it by mistake is refused (400) before that.
CITIZEN_FILTER = Annotated[
    str | None, Parameter(required=False, max_length=30, pattern=whole(r"cit_[a-z2-7]{26}"))
]
#: A leaf index, and a tree size (the tree's current size bounds both further: 400).
INDEX = Annotated[int, Parameter(ge=0, le=MAX_SEQ)]
SIZE = Annotated[int, Parameter(ge=1, le=MAX_SEQ)]
ENTRIES = {200: success(ServedEntryPage, "a page of entries as stored")}


class BadProofRequest(OncevaultError):
    """The proof parameters do not describe a proof in this tree."""

    code = "malformed_request"


def entry_json(stored: StoredEntry) -> dict[str, Any]:
    return {"seq": stored.seq, "leaf_hash": stored.leaf_hash.hex(), "entry": stored.entry}


async def _tree_size(request: Request[Any, Any, Any]) -> int:
    return (await runtime_of(request).audit.state()).size


@get(
    "/v1/audit/entries",
    dependencies=AUDITOR,
    tags=["auditor"],
    responses=ENTRIES,
    opt={AUDIT_ACTION: "audit.queried"},
)
async def entries(
    request: Request[Any, Any, Any],
    principal: NamedDependency[AccessPrincipal],
    after: SEQ = None,
    limit: LIMIT = 100,
    citizen_id: CITIZEN_FILTER = None,
    client_id: FILTER = None,
    action: FILTER = None,
) -> Response[dict[str, Any]]:
    """Entries oldest first with ``seq > after``; a citizen-filtered query is itself
    audited, and its answer carries that entry's ``X-Audit-Seq``."""
    found, seq = await runtime_of(request).audit.auditor_entries(
        auditor_id=principal.client.client_id,
        request_id=request_id(request),
        after=after,
        limit=limit,
        citizen_id=citizen_id,
        client_id=client_id,
        action=action,
    )
    body = {
        "entries": [entry_json(e) for e in found],
        "next": found[-1].seq if found else (after if after is not None else 0),
        "tree_size": await _tree_size(request),
    }
    return Response(body, headers={} if seq is None else {"X-Audit-Seq": str(seq)})


def _check_size(size: int, current: int, what: str) -> None:
    if size <= 0 or size > current:
        raise BadProofRequest(f"{what}: must be between 1 and the tree size ({current})")


async def _inclusion(request: Request[Any, Any, Any], seq: int, tree_size: int) -> InclusionProof:
    runtime = runtime_of(request)
    _check_size(tree_size, await _tree_size(request), "tree_size")
    if not 0 <= seq < tree_size:
        raise BadProofRequest("seq: must be below tree_size")
    proof = await runtime.audit.inclusion_proof(seq, tree_size)
    return InclusionProof(
        leaf_index=seq,
        tree_size=tree_size,
        root_hash=(await runtime.audit.root_at(tree_size)).hex(),
        inclusion_path=[node.hex() for node in proof],
    )


@get(
    "/v1/audit/proofs/inclusion",
    dependencies=AUDITOR,
    tags=["auditor"],
    opt={AUDIT_ACTION: "audit.queried"},
)
async def inclusion(
    request: Request[Any, Any, Any],
    principal: NamedDependency[AccessPrincipal],
    seq: INDEX,
    tree_size: SIZE,
) -> InclusionProof:
    """RFC 9162 §2.1.3 inclusion proof of entry ``seq`` in the tree of ``tree_size``."""
    return await _inclusion(request, seq, tree_size)


@get(
    "/v1/audit/proofs/consistency",
    dependencies=AUDITOR,
    tags=["auditor"],
    opt={AUDIT_ACTION: "audit.queried"},
)
async def consistency(
    request: Request[Any, Any, Any],
    principal: NamedDependency[AccessPrincipal],
    first: SIZE,
    second: SIZE,
) -> ConsistencyProof:
    """RFC 9162 §2.1.4 consistency proof between two tree sizes."""
    runtime = runtime_of(request)
    current = await _tree_size(request)
    _check_size(second, current, "second")
    _check_size(first, current, "first")
    if first > second:
        raise BadProofRequest("first: must not exceed second")
    proof = await runtime.audit.consistency_proof(first, second)
    return ConsistencyProof(
        first=first,
        second=second,
        first_root=(await runtime.audit.root_at(first)).hex(),
        second_root=(await runtime.audit.root_at(second)).hex(),
        consistency_path=[node.hex() for node in proof],
    )


@get(
    "/v1/audit/checkpoint",
    tags=["public"],
    responses={200: success(Checkpoint, "the latest signed checkpoint")},
)
async def checkpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The latest signed checkpoint (lags the log by about a second)."""
    runtime = runtime_of(request)
    assert runtime.checkpointer is not None
    latest = await runtime.checkpointer.latest()
    if latest is None:
        latest = await runtime.checkpointer.make()
    assert latest is not None
    return latest.as_json()


@get(
    "/v1/me/access-log",
    dependencies=CITIZEN,
    tags=["citizen"],
    responses=ENTRIES,
    opt={AUDIT_ACTION: "access_log.viewed"},
)
async def access_log(
    request: Request[Any, Any, Any],
    me: NamedDependency[CitizenContext],
    before: SEQ = None,
    limit: LIMIT = 100,
) -> dict[str, Any]:
    """My entries, newest first: who read what, when and why."""
    runtime = runtime_of(request)
    found = await runtime.audit.citizen_entries(me.citizen_id, before=before, limit=limit)
    return {
        "entries": [entry_json(e) for e in found],
        "next": found[-1].seq if found else (before if before is not None else 0),
        "tree_size": await _tree_size(request),
    }


@get(
    "/v1/me/access-log/{seq:int}/proof",
    dependencies=CITIZEN,
    tags=["citizen"],
    opt={AUDIT_ACTION: "access_log.viewed"},
)
async def my_proof(
    request: Request[Any, Any, Any],
    seq: INDEX,
    me: NamedDependency[CitizenContext],
    tree_size: SIZE,
) -> InclusionProof:
    """Inclusion proof for one of my entries (another citizen's is 404)."""
    runtime = runtime_of(request)
    if await runtime.audit.citizen_entry(me.citizen_id, seq) is None:
        raise OncevaultError("no such entry", code="not_found")
    return await _inclusion(request, seq, tree_size)


ROUTES = [entries, inclusion, consistency, checkpoint, access_log, my_proof]
