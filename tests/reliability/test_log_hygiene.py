"""Log hygiene against a real server whose stdout and stderr are captured (invariant 1).

The canary flow (`tests/reliability/hygiene.py`) runs against `serve --workers 2` on
SQLite: records with canary values for a canary citizen, consent, reads, the citizen's
own reads and writes, refusals, then an erasure. Canaries (each in UTF-8, UTF-16 and
JSON-escaped form) and the token values used must appear:

- in no refusal body;
- in no byte of any file under the deployment (database, WAL and SHM, KEK dir, erasure
  ledger, checkpoint copies, the server's captured log), scanned while the server runs
  (before the erasure, WAL present) and again after it stopped;
- in no audit entry.

The data responses do hold the canaries: the scanner would see them if they leaked.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from tests.reliability import hygiene
from tests.reliability.checks import access_statuses, canary_violations, encodings, files_under
from tests.reliability.stack import Stack


def _any_canary(blob: bytes) -> bool:
    return any(form in blob for value in hygiene.CANARIES.values() for form in encodings(value))


async def test_no_canary_in_logs_files_audit_entries_or_error_bodies(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack("sqlite")
    server = stack.serve(workers=2)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        flow = await hygiene.before_erasure(http, stack)
        # The canaries are real: the data responses carry them.
        assert all(_any_canary(body) for body in flow.data[:2])
        live_files = files_under(stack.root)
        assert any(name.endswith("-wal") for name in live_files)
        await hygiene.erase(http, stack, flow)
    assert canary_violations(hygiene.CANARIES, flow.errors) == []

    secrets_too = {**hygiene.CANARIES, **flow.tokens}
    assert canary_violations(secrets_too, live_files) == []
    server.stop()
    stopped_files = files_under(stack.root)
    assert server.log_path.as_posix() in stopped_files
    assert canary_violations(secrets_too, stopped_files) == []

    entries = await stack.entries()
    leaves = {f"audit entry {seq}": json.dumps(e).encode() for seq, e in entries.items()}
    assert canary_violations(secrets_too, leaves) == []
    # The log did record the flow (by request id, path and status): it was captured.
    statuses = access_statuses(server.log())
    assert len(statuses) >= 30
    assert 422 in statuses
