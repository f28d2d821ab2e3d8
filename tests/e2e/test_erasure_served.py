"""The served app drops another worker's erased DEKs from its memory by itself.

``create_app``'s lifespan runs the erasure watch (``api.app._forget_erased``): here
the app is one worker, a second runtime on the same database is the other; the
other worker erases a citizen whose DEK the app holds, and the app's DEK cache is
empty within a few of the watch's one-second looks, with no call from the test."""

from __future__ import annotations

import asyncio
import time

from api.runtime import Runtime
from tests.e2e.conftest import Platform
from tests.helpers.reads import citizen_with_cached_key
from vault.service import ERASURE_WATCH_SECONDS, Actor
from vault.storage import Database

CITIZEN = Actor("citizen", None)


async def test_another_workers_erasure_leaves_the_apps_memory(
    platform: Platform, database: Database
) -> None:
    vault = platform.runtime.vault
    assert vault is not None
    await asyncio.sleep(ERASURE_WATCH_SECONDS * 1.5)  # the watch's first look is behind us
    citizen = await citizen_with_cached_key(vault, "9001011234567")
    assert len(vault.cache._entries) == 1

    other = database.clone()
    await other.start()
    worker = await Runtime.open(platform.settings, database=other, load_keys=False)
    try:
        await worker.load_services()
        assert worker.vault is not None
        await worker.vault.erase(citizen_id=citizen, types=None, actor=CITIZEN)
    finally:
        await worker.close()

    deadline = time.monotonic() + 5 * ERASURE_WATCH_SECONDS
    while vault.cache._entries and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(vault.cache._entries) == 0
