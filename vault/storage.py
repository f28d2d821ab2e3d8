"""The database handle shared by every repository.

One :class:`Database` per process wraps a Piccolo engine chosen by
``ONCEVAULT_DATABASE_URL``: SQLite (WAL, the embedded default) or PostgreSQL (asyncpg
pool, production). Repositories receive it and run their queries inside
:meth:`Database.transaction`, which opens the only kind of transaction this project
uses for writes: ``BEGIN IMMEDIATE`` on SQLite (a reader that later writes must hold
the write lock from the start, or it dies with "database is locked"), an ordinary
``READ COMMITTED`` transaction on PostgreSQL where the audit append serialises on a
row lock of its own.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import aiosqlite
import asyncpg
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, TransactionType
from piccolo.table import Table

from vault.errors import StorageError

Dialect = Literal["sqlite", "postgres"]

#: SQLite waits this long for the write lock before giving up (seconds).
SQLITE_BUSY_TIMEOUT = 30.0

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


class Database:
    """A Piccolo engine plus the transaction discipline of DESIGN section 3."""

    def __init__(
        self,
        *,
        dialect: Dialect,
        sqlite_path: Path | None = None,
        postgres_dsn: str | None = None,
        postgres_schema: str | None = None,
        pool_size: int = 10,
    ) -> None:
        self.dialect: Dialect = dialect
        self.sqlite_path = sqlite_path
        self.postgres_dsn = postgres_dsn
        self.postgres_schema = postgres_schema
        self._pool_size = pool_size
        self._started = False
        # SQLite: one long-lived connection for reads outside transactions (Piccolo
        # would open a connection and a thread per query: ~1.7 ms each).
        self._reader: aiosqlite.Connection | None = None
        self._reader_lock = asyncio.Lock()
        self.engine: Engine[Any]
        if dialect == "sqlite":
            if sqlite_path is None:
                raise ValueError("sqlite needs a path")
            # mode=rw: a missing file is an error, never silently a new empty database.
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
                    min_size=1, max_size=self._pool_size, command_timeout=30
                )
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - asyncpg and sqlite3 raise many types; fail closed
            raise StorageError(f"database unreachable ({exc.__class__.__name__})") from None
        self._started = True

    async def close(self) -> None:
        """Close the pool; safe to call twice."""
        if isinstance(self.engine, PostgresEngine) and self._started:
            await self.engine.close_connection_pool()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        self._started = False

    async def _sqlite_reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            async with self._reader_lock:
                if self._reader is None:
                    assert isinstance(self.engine, SQLiteEngine)
                    reader = await aiosqlite.connect(**self.engine.connection_kwargs)
                    reader.row_factory = aiosqlite.Row
                    await reader.execute("PRAGMA foreign_keys = 1")
                    self._reader = reader
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
        if isinstance(self.engine, SQLiteEngine):
            kind = TransactionType.immediate if write else TransactionType.deferred
            async with self.engine.transaction(transaction_type=kind, allow_nested=False):
                yield
        else:
            async with self._postgres_transaction():
                yield

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
        try:
            async with pool.acquire() as connection, connection.transaction():
                token = engine.current_transaction.set(
                    _PooledTransaction(connection)  # type: ignore[arg-type]
                )
                try:
                    yield
                finally:
                    engine.current_transaction.reset(token)
        except _CONNECTION_FAILURES as exc:
            raise StorageError(f"database connection lost ({exc.__class__.__name__})") from None

    def in_transaction(self) -> bool:
        """True inside :meth:`transaction` on this task."""
        return bool(self.engine.transaction_exists())

    # -- raw SQL for repositories ------------------------------------------------

    def _placeholders(self, sql: str) -> str:
        """Repositories write ``$1, $2 ...``; SQLite spells them ``?1, ?2 ...``.

        Numbered, not bare ``?``: a parameter may appear more than once.
        """
        if self.dialect == "postgres":
            return sql
        return _DOLLAR_PARAM.sub(r"?\1", sql)

    async def fetch(self, sql: str, *args: object) -> list[dict[str, Any]]:
        """Run one statement with positional ``$n`` parameters; rows as dicts.

        Runs on the current transaction's connection when there is one.
        """
        return await self._run(sql, args)

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
        transaction = self.engine.current_transaction.get()
        if transaction is None:
            raise StorageError("executemany needs a transaction")
        await transaction.connection.executemany(query, [list(row) for row in rows])

    async def _run(self, sql: str, args: Sequence[object]) -> list[dict[str, Any]]:
        query = self._placeholders(sql)
        engine = self.engine
        transaction = engine.current_transaction.get()
        if isinstance(engine, SQLiteEngine):
            if transaction is not None:
                connection = transaction.connection
                async with connection.execute(query, list(args)) as cursor:
                    rows = await cursor.fetchall()
                return [dict(row) for row in rows]
            reader = await self._sqlite_reader()
            async with reader.execute(query, list(args)) as cursor:
                rows = await cursor.fetchall()
            if reader.in_transaction:  # a write outside a transaction: make it durable
                await reader.commit()
            return [dict(row) for row in rows]
        assert isinstance(engine, PostgresEngine)
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
            raise StorageError(f"database connection lost ({exc.__class__.__name__})") from None
        return [dict(record) for record in records]

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
