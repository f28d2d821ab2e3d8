"""The tree state row keeps its frontier (audit 0002): an append takes it with the
tree lock instead of reading ``audit_nodes`` after another writer appended, and a
missing, damaged or outdated one is never used. Roots are checked against the
independent verifier (tests/independent_verifier.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from audit import merkle
from audit.log import AuditLog
from audit.models import EntryDraft
from tests import independent_verifier as ref
from tests.helpers.statements import Statements
from vault.clock import ManualClock
from vault.errors import StorageError
from vault.storage import Database


def draft(i: int) -> EntryDraft:
    return EntryDraft(action="record.put", actor_type="client", actor_id=f"client{i}")


async def append(audit: AuditLog, *numbers: int) -> None:
    async def work() -> tuple[None, Sequence[EntryDraft]]:
        return None, [draft(i) for i in numbers]

    await audit.run(work)


async def leaves(database: Database) -> list[bytes]:
    rows = await database.fetch("SELECT leaf FROM audit_entries ORDER BY seq")
    return [bytes(r["leaf"]) for r in rows]


async def kept(database: Database) -> tuple[int, bytes, bytes | None]:
    row = await database.fetchrow("SELECT size, root_hash, frontier FROM audit_state")
    assert row is not None
    frontier = None if row["frontier"] is None else bytes(row["frontier"])
    return int(row["size"]), bytes(row["root_hash"]), frontier


async def node_hashes(database: Database, size: int) -> bytes:
    hashes = []
    for node in merkle.frontier_nodes(size):
        row = await database.fetchrow(
            "SELECT hash FROM audit_nodes WHERE level = $1 AND idx = $2", node.level, node.index
        )
        assert row is not None
        hashes.append(bytes(row["hash"]))
    return b"".join(hashes)


async def assert_tree_is_right(database: Database) -> None:
    size, root, frontier = await kept(database)
    stored = await leaves(database)
    assert size == len(stored)
    assert root == ref.root_from_leaves(stored)
    assert frontier == await node_hashes(database, size)


async def test_every_append_keeps_the_frontier_of_its_size(database: Database) -> None:
    audit = AuditLog(database=database, clock=ManualClock())
    assert (await kept(database))[2] is None  # as migrated: nothing appended yet
    for n in (1, 2, 3, 5, 8, 13):
        await append(audit, *range(n))
        await assert_tree_is_right(database)


async def test_another_writers_append_reads_no_nodes(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = AuditLog(database=database, clock=ManualClock())
    second = AuditLog(database=database, clock=ManualClock())
    await append(first, 1, 2, 3)
    reads = Statements(monkeypatch, database)
    for i in range(6):  # each append follows the other log's
        await append(second if i % 2 == 0 else first, i, i + 10)
    assert reads.count("SELECT", "FROM audit_nodes") == 0
    await assert_tree_is_right(database)


@pytest.mark.parametrize(
    "damage",
    [
        None,  # a log written before the frontier was kept
        b"\x07" * 96,  # three hashes (7 = 0b111) that do not make the root
        b"\x07" * 95,  # not whole hashes
        b"",  # too few
    ],
)
async def test_a_missing_or_damaged_frontier_is_read_from_the_nodes(
    database: Database, monkeypatch: pytest.MonkeyPatch, damage: bytes | None
) -> None:
    first = AuditLog(database=database, clock=ManualClock())
    await append(first, *range(7))
    await database.execute("UPDATE audit_state SET frontier = $1", damage)
    reads = Statements(monkeypatch, database)
    second = AuditLog(database=database, clock=ManualClock())  # no cached frontier
    await append(second, 7, 8)
    assert reads.count("SELECT", "FROM audit_nodes") == 1
    await assert_tree_is_right(database)


@pytest.mark.parametrize("opened_by", ["the log", "its caller"])
async def test_an_append_rolled_back_leaves_no_frontier_to_trust(
    database: Database, opened_by: str
) -> None:
    """A transaction that appended and then failed (opened by ``AuditLog.transaction``
    or, as bench/audit_scale.py does, by the caller) must not leave a frontier cache
    that a state of the same size, reached by another writer with other leaves, would
    match."""
    first = AuditLog(database=database, clock=ManualClock())
    second = AuditLog(database=database, clock=ManualClock())
    await append(first, 1)

    async def append_then_fail() -> None:
        opened = first.transaction() if opened_by == "the log" else database.transaction()
        async with opened:
            await first.append([draft(2), draft(3)])
            raise RuntimeError("after the append")

    with pytest.raises(RuntimeError, match="after the append"):
        await append_then_fail()
    await append(second, 4, 5)  # the size the failed transaction reached
    # As an older version's append would leave it: no kept frontier to fall back on.
    await database.execute("UPDATE audit_state SET frontier = NULL")
    await append(first, 6)
    await assert_tree_is_right(database)


async def test_two_appends_in_one_transaction_each_read_the_tree(database: Database) -> None:
    """The state taken with the tree lock serves the transaction's first append only."""
    audit = AuditLog(database=database, clock=ManualClock())
    await append(audit, 1)
    async with audit.transaction():
        first = await audit.append([draft(2)])
        second = await audit.append([draft(3), draft(4)])
    assert [e.seq for e in first + second] == [1, 2, 3]
    await assert_tree_is_right(database)


async def test_nodes_that_do_not_fold_to_the_root_are_refused(database: Database) -> None:
    first = AuditLog(database=database, clock=ManualClock())
    await append(first, *range(6))
    await database.execute("UPDATE audit_state SET frontier = NULL")
    await database.execute("UPDATE audit_nodes SET hash = $1 WHERE level = 1", b"\x09" * 32)
    second = AuditLog(database=database, clock=ManualClock())
    with pytest.raises(StorageError, match="do not match the tree state"):
        await append(second, 6)
    assert (await kept(database))[0] == 6  # nothing appended
