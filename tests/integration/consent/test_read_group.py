"""Consented reads that meet in one group-committed batch share their statements
(consent/reads.py ``ReadGroup``, audit/log.py ``SharedScope``): one statement locks
every consent of the run, one loads their records, fetch counts and rate-limit
counters are written once. The answers, counts and entries must be exactly those of
the same reads run one by one. On both engines, through ``DataReader`` itself.

The caller is authenticated inside the unit too: one statement reads the client row
and revoked ``jti`` of every token of the run, and a refused caller leaves no trace."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from api.auth import RateLimited
from api.runtime import Runtime
from audit.log import AuditLog, SharedScope, shared_scope
from consent.reads import DataReader, ReadResult
from consent.repository import LockedConsents, ReplayRepository
from consent.tokens import SignedToken
from tests.helpers.clients import TestClient, register
from tests.helpers.reads import alter_the_ciphertext, citizen_with_consent
from tests.helpers.statements import Statements
from vault.clock import ManualClock
from vault.errors import (
    ConnectionLostBeforeCommit,
    DecryptionError,
    OncevaultError,
    StorageError,
)
from vault.service import Actor
from vault.storage import Database

ISSUER = Actor("client", "nts", "req_issue")
TYPE = "income_certificate"


async def revoked(database: Database, jti: str) -> None:
    """``jti`` on the revocation list (as ``POST /oauth/revoke`` puts it there)."""
    async with database.transaction():
        assert await ReplayRepository(database).revoke_here(jti, 2**40)


@pytest.fixture(autouse=True)
async def kbank(runtime: Runtime) -> None:
    """The reading client, registered: its live row is read inside every read."""
    await register(runtime, TestClient("kbank"))


def signed(consent_id: str, *, client_id: str = "kbank", jti: str | None = None) -> SignedToken:
    """What ``TokenService.check`` returns for a valid consumer token of ``consent_id``."""
    return SignedToken(
        client_id=client_id,
        jti=jti or secrets.token_urlsafe(12),
        scope=frozenset({"consumer"}),
        consent_id=consent_id,
        expires_at=2**40,
        proof_use=None,
    )


def reader_of(runtime: Runtime) -> DataReader:
    assert runtime.reader is not None
    return runtime.reader


def limited(runtime: Runtime) -> Callable[[], Any]:
    limiter = runtime.rate_limiter
    assert limiter is not None

    async def gate() -> OncevaultError | None:
        decision = await limiter.hit_here("kbank", "read")
        return None if decision.allowed else RateLimited(decision.retry_after)

    return gate


async def read(
    runtime: Runtime,
    consent_id: str,
    gate: Callable[[], Any] | None = None,
    *,
    token: SignedToken | None = None,
) -> ReadResult | OncevaultError:
    try:
        return await reader_of(runtime).read(
            consent_id=consent_id,
            token=token or signed(consent_id),
            role="consumer",
            types=[TYPE],
            request_id=None,
            gate=gate,
        )
    except OncevaultError as refused:
        return refused


async def together(runtime: Runtime, consent_ids: Sequence[str], **kw: Any) -> list[Any]:
    """Every read queued before the batch starts: they all meet in one batch."""
    return list(await asyncio.gather(*(read(runtime, c, **kw) for c in consent_ids)))


def codes(results: Sequence[Any]) -> list[str]:
    return ["ok" if isinstance(r, ReadResult) else str(r.code) for r in results]


async def entries(database: Database, after: int) -> list[dict[str, Any]]:
    rows = await database.fetch("SELECT seq, leaf FROM audit_entries WHERE seq >= $1", after)
    return [json.loads(bytes(r["leaf"])) for r in sorted(rows, key=lambda r: int(r["seq"]))]


async def bucket(database: Database) -> int:
    rows = await database.fetch(
        "SELECT count FROM rate_buckets WHERE client_id = 'kbank' AND scope = 'read'"
    )
    return sum(int(r["count"]) for r in rows)


async def consent_row(database: Database, consent_id: str) -> tuple[int, str]:
    row = await database.fetchrow(
        "SELECT fetch_count, status FROM consents WHERE consent_id = $1", consent_id
    )
    assert row is not None
    return int(row["fetch_count"]), str(row["status"])


def fail_the_first_flush(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first run's shared write of fetch counts fails (the batch then runs again
    unit by unit with savepoints); returns the list the failure is noted in."""
    flush = LockedConsents.flush
    failures: list[int] = []

    async def fail_once(self: LockedConsents) -> None:
        if not failures:
            failures.append(1)
            raise StorageError("a locked consent changed before its fetches were counted")
        await flush(self)

    monkeypatch.setattr(LockedConsents, "flush", fail_once)
    return failures


