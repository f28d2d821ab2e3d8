"""ASGI middleware: a server-made request id on every request, and one access-log line;
``Allow`` on OPTIONS names every method of the path."""

from __future__ import annotations

import time

import structlog
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import METRICS
from vault.models import new_id

log = structlog.get_logger("api.access")


def new_request_id() -> str:
    """``req_`` + 26 base32 characters: unique, opaque, and valid in audit entries."""
    return new_id("req")


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
            seconds = time.perf_counter() - started
            method = scope.get("method", "")
            log.info(
                "http.request",
                method=method,
                path=scope.get("path"),
                status=status,
                duration_ms=round(seconds * 1000, 2),
            )
            # The route's template, never the path (which may carry a consent id).
            route = scope.get("path_template") or "unrouted"
            METRICS.observe_request(method, route, status, seconds)
            structlog.contextvars.unbind_contextvars("request_id")


class AllowMiddleware:
    """Answer OPTIONS with every method of the matched path in ``Allow``.

    Litestar 2.25 makes a path's OPTIONS handler when the path's first handler is
    registered and never updates it, so a path served by several handlers (``GET`` and
    ``DELETE /v1/me``) listed only the first one's methods. This rewrites the header
    from the app's routes (``HTTPRoute.methods`` holds every handler's). A 405 takes its
    ``Allow`` from the router and is right already (``api/errors.py`` keeps it).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        template = scope.get("path_template")
        methods = next(
            (
                route.methods
                for route in Litestar.from_scope(scope).routes
                if isinstance(route, HTTPRoute) and route.path_format == template
            ),
            None,
        )
        if not methods:
            await self.app(scope, receive, send)
            return
        allow = ", ".join(sorted(methods)).encode("ascii")

        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if any(name.lower() == b"allow" for name, _ in headers):
                    headers = [(k, v) for k, v in headers if k.lower() != b"allow"]
                    message["headers"] = [*headers, (b"allow", allow)]
            await send(message)

        await self.app(scope, receive, send_with_allow)
