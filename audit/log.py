"""The append-only audit log: appends inside the caller's transaction, and group commit.

Two ways in:

* :meth:`AuditLog.append` writes entries inside a transaction the caller already
  opened, as its last statements, so the action and its entries commit together or
  not at all (used by the CLI and by :meth:`AuditLog.run`).
* :meth:`AuditLog.run` takes a *unit of work* — a coroutine function that performs
  the action's statements and returns ``(value, drafts)`` — and runs it in a
  shared transaction with the other units that arrived meanwhile (group commit).
  A unit that raises is rolled back alone and its caller gets the exception; the
  others commit. A batch first runs without savepoints (two statements fewer per
  unit); when one of its units raises, the whole transaction is rolled back and the
  batch runs again with a savepoint per unit. Units must therefore be re-runnable
  (they already are: a batch that lost its connection before COMMIT runs again).
  Every caller waits for its own batch's COMMIT before it sees its result, so nothing
  is answered before it is durable.
* Units of a :class:`UnitGroup` (the consented reads) that meet in a batch run without
  savepoints share one :class:`SharedScope`: the group loads what they will read in
  set-based statements first, and what they defer (a counter, say) is written once
  before the append. Run with savepoints, they run one by one as any unit.

Appends serialise without forks or gaps: SQLite holds the write lock from
``BEGIN IMMEDIATE``; PostgreSQL locks the single ``audit_state`` row
(``SELECT ... FOR UPDATE``), with ``seq`` the primary key as a backstop.
No key-provider call may happen inside a unit.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import structlog

from audit import merkle
from audit.models import EntryDraft, StoredEntry, leaf_bytes
from audit.repository import AuditRepository, TreeState
from vault.clock import Clock
from vault.errors import ConnectionLostBeforeCommit, OncevaultError, StorageError
from vault.storage import Database

log = structlog.get_logger(__name__)

#: Times a batch runs again after losing its connection before COMMIT was sent.
BATCH_RETRIES = 2

T = TypeVar("T")
E = TypeVar("E", bound=OncevaultError)

Work = Callable[[], Awaitable[tuple[T, Sequence[EntryDraft]]]]


#: ``AuditLog.recent_reads`` looks at no more of a citizen's entries than this, in
#: pages of ``RECENT_READS_PAGE``.
RECENT_READS_SCAN = 5_000
RECENT_READS_PAGE = 500


@dataclass
class _Held:
    """The tree lock an :meth:`AuditLog.transaction` took, with the state it read;
    ``state`` is None once an append used it (a later append reads it again)."""

    log: AuditLog
    state: TreeState | None


_HELD: contextvars.ContextVar[_Held | None] = contextvars.ContextVar("audit_held", default=None)


class _UnitRaised(Exception):
    """A unit raised in a batch run without savepoints: the transaction rolls back."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error.__class__.__name__)
        self.error = error


class SharedScope:
    """What consecutive units of one group share inside one batch transaction.

    ``values`` holds what the group loaded and what its units defer, under keys the
    owners choose. :meth:`defer` registers a write to run once, after the last unit of
    the run and before the batch's append; if a unit raises, nothing deferred is
    written (the transaction rolls back and the batch runs again with savepoints,
    without any scope).
    """

    def __init__(self) -> None:
        self.values: dict[object, Any] = {}
        self._deferred: list[Callable[[], Awaitable[None]]] = []
        #: Only the batch's own task sees the scope: a task a unit starts inherits the
        #: context variable, and must not count into a scope that may be written already.
        self.owner = asyncio.current_task()
        self.open = True

    def defer(self, write: Callable[[], Awaitable[None]]) -> None:
        if not self.open:
            raise RuntimeError("the shared scope is closed")
        self._deferred.append(write)

    async def flush(self) -> None:
        for write in self._deferred:
            await write()
        self._deferred.clear()
        self.open = False


_SCOPE: contextvars.ContextVar[SharedScope | None] = contextvars.ContextVar(
    "audit_shared_scope", default=None
)

#: Python 3.11's ``asyncio.current_task`` is a Python function over this registry
#: (``{loop: running task}``, kept by the C event-loop machinery); a unit asks for
#: its scope ~5 times inside the write lock, so on 3.11 the check reads the registry
#: itself (a test holds the two to the same answer). From 3.12 on
#: ``asyncio.current_task`` is C.
_RUNNING: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = (
    asyncio.tasks._current_tasks if sys.version_info < (3, 12) else None  # type: ignore[attr-defined]
)


