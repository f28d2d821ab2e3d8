"""OpenAPI 3.1 at /schema/openapi.json: security schemes and the error responses of
every route (RFC 9457 problem+json), declared in one place; success bodies are the
Structs of ``api/responses.py``, request bodies those of ``api/schemas.py``.

Struct schemas say what the runtime does (:class:`StructSchemas`): a Struct that
refuses unknown fields is ``additionalProperties: false``, and a field may document
bounds that a later layer enforces with ``Meta(extra_json_schema=...)`` (msgspec
itself only documents them).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

# Litestar 2.25 exports no public base for its Struct schemas: a Litestar upgrade that
# moves this fails at import, loudly.
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, Schema, SecurityScheme

from api.errors import PROBLEM_JSON, STATUS

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition


class Problem(msgspec.Struct):
    """RFC 9457 problem details; ``code`` is the stable oncevault error code."""

    type: str
    title: str
    status: int
    detail: str
    code: str


def _codes(status: int) -> str:
    return ", ".join(sorted(code for code, (s, _) in STATUS.items() if s == status))


def problem_response(status: int) -> ResponseSpec:
    """A problem+json response of ``status``, naming the codes it may carry."""
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
    "oauth": ((413, 429, 503), []),  # beside the RFC 6749 bodies the routes declare
    "operations": ((503,), []),
}


def success(body: type[msgspec.Struct | None], description: str) -> ResponseSpec:
    """A success response declared by its body's Struct (``NoneType``: a JSON ``null``)."""
    return ResponseSpec(body, description=description, generate_examples=False)


class StructSchemas(StructSchemaPlugin):
    """Litestar's Struct schemas, plus ``additionalProperties: false`` for a Struct that
    forbids unknown fields, plus the JSON Schema keywords a field documents with
    ``Annotated[..., msgspec.Meta(extra_json_schema={...})]``."""

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        struct = field_definition.type_
        if struct.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        hints = typing.get_type_hints(struct, include_extras=True)
        aliases = Schema.field_aliases()
        for field in msgspec.structs.fields(struct):
            documented = _documented(hints[field.name])
            target = (schema.properties or {}).get(field.encode_name)
            if documented and isinstance(target, Schema):
                for keyword, value in documented.items():
                    setattr(target, aliases.get(keyword, keyword), value)
        return schema


def _documented(annotation: Any) -> dict[str, Any]:
    """The ``extra_json_schema`` of the ``msgspec.Meta`` in an ``Annotated`` hint."""
    found: dict[str, Any] = {}
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, msgspec.Meta) and meta.extra_json_schema:
                found.update(meta.extra_json_schema)
    return found


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
            responses.setdefault(status, problem_response(status))
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
