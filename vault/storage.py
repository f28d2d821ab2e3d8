"""The database handle shared by every repository.

One :class:`Database` per process, chosen by ``ONCEVAULT_DATABASE_URL``: SQLite (WAL,
the embedded default) or PostgreSQL (asyncpg pool through Piccolo's engine,
production). Repositories receive it and run their queries inside
:meth:`Database.transaction`, which opens the only kind of transaction this project
uses for writes: ``BEGIN IMMEDIATE`` on SQLite (a reader that later writes must hold
the write lock from the start, or it dies with "database is locked"), an ordinary
``READ COMMITTED`` transaction on PostgreSQL where the audit append serialises on a
row lock of its own.

SQLite runs on two long-lived ``sqlite3`` connections per process, driven from the
event loop (docs/performance.md, "SQLite on the event loop"):

* statements run inline on the loop thread. A point query on an indexed table takes
  tens of microseconds in SQLite's C code, less than a hop to a worker thread; WAL
  readers never wait for a lock, and a writer's statements run only while it holds
  the write lock, so no statement waits either;
* the two calls that can wait run on one dedicated thread: taking the write lock
  (``BEGIN IMMEDIATE``, after an ``flock`` on ``<database>.writelock`` that queues
  this project's writers in the kernel instead of SQLite's sleeping busy handler)
  when another writer holds it, and ``COMMIT`` (the WAL fsync) when COMMITs are slow.
  While they take less than ``SQLITE_INLINE_COMMIT`` on average, COMMIT runs on the
  loop: the write lock is then released the moment the fsync returns, instead of
  after the writer thread has woken up and won the GIL back from a busy loop (the
  other process's writers wait for that lock);
* one transaction at a time per process (an ``asyncio.Lock``): the group commit
  batches every concurrent unit into one transaction anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import asyncpg
import structlog
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine
from piccolo.table import Table

from vault.errors import ConnectionLostBeforeCommit, StorageError

log = structlog.get_logger(__name__)

Dialect = Literal["sqlite", "postgres"]

T = TypeVar("T")

#: SQLite waits this long for the write lock before giving up (seconds).
SQLITE_BUSY_TIMEOUT = 30.0

#: Times a writer retries taking the write lock on the loop before it waits for it
#: on the writer thread and keeps it.
WRITE_LOCK_RACES = 3

#: The reader runs on the event loop: it may wait this long (WAL recovery only).
SQLITE_READER_TIMEOUT = 0.5
#: Page cache of the writer connection, in KiB (SQLite's default is 2 MiB). Inserts
#: into indexes of random ids (records, DEKs, blind indexes) touch pages all over the
#: file; a larger cache keeps them (bench/scale.py: bulk issuance at 10^5 records
#: +20 % to new citizens, +44 % new versions, with 32 MiB). 16 MiB bulk-issues as
#: fast at 10^5 records (alternated runs, docs/performance.md) and keeps a worker
#: ~15 MB further under 200 MB of RSS. The reader keeps the default: point reads
#: stayed flat from 10^3 to 10^6 citizens without it.
SQLITE_WRITER_CACHE_KIB = 16 * 1024
#: The writer's WAL auto-checkpoint threshold with ``synchronous=FULL``, in pages
#: (SQLite's default is 1,000: 4 MiB). A checkpoint writes each page of the WAL once,
#: its latest frame, however many commits wrote it: with 20,000 (80 MiB) a bulk load's
#: index pages, dirtied again by every batch, reach the database file once every few
#: batches instead of after each (in-process at 10^5 records, record and DEK ids both
#: time-ordered then: 49 -> 38 KiB written a record). The cost: a WAL file of up to
#: ~100 MB, and the commit that crosses the threshold runs the larger checkpoint. With
#: ``synchronous=NORMAL`` the WAL is fsynced only at checkpoints, so a power loss takes
#: what came since the last one: there the writer keeps SQLite's 1,000. Erasure
#: truncates the WAL either way (:meth:`Database.truncate_wal`).
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 20_000
#: An orderly stop waits this long for the PostgreSQL pool's connections to be
#: released and closed, then terminates the rest (seconds): granian kills a worker
#: that takes 10 s to stop.
POOL_CLOSE_SECONDS = 5.0
#: Ids per ``IN (...)`` list in set-based statements: far below SQLite's 32,766 and
#: PostgreSQL's 32,767 parameters per statement.
IN_CHUNK = 500

#: COMMIT runs on the event loop while COMMITs take less than this many seconds on
#: average (an exponential average of the last ones, ``COMMIT_AVERAGE_WEIGHT`` for the
#: newest); above it, on the writer thread, so a slow disk's fsync does not stop the
#: loop. A disk steadily just under it stops the loop that long every batch.
#: docs/performance.md, "Eighth session: the write lock's share of each read" (2 ms),
#: "Ninth session" (10 ms: COMMITs of ~2 ms on a slower machine kept crossing 2 ms).
SQLITE_INLINE_COMMIT = 0.010
COMMIT_AVERAGE_WEIGHT = 0.1


def marks(count: int, *, first: int = 1) -> str:
    """``$first, $first+1, ...``: ``count`` numbered parameters for an ``IN (...)`` list."""
    return ", ".join(f"${first + i}" for i in range(count))


_DOLLAR_PARAM = re.compile(r"\$(\d+)")

_CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    OSError,
)


class _PooledTransaction:
    """What the statements of a transaction need: its connection."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection


def _rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    description = cursor.description
    if description is None:
        return []
    names = [column[0] for column in description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _values(cursor: sqlite3.Cursor) -> list[Sequence[Any]]:
    return cursor.fetchall()


def _dicts(records: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [dict(record) for record in records]


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's release hook: no reset query.

    asyncpg's default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL`` at every release, one more round trip per request. This code keeps no session
    state: no ``SET`` (the schema comes with the connection's ``server_settings``), no
    ``LISTEN``, no session advisory locks, no cursor or temporary table outside a
    transaction. asyncpg still rolls back a transaction left open before it calls this.
    """


class Database:
    """One database, with the transaction discipline of DESIGN section 3."""

    def __init__(
        self,
        *,
        dialect: Dialect,
        sqlite_path: Path | None = None,
        postgres_dsn: str | None = None,
        postgres_schema: str | None = None,
        pool_size: int = 10,
        sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        self.dialect: Dialect = dialect
        self.sqlite_synchronous = sqlite_synchronous
        self.sqlite_path = sqlite_path
        self.postgres_dsn = postgres_dsn
        self.postgres_schema = postgres_schema
        self._pool_size = pool_size
        self._started = False
        self._placeholder_cache: dict[str, str] = {}
        # SQLite: a reader for statements outside transactions, a writer for
        # transactions, the thread that waits for the write lock and the fsync.
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._writer_lock = asyncio.Lock()
        self._writer_thread: ThreadPoolExecutor | None = None
        self._lock_fd: int | None = None
        #: Average COMMIT duration in seconds (SQLITE_INLINE_COMMIT).
        self.commit_seconds = 0.0
        self._sqlite_tx: contextvars.ContextVar[sqlite3.Connection | None] = contextvars.ContextVar(
            f"sqlite_tx_{id(self)}", default=None
        )
        self.engine: Engine[Any]
        if dialect == "sqlite":
            if sqlite_path is None:
                raise ValueError("sqlite needs a path")
            # mode=rw: a missing file is an error, never silently a new empty database.
            # The engine serves the migration runner only; queries use _connect().
            self.engine = SQLiteEngine(
                path=f"file:{quote(str(sqlite_path))}?mode=rw",
                uri=True,
                timeout=SQLITE_BUSY_TIMEOUT,
            )
        else:
            if postgres_dsn is None:
                raise ValueError("postgres needs a DSN")
            config: dict[str, Any] = {"dsn": postgres_dsn}
            if postgres_schema is not None:
                config["server_settings"] = {"search_path": postgres_schema}
            self.engine = PostgresEngine(config=config, log_queries=False)

    def clone(self) -> Database:
        """Another handle on the same database (as a second worker process would have)."""
        return Database(
            dialect=self.dialect,
            sqlite_path=self.sqlite_path,
            postgres_dsn=self.postgres_dsn,
            postgres_schema=self.postgres_schema,
            pool_size=self._pool_size,
            sqlite_synchronous=self.sqlite_synchronous,
        )

    @classmethod
    def from_url(cls, url: str, *, sqlite_path: Path | None = None) -> Database:
        """Build from a validated ``ONCEVAULT_DATABASE_URL``."""
        if url.startswith("sqlite:"):
            return cls(dialect="sqlite", sqlite_path=sqlite_path)
        return cls(dialect="postgres", postgres_dsn=url)

    # -- lifecycle -------------------------------------------------------------

    async def start(self, *, create: bool = False) -> None:
        """Open the pool (Postgres) or check the file and switch it to WAL (SQLite).

        ``create=True`` (``oncevault init`` only) creates a missing SQLite file.
        """
        if self._started:
            return
        try:
            if isinstance(self.engine, SQLiteEngine):
                assert self.sqlite_path is not None
                if not self.sqlite_path.exists():
                    if not create:
                        raise StorageError(f"database file {self.sqlite_path} does not exist")
                    self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(self.sqlite_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    os.close(fd)
                # journal_mode is persistent in the file; set it before any other use.
                await self.engine.run_ddl("PRAGMA journal_mode=WAL")
            elif isinstance(self.engine, PostgresEngine):
                await self.engine.start_connection_pool(
                    min_size=1,
                    max_size=self._pool_size,
                    command_timeout=30,
                    reset=_keep_session,
                )
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - asyncpg and sqlite3 raise many types; fail closed
            raise StorageError(f"database unreachable ({exc.__class__.__name__})") from None
        self._started = True

    async def close(self) -> None:
        """Close the pool and connections; safe to call twice."""
        if isinstance(self.engine, PostgresEngine) and self._started:
            await self._close_pool(self.engine)
        async with self._writer_lock:  # never under a running transaction
            for connection in (self._reader, self._writer):
                if connection is not None:
                    connection.close()
            self._reader = self._writer = None
            if self._writer_thread is not None:
                self._writer_thread.shutdown(wait=True)
                self._writer_thread = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
        self._started = False

    @staticmethod
    async def _close_pool(engine: PostgresEngine) -> None:
        """Close the pool, bounded: a connection still held (a task that never released
        it) or one whose server went silent is terminated after ``POOL_CLOSE_SECONDS``,
        so a stop never hangs on the database."""
        pool = engine.pool
        if pool is None:
            return
        engine.pool = None
        try:
            await asyncio.wait_for(pool.close(), timeout=POOL_CLOSE_SECONDS)
        except TimeoutError:
            log.warning("db.pool_close_timeout", seconds=POOL_CLOSE_SECONDS)
            pool.terminate()

    def _connect(
        self,
        *,
        timeout: float = SQLITE_BUSY_TIMEOUT,
        cache_kib: int | None = None,
        writer: bool = False,
    ) -> sqlite3.Connection:
        assert isinstance(self.engine, SQLiteEngine)
        try:
            # No detect_types: the schema declares only INTEGER, BIGINT, TEXT and BLOB,
            # which sqlite3 returns as int, str and bytes by itself; Piccolo's
            # converters would call Python once per INTEGER value.
            kwargs: dict[str, Any] = {
                **self.engine.connection_kwargs,
                "detect_types": 0,
                "timeout": timeout,
            }
            connection: sqlite3.Connection = sqlite3.connect(**kwargs, check_same_thread=False)
            connection.execute("PRAGMA foreign_keys = 1")
            connection.execute(f"PRAGMA synchronous = {self.sqlite_synchronous}")
            # Deleted pages are zeroed (erasure leaves no wrapped DEK in the file).
            connection.execute("PRAGMA secure_delete = ON")
            if cache_kib is not None:
                connection.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
            if writer and self.sqlite_synchronous == "FULL":
                connection.execute(
                    f"PRAGMA wal_autocheckpoint = {int(SQLITE_WAL_AUTOCHECKPOINT_PAGES)}"
                )
        except sqlite3.Error as exc:
            raise StorageError(f"database unreachable ({exc.__class__.__name__})") from None
        return connection

    def _sqlite_reader(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = self._connect(timeout=SQLITE_READER_TIMEOUT)
        return self._reader

    def bind(self, tables: Iterable[type[Table]]) -> None:
        """Point these Piccolo tables at this engine (one database per process)."""
        for table in tables:
            table._meta.db = self.engine

    # -- transactions ----------------------------------------------------------

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[None]:
        """A transaction on one connection; nested use is a bug and raises.

        ``write=True`` takes SQLite's write lock at ``BEGIN`` (``IMMEDIATE``), so a
        transaction that reads and then appends never deadlocks on lock upgrade.
        """
        if self.dialect == "sqlite":
            async with self._sqlite_transaction(write=write):
                yield
        else:
            async with self._postgres_transaction():
                yield

    async def _on_writer_thread(self, call: Callable[[], T]) -> T:
        """Run ``call`` on the writer thread; a cancelled caller still waits for it,
        so the connection is never used by two threads at once."""
        if self._writer_thread is None:
            self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        future = asyncio.get_running_loop().run_in_executor(self._writer_thread, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise

    def _lock_file(self) -> int:
        if self._lock_fd is None:
            assert self.sqlite_path is not None
            path = self.sqlite_path.with_name(self.sqlite_path.name + ".writelock")
            self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._lock_fd

    def _begin_immediate(self, connection: sqlite3.Connection, lock_fd: int) -> None:
        """On the writer thread: queue on the flock, then take SQLite's write lock."""
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            connection.execute("BEGIN IMMEDIATE")
        except BaseException:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            raise

    @staticmethod
    def _begin_if_free(connection: sqlite3.Connection, lock_fd: int) -> bool:
        """On the loop: take the flock and SQLite's write lock only if both are free
        now (a writer outside this project's flock, such as another tool, makes
        ``BEGIN IMMEDIATE`` fail at once with busy_timeout 0)."""
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            connection.execute("PRAGMA busy_timeout = 0")
            try:
                connection.execute("BEGIN IMMEDIATE")
            finally:
                connection.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT * 1000)}")
        except sqlite3.OperationalError:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            return False
        except BaseException:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            raise
        return True

    @staticmethod
    def _wait_until_free(lock_fd: int) -> None:
        """On the writer thread: wait for the flock's holder to finish, without keeping it."""
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        fcntl.flock(lock_fd, fcntl.LOCK_UN)

    async def _begin_write(self, connection: sqlite3.Connection, lock_fd: int) -> None:
        """Take the write lock when this task can use it at once.

        Waiting happens on the writer thread, but the lock is taken on the loop, so
        the time the event loop needs to resume this task after a wait is not spent
        holding the database's only write lock. After a few lost races the thread
        waits for the lock and keeps it (no starvation).
        """
        for _ in range(WRITE_LOCK_RACES):
            if self._begin_if_free(connection, lock_fd):
                return
            await self._on_writer_thread(lambda: self._wait_until_free(lock_fd))
        await self._on_writer_thread(lambda: self._begin_immediate(connection, lock_fd))

    @staticmethod
    def _commit(connection: sqlite3.Connection, lock_fd: int | None) -> None:
        """COMMIT (the fsync), then release the write lock at once, on whichever
        thread committed (on the writer thread: without waiting for the event loop
        to resume the committing task)."""
        try:
            connection.commit()
        except sqlite3.Error:
            if connection.in_transaction:
                connection.rollback()
            raise
        finally:
            if lock_fd is not None:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)

    async def _commit_write(self, connection: sqlite3.Connection, lock_fd: int | None) -> None:
        """COMMIT on the loop while COMMITs are fast, else on the writer thread; keeps
        the average either way (so a disk that became fast again is seen)."""

        def timed() -> None:
            start = time.perf_counter()
            try:
                self._commit(connection, lock_fd)
            finally:
                self.commit_seconds += COMMIT_AVERAGE_WEIGHT * (
                    time.perf_counter() - start - self.commit_seconds
                )

        if self.commit_seconds < SQLITE_INLINE_COMMIT:
            timed()
        else:
            await self._on_writer_thread(timed)

    def _drop_writer_if_broken(self, connection: sqlite3.Connection) -> None:
        """After a failed BEGIN, COMMIT or ROLLBACK: a connection still inside a
        transaction (or unusable) is closed, so the next transaction starts on a fresh
        one instead of failing for ever."""
        try:
            if not connection.in_transaction:
                connection.execute("SELECT 1").fetchall()
                return
        except sqlite3.Error:
            pass
        with contextlib.suppress(sqlite3.Error):
            connection.close()
        if self._writer is connection:
            self._writer = None

    @asynccontextmanager
    async def _sqlite_transaction(self, *, write: bool) -> AsyncIterator[None]:
        if self._sqlite_tx.get() is not None:
            raise StorageError("nested transaction")
        async with self._writer_lock:
            if self._writer is None:
                self._writer = self._connect(cache_kib=SQLITE_WRITER_CACHE_KIB, writer=True)
            connection = self._writer
            lock_fd = self._lock_file() if write else None
            try:
                if lock_fd is not None:
                    await self._begin_write(connection, lock_fd)
                else:
                    connection.execute("BEGIN DEFERRED")
            except sqlite3.Error as exc:
                self._drop_writer_if_broken(connection)
                raise StorageError(f"database unavailable ({exc.__class__.__name__})") from None
            token = self._sqlite_tx.set(connection)
            try:
                try:
                    yield
                except BaseException:
                    try:
                        if connection.in_transaction:
                            connection.rollback()
                    except sqlite3.Error:
                        self._drop_writer_if_broken(connection)
                    raise
                try:
                    await self._commit_write(connection, lock_fd)
                except sqlite3.Error as exc:
                    self._drop_writer_if_broken(connection)
                    raise StorageError(f"commit failed ({exc.__class__.__name__})") from None
            finally:
                self._sqlite_tx.reset(token)
                if lock_fd is not None:
                    fcntl.flock(lock_fd, fcntl.LOCK_UN)  # again after _commit: harmless

    @asynccontextmanager
    async def _postgres_transaction(self) -> AsyncIterator[None]:
        """A transaction on a pooled asyncpg connection that is always given back.

        Piccolo's PostgresTransaction never releases its pool connection when BEGIN,
        COMMIT or ROLLBACK fails on a terminated backend, so the pool shrinks until
        every request waits. asyncpg's own ``pool.acquire()`` releases (or discards) the
        connection whatever happens. Statements inside find the connection through
        Piccolo's ``current_transaction`` context variable, as before.
        """
        engine = self.engine
        assert isinstance(engine, PostgresEngine)
        if engine.current_transaction.get() is not None:
            raise StorageError("nested transaction")
        pool = engine.pool
        if pool is None:
            raise StorageError("database not started")
        commit_sent = False
        try:
            async with pool.acquire() as connection:
                transaction = connection.transaction()
                await transaction.start()
                token = engine.current_transaction.set(
                    _PooledTransaction(connection)  # type: ignore[arg-type]
                )
                try:
                    yield
                except BaseException:
                    with contextlib.suppress(*_CONNECTION_FAILURES):
                        await transaction.rollback()
                    raise
                finally:
                    engine.current_transaction.reset(token)
                commit_sent = True
                await transaction.commit()
        except _CONNECTION_FAILURES as exc:
            name = exc.__class__.__name__
            if commit_sent:  # COMMIT may or may not have happened: never run it again
                raise StorageError(f"database connection lost at COMMIT ({name})") from None
            raise ConnectionLostBeforeCommit(f"database connection lost ({name})") from None

    def in_transaction(self) -> bool:
        """True inside :meth:`transaction` on this task."""
        if self.dialect == "sqlite":
            return self._sqlite_tx.get() is not None
        return bool(self.engine.transaction_exists())

    # -- raw SQL for repositories ------------------------------------------------

    def _placeholders(self, sql: str) -> str:
        """Repositories write ``$1, $2 ...``; SQLite spells them ``?1, ?2 ...``.

        Numbered, not bare ``?``: a parameter may appear more than once.
        """
        if self.dialect == "postgres":
            return sql
        query = self._placeholder_cache.get(sql)
        if query is None:
            query = self._placeholder_cache[sql] = _DOLLAR_PARAM.sub(r"?\1", sql)
        return query

    async def fetch(self, sql: str, *args: object) -> list[dict[str, Any]]:
        """Run one statement with positional ``$n`` parameters; rows as dicts.

        Runs on the current transaction's connection when there is one.
        """
        return await self._run(sql, args)

    async def fetch_values(self, sql: str, *args: object) -> list[Sequence[Any]]:
        """As :meth:`fetch`, but each row is its values in the statement's column order
        (a tuple on SQLite, an asyncpg ``Record`` on PostgreSQL): no dict a row, for
        the statements that load a batch's rows inside the write lock."""
        return await self._run(sql, args, _values, list)

    async def fetchrow(self, sql: str, *args: object) -> dict[str, Any] | None:
        rows = await self._run(sql, args)
        return rows[0] if rows else None

    async def execute(self, sql: str, *args: object) -> None:
        await self._run(sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run one statement for each parameter row, inside the current transaction."""
        if not rows:
            return
        query = self._placeholders(sql)
        if self.dialect == "sqlite":
            connection = self._sqlite_tx.get()
            if connection is None:
                raise StorageError("executemany needs a transaction")
            connection.executemany(query, rows)
            return
        transaction = self.engine.current_transaction.get()
        if transaction is None:
            raise StorageError("executemany needs a transaction")
        try:
            await transaction.connection.executemany(query, [list(row) for row in rows])
        except _CONNECTION_FAILURES as exc:
            # As in _run: inside a transaction nothing was committed; the work may rerun.
            name = exc.__class__.__name__
            raise ConnectionLostBeforeCommit(f"database connection lost ({name})") from None

    async def _run(
        self,
        sql: str,
        args: Sequence[object],
        shape: Callable[[sqlite3.Cursor], list[Any]] = _rows,
        shape_records: Callable[[list[asyncpg.Record]], list[Any]] = _dicts,
    ) -> list[Any]:
        """Run one statement; ``shape`` makes its rows from a SQLite cursor,
        ``shape_records`` from asyncpg's records."""
        query = self._placeholders(sql)
        if self.dialect == "sqlite":
            connection = self._sqlite_tx.get()
            if connection is not None:
                return shape(connection.execute(query, args))
            verb = query.lstrip()[:6].upper()
            if verb == "SELECT":
                return self._read_sqlite(query, args, shape)
            if verb == "PRAGMA":  # e.g. wal_checkpoint: outside any transaction
                return await self._sqlite_pragma(query, shape)
            # A write outside a transaction gets one of its own: it must queue for the
            # write lock off the loop, never in SQLite's busy handler on it.
            async with self._sqlite_transaction(write=True):
                connection = self._sqlite_tx.get()
                assert connection is not None
                return shape(connection.execute(query, args))
        engine = self.engine
        assert isinstance(engine, PostgresEngine)
        transaction = engine.current_transaction.get()
        try:
            if transaction is not None:
                records = await transaction.connection.fetch(query, *args)
            else:
                pool = engine.pool
                if pool is None:
                    raise StorageError("database not started")
                async with pool.acquire() as connection:
                    records = await connection.fetch(query, *args)
        except _CONNECTION_FAILURES as exc:
            # A terminated backend or a broken pool connection: nothing to serve from,
            # fail closed with a domain error (503); the pool replaces the connection.
            # Inside a transaction nothing was committed yet: the work may run again.
            error = ConnectionLostBeforeCommit if transaction is not None else StorageError
            raise error(f"database connection lost ({exc.__class__.__name__})") from None
        return shape_records(records)

    async def _sqlite_pragma(
        self, query: str, shape: Callable[[sqlite3.Cursor], list[Any]]
    ) -> list[Any]:
        """A pragma outside a transaction, on the writer connection and thread (a
        checkpoint waits for readers and writes the database file)."""
        async with self._writer_lock:
            if self._writer is None:
                self._writer = self._connect(cache_kib=SQLITE_WRITER_CACHE_KIB, writer=True)
            connection, lock_fd = self._writer, self._lock_file()

            def run() -> list[Any]:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                try:
                    return shape(connection.execute(query))
                finally:
                    fcntl.flock(lock_fd, fcntl.LOCK_UN)

            try:
                return await self._on_writer_thread(run)
            except sqlite3.OperationalError as exc:
                raise StorageError(f"database unavailable ({exc.__class__.__name__})") from None

    def _read_sqlite(
        self,
        query: str,
        args: Sequence[object],
        shape: Callable[[sqlite3.Cursor], list[Any]],
    ) -> list[Any]:
        """A SELECT outside a transaction, inline on the reader (autocommit: the latest
        committed state). A WAL reader waits for no lock; OperationalError is the file
        gone, or SQLITE_BUSY past the reader's short timeout (WAL recovery)."""
        try:
            return shape(self._sqlite_reader().execute(query, args))
        except sqlite3.OperationalError as exc:
            raise StorageError(f"database unavailable ({exc.__class__.__name__})") from None

    async def truncate_wal(self, attempts: int = 2) -> bool:
        """SQLite: copy the WAL into the database file and truncate it to zero, so no
        frame of a row deleted before this stays in it (PostgreSQL: nothing to do).
        A reader holding an older snapshot past the writer's busy timeout leaves the
        checkpoint busy (SQLite answers so, it does not raise): it runs up to
        ``attempts`` times. False when the WAL could not be truncated."""
        if self.dialect != "sqlite":
            return True
        for _ in range(attempts):
            rows = await self.fetch("PRAGMA wal_checkpoint(TRUNCATE)")
            if rows and rows[0]["busy"] == 0:
                return True
        return False

    async def ping(self) -> None:
        """One round trip; raises :class:`StorageError` when it fails."""
        try:
            if isinstance(self.engine, SQLiteEngine):
                # A fresh connection: a deleted or replaced file must not look healthy.
                await asyncio.wait_for(
                    self.engine._run_in_new_connection(query="SELECT 1 AS one"), timeout=2.0
                )
            else:
                await asyncio.wait_for(self.fetch("SELECT 1 AS one"), timeout=2.0)
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - any driver failure means "not ready"
            raise StorageError(f"database unreachable ({exc.__class__.__name__})") from None