async def warm(runtime: Runtime, consent_ids: Sequence[str]) -> None:
    """One read each, so the DEKs are in memory and the next reads need one batch."""
    for consent_id in consent_ids:
        assert isinstance(await read(runtime, consent_id), ReadResult)


async def test_a_batch_of_reads_counts_a_limited_consent_exactly(
    runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    consent_id = await citizen_with_consent(runtime, 1, max_fetches=6)
    await warm(runtime, [consent_id])
    before = (await runtime.audit.state()).size
    batches = runtime.audit.batches
    statements = Statements(monkeypatch, database)
    results = await together(runtime, [consent_id] * 12)
    assert runtime.audit.batches == batches + 1  # one batch, one shared run
    # 12 reads: one statement reads the callers, one loads the consent, one the
    # record, one writes the count
    assert statements.count("FROM clients", "FROM revoked_tokens") == 1
    assert statements.count("FROM consents") == 1
    assert statements.count("FROM records") == 1
    assert statements.count("UPDATE consents") == 1
    assert len(statements.sql) <= 9, statements.sql  # + the tree lock and the append
    assert codes(results) == ["ok"] * 5 + ["consent_exhausted"] * 7
    assert await consent_row(database, consent_id) == (6, "exhausted")
    got = await entries(database, before)
    actions = [(e["action"], e["outcome"], e.get("reason_code")) for e in got]
    assert actions.count(("data.read", "ok", None)) == 5
    assert actions.count(("data.read", "denied", "consent_exhausted")) == 7
    assert actions.count(("consent.exhausted", "ok", None)) == 1
    ok = [r for r in results if isinstance(r, ReadResult)]
    assert [r.items[0].data for r in ok] == [{"year": 2025, "total_income": 1001}] * 5


async def test_a_count_alone_leaves_the_status_column_out_of_its_write(
    runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite, counts that keep a consent active are written without naming
    ``status`` (SQLite would rewrite its consents_citizen index entry) and the one that
    exhausts a consent sets it, in the same batch; PostgreSQL writes both in one
    statement (it skips unchanged index entries itself)."""
    limited_id = await citizen_with_consent(runtime, 1, max_fetches=3)
    open_id = await citizen_with_consent(runtime, 2)
    await warm(runtime, [limited_id, open_id])
    statements = Statements(monkeypatch, database)
    results = await together(runtime, [limited_id, open_id] * 3)
    assert codes(results) == ["ok", "ok", "ok", "ok", "consent_exhausted", "ok"]
    writes = [sql for sql in statements.sql if "UPDATE consents" in sql]
    if database.dialect == "sqlite":
        assert len(writes) == 2, writes
        assert sum("status = v.status" in sql for sql in writes) == 1
    else:
        assert len(writes) == 1, writes
        assert "status = v.status" in writes[0]
    assert await consent_row(database, limited_id) == (3, "exhausted")
    assert await consent_row(database, open_id) == (4, "active")


async def test_the_rate_limit_decides_each_read_of_a_batch(
    runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    consent_ids = [await citizen_with_consent(runtime, n) for n in range(8)]
    await warm(runtime, consent_ids)
    limiter = runtime.rate_limiter
    assert limiter is not None
    monkeypatch.setattr(limiter, "per_minute", 5)
    results = await together(runtime, consent_ids + consent_ids[:2], gate=limited(runtime))
    assert codes(results) == ["ok"] * 5 + ["rate_limited"] * 5
    rows = await database.fetch(
        "SELECT count FROM rate_buckets WHERE client_id = 'kbank' AND scope = 'read'"
    )
    assert [int(r["count"]) for r in rows] == [10]  # every hit counted, as one by one
    again = await read(runtime, consent_ids[0], gate=limited(runtime))
    assert isinstance(again, RateLimited)
    rows = await database.fetch(
        "SELECT count FROM rate_buckets WHERE client_id = 'kbank' AND scope = 'read'"
    )
    assert [int(r["count"]) for r in rows] == [11]
    counts = [await consent_row(database, c) for c in consent_ids]
    assert sorted(n for n, _ in counts) == [1, 1, 1, 2, 2, 2, 2, 2]  # warm-up + granted


async def test_a_consent_expiring_inside_a_batch_is_expired_once(
    runtime: Runtime, database: Database, clock: ManualClock
) -> None:
    consent_id = await citizen_with_consent(runtime, 3, valid_days=1)
    await warm(runtime, [consent_id])
    before = (await runtime.audit.state()).size
    clock.advance(days=2)
    results = await together(runtime, [consent_id] * 5)
    assert codes(results) == ["consent_expired"] * 5
    assert await consent_row(database, consent_id) == (1, "expired")
    got = await entries(database, before)
    assert [e["action"] for e in got].count("consent.expired") == 1


async def test_a_revocation_between_reads_of_one_batch_stops_the_later_ones(
    runtime: Runtime, database: Database
) -> None:
    consent_id = await citizen_with_consent(runtime, 4)
    await warm(runtime, [consent_id])
    assert runtime.consents is not None
    row = await database.fetchrow(
        "SELECT citizen_id FROM consents WHERE consent_id = $1", consent_id
    )
    assert row is not None
    citizen = str(row["citizen_id"])

    async def revoke() -> str:
        assert runtime.consents is not None
        done = await runtime.consents.revoke(
            consent_id, citizen_id=citizen, actor=Actor("citizen", citizen)
        )
        return done.status.value

    batches = runtime.audit.batches
    results = await asyncio.gather(
        read(runtime, consent_id),
        read(runtime, consent_id),
        revoke(),
        read(runtime, consent_id),
        read(runtime, consent_id),
    )
    assert runtime.audit.batches == batches + 1
    assert codes(results[:2]) == ["ok", "ok"]
    assert results[2] == "revoked"
    assert codes(results[3:]) == ["consent_revoked", "consent_revoked"]
    assert await consent_row(database, consent_id) == (3, "revoked")


async def test_a_failed_shared_write_runs_the_batch_again_one_by_one(
    runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    consent_ids = [await citizen_with_consent(runtime, 10 + n, max_fetches=3) for n in range(3)]
    await warm(runtime, consent_ids)
    before = (await runtime.audit.state()).size
    failures = fail_the_first_flush(monkeypatch)
    reruns = runtime.audit.savepoint_reruns
    results = await together(runtime, consent_ids * 3)
    assert failures == [1]
    assert runtime.audit.savepoint_reruns == reruns + 1
    assert codes(results) == ["ok"] * 6 + ["consent_exhausted"] * 3
    assert [await consent_row(database, c) for c in consent_ids] == [(3, "exhausted")] * 3
    got = await entries(database, before)
    assert len([e for e in got if e["action"] == "data.read"]) == 9  # nothing twice


async def test_a_count_that_moved_under_the_lock_is_refused_not_overwritten(
    runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    consent_id = await citizen_with_consent(runtime, 20)
    await warm(runtime, [consent_id])
    flush = LockedConsents.flush
    moved = []

    async def move_then_flush(self: LockedConsents) -> None:
        if not moved:  # the first run only: what no lock holder could see happen
            moved.append(1)
            await database.execute(
                "UPDATE consents SET fetch_count = 70 WHERE consent_id = $1", consent_id
            )
        await flush(self)

    monkeypatch.setattr(LockedConsents, "flush", move_then_flush)
    reruns = runtime.audit.savepoint_reruns
    results = await together(runtime, [consent_id] * 4)
    assert codes(results) == ["ok"] * 4
    assert runtime.audit.savepoint_reruns == reruns + 1  # refused, then one by one
    assert await consent_row(database, consent_id) == (5, "active")


async def test_two_workers_batching_reads_of_one_consent_never_overcount(
    runtime: Runtime, second_runtime: Runtime, database: Database
) -> None:
    consent_id = await citizen_with_consent(runtime, 30, max_fetches=8)
    await warm(runtime, [consent_id])
    await warm(second_runtime, [consent_id])
    first, second = await asyncio.gather(
        together(runtime, [consent_id] * 10), together(second_runtime, [consent_id] * 10)
    )
    assert sorted(codes(first + second)).count("ok") == 6
    assert set(codes(first + second)) == {"ok", "consent_exhausted"}
    assert await consent_row(database, consent_id) == (8, "exhausted")


async def warm_and_counted(
    runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch, n: int
) -> tuple[str, int]:
    """A consent of citizen ``n`` (at most 10 fetches) read once, a rate limit that is
    on but not reached; the consent and the read bucket's count."""
    limiter = runtime.rate_limiter
    assert limiter is not None
    monkeypatch.setattr(limiter, "per_minute", 100)
    consent_id = await citizen_with_consent(runtime, n, max_fetches=10)
    await warm(runtime, [consent_id])
    return consent_id, await bucket(database)


async def test_a_unit_raising_after_a_run_leaves_every_count_exact(
    runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    consent_id, hits = await warm_and_counted(runtime, database, monkeypatch, 40)
    seen: list[object] = []

    async def boom() -> tuple[None, list[Any]]:
        seen.append(shared_scope())  # not a read: no shared scope
        raise RuntimeError("boom")

    async def raising() -> str:
        with pytest.raises(RuntimeError):
            await runtime.audit.run(boom)
        return "raised"

    gate = limited(runtime)
    results = await asyncio.gather(
        read(runtime, consent_id, gate),
        read(runtime, consent_id, gate),
        read(runtime, consent_id, gate),
        raising(),
    )
    assert codes(results[:3]) == ["ok"] * 3 and results[3] == "raised"
    assert seen and all(scope is None for scope in seen)
    assert await consent_row(database, consent_id) == (4, "active")
    assert await bucket(database) == hits + 3


async def test_a_lost_connection_reruns_the_run_and_counts_once(
    runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    consent_id, hits = await warm_and_counted(runtime, database, monkeypatch, 41)
    append = AuditLog.append
    lost: list[int] = []

    async def losing(self: AuditLog, drafts: Any, **kw: Any) -> Any:
        if not lost and any(d.action == "data.read" for d in drafts):
            lost.append(1)
            raise ConnectionLostBeforeCommit("lost")
        return await append(self, drafts, **kw)

    monkeypatch.setattr(AuditLog, "append", losing)
    results = await together(runtime, [consent_id] * 4, gate=limited(runtime))
    assert lost == [1]
    assert codes(results) == ["ok"] * 4
    assert await consent_row(database, consent_id) == (5, "active")
    assert await bucket(database) == hits + 4


async def test_cold_and_warm_reads_in_one_batch_count_exactly(
    runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    warm_id = await citizen_with_consent(runtime, 42, max_fetches=3)
    cold_id = await citizen_with_consent(runtime, 43, max_fetches=3)
    assert runtime.vault is not None
    runtime.vault.cache.clear()  # the puts cached both keys
    await warm(runtime, [warm_id])
    unwrapped: list[int] = []
    unwrap = runtime.keys.unwrap

    async def counted(items: Any) -> list[bytes]:
        unwrapped.append(len(items))
        return await unwrap(items)

    monkeypatch.setattr(runtime.keys, "unwrap", counted)
    results = await together(runtime, [warm_id, cold_id, warm_id, cold_id, cold_id, cold_id])
    # The cold reads really were cold: each unwraps the one key outside its unit (four
    # concurrent cold reads of one key each call the provider; no single flight).
    assert unwrapped and set(unwrapped) == {1} and len(unwrapped) <= 4
    assert codes(results).count("ok") == 2 + 3
    assert await consent_row(database, warm_id) == (3, "exhausted")
    assert await consent_row(database, cold_id) == (3, "exhausted")


async def in_queue_order(runtime: Runtime, *calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` with their units queued in this order, in one batch: a unit that
    waits holds the log until every call has queued its own."""
    release, started = asyncio.Event(), asyncio.Event()

    async def hold() -> tuple[None, list[Any]]:
        started.set()
        await release.wait()
        return None, []

    holder = asyncio.create_task(runtime.audit.run(hold))
    await started.wait()  # the holder's batch is running: the queue starts empty
    tasks = []
    for index, call in enumerate(calls):
        tasks.append(asyncio.create_task(call()))
        for _ in range(2000):
            if runtime.audit.queued > index:
                break
            await asyncio.sleep(0.001)
        else:
            raise AssertionError("the unit did not queue")
    release.set()
    await holder
    return list(await asyncio.gather(*tasks))


async def test_a_write_between_reads_of_one_batch_is_seen_by_the_later_read(
    runtime: Runtime, database: Database
) -> None:
    consent_id = await citizen_with_consent(runtime, 44)
    await warm(runtime, [consent_id])
    row = await database.fetchrow(
        "SELECT citizen_id FROM consents WHERE consent_id = $1", consent_id
    )
    assert row is not None and runtime.vault is not None
    vault = runtime.vault

    async def put() -> str:
        await vault.put(
            citizen_id=str(row["citizen_id"]),
            record_type=TYPE,
            data={"year": 2026, "total_income": 7, "employer": "E", "tax_paid": 1},
            source="nts",
            actor=ISSUER,
            client_id="nts",
        )
        return "put"

    batches = runtime.audit.batches
    before, _, after = await in_queue_order(
        runtime, lambda: read(runtime, consent_id), put, lambda: read(runtime, consent_id)
    )
    assert runtime.audit.batches == batches + 2  # the holder's batch, then the three
    assert isinstance(before, ReadResult) and isinstance(after, ReadResult)
    assert before.items[0].data["year"] == 2025
    assert after.items[0].data["year"] == 2026


async def test_the_shared_scope_is_the_runs_own(runtime: Runtime) -> None:
    """Only the batch's task sees a run's scope, and only until its writes are done: a
    task a unit starts, or a unit of another kind, counts on its own."""
    seen: dict[str, object] = {}

    class Group:
        async def load(self, scope: SharedScope, keys: Sequence[Any]) -> None:
            seen["keys"] = list(keys)

    group = Group()

    async def child_view() -> SharedScope | None:
        return shared_scope()

    async def work() -> tuple[SharedScope | None, list[Any]]:
        seen["child"] = await asyncio.create_task(child_view())
        return shared_scope(), []

    async def write() -> None:
        return None

    first, second = await asyncio.gather(
        runtime.audit.run(work, group=group, key="a"), runtime.audit.run(work, group=group, key="b")
    )
    assert seen["keys"] == ["a", "b"]
    scope = first[0]
    assert isinstance(scope, SharedScope) and second[0] is scope
    assert seen["child"] is None  # a task started inside a unit does not see it
    assert not scope.open
    with pytest.raises(RuntimeError):
        scope.defer(write)


async def test_a_count_written_early_by_an_expiry_leaves_nothing_to_write_at_the_end(
    runtime: Runtime, database: Database, clock: ManualClock
) -> None:
    """The first read of a run counts; time passes the consent's end before the second
    read of the same run, whose lazy expiry writes the pending count first. The run's
    final write then has nothing left, and must not fail the batch."""
    consent_id = await citizen_with_consent(runtime, 45, valid_days=1)
    await warm(runtime, [consent_id])
    moved: list[int] = []

    async def late() -> OncevaultError | None:
        if not moved:  # inside the first unit, after its decision and before its count
            moved.append(1)
            clock.advance(days=2)
        return None

    reruns = runtime.audit.savepoint_reruns
    results = await together(runtime, [consent_id] * 2, gate=late)
    assert codes(results) == ["ok", "consent_expired"]
    assert runtime.audit.savepoint_reruns == reruns  # the run committed as it ran
    assert await consent_row(database, consent_id) == (2, "expired")


async def callers_of_a_batch(runtime: Runtime, database: Database) -> dict[str, SignedToken]:
    """One consent of kbank's, read by tokens of every kind of caller: three good
    ones, one revoked, one of a disabled client, one of a client never registered,
    one of a client without the consumer role."""
    consent_id = await citizen_with_consent(runtime, 60)
    await warm(runtime, [consent_id])
    await register(runtime, TestClient("dbank"))
    await register(runtime, TestClient("audit_office", roles=("auditor",)))
    assert runtime.clients is not None
    await runtime.clients.change(
        "dbank", actor=Actor("operator", "test"), reason="disabled", enabled=False
    )
    await revoked(database, "revoked-jti")
    return {
        "good 1": signed(consent_id),
        "revoked": signed(consent_id, jti="revoked-jti"),
        "good 2": signed(consent_id),
        "disabled": signed(consent_id, client_id="dbank"),
        "unknown": signed(consent_id, client_id="ghost"),
        "no role": signed(consent_id, client_id="audit_office"),
        "good 3": signed(consent_id),
    }


@pytest.mark.parametrize("run", ["shared", "one by one"])
async def test_the_callers_of_a_batch_are_checked_in_it_and_only_a_forbidden_one_leaves_an_entry(
    runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch, run: str
) -> None:
    tokens = await callers_of_a_batch(runtime, database)
    consent_id = tokens["good 1"].consent_id
    assert consent_id is not None
    hits = await bucket(database)
    before = (await runtime.audit.state()).size
    reruns = runtime.audit.savepoint_reruns
    if run == "one by one":  # a failed shared write: every unit on its own, no shared rows
        fail_the_first_flush(monkeypatch)
    statements = Statements(monkeypatch, database)
    gate = limited(runtime)
    results = await asyncio.gather(
        *(read(runtime, consent_id, gate, token=token) for token in tokens.values())
    )
    assert dict(zip(tokens, codes(results), strict=True)) == {
        "good 1": "ok",
        "revoked": "invalid_token",
        "good 2": "ok",
        "disabled": "invalid_token",
        "unknown": "invalid_token",
        "no role": "forbidden",
        "good 3": "ok",
    }
    callers = statements.count("FROM clients", "FROM revoked_tokens")
    if run == "shared":
        assert runtime.audit.savepoint_reruns == reruns
        assert callers == 1  # every token of the run in one statement
    else:
        assert runtime.audit.savepoint_reruns == reruns + 1
        assert callers == 1 + len(tokens)  # the failed shared run's, then one per unit
    got = await entries(database, before)
    for name, result in zip(tokens, results, strict=True):
        if name in ("revoked", "disabled", "unknown"):  # not a caller: no entry
            assert getattr(result, "audit_seq", None) is None
    # The client without the role is a caller: its refusal is audited, and nothing
    # else of the read happens (no count, no rate-limit hit, no consent in the entry).
    seq = getattr(results[list(tokens).index("no role")], "audit_seq", None)
    assert sorted((e["action"], e["outcome"], e["client_id"], e["reason_code"]) for e in got) == [
        ("data.read", "denied", "audit_office", "forbidden"),
        *[("data.read", "ok", "kbank", None)] * 3,
    ]
    (denied,) = [e for e in got if e["outcome"] == "denied"]
    assert denied["seq"] == seq
    assert (denied["consent_id"], denied["citizen_id"], denied["items"]) == (None, None, [])
    assert denied["record_type"] == TYPE  # the one type the read asked for
    assert await consent_row(database, consent_id) == (4, "active")  # warm-up + 3
    assert await bucket(database) == hits + 3  # refused callers are not counted


async def test_a_token_revoked_or_a_client_disabled_is_refused_on_the_next_read(
    runtime: Runtime, database: Database
) -> None:
    consent_id = await citizen_with_consent(runtime, 61)
    token = signed(consent_id)
    assert isinstance(await read(runtime, consent_id, token=token), ReadResult)
    await revoked(database, token.jti)
    assert codes([await read(runtime, consent_id, token=token)]) == ["invalid_token"]
    other = signed(consent_id)
    assert isinstance(await read(runtime, consent_id, token=other), ReadResult)
    assert runtime.clients is not None
    await runtime.clients.change(
        "kbank", actor=Actor("operator", "test"), reason="disabled", enabled=False
    )
    assert codes([await read(runtime, consent_id, token=other)]) == ["invalid_token"]
    await runtime.clients.change(
        "kbank", actor=Actor("operator", "test"), reason="enabled", enabled=True
    )
    assert isinstance(await read(runtime, consent_id, token=other), ReadResult)
    assert await consent_row(database, consent_id) == (3, "active")


async def test_a_ciphertext_that_does_not_open_after_commit_leaves_an_error_entry(
    runtime: Runtime, database: Database
) -> None:
    """The read's ``ok`` entry commits before the records are opened; a row altered in
    the database then fails to open, and an ``error`` entry follows the ``ok`` one
    (the log must not say the fields went out). The answer carries its seq."""
    consent_id = await citizen_with_consent(runtime, 71)
    assert isinstance(await read(runtime, consent_id), ReadResult)  # the DEK now cached
    await alter_the_ciphertext(database)
    size = (await runtime.audit.state()).size
    failed = await read(runtime, consent_id)
    assert isinstance(failed, DecryptionError)
    assert failed.audit_seq == size + 1
    leaves = await database.fetch_values(
        "SELECT leaf FROM audit_entries WHERE seq >= $1 ORDER BY seq", size
    )
    released, error = (json.loads(bytes(leaf)) for (leaf,) in leaves)
    assert (released["action"], released["outcome"]) == ("data.read", "ok")
    assert (error["action"], error["outcome"], error["reason_code"]) == (
        "data.read",
        "error",
        "decryption_failed",
    )
    assert error["items"] == [] and error["consent_id"] == consent_id
    assert error["citizen_id"] == released["citizen_id"]


async def test_a_release_failure_whose_error_entry_cannot_be_written_is_still_answered(
    runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    consent_id = await citizen_with_consent(runtime, 72)
    assert isinstance(await read(runtime, consent_id), ReadResult)
    await alter_the_ciphertext(database)

    async def down(*_: Any) -> int:
        raise StorageError("database unavailable")

    monkeypatch.setattr(runtime.audit, "append_alone", down)
    failed = await read(runtime, consent_id)
    assert isinstance(failed, DecryptionError)  # not the StorageError of the entry
    assert failed.audit_seq is None
