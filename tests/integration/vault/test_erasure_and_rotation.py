"""Crypto-shredding, the ledger re-applied after a restore, and KEK rotation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from api.runtime import Runtime
from tests.helpers.runtime import local_settings, open_runtime
from vault import crypto
from vault.clock import ManualClock
from vault.errors import DecryptionError, RecordNotFound
from vault.keys import LocalKeyProvider, UnwrapRequest
from vault.models import Subject
from vault.service import Actor, VaultService
from vault.storage import Database

ISSUER = Actor("client", "court")
CITIZEN = Actor("citizen", None)


async def _seed(vault: VaultService) -> str:
    citizen = await vault.resolve(Subject.parse({"nid": "9001011234567"}))
    for t, data in (
        ("real_estate_title", {"parcel": "11-22", "owner_share": "1/1"}),
        ("sale_contract", {"price": 900_000_000}),
        ("address", {"line1": "Sejong-daero 1"}),
    ):
        await vault.put(citizen_id=citizen, record_type=t, data=data, source="court", actor=ISSUER)
    await vault.put(
        citizen_id=citizen,
        record_type="address",
        data={"line1": "Sejong-daero 2"},
        source="citizen",
        actor=CITIZEN,
    )
    return citizen


async def _entries(database: Database, action: str) -> list[dict[str, Any]]:
    rows = await database.fetch(
        "SELECT leaf FROM audit_entries WHERE action = $1 ORDER BY seq", action
    )
    return [json.loads(bytes(r["leaf"])) for r in rows]


async def _rows(database: Database, table: str, citizen: str) -> list[dict[str, Any]]:
    return await database.fetch(f"SELECT * FROM {table} WHERE citizen_id = $1", citizen)


async def test_erasure_shreds_everything_and_nothing_decrypts(
    vault: VaultService, database: Database, runtime: Runtime
) -> None:
    citizen = await _seed(vault)
    before_records = await _rows(database, "records", citizen)
    before_deks = await _rows(database, "deks", citizen)
    assert len(before_records) == 4 and len(before_deks) == 3

    result = await vault.erase(citizen_id=citizen, types=None, actor=CITIZEN)
    assert result.erased == ("address", "real_estate_title", "sale_contract")
    assert result.index_removed
    assert await _rows(database, "records", citizen) == []
    assert await _rows(database, "deks", citizen) == []
    assert await _rows(database, "citizen_index", citizen) == []
    assert await database.fetch("SELECT content_digest FROM records") == []

    # Every KEK version against every wrapped value left in the database: nothing opens
    # (the citizen's DEKs are gone; platform secrets are not the citizen's).
    keys = runtime.keys
    assert isinstance(keys, LocalKeyProvider)
    remaining = await database.fetch("SELECT wrapped FROM deks")
    assert remaining == []
    # The raw SQLite file (WAL included) no longer contains the shredded bytes.
    if database.dialect == "sqlite":
        assert database.sqlite_path is not None
        blob = b"".join(
            p.read_bytes()
            for p in database.sqlite_path.parent.glob(database.sqlite_path.name + "*")
        )
        for row in before_records:
            assert bytes(row["ciphertext"]) not in blob
        for row in before_deks:
            assert row["wrapped"].encode() not in blob
    # A copy of the wrapped DEKs taken before the erasure still opens only while the KEK
    # exists; the records themselves cannot be read through the service any more.
    with pytest.raises(RecordNotFound):
        await vault.read(citizen_id=citizen, record_type="address", actor=CITIZEN)
    # The erasure is in the ledger and in the audit log.
    ledger = await runtime.ledger.erasures()
    assert ledger[-1]["citizen_id"] == citizen
    erased = await _entries(database, "record.erased")
    assert sorted(e["record_type"] for e in erased) == [
        "address",
        "real_estate_title",
        "sale_contract",
    ]
    assert {e["citizen_id"] for e in erased} == {citizen}


@pytest.mark.parametrize("truncated", [True, False])
async def test_an_erasure_truncates_the_wal_and_says_when_it_could_not(
    vault: VaultService, database: Database, monkeypatch: pytest.MonkeyPatch, truncated: bool
) -> None:
    """Every erasure ends with a WAL truncation (twice at most while a reader keeps it
    busy: tests/integration/storage/test_sqlite_connections.py); when it fails the
    erasure stands and a warning without the citizen id says so."""
    citizen = await _seed(vault)
    attempts: list[int] = []

    async def truncate_wal(attempts_allowed: int = 2) -> bool:
        attempts.append(attempts_allowed)
        return truncated

    monkeypatch.setattr(database, "truncate_wal", truncate_wal)
    with structlog.testing.capture_logs() as logs:
        result = await vault.erase(citizen_id=citizen, types=None, actor=CITIZEN)
    assert result.index_removed
    assert attempts == [2]
    warnings = [e for e in logs if e["event"] == "erasure.wal_not_truncated"]
    if truncated:
        assert warnings == []
    else:
        assert warnings == [
            {"event": "erasure.wal_not_truncated", "log_level": "warning", "attempts": 2}
        ]
        assert citizen not in repr(logs)
    assert await _rows(database, "records", citizen) == []


async def test_partial_erasure_keeps_retained_types(
    vault: VaultService, database: Database
) -> None:
    citizen = await _seed(vault)
    result = await vault.erase(
        citizen_id=citizen, types=None, actor=CITIZEN, keep=("real_estate_title",)
    )
    assert result.erased == ("address", "sale_contract")
    assert not result.index_removed
    left = await _rows(database, "records", citizen)
    assert {r["record_type"] for r in left} == {"real_estate_title"}
    content, _ = await vault.read(
        citizen_id=citizen, record_type="real_estate_title", actor=CITIZEN
    )
    assert content.data["parcel"] == "11-22"
    assert await vault.lookup(Subject.parse({"nid": "9001011234567"})) == citizen


async def test_resubmission_after_erasure_uses_a_new_dek(
    vault: VaultService, database: Database, clock: ManualClock
) -> None:
    citizen = await _seed(vault)
    old_dek = (await _rows(database, "deks", citizen))[0]["dek_id"]
    await vault.erase(citizen_id=citizen, types=["sale_contract"], actor=CITIZEN)
    clock.advance(ms=5)
    again = await vault.put(
        citizen_id=citizen,
        record_type="sale_contract",
        data={"price": 1},
        source="court",
        actor=ISSUER,
    )
    assert again.created and again.version == 1
    deks = await database.fetch(
        "SELECT dek_id FROM deks WHERE citizen_id = $1 AND record_type = 'sale_contract'", citizen
    )
    assert [r["dek_id"] for r in deks] != [old_dek]
    assert len(deks) == 1


async def test_restored_copy_is_shredded_again_at_startup(
    vault: VaultService, database: Database, runtime: Runtime, clock: ManualClock, tmp_path: Path
) -> None:
    """A database restored from before an erasure: the ledger re-applies it."""
    citizen = await _seed(vault)
    snapshot = {t: await _rows(database, t, citizen) for t in ("records", "deks", "citizen_index")}
    clock.advance(ms=10)
    await vault.erase(citizen_id=citizen, types=None, actor=CITIZEN)
    clock.advance(ms=10)
    # Someone else's later record must survive the re-application.
    other = await vault.resolve(Subject.parse({"nid": "8001011234567"}))
    await vault.put(
        citizen_id=other, record_type="address", data={"x": 1}, source="citizen", actor=CITIZEN
    )

    # "Restore": put the old rows back, as a backup from before the erasure would.
    for table, rows in snapshot.items():
        for row in rows:
            columns = list(row)
            marks = ", ".join(f"${i + 1}" for i in range(len(columns)))
            await database.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", *row.values()
            )
    assert len(await _rows(database, "records", citizen)) == 4

    # A fresh process starts: the ledger (outside the database) is re-applied.
    fresh = await open_runtime(local_settings(tmp_path), database, clock)
    try:
        assert fresh.vault is not None
        assert await fresh.vault.reapply_erasures() == 1
        assert await _rows(database, "records", citizen) == []
        assert await _rows(database, "deks", citizen) == []
        assert await _rows(database, "citizen_index", citizen) == []
        assert len(await _rows(database, "records", other)) == 1
        reapplied = await _entries(database, "erasure.reapplied")
        assert len(reapplied) == 3
        assert {e["actor"]["type"] for e in reapplied} == {"system"}
        assert await fresh.vault.reapply_erasures() == 0  # idempotent
    finally:
        await fresh.close(database=False)


async def test_kek_rotation_keeps_records_readable(
    vault: VaultService, database: Database, runtime: Runtime
) -> None:
    citizen = await _seed(vault)
    before, _ = await vault.read(citizen_id=citizen, record_type="address", actor=CITIZEN)
    version, count, retired = await vault.rotate_kek(actor=Actor("operator", "cli"))
    assert version == 2
    assert count == 3 + 4  # three DEKs, the index key and three signing keys
    assert retired == [1]
    keys = runtime.keys
    assert isinstance(keys, LocalKeyProvider)
    assert sorted(p.name for p in keys.kek_dir.glob("kek.*")) == ["kek.2"]
    for table in ("deks", "signing_keys", "platform_secrets"):
        versions = {
            int(r["kek_version"]) for r in await database.fetch(f"SELECT kek_version FROM {table}")
        }
        assert versions == {2}, table
        for row in await database.fetch(f"SELECT wrapped FROM {table}"):
            assert row["wrapped"].startswith("local:v2:")
    vault.cache.clear()
    after, _ = await vault.read(citizen_id=citizen, record_type="address", actor=CITIZEN)
    assert after.data == before.data
    # A value wrapped under the removed version no longer opens.
    with pytest.raises(DecryptionError):
        await keys.unwrap(
            [UnwrapRequest(citizen, "local:v1:" + crypto.b64url_encode(b"x" * 60), b"")]
        )
    rotated = await _entries(database, "key.rotated")
    assert [e["reason_code"] for e in rotated] == ["kek.v2"]
