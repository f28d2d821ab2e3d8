"""The Litestar application: the one place that wires routes, state and handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from litestar import Litestar, Response, get
from litestar.datastructures import State

from api.db import open_database, require_migrated
from api.errors import EXCEPTION_HANDLERS, problem
from api.middleware import RequestIdMiddleware
from api.settings import Settings
from vault.errors import StorageError
from vault.storage import Database

log = structlog.get_logger(__name__)


@get("/healthz", include_in_schema=True, tags=["operations"], sync_to_thread=False)
def healthz() -> dict[str, str]:
    """200 while the process serves."""
    return {"status": "ok"}


@get("/readyz", tags=["operations"])
async def readyz(state: State) -> Response[Any]:
    """200 only when the database (and, from issue 3 on, the key provider) answers."""
    database: Database = state.database
    try:
        await database.ping()
    except StorageError:
        return problem("unavailable", "database unavailable")
    return Response({"status": "ready"})


def create_app(settings: Settings, *, database: Database | None = None) -> Litestar:
    """Build the app for ``settings``; ``database`` lets tests inject one."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db = database or open_database(settings.database)
        await db.start()
        await require_migrated(db)
        app.state.database = db
        log.info("app.started", database=settings.database.dialect)
        try:
            yield
        finally:
            if database is None:
                await db.close()
            log.info("app.stopped")

    return Litestar(
        route_handlers=[healthz, readyz],
        lifespan=[lifespan],
        middleware=[RequestIdMiddleware],
        exception_handlers=EXCEPTION_HANDLERS,
        state=State({"settings": settings}),
        logging_config=None,
        debug=False,
    )
