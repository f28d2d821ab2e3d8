"""The PostgreSQL pool gives connections back without asyncpg's reset query (one round
trip less per request; vault/storage.py ``_keep_session``), and still never hands out
a connection with a transaction open."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
import structlog

from tests.conftest import POSTGRES_DSN
from vault import storage
from vault.storage import Database


@pytest.fixture
def postgres(empty_database: Database) -> Database:
    if empty_database.dialect != "postgres":
        pytest.skip("the asyncpg pool is PostgreSQL's")
    return empty_database


async def pooled_backend(database: Database) -> int:
    row = await database.fetchrow("SELECT pg_backend_pid() AS pid")
    assert row is not None
    return int(row["pid"])


async def backend_alive(pid: int) -> bool:
    """Whether the server still runs backend ``pid`` (after up to a second)."""
    assert POSTGRES_DSN is not None
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        for _ in range(20):
            row = await connection.fetchrow("SELECT 1 FROM pg_stat_activity WHERE pid = $1", pid)
            if row is None:
                return False
            await asyncio.sleep(0.05)
        return True
    finally:
        await connection.close()


async def test_release_sends_no_reset_query(postgres: Database) -> None:
    # Session state set outside a transaction survives the release, which the default
    # reset (RESET ALL) would have undone: nothing ran between the two statements.
    backend = await pooled_backend(postgres)
    await postgres.fetch("SELECT set_config('application_name', 'oncevault-probe', false)")
    row = await postgres.fetchrow("SELECT current_setting('application_name') AS name")
    assert await pooled_backend(postgres) == backend  # the same pooled connection
    assert row == {"name": "oncevault-probe"}


async def test_a_transaction_left_open_is_rolled_back_at_release(postgres: Database) -> None:
    await postgres.execute("CREATE TABLE probe (n INTEGER)")
    pool = postgres.engine.pool
    assert pool is not None
    async with pool.acquire() as connection:
        backend = connection.get_server_pid()
        await connection.execute("BEGIN")  # not through asyncpg's transaction object
        await connection.execute("INSERT INTO probe VALUES (1)")
    assert await postgres.fetch("SELECT n FROM probe") == []
    async with pool.acquire() as again:
        assert again.get_server_pid() == backend  # the same connection, given back clean
        assert not again.is_in_transaction()


async def test_a_failed_statement_in_a_transaction_leaves_a_usable_connection(
    postgres: Database,
) -> None:
    with pytest.raises(Exception, match="division by zero"):
        async with postgres.transaction():
            await postgres.fetch("SELECT 1 / 0")
    pool = postgres.engine.pool
    assert pool is not None
    async with pool.acquire() as connection:
        backend = connection.get_server_pid()
        await connection.execute("BEGIN")
        with pytest.raises(Exception, match="division by zero"):
            await connection.fetch("SELECT 1 / 0")  # the transaction is now aborted
    assert await postgres.fetch("SELECT 2 AS two") == [{"two": 2}]
    async with pool.acquire() as again:
        assert again.get_server_pid() == backend  # the aborted one, given back usable
        assert not again.is_in_transaction()


async def test_closing_never_waits_longer_than_its_bound_for_a_held_connection(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that is never given back (a stuck task) would make asyncpg's
    ``Pool.close`` wait forever and granian kill the worker: the close is bounded, then
    terminates the pool, and a second close is a no-op."""
    monkeypatch.setattr(storage, "POOL_CLOSE_SECONDS", 0.3)
    pool = postgres.engine.pool
    assert pool is not None
    held = await pool.acquire()
    backend = held.get_server_pid()
    began = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        await postgres.close()
    assert time.monotonic() - began < 3
    assert pool._closed  # terminated, not left closing
    assert not await backend_alive(backend)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["db.pool_close_timeout"]
    await postgres.close()


async def test_closing_a_pool_with_every_connection_back_is_orderly(
    postgres: Database,
) -> None:
    pool = postgres.engine.pool
    assert pool is not None
    await pooled_backend(postgres)
    with structlog.testing.capture_logs() as logs:
        await postgres.close()
    assert pool._closed
    assert logs == []
