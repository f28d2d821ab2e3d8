"""Fixtures for integration tests: a full runtime on each engine (local KEK)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.runtime import Runtime
from consent.service import ConsentService
from tests.helpers.runtime import local_settings, open_runtime
from vault.clock import ManualClock
from vault.service import VaultService
from vault.storage import Database


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def runtime(database: Database, tmp_path: Path, clock: ManualClock) -> AsyncIterator[Runtime]:
    runtime = await open_runtime(local_settings(tmp_path), database, clock)
    try:
        yield runtime
    finally:
        await runtime.close(database=False)


@pytest.fixture
def vault(runtime: Runtime) -> VaultService:
    assert runtime.vault is not None
    return runtime.vault


@pytest.fixture
def consents(runtime: Runtime) -> ConsentService:
    assert runtime.consents is not None
    return runtime.consents


@pytest.fixture
async def second_runtime(
    database: Database, runtime: Runtime, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Runtime]:
    """A second worker beside ``runtime``: its own database handle, audit log and
    services on the same database, keys and clock."""
    other = database.clone()
    await other.start()
    twin = await Runtime.open(
        local_settings(tmp_path), database=other, clock=clock, load_keys=False
    )
    await twin.load_services()
    try:
        yield twin
    finally:
        await twin.close()
