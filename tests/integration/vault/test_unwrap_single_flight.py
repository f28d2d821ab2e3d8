"""`VaultService.unwrap` asks the key provider once for a DEK that concurrent callers
need at the same time (single flight), and each caller still gets exactly the answer
its own call would have had: the key, KeyProviderUnavailable, or DecryptionError for
a row that does not unwrap."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from vault.errors import DecryptionError, KeyProviderUnavailable
from vault.keys import UnwrapRequest
from vault.models import Subject
from vault.repository import DekRow
from vault.service import Actor, VaultService

ISSUER = Actor("client", "nts", "req_unwrap")


class GatedProvider:
    """Wraps the real provider's unwrap: counts calls and the values asked for, and
    holds each call until the test opens the gate (so callers overlap)."""

    def __init__(self, vault: VaultService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = vault.keys.unwrap
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.fail_with: Exception | None = None
        monkeypatch.setattr(vault.keys, "unwrap", self.unwrap)

    async def unwrap(self, items: Sequence[UnwrapRequest]) -> list[bytes]:
        self.calls.append([item.wrapped for item in items])
        await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return await self.real(items)


async def dek_rows(vault: VaultService, count: int, salt: int) -> list[tuple[DekRow, bytes]]:
    """``count`` citizens with a record each: their DEK rows and keys, cache emptied."""
    out = []
    for i in range(count):
        citizen = await vault.resolve(Subject.parse({"nid": f"900101{salt * 100 + i:07d}"}))
        await vault.put(
            citizen_id=citizen,
            record_type="income_certificate",
            data={"year": 2024},
            source="nts",
            actor=ISSUER,
        )
        found = await vault.dek_for_read(citizen, "income_certificate")
        assert found is not None
        out.append(found)
    vault.cache.clear()
    return out


async def settle(provider: GatedProvider, calls: int) -> None:
    """Wait until ``calls`` provider calls are in (the other callers are waiting)."""
    for _ in range(200):
        if len(provider.calls) >= calls:
            await asyncio.sleep(0)  # the joiners reach their await too
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{len(provider.calls)} provider calls, expected {calls}")


async def test_concurrent_callers_of_one_dek_make_one_provider_call(
    vault: VaultService, monkeypatch: pytest.MonkeyPatch
) -> None:
    [(row, key), (other, other_key)] = await dek_rows(vault, 2, 1)
    provider = GatedProvider(vault, monkeypatch)
    calls = [asyncio.ensure_future(vault.unwrap([row])) for _ in range(5)]
    calls.append(asyncio.ensure_future(vault.unwrap([other, row])))
    await settle(provider, 1)
    await asyncio.sleep(0.01)
    provider.gate.set()
    results = await asyncio.gather(*calls)
    assert results == [[key]] * 5 + [[other_key, key]]
    # The first caller's call, and one for the row nobody was unwrapping yet.
    assert provider.calls == [[row.wrapped], [other.wrapped]]
    assert vault._unwrapping == {}
    assert vault.cache.get(row.dek_id, row.generation) == key


async def test_an_unavailable_provider_fails_every_caller_without_more_calls(
    vault: VaultService, monkeypatch: pytest.MonkeyPatch
) -> None:
    [(row, _)] = await dek_rows(vault, 1, 2)
    provider = GatedProvider(vault, monkeypatch)
    provider.fail_with = KeyProviderUnavailable("key provider timed out")
    calls = [asyncio.ensure_future(vault.unwrap([row])) for _ in range(4)]
    await settle(provider, 1)
    provider.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(r) for r in results] == [KeyProviderUnavailable] * 4
    assert len(provider.calls) == 1
    assert vault._unwrapping == {}


async def test_a_joined_call_that_failed_on_another_row_leaves_the_good_row_to_its_caller(
    vault: VaultService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader's call holds a row that does not unwrap (the whole call fails): the
    caller that joined it for a good row asks for that row itself and gets its key;
    the leader gets DecryptionError, as without the single flight."""
    [(good, key), (other, _)] = await dek_rows(vault, 2, 3)
    bad = msgspec.structs.replace(other, wrapped=other.wrapped[:-8] + "AAAAAAAA")
    provider = GatedProvider(vault, monkeypatch)
    leader = asyncio.ensure_future(vault.unwrap([bad, good]))
    await settle(provider, 1)
    joiner = asyncio.ensure_future(vault.unwrap([good]))
    await asyncio.sleep(0.01)
    provider.gate.set()
    with pytest.raises(DecryptionError):
        await leader
    assert await joiner == [key]
    assert provider.calls == [[bad.wrapped, good.wrapped], [good.wrapped]]
    assert vault._unwrapping == {}


async def test_a_cancelled_leader_or_joiner_does_not_strand_the_others(
    vault: VaultService, monkeypatch: pytest.MonkeyPatch
) -> None:
    [(row, key)] = await dek_rows(vault, 1, 4)
    provider = GatedProvider(vault, monkeypatch)
    leader = asyncio.ensure_future(vault.unwrap([row]))
    await settle(provider, 1)
    cancelled_joiner = asyncio.ensure_future(vault.unwrap([row]))
    joiner = asyncio.ensure_future(vault.unwrap([row]))
    await asyncio.sleep(0.01)
    cancelled_joiner.cancel()
    leader.cancel()  # the client went away: its provider call is abandoned
    with pytest.raises(asyncio.CancelledError):
        await leader
    with pytest.raises(asyncio.CancelledError):
        await cancelled_joiner
    await settle(provider, 2)  # the joiner asks for the row itself
    provider.gate.set()
    assert await asyncio.wait_for(joiner, timeout=10) == [key]
    assert vault._unwrapping == {}


async def test_a_caller_alone_unwraps_as_before(
    vault: VaultService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Duplicates in one call are asked for once and answered in place."""
    [(a, key_a), (b, key_b)] = await dek_rows(vault, 2, 5)
    calls: list[int] = []
    real = vault.keys.unwrap

    async def counting(items: Sequence[UnwrapRequest]) -> Any:
        calls.append(len(items))
        return await real(items)

    monkeypatch.setattr(vault.keys, "unwrap", counting)
    assert await vault.unwrap([a, b, a]) == [key_a, key_b, key_a]
    assert calls == [2]
    assert await vault.unwrap([]) == []
