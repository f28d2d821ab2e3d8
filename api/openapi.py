"""OpenAPI 3.1 at /schema/openapi.json: security schemes and the error responses of
every route (RFC 9457 problem+json), declared in one place."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, SecurityScheme

from api.errors import PROBLEM_JSON, STATUS


class Problem(msgspec.Struct):
    """RFC 9457 problem details; ``code`` is the stable oncevault error code."""

    type: str
    title: str
    status: int
    detail: str
    code: str


class OAuthError(msgspec.Struct):
    """RFC 6749 §5.2 error body of the token endpoint."""

    error: str
    error_description: str | None = None


def _codes(status: int) -> str:
    return ", ".join(sorted(code for code, (s, _) in STATUS.items() if s == status))


def _problem(status: int) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem,
        description=f"{STATUS_TITLES.get(status, 'Error')}: code is one of {_codes(status)}",
        media_type=PROBLEM_JSON,
        generate_examples=False,
    )


STATUS_TITLES = {
    400: "Malformed request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation error",
    429: "Rate limited (see Retry-After)",
    503: "Unavailable (see Retry-After)",
}

COMMON = (400, 401, 403, 429, 503)
BODY = (413, 415, 422)

AUDIENCES: dict[str, tuple[tuple[int, ...], list[dict[str, list[str]]]]] = {
    "issuer": ((*COMMON, *BODY, 404), [{"clientToken": []}, {"dpopToken": []}]),
    "consumer": ((*COMMON, *BODY, 404), [{"clientToken": []}, {"dpopToken": []}]),
    "auditor": ((*COMMON,), [{"clientToken": []}, {"dpopToken": []}]),
    "citizen": ((*COMMON, *BODY, 404, 409), [{"citizenToken": []}]),
    "public": ((429, 503), []),
    "operations": ((503,), []),
}


class RecordPut(msgspec.Struct):
    """The stored (or unchanged) version of a record."""

    record_id: str
    type: str
    version: int


#: Success statuses a route answers besides its default one.
EXTRA_SUCCESS: dict[tuple[str, str], dict[int, ResponseSpec]] = {
    ("POST", "/v1/records"): {
        200: ResponseSpec(RecordPut, description="content unchanged: the latest version")
    },
    ("PUT", "/v1/me/records/{record_type:str}"): {
        201: ResponseSpec(RecordPut, description="a new version was stored")
    },
    ("POST", "/v1/consent-requests"): {
        200: ResponseSpec(dict[str, Any], description="the existing pending request")
    },
}


def document(handlers: Iterable[Any]) -> None:
    """Attach error responses and security requirements by each handler's first tag."""
    for handler in handlers:
        tags = getattr(handler, "tags", None) or []
        audience = tags[0] if tags else None
        if audience not in AUDIENCES:
            continue
        statuses, security = AUDIENCES[audience]
        responses = dict(handler.responses or {})
        for status in statuses:
            responses.setdefault(status, _problem(status))
        for method in getattr(handler, "http_methods", ()):
            for path in getattr(handler, "paths", ()):
                for status, spec in EXTRA_SUCCESS.get((str(method), path), {}).items():
                    responses.setdefault(status, spec)
        handler.responses = responses
        if security and not handler.security:
            handler.security = security


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="oncevault",
        version="1",
        description=(
            "Consent and submit-once personal-data vault. Errors are RFC 9457 "
            "application/problem+json with a stable `code`; the token endpoint answers "
            "RFC 6749 error bodies."
        ),
        path="/schema",
        components=Components(
            security_schemes={
                "clientToken": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="at+jwt (RFC 9068) from /oauth/token",
                    description="client_credentials with private_key_jwt (RFC 7523)",
                ),
                "dpopToken": SecurityScheme(
                    type="apiKey",
                    name="DPoP",
                    security_scheme_in="header",
                    description="RFC 9449: Authorization: DPoP <token> plus a DPoP proof header",
                ),
                "citizenToken": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT from the trusted identity provider",
                ),
            }
        ),
    )
