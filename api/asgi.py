"""ASGI entry point for server workers: settings come from the environment.

``oncevault serve`` resolves and validates settings once, exports them to the
environment of its worker processes, and points granian at :func:`app_factory`.
"""

from __future__ import annotations

import structlog
from litestar import Litestar

from api.affinity import PinFailed, pin_worker
from api.app import create_app
from api.logging import configure_logging
from api.settings import load_settings


def app_factory() -> Litestar:
    configure_logging()
    settings = load_settings()
    if settings.worker_affinity == "spread":
        log = structlog.get_logger("api.worker")
        try:
            cpu = pin_worker(settings.data_dir)
        except PinFailed as exc:
            log.warning("worker.unpinned", reason=str(exc))
        else:
            if cpu is None:
                log.warning("worker.unpinned", reason="every CPU has its worker")
            else:
                log.info("worker.pinned", cpu=cpu)
    return create_app(settings)
