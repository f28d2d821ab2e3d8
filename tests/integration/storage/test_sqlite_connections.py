"""SQLite on the event loop (vault/storage.py): the loop never waits for a lock.

Statements run inline on long-lived connections; taking the write lock runs on the
writer thread when another writer holds it, COMMIT when COMMITs are slow (on the loop
while they are fast). These tests hold SQLite's write lock from *another*
connection (as a second worker or an operator's tool would) and check that the
event loop keeps ticking, that writers queue instead of failing, and that nothing
is lost.
"""

from __future__ import annotations

import asyncio
import fcntl
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from vault import storage
from vault.errors import StorageError
from vault.storage import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(dialect="sqlite", sqlite_path=tmp_path / "x.sqlite")
    await database.start(create=True)
    async with database.transaction():
        await database.execute("CREATE TABLE t (n INTEGER NOT NULL UNIQUE)")
    try:
        yield database
    finally:
        await database.close()


@contextmanager
def held_write_lock(path: Path, seconds: float, *, flock: bool) -> Iterator[threading.Event]:
    """Another connection holds SQLite's write lock for ``seconds`` (with or without
    the project's flock), on its own thread. Yields once the lock is held."""
    held = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        fd = None
        if flock:
            fd = open(path.with_name(path.name + ".writelock"), "a+")  # noqa: SIM115
            fcntl.flock(fd, fcntl.LOCK_EX)
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t (n) VALUES (-1)")
        held.set()
        time.sleep(seconds)
        connection.execute("COMMIT")
        connection.close()
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            fd.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(5)
        yield held
    finally:
        thread.join()


async def _largest_loop_gap(until: asyncio.Future[object]) -> float:
    """The longest time the loop went without running this ticker (seconds)."""
    largest, last = 0.0, time.perf_counter()
    while not until.done():
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        largest, last = max(largest, now - last), now
    return largest


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "busy-handler"])
@pytest.mark.parametrize("kind", ["transaction", "write outside a transaction"])
async def test_a_waiting_writer_never_blocks_the_loop(db: Database, flock: bool, kind: str) -> None:
    assert db.sqlite_path is not None
    with held_write_lock(db.sqlite_path, 0.6, flock=flock):
        started = time.perf_counter()

        async def write() -> None:
            if kind == "transaction":
                async with db.transaction():
                    await db.execute("INSERT INTO t (n) VALUES (1)")
            else:
                await db.execute("INSERT INTO t (n) VALUES (1)")

        writer = asyncio.ensure_future(write())
        gap = await _largest_loop_gap(writer)
        await writer
        waited = time.perf_counter() - started
    assert waited >= 0.4, "the write waited for the other connection's lock"
    assert gap < 0.2, f"the event loop stalled for {gap * 1000:.0f} ms"
    rows = await db.fetch("SELECT n FROM t ORDER BY n")
    assert [row["n"] for row in rows] == [-1, 1]


async def test_reads_are_served_while_another_connection_writes(db: Database) -> None:
    assert db.sqlite_path is not None
    await db.execute("INSERT INTO t (n) VALUES (7)")
    with held_write_lock(db.sqlite_path, 0.3, flock=True):
        started = time.perf_counter()
        row = await db.fetchrow("SELECT count(*) AS c FROM t")
        assert time.perf_counter() - started < 0.1  # WAL: a reader waits for nobody
    assert row == {"c": 1}  # the other connection's row is not committed yet


async def test_two_handles_queue_for_the_write_lock_and_lose_nothing(db: Database) -> None:
    """Two handles on one file (two workers) write concurrently: every transaction
    commits, none fails with "database is locked"."""
    other = db.clone()
    await other.start()

    async def writer(handle: Database, start: int) -> None:
        for n in range(start, start + 40):
            async with handle.transaction():
                await handle.execute("INSERT INTO t (n) VALUES ($1)", n)
                await asyncio.sleep(0)  # let the other handle try meanwhile

    try:
        await asyncio.gather(writer(db, 0), writer(other, 1000), writer(db, 2000))
    finally:
        await other.close()
    rows = await db.fetch("SELECT n FROM t")
    assert sorted(row["n"] for row in rows) == [
        *range(40),
        *range(1000, 1040),
        *range(2000, 2040),
    ]


async def test_a_failed_transaction_rolls_back_and_frees_the_lock(db: Database) -> None:
    async def duplicate() -> None:
        async with db.transaction():
            await db.execute("INSERT INTO t (n) VALUES (5)")
            await db.execute("INSERT INTO t (n) VALUES (5)")

    with pytest.raises(sqlite3.IntegrityError):
        await duplicate()
    assert await db.fetch("SELECT n FROM t") == []
    other = db.clone()
    await other.start()
    try:
        async with other.transaction():  # the flock and the write lock are free
            await other.execute("INSERT INTO t (n) VALUES (6)")
    finally:
        await other.close()
    assert await db.fetch("SELECT n FROM t") == [{"n": 6}]


