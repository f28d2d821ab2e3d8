"""Build a full runtime (database + local KEK + services) for integration tests."""

from __future__ import annotations

from pathlib import Path

from api.runtime import Runtime
from api.settings import Settings, load_settings
from vault.clock import ManualClock
from vault.keyring import Keyring
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
        repo=runtime.repo,
        keys=runtime.keys,
        audit=runtime.audit,
        clock=clock,
    )
    await runtime.load_services()
    return runtime
