"""Piccolo app of the vault package."""

from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from vault.tables import TABLES

APP_CONFIG = AppConfig(
    app_name="vault",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=list(TABLES),
    migration_dependencies=[],
    commands=[],
)
