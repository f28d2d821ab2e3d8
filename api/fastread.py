"""The consented reads (``GET /v1/data``, ``GET /v1/data/{type}``) without the
per-request machinery they do not use.

The two read routes are the platform's hot path. Litestar routes them as any other:
the router matches, then the app's middleware, the route's own exception layer,
dependency injection, the handler's signature model, a ``Response`` and its
``ASGIResponse``. This middleware sits right inside :class:`RequestIdMiddleware`
(the request id and the access log line stay exactly as for every route) and, for a
``GET`` on a route marked ``opt={"consented_read": ...}``, does what those layers
would do with the same functions: :func:`api.auth.client_principal` verifies the
token, :func:`api.routes.consumers.answer_read` reads and builds the body, and the
success bytes come from Litestar's own JSON encoder. An error is answered by the
same exception handlers (``api/errors.py``) through a Litestar ``Response``.

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

from litestar import Request, Response
from litestar.enums import ScopeType
from litestar.serialization import encode_json
from litestar.types import ASGIApp, Receive, Scope, Send

from api.auth import client_principal
from api.errors import internal_error_handler, oncevault_error_handler
from api.routes.consumers import answer_read
from vault.errors import OncevaultError

#: The read_one route's ``record_type`` constraint (api/routes/consumers.py ``TYPE``).
_TYPE = re.compile(r"[a-z0-9_]{1,64}")
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
            if not isinstance(record_type, str) or _TYPE.fullmatch(record_type) is None:
                await self.app(scope, receive, send)  # Litestar's validation error
                return
            types = [record_type]
        await answer(Request(scope, receive, send), types, send)


async def answer(request: Request[Any, Any, Any], types: list[str] | None, send: Send) -> None:
    """Verify, read, and send the answer (or the problem the exception handlers make)."""
    try:
        principal = await client_principal(request, "consumer", in_unit=True)
        body, audit_seq = await answer_read(request, principal, types)
    except OncevaultError as exc:
        await _problem(request, oncevault_error_handler(request, exc))
        return
    except Exception as exc:  # noqa: BLE001 - as Litestar's handler for Exception would
        await _problem(request, internal_error_handler(request, exc))
        return
    content = encode_json(body)
    await send(
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
    await send({"type": "http.response.body", "body": content, "more_body": False})


async def _problem(request: Request[Any, Any, Any], response: Response[Any]) -> None:
    # As Litestar's exception layer renders a handler's response.
    encoders = request.scope["route_handler"].resolve_type_encoders()
    asgi = response.to_asgi_response(app=None, request=request, type_encoders=encoders)
    await asgi(request.scope, request.receive, request.send)
