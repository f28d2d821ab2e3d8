"""Concurrent reads over HTTP against `oncevault serve --workers 2`, on both engines.

16 clients x 25 reads of four citizens' standing consents, one consent revoked by its
citizen mid-run, then 50 simultaneous reads of a `once` consent. Afterwards, through the
auditor API and the database: only 200/403; every response's X-Audit-Seq is unique and
names this request's `data.read` entry; the log's seqs are 0..N-1; no 200 is sequenced
after the revocation; `ok` entries = responses 200; the once consent served exactly
once; `oncevault audit verify` passes.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.reliability.checks import once_violations, read_violations, seq_violations
from tests.reliability.conftest import ENGINES
from tests.reliability.scenario import (
    audit_entries,
    once_storm,
    read_storm,
    revoke_consent,
    setup_home,
)
from tests.reliability.stack import LOAD_ENV, Stack, scaled

CLIENTS = scaled(16, 32)
READS_PER_CLIENT = scaled(25, 200)
CITIZENS = 4


@pytest.mark.parametrize("engine", ENGINES)
async def test_reads_across_two_workers_with_a_revocation_mid_run(
    engine: str, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(engine, env=LOAD_ENV)
    server = stack.serve(workers=2)
    limits = httpx.Limits(max_connections=CLIENTS + 4, max_keepalive_connections=CLIENTS + 4)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, limits=limits) as http:
        home = await setup_home(http, stack, citizens=CITIZENS)
        victim = home.nids[0]
        victim_consent = home.consent_of[victim]
        reads = await read_storm(
            http,
            home,
            clients=CLIENTS,
            reads_per_client=READS_PER_CLIENT,
            revoke=lambda: revoke_consent(http, stack, victim, victim_consent),
            revoke_after=CLIENTS * READS_PER_CLIENT // 2,
        )
        per_worker = server.connections_per_worker()
        once = await once_storm(http, stack, home, readers=50)
        entries, tree_size = await audit_entries(http, stack)

    # The run exercised what it claims: both workers served, the revocation landed mid-run.
    assert len(reads) == CLIENTS * READS_PER_CLIENT
    assert sum(1 for n in per_worker.values() if n) >= 2, per_worker
    victim_reads = [r for r in reads if r.consent_id == victim_consent]
    assert any(r.status == 200 for r in victim_reads)
    assert any(r.code == "consent_revoked" for r in victim_reads)

    assert read_violations([*reads, *once], entries) == []
    assert once_violations(once) == []
    assert seq_violations(entries, tree_size) == []

    server.stop()
    # The database holds exactly what the auditor API served, and the log verifies.
    stored = await stack.entries()
    assert stored == entries
    assert await stack.tree_size() == tree_size
    verified = stack.audit_verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
