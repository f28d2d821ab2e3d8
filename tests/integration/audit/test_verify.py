"""`audit verify` finds every kind of tampering; checkpoints catch truncation and rollback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.runtime import Runtime
from audit import merkle
from audit.checkpoints import Checkpoint, RollbackDetected
from audit.repository import AuditRepository
from audit.verify import VerifyResult, export_lines, verify_database, verify_export
from tests.helpers.runtime import local_settings, open_runtime
from vault.clock import ManualClock
from vault.models import Subject
from vault.service import Actor
from vault.storage import Database

ISSUER = Actor("client", "nts", "req_1")


@pytest.fixture
async def populated(database: Database, tmp_path: Path) -> AsyncIterator[Runtime]:
    clock = ManualClock()
    runtime = await open_runtime(local_settings(tmp_path), database, clock)
    assert runtime.vault is not None and runtime.checkpointer is not None
    citizen = await runtime.vault.resolve(Subject.parse({"nid": "9001011234567"}))
    for i in range(12):
        clock.advance(ms=3)
        await runtime.vault.put(
            citizen_id=citizen,
            record_type="income_certificate",
            data={"i": i},
            source="nts",
            actor=ISSUER,
            client_id="nts",
        )
        if i in (5, 11):
            await runtime.checkpointer.make()
    try:
        yield runtime
    finally:
        await runtime.close(database=False)


async def _verify(runtime: Runtime, trusted: tuple[Checkpoint, ...] = ()) -> VerifyResult:
    return await verify_database(
        AuditRepository(runtime.database),
        jwks=runtime.jwks(),
        origin=runtime.settings.issuer,
        trusted=trusted,
    )


async def test_an_untouched_log_verifies(populated: Runtime) -> None:
    result = await _verify(populated)
    assert result.ok, result.message
    assert result.tree_size == 16  # 4 key entries from init + 12 writes
    assert result.message == "verified tree size 16"


async def _leaf(db: Database, seq: int) -> dict[str, object]:
    row = await db.fetchrow("SELECT leaf FROM audit_entries WHERE seq = $1", seq)
    assert row is not None
    value: dict[str, object] = json.loads(bytes(row["leaf"]))
    return value


async def test_modified_leaf_is_found(populated: Runtime) -> None:
    db = populated.database
    entry = await _leaf(db, 7)
    entry["outcome"] = "denied"
    await db.execute(
        "UPDATE audit_entries SET leaf = $1 WHERE seq = 7",
        json.dumps(entry, sort_keys=True, separators=(",", ":")).encode(),
    )
    result = await _verify(populated)
    assert not result.ok
    assert result.first_bad_seq == 7
    assert result.message.startswith("first bad seq 7")


async def test_modified_leaf_with_its_hash_is_found(populated: Runtime) -> None:
    db = populated.database
    entry = await _leaf(db, 9)
    entry["client_id"] = "kbank"
    leaf = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    await db.execute(
        "UPDATE audit_entries SET leaf = $1, leaf_hash = $2, client_id = 'kbank' WHERE seq = 9",
        leaf,
        merkle.leaf_hash(leaf),
    )
    result = await _verify(populated)
    assert result.first_bad_seq == 9, result.message


async def test_deleted_row_is_found(populated: Runtime) -> None:
    await populated.database.execute("DELETE FROM audit_entries WHERE seq = 4")
    result = await _verify(populated)
    assert result.first_bad_seq == 4, result.message


async def test_inserted_row_is_found(populated: Runtime) -> None:
    db = populated.database
    row = await db.fetchrow("SELECT * FROM audit_entries WHERE seq = 15")
    assert row is not None
    entry = json.loads(bytes(row["leaf"]))
    entry["seq"] = 16
    leaf = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    columns = dict(row, seq=16, leaf=leaf, leaf_hash=merkle.leaf_hash(leaf))
    marks = ", ".join(f"${i + 1}" for i in range(len(columns)))
    await db.execute(
        f"INSERT INTO audit_entries ({', '.join(columns)}) VALUES ({marks})", *columns.values()
    )
    result = await _verify(populated)
    assert result.first_bad_seq == 16, result.message


async def test_swapped_rows_are_found(populated: Runtime) -> None:
    db = populated.database
    a = await db.fetchrow("SELECT leaf, leaf_hash FROM audit_entries WHERE seq = 10")
    b = await db.fetchrow("SELECT leaf, leaf_hash FROM audit_entries WHERE seq = 11")
    assert a is not None and b is not None
    await db.execute(
        "UPDATE audit_entries SET leaf = $1, leaf_hash = $2 WHERE seq = 10",
        b["leaf"],
        b["leaf_hash"],
    )
    await db.execute(
        "UPDATE audit_entries SET leaf = $1, leaf_hash = $2 WHERE seq = 11",
        a["leaf"],
        a["leaf_hash"],
    )
    result = await _verify(populated)
    assert result.first_bad_seq == 10, result.message


async def test_edited_indexed_column_is_found(populated: Runtime) -> None:
    await populated.database.execute(
        "UPDATE audit_entries SET citizen_id = 'cit_other' WHERE seq = 12"
    )
    result = await _verify(populated)
    assert result.first_bad_seq == 12
    assert "citizen_id" in result.message


async def test_altered_checkpoint_is_found(populated: Runtime) -> None:
    db = populated.database
    first = await db.fetchrow(
        "SELECT tree_size FROM audit_checkpoints ORDER BY tree_size LIMIT 1 OFFSET 1"
    )
    assert first is not None
    size = int(first["tree_size"])
    await db.execute(
        "UPDATE audit_checkpoints SET root_hash = $1 WHERE tree_size = $2", b"\x00" * 32, size
    )
    result = await _verify(populated)
    assert result.bad_checkpoint == size
    assert result.message.startswith(f"bad checkpoint at size {size}")


async def test_truncation_needs_a_trusted_checkpoint(populated: Runtime) -> None:
    db = populated.database
    earlier = await populated.checkpointer.latest()  # type: ignore[union-attr]
    assert earlier is not None and earlier.tree_size == 16
    # An earlier export, as an auditor would have kept it.
    repo = AuditRepository(db)
    rows = [(int(r["seq"]), bytes(r["leaf"]), bytes(r["leaf_hash"])) for r in await repo.scan()]
    export = list(export_lines(rows, [earlier], populated.jwks()))
    assert verify_export(export).ok
    # Truncate the log and every checkpoint beyond the cut, and fix the tree state.
    await db.execute("DELETE FROM audit_entries WHERE seq >= 10")
    await db.execute("DELETE FROM audit_checkpoints WHERE tree_size > 10")
    await db.execute("DELETE FROM audit_nodes WHERE idx * (1 << level) + (1 << level) > 10")
    root = await populated.audit.root_at(10)
    await db.execute("UPDATE audit_state SET size = 10, root_hash = $1", root)
    alone = await _verify(populated)
    assert alone.ok, alone.message  # consistent on its own...
    trusted = Checkpoint.from_json(json.dumps(json.loads(export[-2])["checkpoint"]))
    caught = await _verify(populated, trusted=(trusted,))
    assert not caught.ok
    assert caught.bad_checkpoint == 16
    assert "truncated" in caught.message


async def test_rollback_is_detected_and_can_be_accepted(populated: Runtime) -> None:
    checkpointer = populated.checkpointer
    assert checkpointer is not None
    await checkpointer.make()
    await checkpointer.check_rollback()  # current database: fine
    # Restore "an older copy": drop the newest entries (as a restore would).
    db = populated.database
    await db.execute("DELETE FROM audit_entries WHERE seq >= 8")
    await db.execute("DELETE FROM audit_checkpoints WHERE tree_size > 8")
    await db.execute("DELETE FROM audit_nodes WHERE idx * (1 << level) + (1 << level) > 8")
    await db.execute(
        "UPDATE audit_state SET size = 8, root_hash = $1", await populated.audit.root_at(8)
    )
    # No cache to drop: the log's cached frontier is keyed by size and root.
    with pytest.raises(RollbackDetected, match=r"rollback: .* 8 entries .* 16"):
        await checkpointer.check_rollback()
    assert populated.vault is not None
    old, new = await checkpointer.accept_rollback(reapply=populated.vault.reapply_erasures)
    assert (old, new) == (16, 8)
    await checkpointer.check_rollback()
    assert (await _verify(populated)).ok
    entries = await db.fetch(
        "SELECT leaf FROM audit_entries WHERE action = 'log.rollback_accepted'"
    )
    assert json.loads(bytes(entries[0]["leaf"]))["reason_code"] == "size.16.to.8"
    evidence = [n for n in await _checkpoint_names(populated) if n.startswith("rollback-")]
    assert evidence


async def _checkpoint_names(runtime: Runtime) -> list[str]:
    return sorted(p.name for p in runtime.settings.kek_dir.rglob("*") if p.is_file())
