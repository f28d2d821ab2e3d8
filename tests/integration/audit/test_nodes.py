"""Stored subtree hashes, keyed by ``merkle.Node.position`` (audit migration 0003):
every node comes back by its position, in one statement or in chunks, and a row that
does not hold the node its position names is never handed out as that node."""

from __future__ import annotations

from collections.abc import Sequence

from audit import merkle
from audit.log import AuditLog
from audit.models import EntryDraft
from tests import independent_verifier as ref
from vault.clock import ManualClock
from vault.storage import IN_CHUNK, Database

SIZE = 700  # 1,393 complete subtrees: more than IN_CHUNK positions in one call


async def filled(database: Database) -> tuple[AuditLog, list[bytes]]:
    audit = AuditLog(database=database, clock=ManualClock())

    async def work(first: int) -> tuple[None, Sequence[EntryDraft]]:
        drafts = [
            EntryDraft(action="record.put", actor_type="client", actor_id=f"client{i}")
            for i in range(first, min(first + 97, SIZE))
        ]
        return None, drafts

    for first in range(0, SIZE, 97):  # batches that do not line up with subtrees
        await audit.run(lambda first=first: work(first), weight=97)
    rows = await database.fetch("SELECT leaf FROM audit_entries ORDER BY seq")
    return audit, [bytes(r["leaf"]) for r in rows]


def complete(size: int) -> list[merkle.Node]:
    return [
        merkle.Node(level, index)
        for level in range(size.bit_length())
        for index in range(size >> level)
    ]


async def test_every_node_comes_back_by_its_position(database: Database) -> None:
    audit, leaves = await filled(database)
    assert len(leaves) == SIZE
    nodes = complete(SIZE)
    assert len(nodes) > IN_CHUNK
    found = await audit.repo.nodes(nodes)
    assert set(found) == set(nodes)
    for node in nodes:
        assert found[node] == ref.root_from_leaves(leaves[node.start : node.end]), node
    rows = await database.fetch("SELECT pos, level, idx FROM audit_nodes")
    assert sorted(int(r["pos"]) for r in rows) == list(range(len(nodes)))
    for row in rows:
        assert int(row["pos"]) == merkle.Node(int(row["level"]), int(row["idx"])).position


async def test_a_row_holding_another_node_counts_as_missing(database: Database) -> None:
    audit, _ = await filled(database)
    target, neighbour = merkle.Node(3, 5), merkle.Node(0, 100)
    async with database.transaction():
        await database.execute("UPDATE audit_nodes SET level = 2 WHERE pos = $1", target.position)
    found = await audit.repo.nodes([target, neighbour])
    assert set(found) == {neighbour}
