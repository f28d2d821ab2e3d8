"""PostgreSQL backends terminated under load (`pg_terminate_backend`), `serve --workers 2`.

The server connects with `application_name=ovtest_<random>` in its DSN, so only that
server's connections are killed. While writers, readers and token requests run, every
backend of the server is terminated several times (one run, shared by the tests below).

- every response is 200/201/403 or 503 `unavailable` with Retry-After: never a 500;
- answered reads name their committed `data.read` entry (a 503 may follow a COMMIT
  that happened, so `ok` entries >= responses 200);
- the log's seqs are 0..N-1 and `oncevault audit verify` passes;
- the service recovers without a restart: afterwards every request succeeds.

Behaviour of the code: a group-committed batch whose connection is lost before
COMMIT was sent (a unit's statement, BEGIN, or the append failed on a terminated
backend) was rolled back by the server, so `AuditLog` runs it again on a new
connection (at most twice; `tests/integration/audit/test_log.py` pins both sides:
retried before COMMIT, never after). A failure at COMMIT, or a batch that keeps
failing, gives `StorageError` -> 503 `unavailable` with Retry-After (a 503 read may
still have its `ok` entry: recorded, not served). A statement outside a transaction
(token verification, the token endpoint's client lookup, the read path's step 1,
citizen resolution, the rate limiter) and a direct transaction (approvals, puts' DEK
creation) that hit a terminated backend are `StorageError` -> 503 too, not retried
(before c756406 asyncpg's `ConnectionDoesNotExistError` / `InternalClientError`
escaped as 500, which this test found). asyncpg's pool replaces dead connections on
the next acquire: the service recovers by itself, without a restart.

A transaction whose BEGIN, COMMIT or ROLLBACK failed on a terminated backend used to
keep its pool connection for good (Piccolo's `PostgresTransaction` released it only
after a successful commit or rollback): the pool of 10 shrank with every such event,
a worker's orderly shutdown hung until granian killed it (`refused to gracefully
stop`, 10 s), and after ~25 terminations every request waited forever for a
connection. `test_terminated_backends_leak_no_pooled_connection` and the orderly stop
below pin it (fixed by `Database._postgres_transaction` on asyncpg's own
`pool.acquire()`). Closing the pool is also bounded now (`Database._close_pool`,
`POOL_CLOSE_SECONDS`): whatever holds a connection, a stop terminates it after 5 s
instead of hanging until granian kills the worker.

A termination fails only the statements in flight at that instant, so the terminator
goes on (up to `MAX_TERMINATIONS`) until at least one 503 was answered: the run
always exercises the failure path it checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from api.db import migrate, open_database
from api.settings import DatabaseURL
from audit.log import AuditLog
from audit.models import EntryDraft
from tests.reliability.checks import (
    Read,
    log_events,
    observe,
    read_violations,
    seq_violations,
    status_violations,
)
from tests.reliability.conftest import needs_postgres
from tests.reliability.scenario import income, put_record, setup_home, token
from tests.reliability.stack import (
    LOAD_ENV,
    POSTGRES_DSN,
    Stack,
    bearer,
    build_stack,
    close_stack,
    create_schema,
    drop_schema,
    postgres_url,
    run_blocking,
    scaled,
)
from vault.clock import SystemClock
from vault.errors import StorageError
from vault.storage import Database

pytestmark = needs_postgres

TERMINATIONS = scaled(4, 40)
MAX_TERMINATIONS = TERMINATIONS + 20
PAUSE_SECONDS = 0.35
ALLOWED = frozenset({200, 201, 403, 503})


async def terminate_backends(app_name: str) -> int:
    """Terminate every backend of the server under test; return how many."""
    assert POSTGRES_DSN is not None
    connection = await asyncpg.connect(
        POSTGRES_DSN, server_settings={"application_name": "ovtest_terminator"}
    )
    try:
        rows = await connection.fetch(
            "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity"
            " WHERE application_name = $1 AND pid <> pg_backend_pid()",
            app_name,
        )
    finally:
        await connection.close()
    return sum(1 for r in rows if r["done"])


@dataclass
class Outage:
    statuses: list[int] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    reads: list[Read] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    missing_retry_after: int = 0
    entries: dict[int, dict[str, Any]] = field(default_factory=dict)
    tree_size: int = 0
    verified: tuple[int, str] = (0, "")
    log: str = ""


async def _under_load(stack: Stack, outage: Outage) -> None:
    assert stack.app_name is not None
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        home = await setup_home(http, stack, citizens=3)
        nts = await token(http, stack, "nts", scope="issuer")
        stop = asyncio.Event()
        counter = itertools.count(1)

        def note(response: httpx.Response) -> None:
            outage.statuses.append(response.status_code)
            if response.status_code >= 400:
                try:
                    code = response.json().get("code") or response.json().get("error")
                except ValueError:
                    code = "(not json)"
                outage.codes[f"{response.status_code} {code}"] += 1
            if response.status_code == 503 and "retry-after" not in response.headers:
                outage.missing_retry_after += 1

        async def writer() -> None:
            while not stop.is_set():
                nid = home.nids[next(counter) % len(home.nids)]
                data = income(nid, next(counter))
                note(await put_record(http, nts, nid, "income_certificate", data))

        async def reader(index: int) -> None:
            consents = list(home.tokens)
            for j in itertools.count():
                if stop.is_set():
                    return
                consent_id = consents[(index + j) % len(consents)]
                response = await http.get("/v1/data", headers=bearer(home.tokens[consent_id]))
                note(response)
                outage.reads.append(observe(consent_id, response))

        async def token_requests() -> None:
            while not stop.is_set():
                note(await http.post("/oauth/token", data=stack.token_form("kbank")))

        async def terminator() -> None:
            # A termination fails only the statements in flight at that instant (an
            # idle connection is replaced on its next acquire), so one run may see no
            # 503: terminate on, up to MAX_TERMINATIONS, until one was answered.
            while len(outage.killed) < TERMINATIONS or (
                not outage.codes["503 unavailable"] and len(outage.killed) < MAX_TERMINATIONS
            ):
                await asyncio.sleep(PAUSE_SECONDS)
                outage.killed.append(await terminate_backends(str(stack.app_name)))
            await asyncio.sleep(PAUSE_SECONDS)
            stop.set()

        loads = [writer(), writer(), token_requests(), *(reader(i) for i in range(4))]
        await asyncio.wait_for(asyncio.gather(terminator(), *loads), timeout=120)

        # Recovery without a restart: every kind of request succeeds again.
        for bound in list(home.tokens.values()) * 3:
            outage.recovered.append((await http.get("/v1/data", headers=bearer(bound))).status_code)
        again = await put_record(http, nts, home.nids[0], "income_certificate", income("", 0))
        outage.recovered.append(again.status_code)
        outage.recovered.append((await http.get("/readyz")).status_code)
        outage.recovered.append(
            (await http.post("/oauth/token", data=stack.token_form("bai"))).status_code
        )
    assert stack.server is not None
    stack.server.stop()  # orderly: a worker whose pool leaked a connection would hang here
    outage.log = stack.server.log()
    outage.entries = await stack.entries()
    outage.tree_size = await stack.tree_size()


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    stack = build_stack(Path(tmp_path_factory.mktemp("outage")), "postgres", env=LOAD_ENV)
    try:
        stack.serve(workers=2)
        result = Outage()
        run_blocking(_under_load(stack, result))
        verified = stack.audit_verify()
        result.verified = (verified.returncode, verified.stdout + verified.stderr)
        yield result
    finally:
        close_stack(stack)


def test_the_server_lost_its_connections_under_load(outage: Outage) -> None:
    assert sum(outage.killed) >= TERMINATIONS, outage.killed
    assert len(outage.statuses) > 4 * TERMINATIONS
    assert outage.codes.get("503 unavailable", 0) > 0, outage.codes


def test_answers_are_200_403_or_503_with_retry_after_never_500(outage: Outage) -> None:
    assert status_violations(outage.statuses, ALLOWED) == [], outage.codes
    assert set(outage.codes) <= {"503 unavailable"}, outage.codes
    assert outage.missing_retry_after == 0
    assert "http.unhandled" not in outage.log


def test_invariants_hold_afterwards(outage: Outage) -> None:
    assert seq_violations(outage.entries, outage.tree_size) == []
    allowed = frozenset({200, 403, 503})
    assert (
        read_violations(outage.reads, outage.entries, allowed=allowed, exact_ok_count=False) == []
    )
    assert outage.verified[0] == 0, outage.verified[1]


def test_recovers_without_a_restart_and_stops_in_order(outage: Outage) -> None:
    assert set(outage.recovered) <= {200, 201}, outage.recovered
    assert outage.log.count("Spawning worker-") == 2  # no worker died and was respawned
    # Every worker stopped by itself: none held a leaked pool connection (the bounded
    # close would have terminated it after 5 s, before granian's 10 s: it logs that).
    assert "refused to gracefully stop" not in outage.log
    assert "db.pool_close_timeout" not in outage.log
    assert [e["event"] for e in log_events(outage.log)].count("app.stopped") == 2


# -- the connection pool after terminated backends ----------------------------------------


async def _units_and_statements_while_terminating(
    database: Database, app_name: str, terminations: int
) -> None:
    """Group-committed units (the write path) and plain statements (the read path's
    step 1) in a loop while every backend of this pool is terminated again and again."""
    audit = AuditLog(database=database, clock=SystemClock())
    stop = asyncio.Event()

    async def work() -> tuple[None, list[EntryDraft]]:
        await database.fetch("SELECT size FROM audit_state")
        return None, [EntryDraft(action="record.put", actor_type="system", actor_id="load")]

    async def units() -> None:
        while not stop.is_set():
            with contextlib.suppress(StorageError):
                await audit.run(work)

    async def statements() -> None:
        while not stop.is_set():
            with contextlib.suppress(StorageError):
                await database.fetch("SELECT count(*) AS n FROM audit_entries")

    async def terminator() -> None:
        for _ in range(terminations):
            await asyncio.sleep(0.15)
            await terminate_backends(app_name)
        stop.set()

    await asyncio.wait_for(
        asyncio.gather(terminator(), *(units() for _ in range(4)), statements(), statements()),
        timeout=60,
    )
    await audit.close()


async def test_terminated_backends_leak_no_pooled_connection(tmp_path: Path) -> None:
    """No connection stays checked out once nothing runs, and the pool closes promptly
    (a worker's orderly shutdown waits for it: the server log shows `Killing worker-N
    after it refused to gracefully stop` after the load test above)."""
    schema = "rel_" + secrets.token_hex(5)
    app_name = "ovtest_" + secrets.token_hex(5)
    await create_schema(schema)
    database = open_database(DatabaseURL(dialect="postgres", url=postgres_url(schema, app_name)))
    try:
        await database.start()
        await migrate(database)
        await _units_and_statements_while_terminating(database, app_name, scaled(8, 40))
        await asyncio.sleep(0.2)
        pool = database.engine.pool
        assert pool is not None
        checked_out = sum(1 for holder in pool._holders if holder._in_use is not None)
        try:
            await asyncio.wait_for(asyncio.shield(pool.close()), timeout=3)
            closed = True
        except TimeoutError:
            closed = False
            pool.terminate()
        assert (checked_out, closed) == (0, True)
    finally:
        await database.close()
        await drop_schema(schema)
