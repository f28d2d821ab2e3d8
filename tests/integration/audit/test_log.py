"""Appends: contiguous seqs under concurrency, roots equal recomputation, atomicity."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from audit import merkle
from audit.log import AuditLog
from audit.models import EntryDraft, parse_leaf
from audit.repository import AuditRepository
from tests import independent_verifier as ref
from tests.helpers.statements import Statements
from vault.clock import ManualClock
from vault.errors import StorageError
from vault.storage import Database


def draft(i: int, **kw: object) -> EntryDraft:
    return EntryDraft(
        action="record.put",
        actor_type="client",
        actor_id=f"client{i % 7}",
        **kw,  # type: ignore[arg-type]
    )


async def _all_leaves(database: Database) -> list[tuple[int, bytes]]:
    rows = await database.fetch("SELECT seq, leaf FROM audit_entries ORDER BY seq")
    return [(int(r["seq"]), bytes(r["leaf"])) for r in rows]


async def test_200_concurrent_units_give_contiguous_seqs(database: Database) -> None:
    audit = AuditLog(database=database, clock=ManualClock())

    async def unit(i: int) -> int:
        async def work() -> tuple[int, Sequence[EntryDraft]]:
            return i, [draft(i, request_id=f"req_{i}")]

        value, entries = await audit.run(work)
        assert value == i
        return entries[0].seq

    seqs = await asyncio.gather(*(unit(i) for i in range(200)))
    assert sorted(seqs) == list(range(200))
    assert audit.batches < 200, "group commit shares transactions"
    leaves = await _all_leaves(database)
    assert [s for s, _ in leaves] == list(range(200))
    state = await audit.state()
    assert state.size == 200
    assert state.root_hash == ref.root_from_leaves([leaf for _, leaf in leaves])
    # Every stored proof agrees with the independent verifier.
    for seq in (0, 1, 99, 127, 128, 199):
        proof = await audit.inclusion_proof(seq, 200)
        ref.verify_inclusion(merkle.leaf_hash(leaves[seq][1]), seq, 200, proof, state.root_hash)
    for first in (1, 64, 150):
        proof = await audit.consistency_proof(first, 200)
        ref.verify_consistency(first, 200, proof, await audit.root_at(first), state.root_hash)


async def test_two_logs_on_one_database_never_fork(database: Database) -> None:
    """Two processes' logs (two AuditLog objects) interleave without gaps."""
    first = AuditLog(database=database, clock=ManualClock())
    second = AuditLog(database=database, clock=ManualClock())

    async def one(audit: AuditLog, i: int) -> int:
        async def work() -> tuple[None, Sequence[EntryDraft]]:
            return None, [draft(i), draft(i + 1000)]

        _, entries = await audit.run(work)
        return entries[0].seq

    await asyncio.gather(*(one(first if i % 2 else second, i) for i in range(60)))
    leaves = await _all_leaves(database)
    assert [s for s, _ in leaves] == list(range(120))
    assert (await first.state()).root_hash == ref.root_from_leaves([leaf for _, leaf in leaves])


async def test_a_failing_unit_rolls_back_alone(database: Database) -> None:
    audit = AuditLog(database=database, clock=ManualClock())
    await database.execute("CREATE TABLE probe (k TEXT PRIMARY KEY)")

    async def good(k: str) -> tuple[str, Sequence[EntryDraft]]:
        await database.execute("INSERT INTO probe (k) VALUES ($1)", k)
        return k, [draft(1)]

    async def bad() -> tuple[str, Sequence[EntryDraft]]:
        await database.execute("INSERT INTO probe (k) VALUES ($1)", "bad")
        raise ValueError("boom")

    results = await asyncio.gather(
        audit.run(lambda: good("a")),
        audit.run(bad),
        audit.run(lambda: good("b")),
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError)
    rows = await database.fetch("SELECT k FROM probe ORDER BY k")
    assert [r["k"] for r in rows] == ["a", "b"]
    assert [s for s, _ in await _all_leaves(database)] == [0, 1]
    assert audit.savepoint_reruns == 1  # first without savepoints, then with


