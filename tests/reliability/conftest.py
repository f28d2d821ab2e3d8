"""Fixtures of the reliability suite: real deployments (``make_stack``) and engines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.stack import POSTGRES_DSN, Stack, build_stack, close_stack

ENGINES = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(
            not POSTGRES_DSN, reason="set ONCEVAULT_TEST_POSTGRES_DSN to run on PostgreSQL"
        ),
    ),
]

needs_postgres = pytest.mark.skipif(
    not POSTGRES_DSN, reason="set ONCEVAULT_TEST_POSTGRES_DSN to run on PostgreSQL"
)


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Build deployments (init + clients in one subprocess); stop and drop them afterwards."""
    made: list[Stack] = []

    def make(engine: str, **kw: Any) -> Stack:
        stack = build_stack(tmp_path / f"stack{len(made)}", engine, **kw)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        close_stack(stack)