async def test_nested_transactions_are_refused(db: Database) -> None:
    async with db.transaction():
        with pytest.raises(StorageError, match="nested"):
            async with db.transaction():
                pass  # pragma: no cover


async def test_pragmas_outside_a_transaction_run_on_the_writer(db: Database) -> None:
    await db.execute("INSERT INTO t (n) VALUES (1)")
    rows = await db.fetch("PRAGMA wal_checkpoint(TRUNCATE)")
    assert rows and rows[0]["busy"] == 0
    assert (await db.fetchrow("SELECT synchronous FROM pragma_synchronous")) == {"synchronous": 2}
    assert (await db.fetchrow("SELECT secure_delete FROM pragma_secure_delete")) == {
        "secure_delete": 1
    }


async def test_the_writer_checkpoints_the_wal_every_20000_pages(
    db: Database, tmp_path: Path
) -> None:
    """With synchronous=FULL the writer's auto-checkpoint threshold is raised (one copy
    of a page for many commits), and an explicit checkpoint still empties the WAL into
    the file."""
    async with db.transaction():
        assert await db.fetchrow("PRAGMA wal_autocheckpoint") == {
            "wal_autocheckpoint": storage.SQLITE_WAL_AUTOCHECKPOINT_PAGES
        }
    assert storage.SQLITE_WAL_AUTOCHECKPOINT_PAGES == 20_000
    file, wal = tmp_path / "x.sqlite", tmp_path / "x.sqlite-wal"
    for _ in range(3):  # ~3,000 pages in three commits: past SQLite's default threshold
        async with db.transaction():
            await db.execute("CREATE TABLE IF NOT EXISTS big (b BLOB)")
            await db.executemany(
                "INSERT INTO big (b) VALUES ($1)", [(bytes(4000),) for _ in range(1000)]
            )
    assert file.stat().st_size < 1 << 20  # nothing checkpointed yet
    assert wal.stat().st_size > 11 << 20
    rows = await db.fetch("PRAGMA wal_checkpoint(TRUNCATE)")
    assert rows and rows[0]["busy"] == 0
    assert file.stat().st_size > 11 << 20
    assert wal.stat().st_size == 0


async def test_truncate_wal_answers_false_while_a_reader_keeps_the_wal(
    db: Database, tmp_path: Path
) -> None:
    """A reader inside a read transaction keeps the WAL in use: the TRUNCATE checkpoint
    is busy (SQLite answers, it does not raise), every attempt; once the reader is done
    the WAL is emptied into the file and truncated to zero."""
    async with db.transaction():
        await db.executemany("INSERT INTO t (n) VALUES ($1)", [(i,) for i in range(100)])
    assert db._writer is not None
    db._writer.execute("PRAGMA busy_timeout = 50")  # each busy attempt waits 50 ms
    wal = tmp_path / "x.sqlite-wal"
    reader = sqlite3.connect(tmp_path / "x.sqlite")
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (100,)
        calls: list[str] = []
        real_fetch = db.fetch

        async def fetch(sql: str, *args: object) -> list[dict[str, object]]:
            calls.append(sql)
            return await real_fetch(sql, *args)

        db.fetch = fetch  # type: ignore[method-assign]
        assert await db.truncate_wal(attempts=3) is False
        assert calls == ["PRAGMA wal_checkpoint(TRUNCATE)"] * 3
        assert wal.stat().st_size > 0
        reader.rollback()
        assert await db.truncate_wal() is True
        assert wal.stat().st_size == 0
    finally:
        reader.close()
    assert await db.fetchrow("SELECT count(*) AS n FROM t") == {"n": 100}


async def test_with_synchronous_normal_the_writer_keeps_sqlites_threshold(
    tmp_path: Path,
) -> None:
    """NORMAL fsyncs the WAL only at checkpoints: a larger threshold would widen what a
    power loss can take, so the writer keeps 1,000 pages there."""
    database = Database(
        dialect="sqlite", sqlite_path=tmp_path / "n.sqlite", sqlite_synchronous="NORMAL"
    )
    await database.start(create=True)
    try:
        async with database.transaction():
            assert await database.fetchrow("PRAGMA wal_autocheckpoint") == {
                "wal_autocheckpoint": 1000
            }
            assert await database.fetchrow("PRAGMA synchronous") == {"synchronous": 1}
    finally:
        await database.close()


async def test_a_deleted_file_is_a_storage_error_not_a_new_database(tmp_path: Path) -> None:
    database = Database(dialect="sqlite", sqlite_path=tmp_path / "missing.sqlite")
    with pytest.raises(StorageError, match="does not exist"):
        await database.start()
    assert not (tmp_path / "missing.sqlite").exists()


