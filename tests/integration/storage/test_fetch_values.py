"""``Database.fetch_values``: a statement's rows as their values in column order, on
each engine, inside a transaction and outside one (SQLite: the reader connection, a
write's own transaction, a pragma), and the same values ``fetch`` gives as dicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vault.storage import Database

ROWS = [(1, "one", b"\x01"), (2, "two", None)]


async def fill(database: Database) -> None:
    async with database.transaction():
        await database.execute("CREATE TABLE fv (n BIGINT PRIMARY KEY, word TEXT, blob BYTEA)")
        for row in ROWS:
            await database.execute("INSERT INTO fv (n, word, blob) VALUES ($1, $2, $3)", *row)


def plain(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows as tuples of plain values (asyncpg Records are sequences; bytes stay bytes)."""
    out = []
    for row in rows:
        assert not isinstance(row, dict)
        out.append(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row))
    return out


async def test_rows_come_back_as_values_in_column_order(empty_database: Database) -> None:
    database = empty_database
    await fill(database)
    query = "SELECT word, n, blob FROM fv WHERE n >= $1 ORDER BY n"
    outside = await database.fetch_values(query, 1)
    async with database.transaction():
        inside = await database.fetch_values(query, 1)
    expected = [(word, n, blob) for n, word, blob in ROWS]
    assert plain(outside) == plain(inside) == expected
    as_dicts = await database.fetch(query, 1)
    assert [tuple(row.values()) for row in as_dicts] == expected
    assert await database.fetch_values(query, 3) == []


async def test_a_write_and_a_pragma_outside_a_transaction_keep_the_shape(
    empty_database: Database,
) -> None:
    database = empty_database
    await fill(database)
    returned = await database.fetch_values(
        "UPDATE fv SET word = $1 WHERE n = $2 RETURNING n, word", "uno", 1
    )
    assert plain(returned) == [(1, "uno")]
    if database.dialect != "sqlite":
        return
    pragma = await database.fetch_values("PRAGMA wal_checkpoint(PASSIVE)")
    assert len(pragma) == 1 and not isinstance(pragma[0], dict)
    busy, log_frames, checkpointed = pragma[0]
    assert busy == 0 and log_frames >= checkpointed >= 0
