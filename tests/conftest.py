"""Shared fixtures: both storage engines, a real OpenBao, Hypothesis profiles.

Every storage test takes ``database`` (migrated) or ``empty_database`` and runs once
per engine: ``[sqlite]`` always, ``[postgres]`` when ``ONCEVAULT_TEST_POSTGRES_DSN`` is
set (CI sets it). Each Postgres test gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
from hypothesis import HealthCheck, settings

from api.db import migrate, open_database
from api.settings import DatabaseURL
from vault.storage import Database

if TYPE_CHECKING:
    from api.runtime import Runtime

pytest_plugins = ["tests.fixtures.openbao"]

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

POSTGRES_DSN = os.environ.get("ONCEVAULT_TEST_POSTGRES_DSN")
ENGINES = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(
            not POSTGRES_DSN, reason="set ONCEVAULT_TEST_POSTGRES_DSN to run on PostgreSQL"
        ),
    ),
]

REPO_ROOT = Path(__file__).resolve().parents[1]


async def _make_database(engine: str, tmp_path: Path) -> tuple[Database, str | None]:
    if engine == "sqlite":
        path = tmp_path / "oncevault.sqlite"
        url = DatabaseURL(dialect="sqlite", url=f"sqlite:///{path}", sqlite_path=path)
        database = open_database(url)
        await database.start(create=True)
        return database, None
    assert POSTGRES_DSN is not None
    schema = "t_" + secrets.token_hex(6)
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await connection.close()
    database = open_database(
        DatabaseURL(dialect="postgres", url=POSTGRES_DSN), schema=schema, pool_size=30
    )
    await database.start()
    return database, schema


async def _drop(database: Database, schema: str | None) -> None:
    await database.close()
    if schema is not None:
        assert POSTGRES_DSN is not None
        connection = await asyncpg.connect(POSTGRES_DSN)
        try:
            await connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await connection.close()


@contextmanager
def runtime_on_its_own_loop(engine: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Runtime]]:
    """A migrated database on ``engine`` and a runtime over it, on a loop of their own,
    for synchronous drivers such as Hypothesis' ``@given`` and state machines."""
    from tests.helpers.runtime import local_settings, open_runtime  # noqa: PLC0415
    from vault.clock import ManualClock  # noqa: PLC0415

    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        database, schema = loop.run_until_complete(_make_database(engine, tmp_path))
        try:
            loop.run_until_complete(migrate(database))
            runtime = loop.run_until_complete(
                open_runtime(local_settings(tmp_path), database, ManualClock())
            )
            try:
                yield loop, runtime
            finally:
                loop.run_until_complete(runtime.close(database=False))
        finally:
            loop.run_until_complete(_drop(database, schema))
            loop.close()


@pytest.fixture(params=ENGINES)
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An unmigrated database on each engine."""
    database, schema = await _make_database(request.param, tmp_path)
    try:
        yield database
    finally:
        await _drop(database, schema)


@pytest.fixture(params=ENGINES)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database on each engine."""
    database, schema = await _make_database(request.param, tmp_path)
    try:
        await migrate(database)
        yield database
    finally:
        await _drop(database, schema)