@pytest.mark.parametrize("where", ["loop", "writer thread"])
async def test_a_failed_commit_leaves_no_stuck_writer(
    db: Database, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A COMMIT that fails and leaves the connection inside its transaction (an I/O
    error) costs that transaction only: the next one starts on a fresh connection."""
    if where == "writer thread":
        db.commit_seconds = 1.0  # COMMITs have been slow

    def failing_commit(connection: sqlite3.Connection, lock_fd: int | None) -> None:
        if lock_fd is not None:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Database, "_commit", staticmethod(failing_commit))

    async def write(n: int) -> None:
        async with db.transaction():
            await db.execute("INSERT INTO t (n) VALUES ($1)", n)

    with pytest.raises(StorageError, match="commit failed"):
        await write(1)
    monkeypatch.undo()
    await write(2)
    assert await db.fetch("SELECT n FROM t") == [{"n": 2}]


REAL_COMMIT = Database._commit


class CommitClock:
    """``vault.storage``'s ``time``: COMMIT durations as the spy says, not as the disk
    makes them, so the average (and where COMMIT runs) does not depend on this
    machine's fsync."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class CommitSpy:
    """Database._commit, recording the thread it ran on; it takes ``delay`` seconds
    by ``clock`` (and really sleeps that long when ``sleep``)."""

    def __init__(self, clock: CommitClock, delay: float, *, sleep: bool = False) -> None:
        self.clock = clock
        self.delay = delay
        self.sleep = sleep
        self.threads: list[str] = []

    def __call__(self, connection: sqlite3.Connection, lock_fd: int | None) -> None:
        self.threads.append(threading.current_thread().name)
        if self.sleep:
            time.sleep(self.delay)
        self.clock.now += self.delay
        REAL_COMMIT(connection, lock_fd)


@pytest.fixture
def commit_clock(db: Database, monkeypatch: pytest.MonkeyPatch) -> CommitClock:
    clock = CommitClock()
    monkeypatch.setattr(storage, "time", clock)
    db.commit_seconds = 0.0
    return clock


async def write(db: Database, n: int) -> None:
    async with db.transaction():
        await db.execute("INSERT INTO t (n) VALUES ($1)", n)


async def test_commit_runs_on_the_loop_while_commits_are_fast(
    db: Database, monkeypatch: pytest.MonkeyPatch, commit_clock: CommitClock
) -> None:
    spy = CommitSpy(commit_clock, 0.001)  # 1 ms: under SQLITE_INLINE_COMMIT, always
    monkeypatch.setattr(Database, "_commit", staticmethod(spy))
    for n in range(50):
        await write(db, n)
    assert spy.threads == [threading.current_thread().name] * 50
    assert db.commit_seconds == pytest.approx(0.001 * (1 - 0.9**50))
    assert [row["n"] for row in await db.fetch("SELECT n FROM t ORDER BY n")] == list(range(50))


async def test_slow_commits_move_to_the_writer_thread_and_back(
    db: Database, monkeypatch: pytest.MonkeyPatch, commit_clock: CommitClock
) -> None:
    """A disk whose fsync got slow: once the average passes SQLITE_INLINE_COMMIT the
    COMMIT runs on the writer thread and the loop keeps ticking through it; once the
    disk is fast again the average falls, and COMMIT comes back to the loop when it is
    under the threshold again, not before."""
    loop_thread = threading.current_thread().name
    slow = CommitSpy(commit_clock, 0.3, sleep=True)
    monkeypatch.setattr(Database, "_commit", staticmethod(slow))
    await write(db, 1)  # the first slow one still runs on the loop (nothing measured yet)
    assert db.commit_seconds == pytest.approx(0.1 * 0.3)  # an average, not the last
    writer = asyncio.ensure_future(write(db, 2))
    gap = await _largest_loop_gap(writer)
    await writer
    assert slow.threads[0] == loop_thread
    assert slow.threads[1].startswith("sqlite-writer")
    assert gap < 0.2, f"the event loop stalled for {gap * 1000:.0f} ms"
    assert db.commit_seconds == pytest.approx(0.03 + 0.1 * (0.3 - 0.03))

    fast = CommitSpy(commit_clock, 0.0)
    monkeypatch.setattr(Database, "_commit", staticmethod(fast))
    n = 3
    while fast.threads[-1:] != [loop_thread]:
        await write(db, n)
        n += 1
        assert n < 200, "the average never came back down"
    # From 57 ms, falling by a tenth a COMMIT: 17 on the thread before it is under
    # 10 ms (0.057 * 0.9**16 > 0.010 > 0.057 * 0.9**17).
    assert fast.threads[:-1] == ["sqlite-writer_0"] * 17
    rows = await db.fetch("SELECT count(*) AS c FROM t")
    assert rows == [{"c": n - 1}]
