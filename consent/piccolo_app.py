"""Piccolo app of the consent package."""

from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from consent.tables import TABLES

APP_CONFIG = AppConfig(
    app_name="consent",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=list(TABLES),
    migration_dependencies=["vault.piccolo_app", "audit.piccolo_app"],
    commands=[],
)