def shared_scope() -> SharedScope | None:
    """The scope of the group run the current unit belongs to, if any: None outside a
    run, in another task than the batch's, and once the run's writes are done."""
    scope = _SCOPE.get()
    if scope is None or not scope.open:
        return None
    # What asyncio.current_task() does on 3.11, without its Python frame: the running
    # loop of the calling thread (raises outside one, as current_task does).
    running = (
        asyncio.current_task() if _RUNNING is None else _RUNNING.get(asyncio.get_running_loop())
    )
    return scope if scope.owner is running else None


class UnitGroup(Protocol):
    """Units that load what they read together when they meet in a batch."""

    async def load(self, scope: SharedScope, keys: Sequence[Any]) -> None:
        """Load into ``scope`` what the units of ``keys`` (one per unit, in batch
        order, as given to :meth:`AuditLog.run`) will read, inside the batch's
        transaction, before the first of them runs."""


@dataclass
class _Unit(Generic[T]):
    work: Work[T]
    future: asyncio.Future[tuple[T, list[StoredEntry]]]
    group: UnitGroup | None = None
    key: Any = None
    weight: int = 1


class AuditLog:
    """Appends entries as leaves of the RFC 9162 tree and keeps its subtree hashes."""

    def __init__(self, *, database: Database, clock: Clock, max_batch: int = 256) -> None:
        self.db = database
        self.repo = AuditRepository(database)
        self.clock = clock
        self.max_batch = max_batch
        self._queue: list[_Unit[Any]] = []
        self._worker: asyncio.Task[None] | None = None
        # Frontier cache keyed by the tree state (size and root) it is the frontier
        # of: another process's appends, an append rolled back, a restored database
        # all leave a state the cache does not match, and a root names one tree, so
        # nothing ever needs to drop it.
        self._frontier_of: TreeState | None = None
        self._frontier: list[bytes] = []
        self.batches = 0
        self.committed_units = 0
        self.retried_batches = 0
        self.savepoint_reruns = 0

    @property
    def queued(self) -> int:
        """Units waiting for a batch (not yet taken by one)."""
        return len(self._queue)

    # -- direct append, inside the caller's transaction -----------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A write transaction that will append: it takes the tree lock *first*.

        Every appending transaction locks the tree state before touching any other
        row, so lock order is the same everywhere (no deadlock between a batch and a
        direct writer on PostgreSQL) and seq order is commit order.
        """
        async with self.db.transaction():
            held = _Held(self, await self._lock_state())
            token = _HELD.set(held)
            try:
                yield
            finally:
                held.state = None  # a task started inside must not use it later
                _HELD.reset(token)

    async def append(
        self, drafts: Sequence[EntryDraft], *, validated: bool = False
    ) -> list[StoredEntry]:
        """Append ``drafts`` in the caller's open transaction; return the stored entries.

        ``validated=True``: every draft has passed ``to_entry`` already (the group
        commit validates each unit's drafts inside the unit).
        """
        if not drafts:
            return []
        if not self.db.in_transaction():
            raise RuntimeError("AuditLog.append needs an open transaction")
        held = _HELD.get()
        if held is not None and held.log is self and held.state is not None:
            # The state read when this transaction took the tree lock: nothing else
            # can have appended since, and this is the transaction's first append.
            state, held.state = held.state, None
        else:
            state = await self._lock_state()
        frontier = await self._load_frontier(state)
        ts = self.clock.now_ms()
        rows: list[tuple[dict[str, Any], bytes, bytes]] = []
        stored: list[StoredEntry] = []
        for offset, draft in enumerate(drafts):
            entry = draft.to_entry(seq=state.size + offset, ts=ts, validate=not validated)
            leaf = leaf_bytes(entry, validated=True)
            digest = merkle.leaf_hash(leaf)
            rows.append((entry, leaf, digest))
            stored.append(StoredEntry(seq=entry["seq"], leaf=leaf, leaf_hash=digest, entry=entry))
        nodes, new_frontier = merkle.append_nodes(frontier, state.size, [r[2] for r in rows])
        new_size = state.size + len(rows)
        new_state = TreeState(size=new_size, root_hash=merkle.root_from_frontier(new_frontier))
        await self.repo.write_append(rows, nodes, new_state, b"".join(new_frontier))
        # Cache only after the statements succeeded. If the transaction rolls back,
        # the cache is keyed by a state the database does not hold, and never matches.
        self._frontier_of, self._frontier = new_state, new_frontier
        return stored

    async def _lock_state(self) -> TreeState:
        """Lock the tree state; the frontier kept with it goes into the frontier cache
        when the cache holds another state and it folds to the root (else
        :meth:`_load_frontier` reads ``audit_nodes``)."""
        state, kept = await self.repo.lock_state_with_frontier()
        if kept is not None and state != self._frontier_of:
            frontier = [kept[i : i + 32] for i in range(0, len(kept), 32)]
            if (
                len(frontier) == state.size.bit_count()
                and all(len(digest) == 32 for digest in frontier)
                and merkle.root_from_frontier(frontier) == state.root_hash
            ):
                self._frontier_of, self._frontier = state, frontier
        return state

    async def _load_frontier(self, state: TreeState) -> list[bytes]:
        """The frontier of ``state``: the cached one when it was cached for this very
        size and root (an append rolled back, or a restored database, then leave a
        cache that no longer matches), else read from ``audit_nodes`` and checked
        against the root."""
        if state == self._frontier_of:
            return list(self._frontier)
        wanted = merkle.frontier_nodes(state.size)
        found = await self.repo.nodes(wanted)
        try:
            frontier = [found[node] for node in wanted]
        except KeyError:
            raise StorageError("audit tree nodes are missing") from None
        if merkle.root_from_frontier(frontier) != state.root_hash:
            raise StorageError("audit tree nodes do not match the tree state")
        return frontier

    # -- group commit -------------------------------------------------------------

    async def run(
        self,
        work: Work[T],
        *,
        group: UnitGroup | None = None,
        key: Any = None,
        weight: int = 1,
    ) -> tuple[T, list[StoredEntry]]:
        """Run ``work`` in a group-committed transaction; return its value and entries.

        ``group``: consecutive units of the same group in a batch share a
        :class:`SharedScope` that ``group.load`` fills from every unit's ``key``.
        ``weight``: about how many entries the unit writes (a batch holds at most
        ``max_batch`` of weight, or one heavier unit).

        Raises whatever ``work`` raised (its statements rolled back), or
        :class:`StorageError` when the batch could not commit.

        A caller cancelled while it waits cancels only its wait: the unit, once
        queued, runs and commits with its batch (its entries too), and the batch
        passes its outcome over (no ``asyncio.shield``: one future less a call).
        """
        loop = asyncio.get_running_loop()
        unit: _Unit[T] = _Unit(
            work=work, future=loop.create_future(), group=group, key=key, weight=max(1, weight)
        )
        self._queue.append(unit)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain(), name="audit-group-commit")
        return await unit.future

    async def record_refusal(self, draft: EntryDraft, error: E) -> E:
        """Append ``draft``, the ``denied`` entry of ``error``, in a unit of its own;
        returns ``error`` carrying the entry's seq."""
        error.audit_seq = await self.append_alone(draft)
        return error

    async def record_failure(self, draft: EntryDraft, error: E) -> E:
        """Append ``draft``, the ``error`` entry of ``error`` (a failure after an ``ok``
        entry committed), in a unit of its own; returns ``error`` carrying its seq. If
        the entry cannot be written, ``error`` is returned without one and that is
        logged: the failure is answered all the same."""
        try:
            error.audit_seq = await self.append_alone(draft)
        except OncevaultError as unrecorded:
            log.warning("audit.failure_not_recorded", code=error.code, error=unrecorded.code)
        return error

    async def append_alone(self, draft: EntryDraft) -> int:
        """Append ``draft`` (a refusal's ``denied`` entry, a failure's ``error`` entry)
        in a unit of its own; its seq."""

        async def work() -> tuple[None, list[EntryDraft]]:
            return None, [draft]

        _, entries = await self.run(work)
        return entries[0].seq

    async def _drain(self) -> None:
        while self._queue:
            await self._commit_batch([])

    def _take(self, batch: list[_Unit[Any]]) -> None:
        """Fill an empty ``batch`` with the oldest queued units, whose weights add up
        to at most ``max_batch`` (a heavier unit goes alone).

        A batch is taken once its transaction holds the tree lock: the units that
        arrived while it waited for another writer's batch join it instead of waiting
        for the next one. Once taken it is fixed (a rerun runs the same units). The
        weight bound keeps what one batch holds in memory, and how long it holds the
        lock, to about one bulk request's worth."""
        if batch:
            return
        taken, weight = 0, 0
        for unit in self._queue:
            if taken and weight + unit.weight > self.max_batch:
                break
            taken, weight = taken + 1, weight + unit.weight
        batch.extend(self._queue[:taken])
        del self._queue[:taken]

    async def _commit_batch(self, batch: list[_Unit[Any]]) -> None:
        """Commit ``batch`` (taken by the first run, :meth:`_take`); run it again on a
        new connection when the connection was lost before COMMIT was sent (everything
        was rolled back), at most ``BATCH_RETRIES`` times. A failure at or after
        COMMIT is never retried: the batch may have committed, so its callers get
        :class:`StorageError` (503)."""
        savepoints = False
        for attempt in range(BATCH_RETRIES + 1):
            try:
                try:
                    outcomes = await self._try_batch(batch, savepoints=savepoints)
                except _UnitRaised as raised:
                    if len(batch) == 1:  # nothing else to keep: its caller gets the error
                        outcomes = [(False, raised.error)]
                    else:
                        self.savepoint_reruns += 1
                        savepoints = True
                        outcomes = await self._try_batch(batch, savepoints=True)
            except ConnectionLostBeforeCommit as exc:
                if attempt < BATCH_RETRIES:
                    self.retried_batches += 1
                    log.warning("audit.batch_retried", units=len(batch), attempt=attempt + 1)
                    continue
                failure: StorageError = exc
            except Exception as exc:  # noqa: BLE001 - commit failed: nobody's unit is durable
                failure = exc if isinstance(exc, StorageError) else StorageError("commit failed")
                log.warning("audit.batch_failed", error=exc.__class__.__name__, units=len(batch))
            else:
                self.batches += 1
                self.committed_units += sum(1 for ok, _ in outcomes if ok)
                for unit, (ok, result) in zip(batch, outcomes, strict=True):
                    if unit.future.done():
                        continue
                    if ok:
                        unit.future.set_result(result)
                    else:
                        unit.future.set_exception(result)
                return
            self._take(batch)  # a batch that failed before it was taken: the oldest units
            for unit in batch:
                if not unit.future.done():
                    unit.future.set_exception(failure)
            return

    async def _try_batch(
        self, batch: list[_Unit[Any]], *, savepoints: bool
    ) -> list[tuple[bool, Any]]:
        """One transaction for the batch, then ONE append of every unit's entries as
        the last statements before COMMIT. ``savepoints``: each unit in its own, so one
        that raises is rolled back alone; without, a unit that raises rolls back the
        whole transaction (:class:`_UnitRaised`; a batch of one answers its caller)."""
        outcomes: list[tuple[bool, Any]] = []
        async with self.transaction():
            self._take(batch)
            start = 0
            while start < len(batch):
                group = None if savepoints else batch[start].group
                end = start + 1
                if group is None:
                    await self._run_unit(start, batch[start], outcomes, savepoints=savepoints)
                else:
                    while end < len(batch) and batch[end].group is group:
                        end += 1
                    await self._run_group(group, batch, start, end, outcomes)
                start = end
            stored = await self.append(
                [draft for ok, result in outcomes if ok for draft in result[1]],
                validated=True,
            )
            position = 0
            for index, (ok, result) in enumerate(outcomes):
                if ok:
                    value, drafts = result
                    outcomes[index] = (True, (value, stored[position : position + len(drafts)]))
                    position += len(drafts)
        return outcomes

    async def _run_group(
        self,
        group: UnitGroup,
        batch: list[_Unit[Any]],
        start: int,
        end: int,
        outcomes: list[tuple[bool, Any]],
    ) -> None:
        """``batch[start:end]`` (one group, no savepoints) in one shared scope."""
        scope = SharedScope()
        token = _SCOPE.set(scope)
        try:
            await group.load(scope, [unit.key for unit in batch[start:end]])
            for index in range(start, end):
                await self._run_unit(index, batch[index], outcomes, savepoints=False)
            await scope.flush()
        except (ConnectionLostBeforeCommit, _UnitRaised):
            raise
        except Exception as exc:  # the group's load or write: as a unit that raised
            raise _UnitRaised(exc) from exc
        finally:
            scope.open = False
            _SCOPE.reset(token)

    async def _run_unit(
        self, index: int, unit: _Unit[Any], outcomes: list[tuple[bool, Any]], *, savepoints: bool
    ) -> None:
        savepoint = f"unit_{index}"
        if savepoints:
            await self.db.execute(f"SAVEPOINT {savepoint}")
        try:
            value, drafts = await unit.work()
            for draft in drafts:  # a bad entry fails its own unit, not the batch
                draft.validate()
        except ConnectionLostBeforeCommit:
            raise  # the whole batch runs again
        except Exception as exc:
            if not savepoints:
                raise _UnitRaised(exc) from exc
            await self.db.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
            await self.db.execute(f"RELEASE SAVEPOINT {savepoint}")
            outcomes.append((False, exc))
            return
        if savepoints:
            await self.db.execute(f"RELEASE SAVEPOINT {savepoint}")
        outcomes.append((True, (value, list(drafts))))

    async def close(self) -> None:
        """Wait for queued units to commit."""
        if self._worker is not None and not self._worker.done():
            await self._worker

    # -- reads --------------------------------------------------------------------

    async def state(self) -> TreeState:
        return await self.repo.state()

    async def latest_seq_of(self, actions: Sequence[str]) -> int | None:
        """The seq of the newest entry of one of ``actions``; None when there is none."""
        return await self.repo.latest_seq_of(actions)

    async def inclusion_proof(self, seq: int, tree_size: int) -> list[bytes]:
        nodes = await self.repo.nodes(merkle.nodes_for_inclusion(seq, tree_size))
        return merkle.inclusion_proof(seq, tree_size, nodes.__getitem__)

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        nodes = await self.repo.nodes(merkle.nodes_for_consistency(first, second))
        return merkle.consistency_proof(first, second, nodes.__getitem__)

    async def root_at(self, tree_size: int) -> bytes:
        if tree_size == 0:
            return merkle.EMPTY_ROOT
        nodes = await self.repo.nodes(merkle.range_nodes(0, tree_size))
        return merkle.hash_range(0, tree_size, nodes.__getitem__)

    async def auditor_entries(
        self,
        *,
        auditor_id: str,
        request_id: str | None,
        after: int | None,
        limit: int,
        citizen_id: str | None = None,
        client_id: str | None = None,
        action: str | None = None,
    ) -> tuple[list[StoredEntry], int | None]:
        """An auditor's page of entries, oldest first with ``seq > after``, filtered by
        citizen, client and action, and the seq of the query's own entry: a query about
        one citizen is itself audited (``audit.queried``), its entry committed before
        anything is read (None for any other query)."""
        seq: int | None = None
        if citizen_id is not None:
            draft = EntryDraft(
                action="audit.queried",
                actor_type="client",
                actor_id=auditor_id,
                citizen_id=citizen_id,
                client_id=auditor_id,
                request_id=request_id,
            )

            async def work() -> tuple[None, list[EntryDraft]]:
                return None, [draft]

            _, (entry,) = await self.run(work)
            seq = entry.seq
        found = await self.repo.entries(
            after=after, limit=limit, citizen_id=citizen_id, client_id=client_id, action=action
        )
        return found, seq

    # -- a citizen's view (DESIGN: "who read what, when, why") -----------------------

    async def citizen_entries(
        self, citizen_id: str, *, before: int | None = None, limit: int
    ) -> list[StoredEntry]:
        """The entries about ``citizen_id``, newest first, below ``before``."""
        return await self.repo.entries(
            citizen_id=citizen_id, before=before, limit=limit, newest_first=True
        )

    async def citizen_entry(self, citizen_id: str, seq: int) -> StoredEntry | None:
        """Entry ``seq`` when it is about ``citizen_id``; None when it does not exist or
        is about anyone else (the two are answered alike: 404)."""
        stored = await self.repo.entry(seq)
        if stored is None or stored.entry.get("citizen_id") != citizen_id:
            return None
        return stored

    async def recent_reads(self, citizen_id: str, *, since_ms: int) -> list[StoredEntry]:
        """The clients' granted reads (``data.read``, ``ok``) of ``citizen_id``'s data
        at or after ``since_ms``, newest first; at most ``RECENT_READS_SCAN`` of the
        citizen's entries are looked at."""
        found: list[StoredEntry] = []
        before: int | None = None
        for _ in range(RECENT_READS_SCAN // RECENT_READS_PAGE):
            page = await self.citizen_entries(citizen_id, before=before, limit=RECENT_READS_PAGE)
            for stored in page:
                if stored.entry["ts"] < since_ms:
                    return found
                if (
                    stored.entry["action"] == "data.read"
                    and stored.entry["outcome"] == "ok"
                    and stored.entry["actor"]["type"] == "client"
                ):
                    found.append(stored)
            if len(page) < RECENT_READS_PAGE:
                break
            before = page[-1].seq
        return found
