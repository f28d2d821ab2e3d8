"""Race-free reads, on both engines, with two "workers" (two database handles, two logs)."""

from __future__ import annotations

import asyncio
import json

import pytest

from api.runtime import Runtime
from consent.errors import ConsentError, ConsentExhausted, ConsentRevoked
from consent.service import ConsentService
from tests.helpers.reads import consented_read
from vault.service import Actor
from vault.storage import Database

CITIZEN = Actor("citizen", "cit_race")
ITEMS = [{"type": "income_certificate", "fields": ["year"]}]


@pytest.fixture
def second(second_runtime: Runtime) -> ConsentService:
    """A second worker's consent service (its own database handle and audit log)."""
    assert second_runtime.consents is not None
    return second_runtime.consents


async def _approved(consents: ConsentService, access: str) -> str:
    consent, _ = await consents.request(
        citizen_id="cit_race",
        client_id="kbank",
        purpose="mortgage_screening",
        items=ITEMS,
        access=access,
        valid_days=30,
        max_fetches=None,
        case_reference=None,
        actor=Actor("client", "kbank"),
    )
    await consents.approve(consent.consent_id, citizen_id="cit_race", actor=CITIZEN)
    return consent.consent_id


async def _entries(database: Database) -> list[dict[str, object]]:
    rows = await database.fetch("SELECT leaf FROM audit_entries ORDER BY seq")
    return [json.loads(bytes(r["leaf"])) for r in rows]


async def test_fifty_concurrent_reads_of_a_once_consent(
    consents: ConsentService, second: ConsentService, database: Database
) -> None:
    consent_id = await _approved(consents, "once")
    results = await asyncio.gather(
        *(
            consented_read(consents if i % 2 else second, consent_id, client_id="kbank")
            for i in range(50)
        )
    )
    successes = [r for r, _ in results if isinstance(r, dict)]
    refusals = [r for r, _ in results if isinstance(r, ConsentError)]
    assert len(successes) == 1
    assert len(refusals) == 49
    assert all(isinstance(r, ConsentExhausted) for r in refusals)
    reads = [e for e in await _entries(database) if e["action"] == "data.read"]
    assert sum(1 for e in reads if e["outcome"] == "ok") == 1
    seqs = [seq for _, seq in results]
    assert len(set(seqs)) == 50
    row = await database.fetchrow(
        "SELECT fetch_count, status FROM consents WHERE consent_id = $1", consent_id
    )
    assert row is not None
    assert (row["fetch_count"], row["status"]) == (1, "exhausted")


async def test_revocation_racing_fifty_reads(
    consents: ConsentService, second: ConsentService, database: Database
) -> None:
    consent_id = await _approved(consents, "standing")

    async def revoke_soon() -> int:
        await asyncio.sleep(0.005)
        await consents.revoke(consent_id, citizen_id="cit_race", actor=CITIZEN)
        return -1

    reads = [
        consented_read(consents if i % 2 else second, consent_id, client_id="kbank")
        for i in range(50)
    ]
    results = await asyncio.gather(revoke_soon(), *reads)
    outcomes = results[1:]
    entries = await _entries(database)
    revoked_at = next(e["seq"] for e in entries if e["action"] == "consent.revoked")
    for value, seq in outcomes:  # type: ignore[misc]
        if isinstance(value, dict):
            assert seq < revoked_at, "a read sequenced after the revocation was served"
        else:
            assert isinstance(value, ConsentRevoked)
            assert seq > revoked_at
    ok_reads = [e for e in entries if e["action"] == "data.read" and e["outcome"] == "ok"]
    assert all(int(e["seq"]) < int(revoked_at) for e in ok_reads)  # type: ignore[arg-type]
    assert len(ok_reads) == sum(1 for v, _ in outcomes if isinstance(v, dict))  # type: ignore[misc]
