"""Consumer routes: consent requests, own consents, consented data, events."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import Parameter

from api.auth import request_id, require, runtime_of
from api.views import consent_json
from consent.tokens import AccessPrincipal
from vault.service import Actor

CONSUMER = {"principal": Provide(require("consumer"))}
ID = Annotated[str, Parameter(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


@get("/v1/consents/{consent_id:str}", dependencies=CONSUMER, tags=["consumer"])
async def get_consent(
    request: Request[Any, Any, Any], consent_id: ID, principal: NamedDependency[AccessPrincipal]
) -> dict[str, Any]:
    """One of the calling client's own consents; another client's is 404."""
    runtime = runtime_of(request)
    assert runtime.consents is not None
    actor = Actor("client", principal.client.client_id, request_id(request))
    consent = await runtime.consents.get_for_client(
        consent_id, client_id=principal.client.client_id, actor=actor
    )
    return consent_json(consent)


ROUTES = [get_consent]
