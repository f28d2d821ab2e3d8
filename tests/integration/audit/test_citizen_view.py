"""A citizen's view of the log (``AuditLog.citizen_entries``, ``citizen_entry``,
``recent_reads``): the one place the web pages and ``/v1/me/access-log`` ask what a
citizen may see, on both engines."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import audit.log
from audit.log import AuditLog
from audit.models import EntryDraft, Item
from vault.clock import ManualClock
from vault.storage import Database

ANN, BOB = "cit_ann", "cit_bob"


def read(citizen_id: str, *, outcome: str = "ok", actor_type: str = "client") -> EntryDraft:
    granted = outcome == "ok"
    return EntryDraft(
        action="data.read",
        actor_type=actor_type,
        actor_id="kbank",
        outcome=outcome,
        citizen_id=citizen_id,
        client_id="kbank",
        consent_id="cns_1",
        purpose="mortgage_screening" if granted else None,
        items=(Item("income_certificate", 1, ("year",)),) if granted else (),
        reason_code=None if granted else "consent_revoked",
    )


def put(citizen_id: str | None) -> EntryDraft:
    return EntryDraft(
        action="record.put", actor_type="client", actor_id="nts", citizen_id=citizen_id
    )


async def logged(audit: AuditLog, drafts: Sequence[EntryDraft]) -> list[int]:
    async def work() -> tuple[None, Sequence[EntryDraft]]:
        return None, drafts

    _, stored = await audit.run(work, weight=len(drafts))
    return [s.seq for s in stored]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def log(database: Database, clock: ManualClock) -> AuditLog:
    return AuditLog(database=database, clock=clock)


async def test_a_citizen_sees_their_own_entries_newest_first(log: AuditLog) -> None:
    seqs = await logged(log, [put(ANN), put(BOB), read(ANN), put(None), read(ANN)])
    mine = [seqs[0], seqs[2], seqs[4]]
    assert [e.seq for e in await log.citizen_entries(ANN, limit=10)] == mine[::-1]
    assert [e.seq for e in await log.citizen_entries(ANN, limit=2)] == mine[:0:-1]
    older = await log.citizen_entries(ANN, before=mine[1], limit=10)
    assert [e.seq for e in older] == [mine[0]]
    assert [e.seq for e in await log.citizen_entries(BOB, limit=10)] == [seqs[1]]


async def test_another_citizens_entry_is_not_found_like_a_missing_one(log: AuditLog) -> None:
    ann, bob, nobody = await logged(log, [read(ANN), put(BOB), put(None)])
    found = await log.citizen_entry(ANN, ann)
    assert found is not None and found.entry["citizen_id"] == ANN
    assert await log.citizen_entry(ANN, bob) is None
    assert await log.citizen_entry(ANN, nobody) is None
    assert await log.citizen_entry(ANN, nobody + 1) is None


async def test_recent_reads_are_the_clients_granted_reads_since_the_cutoff(
    log: AuditLog, clock: ManualClock
) -> None:
    (old,) = await logged(log, [read(ANN)])
    clock.advance(days=31)
    since = clock.now_ms() - 30 * 86_400_000
    seqs = await logged(
        log,
        [
            read(ANN),
            read(ANN, outcome="denied"),
            read(ANN, actor_type="operator"),
            put(ANN),
            read(BOB),
            read(ANN),
        ],
    )
    recent = await log.recent_reads(ANN, since_ms=since)
    assert [e.seq for e in recent] == [seqs[5], seqs[0]]
    assert old not in [e.seq for e in recent]
    everything = await log.recent_reads(ANN, since_ms=0)
    assert [e.seq for e in everything] == [seqs[5], seqs[0], old]


async def test_recent_reads_look_at_a_bounded_number_of_entries(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit.log, "RECENT_READS_PAGE", 4)
    monkeypatch.setattr(audit.log, "RECENT_READS_SCAN", 8)
    seqs = await logged(log, [read(ANN) for _ in range(3)] + [put(ANN) for _ in range(8)])
    # The 8 newest entries (two pages) are puts: the older reads are not reached.
    assert await log.recent_reads(ANN, since_ms=0) == []
    monkeypatch.setattr(audit.log, "RECENT_READS_SCAN", 12)
    assert [e.seq for e in await log.recent_reads(ANN, since_ms=0)] == seqs[2::-1]
