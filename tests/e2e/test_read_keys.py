"""The consented read and its keys (consent/reads.py): a granted read whose DEKs are
not in memory records nothing, unwraps them outside any transaction, and runs its
unit again; a refused read never needs a key. Over HTTP, in-process, SQLite, with the
DEK cache at 0 (every read a cache miss)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from tests.reliability.inprocess import Local, local_platform
from tests.reliability.scenario import revoke_consent, setup_home, token
from vault.errors import KeyProviderUnavailable
from vault.keys import UnwrapRequest


@pytest.fixture
async def cold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Local]:
    async with local_platform(tmp_path) as platform:
        vault = platform.runtime.vault
        assert vault is not None
        monkeypatch.setattr(vault.cache, "ttl_ms", 0)
        yield platform


def count_unwraps(local: Local, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Items per key-provider unwrap call, from now on."""
    calls: list[int] = []
    unwrap = local.runtime.keys.unwrap

    async def counted(items: Sequence[UnwrapRequest]) -> list[bytes]:
        calls.append(len(items))
        return await unwrap(items)

    monkeypatch.setattr(local.runtime.keys, "unwrap", counted)
    return calls


async def fetch_count(local: Local, consent_id: str) -> int:
    row = await local.database.fetchrow(
        "SELECT fetch_count FROM consents WHERE consent_id = $1", consent_id
    )
    assert row is not None
    return int(row["fetch_count"])


async def size(local: Local) -> int:
    return (await local.runtime.audit.state()).size


async def test_a_cold_read_unwraps_once_and_appends_one_entry(
    cold: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = await setup_home(cold.http, cold, citizens=1)
    ((consent_id, bound),) = home.tokens.items()
    calls = count_unwraps(cold, monkeypatch)
    before = await size(cold)
    one = await cold.http.get(
        "/v1/data/income_certificate", headers={"Authorization": f"Bearer {bound}"}
    )
    assert one.status_code == 200
    assert one.json()["data"]["year"] == 2025
    every = await cold.http.get("/v1/data", headers={"Authorization": f"Bearer {bound}"})
    assert every.status_code == 200
    assert {i["type"] for i in every.json()["items"]} == {"income_certificate", "real_estate_title"}
    assert calls == [1, 2]  # one provider call per read, every missing key in it
    assert await size(cold) == before + 2
    assert [int(one.headers["x-audit-seq"]), int(every.headers["x-audit-seq"])] == [
        before,
        before + 1,
    ]
    assert await fetch_count(cold, consent_id) == 2


async def test_provider_down_records_nothing_and_counts_nothing(
    cold: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = await setup_home(cold.http, cold, citizens=1)
    ((consent_id, bound),) = home.tokens.items()

    async def down(*_: object, **__: object) -> list[bytes]:
        raise KeyProviderUnavailable("key provider unreachable")

    monkeypatch.setattr(cold.runtime.keys, "unwrap", down)
    before, fetched = await size(cold), await fetch_count(cold, consent_id)
    buckets = await cold.database.fetch("SELECT * FROM rate_buckets ORDER BY 1, 2, 3")
    assert buckets, "the rate limit counts reads here"
    answer = await cold.http.get("/v1/data", headers={"Authorization": f"Bearer {bound}"})
    assert answer.status_code == 503
    assert answer.json()["code"] == "kms_unavailable"
    assert "retry-after" in answer.headers
    assert await size(cold) == before
    assert await fetch_count(cold, consent_id) == fetched
    assert await cold.database.fetch("SELECT * FROM rate_buckets ORDER BY 1, 2, 3") == buckets


async def test_a_refused_read_needs_no_key(cold: Local, monkeypatch: pytest.MonkeyPatch) -> None:
    """Revoked, with the provider down: 403 and its denied entry, not 503."""
    home = await setup_home(cold.http, cold, citizens=1)
    ((consent_id, bound),) = home.tokens.items()
    await revoke_consent(cold.http, cold, home.nids[0], consent_id)
    calls = count_unwraps(cold, monkeypatch)
    before = await size(cold)
    answer = await cold.http.get("/v1/data", headers={"Authorization": f"Bearer {bound}"})
    assert answer.status_code == 403
    assert answer.json()["code"] == "consent_revoked"
    assert calls == []
    assert await size(cold) == before + 1
    entries = await cold.entries()
    denied = entries[before]
    assert (denied["outcome"], denied["reason_code"]) == ("denied", "consent_revoked")
    assert denied["citizen_id"] is not None  # the citizen sees the refused attempt


async def test_keys_replaced_on_every_round_give_up_with_503(
    cold: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DEK rewrapped (new generation) while each round unwraps: the read gives up after
    its rounds with 503 `unavailable`, having recorded and counted nothing."""
    home = await setup_home(cold.http, cold, citizens=1)
    ((consent_id, bound),) = home.tokens.items()
    unwrap = cold.runtime.keys.unwrap
    rounds: list[int] = []

    async def rewrapped_meanwhile(items: Sequence[UnwrapRequest]) -> list[bytes]:
        rounds.append(len(items))
        keys = await unwrap(items)
        await cold.database.execute("UPDATE deks SET generation = generation + 1")
        return keys

    monkeypatch.setattr(cold.runtime.keys, "unwrap", rewrapped_meanwhile)
    before, fetched = await size(cold), await fetch_count(cold, consent_id)
    answer = await cold.http.get(
        "/v1/data/income_certificate", headers={"Authorization": f"Bearer {bound}"}
    )
    assert answer.status_code == 503
    assert answer.json()["code"] == "unavailable"
    assert len(rounds) == 2  # three units, keys unwrapped between them
    assert await size(cold) == before
    assert await fetch_count(cold, consent_id) == fetched


async def test_a_cold_read_with_a_dpop_proof_uses_it_once(cold: Local) -> None:
    """The first unit (keys missing) writes nothing, so the proof is recorded by the
    second one only: the read is served, and the same proof again is a replay."""
    home = await setup_home(cold.http, cold, citizens=1)
    consent_id = home.consent_of[home.nids[0]]
    bank = cold.clients["kbank"]
    bound = await token(cold.http, cold, "kbank", dpop=True, consent_id=consent_id)
    proof = bank.dpop("GET", cold.base_url + "/v1/data", token=bound)
    headers = {"Authorization": f"DPoP {bound}", "DPoP": proof}
    guarded = len(await cold.database.fetch("SELECT 1 FROM replay_guard"))
    first = await cold.http.get("/v1/data", headers=headers)
    assert first.status_code == 200
    assert len(await cold.database.fetch("SELECT 1 FROM replay_guard")) == guarded + 1
    again = await cold.http.get("/v1/data", headers=headers)
    assert again.status_code == 401
    assert again.json()["code"] == "invalid_dpop_proof"
