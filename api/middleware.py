"""ASGI middleware: a server-made request id on every request, and one access-log line."""

from __future__ import annotations

import secrets
import time
from base64 import b32encode

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("api.access")


def new_request_id() -> str:
    """``req_`` + 26 base32 characters: unique, opaque, and valid in audit entries."""
    return "req_" + b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()[:26]


class RequestIdMiddleware:
    """Bind a fresh request id to the log context and answer it in ``X-Request-Id``.

    Incoming ``X-Request-Id`` headers are ignored: audit entries must carry ids the
    server made.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "http.request",
                method=scope.get("method"),
                path=scope.get("path"),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")
