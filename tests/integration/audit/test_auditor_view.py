"""An auditor's page of entries (``AuditLog.auditor_entries``, behind
``GET /v1/audit/entries``): filters, and a query about one citizen audited before it
reads, on both engines."""

from __future__ import annotations

import pytest

from audit.log import AuditLog
from tests.integration.audit.test_citizen_view import ANN, BOB, logged, put, read
from vault.clock import ManualClock
from vault.storage import Database


@pytest.fixture
def log(database: Database) -> AuditLog:
    return AuditLog(database=database, clock=ManualClock())


async def test_a_query_about_one_citizen_is_audited_before_it_reads(log: AuditLog) -> None:
    seqs = await logged(log, [read(ANN), put(BOB), put(ANN)])
    page, own = await log.auditor_entries(
        auditor_id="auditor1", request_id="req_q1", after=None, limit=10, citizen_id=ANN
    )
    # Ann's two entries, then the entry of this very query (committed before the read).
    assert [e.seq for e in page] == [seqs[0], seqs[2], seqs[2] + 1]
    assert own == seqs[2] + 1  # the answer's X-Audit-Seq
    queried = page[-1].entry
    assert queried["action"] == "audit.queried"
    assert queried["outcome"] == "ok"
    assert queried["actor"] == {"type": "client", "id": "auditor1"}
    assert queried["citizen_id"] == ANN
    assert queried["client_id"] == "auditor1"
    assert queried["request_id"] == "req_q1"
    assert (await log.state()).size == 4


async def test_other_queries_are_not_audited_and_filters_combine(log: AuditLog) -> None:
    seqs = await logged(log, [read(ANN), put(BOB), read(BOB), put(None)])
    every, own = await log.auditor_entries(
        auditor_id="auditor1", request_id=None, after=None, limit=10
    )
    assert [e.seq for e in every] == seqs
    assert own is None
    reads, _ = await log.auditor_entries(
        auditor_id="auditor1", request_id=None, after=seqs[0], limit=10, action="data.read"
    )
    assert [e.seq for e in reads] == [seqs[2]]
    by_client, _ = await log.auditor_entries(
        auditor_id="auditor1", request_id=None, after=None, limit=1, client_id="kbank"
    )
    assert [e.seq for e in by_client] == [seqs[0]]
    assert (await log.state()).size == len(seqs), "no query without a citizen is audited"