async def test_savepoints_only_after_a_unit_raised(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch runs its units without savepoints; one that raises sends the whole batch
    round again with a savepoint each (every unit runs twice, the good ones commit
    once). A batch of one that raises is rolled back and answered without a rerun."""
    audit = AuditLog(database=database, clock=ManualClock())
    await database.execute("CREATE TABLE probe (k TEXT PRIMARY KEY)")
    statements: list[str] = []
    execute = database.execute

    async def spy(sql: str, *args: object) -> None:
        statements.append(sql.split(maxsplit=1)[0])
        await execute(sql, *args)

    monkeypatch.setattr(database, "execute", spy)
    runs: list[str] = []

    async def good(k: str) -> tuple[str, Sequence[EntryDraft]]:
        runs.append(k)
        await database.execute("INSERT INTO probe (k) VALUES ($1)", k)
        return k, [draft(1)]

    async def bad() -> tuple[str, Sequence[EntryDraft]]:
        runs.append("bad")
        await database.execute("INSERT INTO probe (k) VALUES ($1)", "bad")
        raise ValueError("boom")

    await asyncio.gather(*(audit.run(lambda k=k: good(k)) for k in "abc"))
    assert "SAVEPOINT" not in statements
    assert sorted(runs) == ["a", "b", "c"]

    runs.clear()
    results = await asyncio.gather(
        audit.run(lambda: good("d")),
        audit.run(bad),
        audit.run(lambda: good("e")),
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError)
    assert runs == ["d", "bad", "d", "bad", "e"]
    assert statements.count("SAVEPOINT") == 3
    assert audit.savepoint_reruns == 1

    runs.clear()
    with pytest.raises(ValueError, match="boom"):
        await audit.run(bad)
    assert runs == ["bad"]
    assert audit.savepoint_reruns == 1
    rows = await database.fetch("SELECT k FROM probe ORDER BY k")
    assert [r["k"] for r in rows] == ["a", "b", "c", "d", "e"]
    assert [s for s, _ in await _all_leaves(database)] == [0, 1, 2, 3, 4]


async def test_no_entry_without_its_action_and_no_action_without_its_entry(
    database: Database,
) -> None:
    """Fault injected between action and append, both ways."""
    audit = AuditLog(database=database, clock=ManualClock())
    await database.execute("CREATE TABLE probe (k TEXT PRIMARY KEY)")

    # 1. The action ran, then the append fails (an invalid entry): neither is kept.
    async def action_then_bad_entry() -> tuple[None, Sequence[EntryDraft]]:
        await database.execute("INSERT INTO probe (k) VALUES ('x')")
        return None, [EntryDraft(action="bad action!", actor_type="system", actor_id=None)]

    with pytest.raises(ValueError, match="action"):
        await audit.run(action_then_bad_entry)
    assert await database.fetch("SELECT k FROM probe") == []
    assert await _all_leaves(database) == []

    # 2. The entries were appended, then the transaction fails before COMMIT: neither is kept.
    class Boom(Exception):
        pass

    async def action_append_then_fail() -> None:
        async with database.transaction():
            await database.execute("INSERT INTO probe (k) VALUES ('y')")
            await audit.append([draft(1)])
            raise Boom

    with pytest.raises(Boom):
        await action_append_then_fail()
    assert await database.fetch("SELECT k FROM probe") == []
    assert await _all_leaves(database) == []
    assert (await audit.state()).size == 0

    # And the log still appends correctly afterwards (the frontier cache did not lie).
    async with database.transaction():
        await audit.append([draft(2), draft(3)])
    leaves = await _all_leaves(database)
    assert [s for s, _ in leaves] == [0, 1]
    assert (await audit.state()).root_hash == ref.root_from_leaves([leaf for _, leaf in leaves])


async def test_append_outside_a_transaction_is_refused(database: Database) -> None:
    audit = AuditLog(database=database, clock=ManualClock())
    with pytest.raises(RuntimeError, match="open transaction"):
        await audit.append([draft(1)])


async def test_a_transaction_reads_the_tree_state_once_for_its_first_append(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state read when the transaction took the tree lock serves its first append;
    a second append in the same transaction reads it again (the first moved it)."""
    audit = AuditLog(database=database, clock=ManualClock())
    statements = Statements(monkeypatch, database)
    async with audit.transaction():
        await audit.append([draft(1)])
    assert statements.count("FROM audit_state") == 1
    async with audit.transaction():
        await audit.append([draft(2)])
        await audit.append([draft(3)])
    assert statements.count("FROM audit_state") == 1 + 2
    assert (await audit.state()).size == 3


async def test_a_batch_whose_tree_lock_failed_answers_its_callers(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction fails before the batch took its units (here: reading the tree
    state): the units queued then get the error, and the next ones commit."""
    audit = AuditLog(database=database, clock=ManualClock())
    lock = AuditRepository.lock_state_with_frontier
    failed: list[int] = []

    async def fail_once(repo: AuditRepository) -> Any:
        if not failed:
            failed.append(1)
            raise StorageError("database unreachable (test)")
        return await lock(repo)

    monkeypatch.setattr(AuditRepository, "lock_state_with_frontier", fail_once)

    async def work() -> tuple[int, Sequence[EntryDraft]]:
        return 1, [draft(1)]

    with pytest.raises(StorageError, match="unreachable"):
        await asyncio.wait_for(audit.run(work), timeout=5)
    value, entries = await asyncio.wait_for(audit.run(work), timeout=5)
    assert (value, [e.seq for e in entries]) == (1, [0])


async def _kill_own_backend(database: Database) -> None:
    await database.execute("SELECT pg_terminate_backend(pg_backend_pid())")


async def test_a_batch_that_lost_its_connection_before_commit_runs_again(
    database: Database,
) -> None:
    """PostgreSQL: a backend terminated inside the batch (before COMMIT was sent)
    rolled everything back, so the group commit runs the batch again on a new
    connection: every caller gets its result, each action and entry exactly once."""
    if database.dialect != "postgres":
        pytest.skip("terminating a backend is PostgreSQL's failure")
    await database.execute("CREATE TABLE IF NOT EXISTS retry_marks (n INTEGER PRIMARY KEY)")
    audit = AuditLog(database=database, clock=ManualClock())
    runs: list[int] = []

    async def unit(i: int) -> int:
        async def work() -> tuple[int, Sequence[EntryDraft]]:
            runs.append(i)
            await database.execute("INSERT INTO retry_marks (n) VALUES ($1)", i)
            if i == 3 and runs.count(3) == 1:
                await _kill_own_backend(database)  # the connection dies mid-batch
            return i, [draft(i, request_id=f"req_{i}")]

        value, entries = await audit.run(work)
        assert value == i
        return entries[0].seq

    seqs = await asyncio.gather(*(unit(i) for i in range(8)))
    assert sorted(seqs) == list(range(8))
    assert audit.retried_batches >= 1
    assert runs.count(3) == 2, "unit 3 ran again after the rollback"
    marks = await database.fetch("SELECT n FROM retry_marks ORDER BY n")
    assert [row["n"] for row in marks] == list(range(8)), "each action exactly once"
    assert [s for s, _ in await _all_leaves(database)] == list(range(8))


async def test_a_connection_lost_at_commit_is_never_run_again(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the connection fails once COMMIT was sent the batch may have committed:
    its callers get StorageError (503) and nothing runs a second time."""
    if database.dialect != "postgres":
        pytest.skip("PostgreSQL's transaction path")
    import asyncpg  # noqa: PLC0415

    from vault.errors import ConnectionLostBeforeCommit, StorageError  # noqa: PLC0415

    original_commit = asyncpg.transaction.Transaction.commit

    async def commit_then_lose_the_connection(self: asyncpg.transaction.Transaction) -> None:
        await original_commit(self)  # committed on the server ...
        raise asyncpg.exceptions.ConnectionDoesNotExistError("lost after COMMIT")  # ... unseen

    monkeypatch.setattr(asyncpg.transaction.Transaction, "commit", commit_then_lose_the_connection)
    audit = AuditLog(database=database, clock=ManualClock())
    runs = 0

    async def work() -> tuple[int, Sequence[EntryDraft]]:
        nonlocal runs
        runs += 1
        return 1, [draft(1)]

    with pytest.raises(StorageError) as caught:
        await audit.run(work)
    assert not isinstance(caught.value, ConnectionLostBeforeCommit)
    assert runs == 1 and audit.retried_batches == 0
    monkeypatch.undo()
    assert [s for s, _ in await _all_leaves(database)] == [0], "recorded once, not served"


async def test_twin_without_retries_the_callers_see_the_lost_connection(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The twin of the retry test: with the guard removed (no retries) the same
    failure reaches every caller of the batch as a 503-class StorageError."""
    if database.dialect != "postgres":
        pytest.skip("terminating a backend is PostgreSQL's failure")
    import audit.log  # noqa: PLC0415
    from vault.errors import StorageError  # noqa: PLC0415

    monkeypatch.setattr(audit.log, "BATCH_RETRIES", 0)
    log = AuditLog(database=database, clock=ManualClock())
    killed = False

    async def work() -> tuple[int, Sequence[EntryDraft]]:
        nonlocal killed
        if not killed:
            killed = True
            await _kill_own_backend(database)
        return 1, [draft(1)]

    with pytest.raises(StorageError, match="connection lost"):
        await log.run(work)
    assert await _all_leaves(database) == []


class Batches:
    """The units of each batch ``audit`` commits, by the tags their work returns (units
    of one batch run before its commit counts it)."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self.ran: list[tuple[int, str]] = []

    def unit(self, tag: str, weight: int = 1) -> Any:
        async def work() -> tuple[str, Sequence[EntryDraft]]:
            self.ran.append((self.audit.batches, tag))
            return tag, [draft(len(tag))]

        return self.audit.run(work, weight=weight)

    @property
    def seen(self) -> list[list[str]]:
        groups: dict[int, list[str]] = {}
        for batch, tag in self.ran:
            groups.setdefault(batch, []).append(tag)
        return list(groups.values())


async def while_the_tree_lock_is_held(database: Database, audit: AuditLog, queue: Any) -> list[Any]:
    """Run ``queue()`` (which queues units on ``audit``) while another log's transaction
    holds the tree lock, until every unit is queued; the units' batch must wait for the
    lock meanwhile. Returns the units' results."""
    holder = AuditLog(database=database, clock=ManualClock())
    locked, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with holder.transaction():
            locked.set()
            await release.wait()

    holding = asyncio.create_task(hold())
    await locked.wait()
    pending = queue()
    try:
        for _ in range(500):  # every unit queued (none taken: the batch waits for the lock)
            if audit.queued == len(pending):
                break
            await asyncio.sleep(0.01)
        assert audit.queued == len(pending)
    finally:  # a failed check must not leave the lock held (teardown would hang)
        release.set()
        await holding
    return list(await asyncio.gather(*pending))


async def test_units_that_arrive_while_a_batch_waits_for_the_lock_join_it(
    database: Database,
) -> None:
    audit = AuditLog(database=database, clock=ManualClock())
    batches = Batches(audit)

    def queue() -> list[Any]:
        first = asyncio.ensure_future(batches.unit("a"))

        async def later(tag: str) -> str:
            await asyncio.sleep(0.01)  # queued after the batch began waiting
            value, _ = await batches.unit(tag)
            return str(value)

        return [first, asyncio.ensure_future(later("b")), asyncio.ensure_future(later("c"))]

    results = await while_the_tree_lock_is_held(database, audit, queue)
    assert [r if isinstance(r, str) else r[0] for r in results] == ["a", "b", "c"]
    assert audit.batches == 1
    assert batches.seen == [["a", "b", "c"]]
    assert [s for s, _ in await _all_leaves(database)] == [0, 1, 2]


async def test_a_heavy_unit_goes_alone_and_light_ones_share_a_batch(database: Database) -> None:
    audit = AuditLog(database=database, clock=ManualClock(), max_batch=10)
    batches = Batches(audit)

    def queue() -> list[Any]:
        return [
            asyncio.ensure_future(batches.unit("l1")),
            asyncio.ensure_future(batches.unit("l2", weight=4)),
            asyncio.ensure_future(batches.unit("heavy", weight=1000)),  # over max_batch
            asyncio.ensure_future(batches.unit("l3", weight=5)),
            asyncio.ensure_future(batches.unit("l4", weight=5)),
            asyncio.ensure_future(batches.unit("l5")),
        ]

    results = await while_the_tree_lock_is_held(database, audit, queue)
    assert [value for value, _ in results] == ["l1", "l2", "heavy", "l3", "l4", "l5"]
    # In queue order, each batch at most 10 of weight, a heavier unit alone.
    assert batches.seen == [["l1", "l2"], ["heavy"], ["l3", "l4"], ["l5"]]
    assert audit.batches == 4
    assert [s for s, _ in await _all_leaves(database)] == list(range(6))


async def test_a_cancelled_caller_leaves_its_unit_and_its_batch_whole(
    database: Database,
) -> None:
    # A caller that stops waiting (a client that hung up) does not take its unit out:
    # the unit's action and entry commit with the batch, and the others get their
    # results, also when a unit of the same batch raised and the batch ran again.
    audit = AuditLog(database=database, clock=ManualClock())
    ran: list[int] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def unit(i: int, *, fail: bool = False) -> int:
        async def work() -> tuple[int, Sequence[EntryDraft]]:
            ran.append(i)
            if i == 0:
                started.set()
                await release.wait()  # holds the first batch open
            if fail:
                raise ValueError("refused")
            return i, [draft(i, request_id=f"req_{i}")]

        _, entries = await audit.run(work)
        return entries[0].seq

    first = asyncio.create_task(unit(0))
    await started.wait()
    waiting = [asyncio.create_task(unit(i)) for i in (1, 2, 3)]
    failing = asyncio.create_task(unit(4, fail=True))
    await asyncio.sleep(0)
    waiting[1].cancel()  # unit 2 queued behind the open batch
    failing.cancel()  # so is unit 4, whose work will raise
    release.set()
    await first
    done = await asyncio.gather(*waiting, failing, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert isinstance(done[3], asyncio.CancelledError)
    assert done[0] == 1 and done[2] == 3
    await audit.close()
    # 4 raised, so its batch (1..4) ran again with a savepoint per unit.
    assert ran == [0, 1, 2, 3, 4, 1, 2, 3, 4]
    leaves = await _all_leaves(database)
    requests = sorted(parse_leaf(leaf)["request_id"] for _, leaf in leaves)
    assert requests == ["req_0", "req_1", "req_2", "req_3"]
