"""Piccolo tables of the audit log (storage shape only)."""

from __future__ import annotations

from piccolo.table import Table

TABLES: tuple[type[Table], ...] = ()
