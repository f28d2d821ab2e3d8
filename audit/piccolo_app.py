"""Piccolo app of the audit package."""

from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from audit.tables import TABLES

APP_CONFIG = AppConfig(
    app_name="audit",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=list(TABLES),
    migration_dependencies=["vault.piccolo_app"],
    commands=[],
)
