"""Citizen web pages under ``/my`` (server-rendered; Korean and English).

Public surface: :func:`web_router` (mount it in :func:`api.app.create_app`) and
:data:`MOUNT_PATH`. See ``api/web/README.md`` for sign-in settings.
"""

from __future__ import annotations

from api.web.routes import MOUNT_PATH, web_router

__all__ = ["MOUNT_PATH", "web_router"]
