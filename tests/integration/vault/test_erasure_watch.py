"""A worker forgets the DEKs another worker erased within a second, not the cache TTL.

The process that erases forgets its own copies of the shredded DEKs at once; every
server process also looks for new erasure entries every ``ERASURE_WATCH_SECONDS`` and
then drops its whole DEK cache (``VaultService.forget_erased_elsewhere``, run by the
app's ``_forget_erased`` task). Two runtimes on one database play the two workers."""

from __future__ import annotations

import asyncio

from api.app import _forget_erased
from api.runtime import Runtime
from vault.models import Subject
from vault.service import Actor, VaultService

ISSUER = Actor("client", "court")
CITIZEN = Actor("citizen", None)


async def cached_citizen(vault: VaultService, nid: str) -> str:
    """A citizen with one record, read through ``vault`` so its DEK is cached there."""
    citizen = await vault.resolve(Subject.parse({"nid": nid}))
    await vault.put(
        citizen_id=citizen,
        record_type="address",
        data={"line1": "Sejong-daero 1"},
        source="court",
        actor=ISSUER,
    )
    await vault.read(citizen_id=citizen, record_type="address", actor=CITIZEN)
    return citizen


def cached_keys(vault: VaultService) -> int:
    return len(vault.cache._entries)


async def test_another_workers_erasure_empties_this_workers_dek_cache(
    runtime: Runtime, second_runtime: Runtime
) -> None:
    here, there = runtime.vault, second_runtime.vault
    assert here is not None and there is not None
    assert await here.forget_erased_elsewhere()  # the first look clears (start-up)
    citizen = await cached_citizen(here, "9001011234567")
    other = await cached_citizen(here, "9001021234568")
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
        citizen = await cached_citizen(here, "9001011234567")
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
