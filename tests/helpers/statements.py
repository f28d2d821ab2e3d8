"""A spy on every SQL statement a :class:`~vault.storage.Database` runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from vault.storage import Database


class Statements:
    """Every statement the database runs from now on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, database: Database) -> None:
        self.sql: list[str] = []
        run = Database._run

        async def spied(db: Database, sql: str, args: Sequence[object], *shapes: Any) -> Any:
            self.sql.append(sql)
            return await run(db, sql, args, *shapes)

        monkeypatch.setattr(Database, "_run", spied)

    def count(self, *fragments: str) -> int:
        return sum(1 for sql in self.sql if all(f in sql for f in fragments))
