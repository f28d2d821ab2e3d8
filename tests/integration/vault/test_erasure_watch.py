"""A worker forgets the DEKs another worker erased within a second, not the cache TTL.

The process that erases forgets its own copies of the shredded DEKs at once; every
server process also looks for new erasure entries every ``ERASURE_WATCH_SECONDS`` and
then drops its whole DEK cache (``VaultService.forget_erased_elsewhere``, run by the
app's ``_forget_erased`` task, which the app's lifespan starts and stops; its effect on
a served app is in tests/e2e/test_erasure_served.py). Two runtimes on one database
play the two workers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from api.app import _forget_erased, create_app
from api.runtime import Runtime
from audit.models import EntryDraft
from tests.helpers.lifespan import lifespan
from tests.helpers.reads import citizen_with_cached_key
from tests.helpers.runtime import local_settings, open_runtime
from vault.clock import ManualClock
from vault.errors import StorageError
from vault.service import ERASURE_ACTIONS, Actor, VaultService
from vault.storage import Database

CITIZEN = Actor("citizen", None)


def cached_keys(vault: VaultService) -> int:
    return len(vault.cache._entries)


async def test_another_workers_erasure_empties_this_workers_dek_cache(
    runtime: Runtime, second_runtime: Runtime
) -> None:
    here, there = runtime.vault, second_runtime.vault
    assert here is not None and there is not None
    assert await here.forget_erased_elsewhere()  # the first look clears (start-up)
    citizen = await citizen_with_cached_key(here, "9001011234567")
    other = await citizen_with_cached_key(here, "9001021234568")
    assert cached_keys(here) == 2
    assert not await here.forget_erased_elsewhere()  # no erasure since: kept
    assert cached_keys(here) == 2

    await there.erase(citizen_id=citizen, types=None, actor=CITIZEN)
    assert cached_keys(here) == 2  # the erasing worker cannot reach this memory
    assert await here.forget_erased_elsewhere()
    assert cached_keys(here) == 0
    assert not await here.forget_erased_elsewhere()

    # The other citizen's record still reads (its DEK is unwrapped again).
    found, _seq = await here.read(citizen_id=other, record_type="address", actor=CITIZEN)
    assert found.data == {"line1": "Sejong-daero 1"}
    assert cached_keys(here) == 1


async def test_the_servers_watch_clears_the_cache_soon_after_an_erasure(
    runtime: Runtime, second_runtime: Runtime
) -> None:
    here, there = runtime.vault, second_runtime.vault
    assert here is not None and there is not None
    watch = asyncio.create_task(_forget_erased(runtime, interval=0.01))
    try:
        await asyncio.sleep(0.05)  # its first look has cleared the (empty) cache
        citizen = await citizen_with_cached_key(here, "9001011234567")
        await asyncio.sleep(0.05)
        assert cached_keys(here) == 1  # nothing erased: the watch keeps the key
        await there.erase(citizen_id=citizen, types=None, actor=CITIZEN)
        for _ in range(200):
            if cached_keys(here) == 0:
                break
            await asyncio.sleep(0.01)
        assert cached_keys(here) == 0
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


async def append(runtime: Runtime, *actions: str) -> list[int]:
    """Entries of ``actions`` appended in one unit; their seqs."""

    async def work() -> tuple[None, list[EntryDraft]]:
        return None, [EntryDraft(action=a, actor_type="system", actor_id="test") for a in actions]

    _, entries = await runtime.audit.run(work)
    return [entry.seq for entry in entries]


async def test_latest_seq_of_is_the_newest_entry_of_any_of_the_actions(runtime: Runtime) -> None:
    repo = runtime.audit.repo
    assert await repo.latest_seq_of(ERASURE_ACTIONS) is None
    erased, _put, erased_again, reapplied, _later = await append(
        runtime, "record.erased", "record.put", "record.erased", "erasure.reapplied", "record.put"
    )
    assert erased < erased_again < reapplied
    assert await repo.latest_seq_of(ERASURE_ACTIONS) == reapplied
    assert await repo.latest_seq_of(("record.erased",)) == erased_again
    assert await repo.latest_seq_of(("no.such.action",)) is None
    assert await repo.latest_seq_of(()) is None


async def test_every_new_erasure_clears_again_a_reapplied_one_too(
    runtime: Runtime, second_runtime: Runtime
) -> None:
    here, there = runtime.vault, second_runtime.vault
    assert here is not None and there is not None
    await here.forget_erased_elsewhere()
    first = await citizen_with_cached_key(here, "9001011234567")
    second = await citizen_with_cached_key(here, "9001021234568")
    await there.erase(citizen_id=first, types=None, actor=CITIZEN)
    assert await here.forget_erased_elsewhere()
    await here.read(citizen_id=second, record_type="address", actor=CITIZEN)
    assert cached_keys(here) == 1
    await there.erase(citizen_id=second, types=["address"], actor=CITIZEN)
    assert await here.forget_erased_elsewhere()  # a second erasure: cleared again
    await citizen_with_cached_key(here, "9001031234569")
    assert cached_keys(here) == 1
    await append(second_runtime, "erasure.reapplied")  # as a worker's start-up writes it
    assert await here.forget_erased_elsewhere()
    assert cached_keys(here) == 0


async def test_the_watch_outlives_a_failed_look(
    runtime: Runtime, second_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = runtime.vault, second_runtime.vault
    assert here is not None and there is not None
    real = here.forget_erased_elsewhere
    failures = 0

    async def failing_once() -> bool:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise StorageError("database unavailable")
        return await real()

    monkeypatch.setattr(here, "forget_erased_elsewhere", failing_once)
    citizen = await citizen_with_cached_key(here, "9001011234567")
    watch = asyncio.create_task(_forget_erased(runtime, interval=0.01))
    try:
        for _ in range(200):
            if failures:
                break
            await asyncio.sleep(0.01)
        await citizen_with_cached_key(here, "9001021234568")
        await there.erase(citizen_id=citizen, types=None, actor=CITIZEN)
        for _ in range(200):
            if cached_keys(here) == 0:
                break
            await asyncio.sleep(0.01)
        assert failures == 1
        assert cached_keys(here) == 0
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


async def test_a_key_unwrapped_across_a_clear_is_not_put_back(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unwrap at the provider while an erasure clears the cache: its key is used by
    its caller but not cached again (it would stay for the TTL)."""
    vault = runtime.vault
    assert vault is not None
    citizen = await citizen_with_cached_key(vault, "9001011234567")
    vault.cache.clear()
    row = await vault.repo.current_dek(citizen, "address")
    assert row is not None
    at_provider, go_on = asyncio.Event(), asyncio.Event()
    unwrap = runtime.keys.unwrap

    async def slow_unwrap(requests: Any) -> Any:
        at_provider.set()
        await go_on.wait()
        return await unwrap(requests)

    monkeypatch.setattr(runtime.keys, "unwrap", slow_unwrap)
    call = asyncio.create_task(vault.unwrap([row]))
    await at_provider.wait()
    vault.cache.clear()  # what forget_erased_elsewhere does
    go_on.set()
    (dek,) = await call
    assert len(dek) == 32
    assert vault.cached_dek(row) is None

    await vault.unwrap([row])  # nothing cleared meanwhile: cached
    assert vault.cached_dek(row) is not None


async def test_the_app_runs_the_watch_while_it_serves(database: Database, tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    seed = await open_runtime(settings, database, ManualClock())  # as `oncevault init`
    await seed.close(database=False)
    app = create_app(settings, database=database)

    def watches() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "erasure-watch"]

    async with lifespan(app):
        assert [t.done() for t in watches()] == [False]
    assert watches() == []
