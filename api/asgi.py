"""ASGI entry point for server workers: settings come from the environment.

``oncevault serve`` resolves and validates settings once, exports them to the
environment of its worker processes, and points granian at :func:`app_factory`.
"""

from __future__ import annotations

from litestar import Litestar

from api.app import create_app
from api.logging import configure_logging
from api.settings import load_settings


def app_factory() -> Litestar:
    configure_logging()
    return create_app(load_settings())
