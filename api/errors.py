"""Domain errors -> RFC 9457 problem+json, in one table.

Every error body is ``{type, title, status, detail, code}`` with media type
``application/problem+json``. ``detail`` comes from our own messages, which never
carry personal data, token values or submitted field values.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import asyncpg
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from api.metrics import METRICS
from vault.errors import KeyProviderUnavailable, OncevaultError, StorageError

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://oncevault.example/problems/"

#: code -> (status, title). The DESIGN section 10 table, one row per code.
STATUS: dict[str, tuple[int, str]] = {
    "invalid_token": (401, "Invalid token"),
    "invalid_dpop_proof": (401, "Invalid DPoP proof"),
    "insufficient_user_authentication": (401, "Fresh sign-in required"),
    "forbidden": (403, "Forbidden"),
    "consent_not_active": (403, "Consent not active"),
    "consent_revoked": (403, "Consent revoked"),
    "consent_expired": (403, "Consent expired"),
    "consent_exhausted": (403, "Consent exhausted"),
    "scope_not_consented": (403, "Not consented"),
    "purpose_not_allowed": (403, "Purpose not allowed"),
    "items_not_allowed": (403, "Items not allowed"),
    "type_not_issuable": (403, "Type not issuable"),
    "not_self_asserted": (403, "Not self-asserted"),
    "consent_not_found": (404, "Consent not found"),
    "record_not_found": (404, "Record not found"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "consent_state_conflict": (409, "Consent state conflict"),
    "idempotency_in_progress": (409, "Request in progress"),
    "malformed_request": (400, "Malformed request"),
    "payload_too_large": (413, "Payload too large"),
    "unsupported_media_type": (415, "Unsupported media type"),
    "validation_error": (422, "Validation error"),
    "rate_limited": (429, "Rate limited"),
    "kms_unavailable": (503, "Key provider unavailable"),
    "unavailable": (503, "Service unavailable"),
    "internal_error": (500, "Internal error"),
}

RETRY_AFTER_SECONDS = {
    "rate_limited": 60,
    "kms_unavailable": 2,
    "unavailable": 2,
    "idempotency_in_progress": 1,
}


def problem(
    code: str,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response[dict[str, Any]]:
    """A problem+json response for ``code`` (counted for ``GET /metrics``)."""
    status, title = STATUS.get(code, STATUS["internal_error"])
    METRICS.count_problem(code)
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
    }
    if extra:
        body.update(extra)
    out_headers = dict(headers or {})
    if code in RETRY_AFTER_SECONDS:
        out_headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS[code]))
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=out_headers)


def oncevault_error_handler(_: Request[Any, Any, Any], exc: OncevaultError) -> Response[Any]:
    if isinstance(exc, KeyProviderUnavailable):
        return problem("kms_unavailable", "the key provider is unavailable; retry shortly")
    if isinstance(exc, StorageError):
        return problem("unavailable", "the database is unavailable; retry shortly")
    code = exc.code if exc.code in STATUS else "internal_error"
    headers: dict[str, str] = {}
    if code in ("invalid_token", "insufficient_user_authentication"):
        headers["WWW-Authenticate"] = f'Bearer error="{code}", DPoP error="{code}"'
    elif code == "invalid_dpop_proof":
        headers["WWW-Authenticate"] = 'DPoP error="invalid_dpop_proof"'
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int):
        headers["Retry-After"] = str(retry_after)
    seq = getattr(exc, "audit_seq", None)
    if isinstance(seq, int):
        headers["X-Audit-Seq"] = str(seq)
    return problem(code, str(exc), headers=headers)


_HTTP_CODES = {
    400: "malformed_request",
    401: "invalid_token",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


def http_exception_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    code = _HTTP_CODES.get(exc.status_code, "internal_error")
    detail = None if exc.status_code >= 500 else STATUS[code][1]
    # Keep protocol headers the exception carries (RFC 9110: a 405 names Allow).
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() in ("allow",)}
    return problem(code, detail, headers=headers)


#: Driver exceptions that mean "the database is not answering right now": a
#: terminated backend, a closed pool connection, a locked or unreachable file. They
#: are answered 503 with Retry-After (nothing was committed), never 500.
DATABASE_FAILURES: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.QueryCanceledError,
    sqlite3.OperationalError,
    ConnectionError,
    TimeoutError,
)


def internal_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The exception type only: messages may quote input.
    if isinstance(exc, DATABASE_FAILURES) or isinstance(exc.__cause__, DATABASE_FAILURES):
        log.warning("http.database_unavailable", error=exc.__class__.__name__)
        return problem("unavailable", "the database is unavailable; retry shortly")
    log.error("http.unhandled", error=exc.__class__.__name__)
    return problem("internal_error", "internal error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    OncevaultError: oncevault_error_handler,
    HTTPException: http_exception_handler,
    HTTP_500_INTERNAL_SERVER_ERROR: internal_error_handler,
    Exception: internal_error_handler,
}
