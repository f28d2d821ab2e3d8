"""OAuth endpoints and public keys: RFC 8414 metadata, JWKS, token, revocation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from api.auth import enforce_rate_limit, request_id, runtime_of
from api.metrics import METRICS
from api.openapi import success
from api.responses import AuthorizationServerMetadata, JWKSet, OAuthErrorBody, TokenBody
from consent.tokens import CONSENT_DETAIL_TYPE, OAuthError

FORM = "application/x-www-form-urlencoded"


def _form_schema(required: list[str], properties: dict[str, str]) -> RequestBody:
    return RequestBody(
        required=True,
        content={
            FORM: OpenAPIMediaType(
                schema=Schema(
                    type=OpenAPIType.OBJECT,
                    required=required,
                    properties={
                        name: Schema(type=OpenAPIType.STRING, description=text)
                        for name, text in properties.items()
                    },
                )
            )
        },
    )


_ASSERTION = {
    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    "client_assertion": "a JWT signed with the client's registered key (RFC 7523)",
}


@dataclass
class TokenOperation(Operation):
    """Documents the form body that the token endpoint parses itself (strictly)."""

    def __post_init__(self) -> None:
        self.request_body = _form_schema(
            ["grant_type", "client_assertion_type", "client_assertion"],
            {
                "grant_type": "client_credentials",
                **_ASSERTION,
                "scope": "space-separated subset of issuer, consumer, auditor",
                "authorization_details": (
                    'RFC 9396: [{"type": "oncevault_consent", "consent_id": "..."}]'
                ),
            },
        )


@dataclass
class RevokeOperation(Operation):
    """Documents the form body that the revocation endpoint parses itself (strictly)."""

    def __post_init__(self) -> None:
        self.request_body = _form_schema(
            ["token", "client_assertion_type", "client_assertion"],
            {"token": "an access token of this client", **_ASSERTION},
        )


def _oauth_errors(bad_request: str) -> dict[int, ResponseSpec]:
    """RFC 6749 section 5.2 error bodies (``error`` is one of the names given)."""
    return {
        400: ResponseSpec(OAuthErrorBody, description=bad_request, generate_examples=False),
        401: ResponseSpec(OAuthErrorBody, description="invalid_client", generate_examples=False),
    }


NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _oauth_error(exc: OAuthError) -> Response[dict[str, str]]:
    METRICS.count_oauth_error(exc.error)
    return Response(
        {"error": exc.error, "error_description": exc.description},
        status_code=exc.status,
        headers=NO_STORE,
    )


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """Parse the body as a form; repeated parameters are refused (RFC 6749 §3.2)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM:
        raise OAuthError("invalid_request", f"the body must be {FORM}")
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "malformed form body") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"parameter {name} is repeated")
        form[name] = value
    return form


@get("/.well-known/oauth-authorization-server", tags=["public"], sync_to_thread=False)
def metadata(request: Request[Any, Any, Any]) -> AuthorizationServerMetadata:
    """RFC 8414 authorization server metadata."""
    issuer = runtime_of(request).settings.issuer
    return AuthorizationServerMetadata(
        issuer=issuer,
        token_endpoint=issuer + "/oauth/token",
        revocation_endpoint=issuer + "/oauth/revoke",
        jwks_uri=issuer + "/.well-known/jwks.json",
        grant_types_supported=["client_credentials"],
        token_endpoint_auth_methods_supported=["private_key_jwt"],
        token_endpoint_auth_signing_alg_values_supported=["EdDSA", "ES256", "PS256"],
        revocation_endpoint_auth_methods_supported=["private_key_jwt"],
        scopes_supported=["issuer", "consumer", "auditor"],
        authorization_details_types_supported=[CONSENT_DETAIL_TYPE],
        dpop_signing_alg_values_supported=["EdDSA", "ES256", "PS256"],
        response_types_supported=[],
    )


@get(
    "/.well-known/jwks.json",
    tags=["public"],
    sync_to_thread=False,
    responses={200: success(JWKSet, "at-, rc- and cp- public keys")},
)
def jwks(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The platform's public keys: at- tokens, rc- receipts, cp- checkpoints."""
    return runtime_of(request).jwks()


@post(
    "/oauth/token",
    tags=["oauth"],
    status_code=200,
    operation_class=TokenOperation,
    responses={
        200: success(TokenBody, "RFC 6749 token response"),
        **_oauth_errors(
            "invalid_request, invalid_grant, invalid_scope, unsupported_grant_type,"
            " invalid_dpop_proof"
        ),
    },
)
async def token(request: Request[Any, Any, Any]) -> Response[Any]:
    """client_credentials with private_key_jwt (RFC 7523); RFC 6749 error bodies."""
    runtime = runtime_of(request)
    assert runtime.tokens is not None
    try:
        form = await _form(request)
        issued = await runtime.tokens.issue(
            form,
            dpop_proof=request.headers.get("dpop"),
            request_id=request_id(request),
            gate=lambda client_id: enforce_rate_limit(runtime, client_id, "token"),
        )
    except OAuthError as exc:
        return _oauth_error(exc)
    return Response(issued.as_json(), headers=NO_STORE)


@post(
    "/oauth/revoke",
    tags=["oauth"],
    status_code=200,
    operation_class=RevokeOperation,
    responses={
        200: success(type(None), "revoked (or unknown: RFC 7009 section 2.2); the body is null"),
        **_oauth_errors("invalid_request"),
    },
)
async def revoke(request: Request[Any, Any, Any]) -> Response[Any]:
    """RFC 7009: the client revokes one of its tokens; unknown tokens are not an error."""
    runtime = runtime_of(request)
    assert runtime.tokens is not None
    try:
        await runtime.tokens.revoke(await _form(request), request_id=request_id(request))
    except OAuthError as exc:
        return _oauth_error(exc)
    except HTTPException:
        raise
    return Response(None, status_code=200, headers=NO_STORE)


ROUTES = [metadata, jwks, token, revoke]
