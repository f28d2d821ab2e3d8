"""The Litestar application: the one place that wires routes, state and handlers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec

from api.auth import audit_late_refusal
from api.bodies import recursion_error_handler, strict_json_bodies, validation_exception_handler
from api.db import require_migrated
from api.errors import EXCEPTION_HANDLERS, problem
from api.fastread import ConsentedReads, refuse_hidden_layers
from api.idp import DevIdP
from api.metrics import MEDIA_TYPE as METRICS_MEDIA_TYPE
from api.metrics import METRICS_DIR, PUBLISH_SECONDS, collect, is_loopback, publish, render
from api.middleware import AllowMiddleware, RequestIdMiddleware
from api.openapi import StructSchemas, document, openapi_config, problem_response, success
from api.responses import ServiceStatus
from api.routes import auditors, citizens, consumers, issuers, oauth
from api.routes.dev_idp import dev_idp_router
from api.runtime import Runtime
from api.settings import Settings
from api.web import web_router
from vault.errors import KeyProviderMisconfigured, KeyProviderUnavailable, StorageError
from vault.service import ERASURE_WATCH_SECONDS
from vault.storage import Database

log = structlog.get_logger(__name__)


@get("/healthz", include_in_schema=True, tags=["operations"], sync_to_thread=False)
def healthz() -> ServiceStatus:
    """200 while the process serves."""
    return ServiceStatus(status="ok")


@get(
    "/readyz",
    tags=["operations"],
    responses={200: success(ServiceStatus, "ready")},
)
async def readyz(state: State) -> Response[Any]:
    """200 only when the database and the key provider answer; else 503."""
    runtime: Runtime = state.runtime
    try:
        await runtime.database.ping()
    except StorageError:
        return problem("unavailable", "database unavailable")
    try:
        await runtime.keys.check()
    except (KeyProviderUnavailable, KeyProviderMisconfigured):
        return problem("kms_unavailable", "key provider unavailable")
    return Response(ServiceStatus(status="ready"))


@get(
    "/metrics",
    tags=["operations"],
    media_type=METRICS_MEDIA_TYPE,
    responses={
        200: ResponseSpec(
            str,
            description="Prometheus text format 0.0.4",
            media_type=METRICS_MEDIA_TYPE,
            generate_examples=False,
        ),
        403: problem_response(403),
    },
)
async def metrics(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """Prometheus text: every worker's counters added up. Loopback peers only; no
    series is labelled by citizen (DESIGN section 10)."""
    if not is_loopback(request.client.host if request.client else None):
        return problem("forbidden", "metrics are served to loopback peers only")
    runtime: Runtime = state.runtime
    directory = runtime.settings.data_dir / METRICS_DIR
    try:
        publish(directory)
    except OSError as exc:  # the others' files are still worth answering
        log.warning("metrics.publish_failed", error=exc.__class__.__name__)
    total, workers = collect(directory)
    try:
        size: int | None = (await runtime.audit.state()).size
    except StorageError:
        size = None
    body = render(total, workers=workers, audit_tree_size=size)
    return Response(body, media_type=METRICS_MEDIA_TYPE)


async def _publish_metrics(directory: Path, *, interval: float = PUBLISH_SECONDS) -> None:
    """Publish this worker's counters for the other workers' scrapes, every ``interval``
    seconds (:mod:`api.metrics`)."""
    while True:
        try:
            publish(directory)
        except OSError as exc:
            log.warning("metrics.publish_failed", error=exc.__class__.__name__)
        await asyncio.sleep(interval)


async def _housekeeping(runtime: Runtime, *, interval: float = 3600.0) -> None:
    """Expire consents and shred what retention no longer holds (hourly; idempotent)."""
    while True:
        try:
            assert runtime.consents is not None
            assert runtime.erasure is not None
            await runtime.consents.expire_due()
            await runtime.erasure.run_retention()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the next run retries
            log.warning("housekeeping.failed", error=exc.__class__.__name__)
        await asyncio.sleep(interval)


async def _forget_erased(runtime: Runtime, *, interval: float = ERASURE_WATCH_SECONDS) -> None:
    """Drop cached DEKs soon after an erasure made by another worker (every second)."""
    while True:
        try:
            assert runtime.vault is not None
            if await runtime.vault.forget_erased_elsewhere():
                log.info("dek_cache.cleared", reason="erasure")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the next look retries
            log.warning("dek_cache.erasure_watch_failed", error=exc.__class__.__name__)
        await asyncio.sleep(interval)


def create_app(settings: Settings, *, database: Database | None = None) -> Litestar:
    """Build the app for ``settings``; ``database`` lets tests inject one."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        runtime = await Runtime.open(settings, database=database, load_keys=False)
        try:
            await require_migrated(runtime.database)
            await runtime.load_services()
            assert runtime.checkpointer is not None
            checkpointing = asyncio.create_task(runtime.checkpointer.run(), name="checkpoints")
            housekeeping = asyncio.create_task(_housekeeping(runtime), name="housekeeping")
            erasures = asyncio.create_task(_forget_erased(runtime), name="erasure-watch")
            metrics_dir = settings.data_dir / METRICS_DIR
            publishing = asyncio.create_task(_publish_metrics(metrics_dir), name="metrics")
            app.state.runtime = runtime
            log.info(
                "app.started",
                database=settings.database.dialect,
                key_provider=settings.key_provider,
            )
            yield
            for task in (checkpointing, housekeeping, erasures, publishing):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await runtime.audit.close()
            await runtime.checkpointer.make()  # orderly shutdown refreshes the copy
        finally:
            await runtime.close(database=database is None)
            log.info("app.stopped")

    handlers: list[Any] = [
        healthz,
        readyz,
        metrics,
        *oauth.ROUTES,
        *issuers.ROUTES,
        *consumers.ROUTES,
        *citizens.ROUTES,
        *auditors.ROUTES,
    ]
    if settings.dev_idp:
        dev_idp = DevIdP.load_or_create(
            settings.data_dir, settings.issuer, nid_claim=settings.idp_nid_claim
        )
        handlers.append(dev_idp_router(dev_idp, settings))
    handlers.append(web_router(settings))  # the citizen pages under /my

    document(handlers)
    app = Litestar(
        route_handlers=handlers,
        openapi_config=openapi_config(),
        plugins=[StructSchemas()],
        lifespan=[lifespan],
        # request id outermost; the consented reads answered right inside it
        middleware=[RequestIdMiddleware, ConsentedReads, strict_json_bodies(), AllowMiddleware],
        after_exception=[audit_late_refusal],
        exception_handlers={
            **EXCEPTION_HANDLERS,
            ValidationException: validation_exception_handler,
            RecursionError: recursion_error_handler,
        },
        state=State({"settings": settings}),
        logging_config=None,
        debug=False,
    )
    refuse_hidden_layers(app)
    return app
