"""Piccolo app of the api package (idempotency keys, rate-limit buckets)."""

from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from api.tables import TABLES

APP_CONFIG = AppConfig(
    app_name="api",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=list(TABLES),
    migration_dependencies=["vault.piccolo_app", "audit.piccolo_app", "consent.piccolo_app"],
    commands=[],
)
