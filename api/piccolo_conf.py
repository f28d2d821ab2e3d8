"""Piccolo configuration: the app registry, and the engine bound at run time.

``DB`` starts empty; :func:`api.db.open_database` sets it to the engine chosen by
``ONCEVAULT_DATABASE_URL`` so Piccolo's migration runner uses the same database
as the application. ``PICCOLO_CONF=api.piccolo_conf`` is set by :mod:`api.db`.
"""

from __future__ import annotations

from typing import Any

from piccolo.conf.apps import AppRegistry

DB: Any = None

APP_REGISTRY = AppRegistry(
    apps=["vault.piccolo_app", "audit.piccolo_app", "consent.piccolo_app", "api.piccolo_app"]
)
