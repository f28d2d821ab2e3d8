"""Timing probes for oncevault's read path, injected into the server's workers by
``bench/vs_openbao.py --probe DIR`` (no product code changes).

The harness puts a generated ``sitecustomize.py`` on the server's ``PYTHONPATH`` that
calls :func:`arm`; it registers a fork hook, so only granian's worker processes (forked
by ``oncevault serve``) wrap a few methods of the read path with wall-clock timers and
write their cumulative counters to ``DIR/probe-<pid>.json`` every half second. The
harness diffs two snapshots around a run (:func:`snapshot`, :func:`diff`).

Wall time of an awaited step includes the time the event loop spent on other requests
meanwhile, so a step's mean is its cost only at low concurrency (run with
``--connections 2``); counts (statements, connections, units per batch) hold at any.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_STATS: dict[str, list[float]] = {}
_LOCK = threading.Lock()


def _add(label: str, seconds: float, n: float = 1) -> None:
    with _LOCK:
        entry = _STATS.setdefault(label, [0, 0.0])
        entry[0] += n
        entry[1] += seconds


def _wrap(owner: Any, name: str, label: str) -> None:
    original: Callable[..., Any] = getattr(owner, name)
    if getattr(original, "__probe__", False):
        return

    if _is_coroutine_function(original):

        @functools.wraps(original)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                _add(label, time.perf_counter() - start)

        wrapper: Any = timed_async
    else:

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                _add(label, time.perf_counter() - start)

        wrapper = timed
    wrapper.__probe__ = True
    setattr(owner, name, wrapper)


def _is_coroutine_function(func: Any) -> bool:
    import inspect  # noqa: PLC0415

    return inspect.iscoroutinefunction(func)


def install() -> None:
    """Wrap the read path's steps (called in each worker after fork)."""
    import api.ratelimit  # noqa: PLC0415
    import audit.log  # noqa: PLC0415
    import audit.repository  # noqa: PLC0415
    import consent.reads  # noqa: PLC0415
    import consent.repository  # noqa: PLC0415
    import consent.service  # noqa: PLC0415
    import consent.tokens  # noqa: PLC0415
    import vault.crypto  # noqa: PLC0415
    import vault.repository  # noqa: PLC0415
    import vault.service  # noqa: PLC0415
    import vault.storage  # noqa: PLC0415

    steps = [
        (consent.tokens.TokenService, "check", "auth: TokenService.check (no database)"),
        (consent.repository.ClientRepository, "get_for_token", "auth: client + revoked-jti query"),
        (
            consent.repository.ClientRepository,
            "for_tokens",
            "batch: callers (clients + revoked jtis of the run)",
        ),
        (api.ratelimit.RateLimiter, "hit", "auth: rate-limit bump (own transaction)"),
        (consent.reads.DataReader, "read", "read: DataReader.read (all)"),
        (vault.service.VaultService, "unwrap", "read: DEK unwrap (cache miss)"),
        (audit.log.AuditLog, "run", "read: unit queued -> committed"),
        (consent.reads.ReadGroup, "load", "batch: shared load (consents, records + DEKs)"),
        (consent.repository.LockedConsents, "flush", "batch: fetch counts written"),
        (consent.service.ConsentService, "lock_for_read", "unit: lock_for_read"),
        (consent.repository.ConsentRepository, "get", "unit: consent (from the run or a query)"),
        (
            vault.service.VaultService,
            "latest_sealed",
            "records + DEK rows query (a run's load, or a unit outside a run)",
        ),
        (api.ratelimit.RateLimiter, "hit_here", "unit: rate-limit bump"),
        (consent.service.ConsentService, "count_fetch", "unit: count_fetch"),
        (audit.log.AuditLog, "append", "unit: audit append"),
        (
            audit.repository.AuditRepository,
            "lock_state_with_frontier",
            "batch: tree lock (+ frontier nodes on PostgreSQL)",
        ),
        (audit.repository.AuditRepository, "nodes", "batch: frontier nodes read again"),
        (audit.repository.AuditRepository, "write_append", "batch: leaves, nodes, state written"),
        (vault.service.VaultService, "open_record", "read: decrypt (open_record)"),
        (vault.storage.Database, "_begin_immediate", "sqlite: flock + BEGIN IMMEDIATE (wait)"),
        (vault.storage.Database, "_on_writer_thread", "sqlite: writer thread (BEGIN, COMMIT)"),
        (vault.storage.Database, "_run", "db: statements (fetch/execute)"),
        (vault.storage.Database, "executemany", "db: executemany"),
    ]
    for owner, name, label in steps:
        _wrap(owner, name, label)
    if os.environ.get("VS_OPENBAO_PROBE_SQL"):  # one line per statement text
        original_run = vault.storage.Database._run

        async def run_sql(self: Any, sql: str, args: Any, *shapes: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original_run(self, sql, args, *shapes)
            finally:
                _add("sql: " + " ".join(sql.split())[:60], time.perf_counter() - start)

        run_sql.__probe__ = True  # type: ignore[attr-defined]
        vault.storage.Database._run = run_sql  # type: ignore[method-assign]
    original_batch = audit.log.AuditLog._commit_batch

    async def commit_batch(self: Any, batch: list[Any]) -> None:
        start = time.perf_counter()
        try:
            await original_batch(self, batch)
        finally:
            _add("batch: group-commit batches", time.perf_counter() - start)
            _add("batch: units committed", 0.0, len(batch))

    commit_batch.__probe__ = True  # type: ignore[attr-defined]
    audit.log.AuditLog._commit_batch = commit_batch  # type: ignore[method-assign]
    _probe_lock_hold(vault.storage.Database)


def _sched(tid: int) -> tuple[float, float]:
    """The thread's CPU time and its run-queue wait (preempted or woken, not yet
    running), in seconds, from ``/proc/self/task/<tid>/schedstat``. The CPU time of a
    running thread lags there (updated at scheduler events), so the loop's own CPU is
    ``time.thread_time()``; the wait is current while the thread runs."""
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        on_cpu, waiting, _ = f.read().split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def _switches(tid: int) -> tuple[int, int]:
    """The thread's voluntary (it slept: the GIL, a lock, I/O) and involuntary
    (preempted) context switches so far."""
    with open(f"/proc/self/task/{tid}/status") as f:
        found = dict(line.split(":", 1) for line in f if "ctxt_switches" in line)
    return int(found["voluntary_ctxt_switches"]), int(found["nonvoluntary_ctxt_switches"])


class _Stamp:
    """The calling thread's wall clock, CPU, run-queue wait and context switches."""

    def __init__(self) -> None:
        self.tid = threading.get_native_id()
        self.wall = time.perf_counter()
        self.cpu = time.thread_time()
        self.queued = _sched(self.tid)[1]
        self.slept, self.preempted = _switches(self.tid)

    def add_since(self, earlier: _Stamp, phase: str) -> None:
        """The time from ``earlier`` (same thread) to now, as ``phase``'s lines."""
        _add(f"{phase}: wall", self.wall - earlier.wall)
        _add(f"{phase}: on CPU", self.cpu - earlier.cpu)
        _add(f"{phase}: in run queue (preempted)", self.queued - earlier.queued)
        _add(f"{phase}: slept (count)", 0.0, self.slept - earlier.slept)
        _add(f"{phase}: preempted (count)", 0.0, self.preempted - earlier.preempted)


class _TimedCommit:
    """A connection whose ``commit()`` stamps when SQLite's COMMIT returned (the GIL
    taken back), before ``Database._commit`` releases the flock."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self.committed: _Stamp | None = None

    def commit(self) -> None:
        self._connection.commit()
        self.committed = _Stamp()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def _probe_lock_hold(database: Any) -> None:
    """SQLite's write lock, from the moment the loop holds it (``_begin_write``
    returned) to its release after COMMIT (``_commit``), in three phases on the
    thread that runs them: the batch's work up to COMMIT, the COMMIT (its fsync, then
    the GIL taken back), and the flock's release. Each phase: wall time, CPU, run-queue
    wait (the scheduler gave the core to another thread) and context switches (a
    voluntary one is a sleep: the fsync, a wait for the GIL)."""
    held: dict[int, _Stamp] = {}
    original_begin = database._begin_write
    original_commit = database._commit

    yielded: dict[int, list[bool]] = {}

    async def begin_write(self: Any, connection: Any, lock_fd: int) -> None:
        await original_begin(self, connection, lock_fd)
        held[lock_fd] = _Stamp()
        # Did the event loop run anything else while the lock was held? A callback
        # queued now runs only if the batch gives the loop back before its COMMIT.
        flag = yielded[lock_fd] = [False]
        asyncio.get_running_loop().call_soon(flag.__setitem__, 0, True)

    def commit(connection: Any, lock_fd: int | None) -> None:
        begun = held.pop(lock_fd, None) if lock_fd is not None else None
        if begun is None:
            original_commit(connection, lock_fd)
            return
        committing = _Stamp()
        flag = yielded.pop(lock_fd, None) if lock_fd is not None else None
        if flag is not None:
            _add("lock hold 1, batch until COMMIT: gave the loop back (count)", 0.0, flag[0])
        if committing.tid == begun.tid:
            committing.add_since(begun, "lock hold 1, batch until COMMIT")
        timed = _TimedCommit(connection)
        original_commit(timed, lock_fd)
        released = _Stamp()
        if timed.committed is not None:
            timed.committed.add_since(committing, "lock hold 2, COMMIT")
            released.add_since(timed.committed, "lock hold 3, flock release")
        _add("lock hold: whole, wall", released.wall - begun.wall)

    begin_write.__probe__ = True  # type: ignore[attr-defined]
    database._begin_write = begin_write
    database._commit = staticmethod(commit)


def _dump_forever(out_dir: Path) -> None:
    path = out_dir / f"probe-{os.getpid()}.json"
    while True:
        with _LOCK:
            text = json.dumps(_STATS)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        time.sleep(0.5)


def _after_fork() -> None:
    out_dir = Path(os.environ["VS_OPENBAO_PROBE_DIR"])
    try:
        install()
    except Exception as exc:
        (out_dir / f"probe-{os.getpid()}.error").write_text(repr(exc))
        return
    threading.Thread(target=_dump_forever, args=(out_dir,), daemon=True).start()


def arm() -> None:
    """From sitecustomize: probe every process this one forks (granian's workers)."""
    if os.environ.get("VS_OPENBAO_PROBE_DIR"):
        os.register_at_fork(after_in_child=_after_fork)


def sitecustomize_text() -> str:
    here = Path(__file__).resolve().parent
    return f"import sys\nsys.path.insert(0, {str(here)!r})\nimport vs_openbao_probe\nvs_openbao_probe.arm()\n"


def snapshot(out_dir: Path) -> dict[str, list[float]]:
    """Sum of every worker's counters now."""
    total: dict[str, list[float]] = {}
    for path in out_dir.glob("probe-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for label, (count, seconds) in data.items():
            entry = total.setdefault(label, [0, 0.0])
            entry[0] += count
            entry[1] += seconds
    return total


def diff(before: dict[str, list[float]], after: dict[str, list[float]], requests: int) -> list[str]:
    """One line per step: calls per request and mean wall time per call."""
    lines = [f"{'step':<44}{'calls/req':>10}{'mean ms':>10}{'ms/req':>10}"]
    for label in sorted(after):
        count = after[label][0] - before.get(label, [0, 0.0])[0]
        seconds = after[label][1] - before.get(label, [0, 0.0])[1]
        if not count:
            continue
        per_req = count / requests if requests else float("nan")
        mean = 1000 * seconds / count
        lines.append(
            f"{label:<44}{per_req:>10.2f}{mean:>10.3f}{1000 * seconds / max(requests, 1):>10.3f}"
        )
    batches = (
        after.get("batch: group-commit batches", [0, 0.0])[0]
        - before.get("batch: group-commit batches", [0, 0.0])[0]
    )
    units = (
        after.get("batch: units committed", [0, 0.0])[0]
        - before.get("batch: units committed", [0, 0.0])[0]
    )
    if batches:
        lines.append(f"units per group-commit batch: {units / batches:.2f}")
    return lines
