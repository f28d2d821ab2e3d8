"""``Idempotency-Key`` on creating POSTs: a repeat within 24 h with the same body gets
the stored response; with another body, 422."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Request, Response

from api.auth import runtime_of
from api.idempotency import StoredResponse

HEADER = "idempotency-key"


async def idempotent(
    request: Request[Any, Any, Any],
    owner: str,
    produce: Callable[[], Awaitable[tuple[msgspec.Struct, int]]],
) -> Response[Any]:
    """Run ``produce`` once per (owner, key); replay its stored response after that."""
    runtime = runtime_of(request)
    store = runtime.idempotency
    key = request.headers.get(HEADER)
    if store is None or key is None:
        body, status = await produce()
        return Response(body, status_code=status)

    async def make() -> StoredResponse:
        body, status = await produce()
        return StoredResponse(
            status=status,
            body=msgspec.json.encode(body),
            content_type="application/json",
            headers={},
        )

    stored, replayed = await store.run(
        owner, key, f"{request.method} {request.url.path}", await request.body(), make
    )
    headers = dict(stored.headers)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        content=stored.body,
        status_code=stored.status,
        media_type=stored.content_type,
        headers=headers,
    )
