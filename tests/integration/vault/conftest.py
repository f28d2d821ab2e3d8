"""Fixtures for vault integration tests: a full runtime on each engine (local KEK)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.runtime import Runtime
from api.settings import Settings, load_settings
from vault.clock import ManualClock
from vault.keyring import Keyring
from vault.service import VaultService
from vault.storage import Database


def local_settings(tmp_path: Path, **flags: str) -> Settings:
    return load_settings(
        {"ONCEVAULT_KEK_DIR": str(tmp_path / "keys"), **flags},
        {},
        data_dir_flag=str(tmp_path / "data"),
    )


async def open_runtime(settings: Settings, database: Database, clock: ManualClock) -> Runtime:
    runtime = await Runtime.open(
        settings, database=database, clock=clock, create=True, load_keys=False
    )
    await Keyring.create_missing(
        database=database,
        repo=runtime.repo,
        keys=runtime.keys,
        audit=runtime.audit,
        clock=clock,
    )
    await runtime.load_services()
    return runtime


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
