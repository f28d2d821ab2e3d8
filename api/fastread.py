"""The consented reads (``GET /v1/data``, ``GET /v1/data/{type}``) without the
per-request machinery they do not use.

The two read routes are the platform's hot path. Litestar routes them as any other:
the router matches, then the app's middleware, the route's own exception layer,
dependency injection, the handler's signature model, a ``Response`` and its
``ASGIResponse``. This middleware sits right inside :class:`RequestIdMiddleware`
(the request id and the access log line stay exactly as for every route) and, for a
``GET`` on a route marked ``opt={"consented_read": ...}``, does what those layers
would do with the same functions: :func:`api.auth.signed_token` checks the token,
:func:`api.routes.consumers.answer_read` authenticates the caller, reads and builds
the body, and the
success bytes come from Litestar's own JSON encoder with the route's type encoders. An
error is answered by the handler Litestar would pick from the route's exception
handlers (``api/errors.py``), rendered through a Litestar ``Response``.
:func:`refuse_hidden_layers` stops the app at start-up if a guard, hook, response
header or route middleware is ever declared on these routes.

Anything else passes through untouched: other routes and methods, and a type that
does not match the route's pattern (Litestar's validation answers it). The route
handlers stay registered, so the OpenAPI description and ``Allow`` are unchanged,
and they serve whatever this layer passes on.
py-spy on the read benchmark put the skipped layers at about a fifth of a worker's
event loop (docs/performance.md).
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Litestar, Request, Response
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.serialization import encode_json, get_serializer
from litestar.types import ASGIApp, ExceptionHandler, Receive, Scope, Send

from api.auth import signed_token
from api.errors import internal_error_handler
from api.routes.consumers import TYPE_MAX_LENGTH, TYPE_PATTERN, answer_read

#: The read_one route's ``record_type`` constraint (api/routes/consumers.py ``TYPE``).
_TYPE = re.compile(TYPE_PATTERN)
_JSON = (b"content-type", b"application/json")


class ConsentedReads:
    """ASGI middleware: answer the two consented-read routes directly."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        kind = scope["route_handler"].opt.get("consented_read")
        if kind is None:
            await self.app(scope, receive, send)
            return
        types: list[str] | None = None
        if kind == "one":
            record_type = scope["path_params"].get("record_type")
            if (
                not isinstance(record_type, str)
                or len(record_type) > TYPE_MAX_LENGTH
                or _TYPE.fullmatch(record_type) is None
            ):
                await self.app(scope, receive, send)  # Litestar validates it
                return
            types = [record_type]
        await answer(Request(scope, receive, send), types)


async def answer(request: Request[Any, Any, Any], types: list[str] | None) -> None:
    """Verify, read, and send the answer (or the problem the exception handlers make)."""
    route_handler = request.scope["route_handler"]
    assert isinstance(route_handler, HTTPRouteHandler)
    try:
        token = signed_token(request)
        body, audit_seq = await answer_read(request, token, types)
        content = encode_json(body, get_serializer(route_handler.resolve_type_encoders()))
    except Exception as exc:  # noqa: BLE001 - handled as Litestar's exception layer would
        await _problem(request, _handler_for(route_handler, exc)(request, exc))
        return
    await request.send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                _JSON,
                (b"content-length", str(len(content)).encode("ascii")),
                (b"x-audit-seq", str(audit_seq).encode("ascii")),
            ],
        }
    )
    await request.send({"type": "http.response.body", "body": content, "more_body": False})


def _handler_for(route_handler: HTTPRouteHandler, exc: Exception) -> ExceptionHandler[Any]:
    """The route's exception handler for ``exc``: the nearest class in its MRO, as
    Litestar looks it up (the app maps ``Exception``, so one is always found)."""
    handlers = route_handler.resolve_exception_handlers()
    for cls in type(exc).__mro__:
        found = handlers.get(cls)
        if found is not None:
            return found
    return internal_error_handler


async def _problem(request: Request[Any, Any, Any], response: Response[Any]) -> None:
    # As Litestar's exception layer renders a handler's response.
    encoders = request.scope["route_handler"].resolve_type_encoders()
    asgi = response.to_asgi_response(app=None, request=request, type_encoders=encoders)
    await asgi(request.scope, request.receive, request.send)


def refuse_hidden_layers(app: Litestar) -> None:
    """At start-up: the fast path answers the consented reads without Litestar's
    per-route layers, so none may be declared on those routes (a guard, a hook, route
    or router middleware, response headers or cookies); raise if one is."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not isinstance(handler, HTTPRouteHandler):
                continue
            if handler.opt.get("consented_read") is None:
                continue
            inner_layers = handler.ownership_layers[1:]  # the app's are accounted for
            hidden = {
                "guards": handler.resolve_guards(),
                "before_request": handler.resolve_before_request(),
                "after_request": [
                    layer.after_request
                    for layer in handler.ownership_layers
                    if getattr(layer, "after_request", None)
                ],
                "after_response": handler.resolve_after_response(),
                "response_headers": handler.resolve_response_headers(),
                "response_cookies": handler.resolve_response_cookies(),
                "middleware": [m for layer in inner_layers for m in (layer.middleware or [])],
            }
            declared = sorted(name for name, value in hidden.items() if value)
            if declared:
                raise RuntimeError(
                    f"{handler.paths} is answered by api/fastread.py, which skips"
                    f" {', '.join(declared)}; teach ConsentedReads or drop the opt"
                )
