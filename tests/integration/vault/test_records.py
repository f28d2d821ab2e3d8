"""Submit once, keyed digests, AAD binding, canaries, on both engines (local KEK)."""

from __future__ import annotations

import asyncio

import pytest

from api.runtime import Runtime
from tests.helpers.reads import alter_the_ciphertext
from vault.errors import DecryptionError, InvalidSubject, RecordNotFound
from vault.models import Subject
from vault.service import Actor, VaultService
from vault.storage import Database

ISSUER = Actor("client", "nts", "req_test")
CITIZEN = Actor("citizen", None)
CANARY_NID = "900101-1234567"
CANARY_VALUE = "CANARY-홍길동-7a3f9e"


async def _count(database: Database, sql: str, *args: object) -> int:
    row = await database.fetchrow(sql, *args)
    assert row is not None
    return int(next(iter(row.values())))


async def _put(
    vault: VaultService, citizen: str, data: dict[str, object], t: str = "income_certificate"
) -> tuple[int, bool]:
    result = await vault.put(
        citizen_id=citizen, record_type=t, data=data, source="nts", actor=ISSUER, client_id="nts"
    )
    return result.version, result.created


async def test_subject_parsing() -> None:
    assert Subject.parse({"nid": "900101-1234567"}).value == "9001011234567"
    assert Subject.parse({"ci": "abc+/="}).kind == "ci"
    assert "9001011234567" not in repr(Subject.parse({"nid": "9001011234567"}))
    for bad in (
        {},
        {"nid": "12"},
        {"nid": 9001011234567},
        {"ssn": "x"},
        {"nid": "1", "ci": "2"},
        [],
    ):
        with pytest.raises(InvalidSubject) as caught:
            Subject.parse(bad)
        assert "1234567" not in str(caught.value)


async def test_resolve_is_stable_and_lazy(vault: VaultService, database: Database) -> None:
    subject = Subject.parse({"nid": CANARY_NID})
    assert await vault.lookup(subject) is None
    first = await vault.resolve(subject)
    assert first.startswith("cit_") and len(first) == 30
    assert await vault.resolve(subject) == first
    assert await vault.resolve(Subject.parse({"ci": "Q0kxMjM="})) != first
    many = await asyncio.gather(
        *(vault.resolve(Subject.parse({"nid": "8001011234567"})) for _ in range(10))
    )
    assert len(set(many)) == 1
    assert await _count(database, "SELECT count(*) AS n FROM citizen_index") == 3


def _nid(n: int) -> Subject:
    return Subject.parse({"nid": f"80010{n:01d}1234567"})


def _ci(n: int) -> Subject:
    return Subject.parse({"ci": f"Q0kx{n}Mjk="})


async def test_a_ci_asserted_with_the_nid_names_the_same_citizen(
    vault: VaultService, database: Database
) -> None:
    """A citizen's IdP asserts the resident number and the CI together: both end up on
    one citizen, whichever was known first; two citizens already apart stay apart."""
    # The nid first (an agency issued a record), then a sign-in with both.
    by_nid = await vault.resolve(_nid(1))
    assert await vault.resolve(_nid(1), link=_ci(1)) == by_nid
    assert await vault.resolve(_ci(1)) == by_nid
    # The CI first (a private service asked), then a sign-in with both.
    by_ci = await vault.resolve(_ci(2))
    assert await vault.resolve(_nid(2), link=_ci(2)) == by_ci
    assert await vault.resolve(_nid(2)) == by_ci
    # Neither known: one new citizen with both.
    both = await vault.resolve(_nid(3), link=_ci(3))
    assert await vault.resolve(_ci(3)) == await vault.resolve(_nid(3)) == both
    assert len({by_nid, by_ci, both}) == 3
    # Apart already: the CI's citizen answers (the one such a sign-in reached before),
    # nothing is moved or merged, and operators get one entry a process about it.
    apart_nid, apart_ci = await vault.resolve(_nid(4)), await vault.resolve(_ci(4))
    size = (await vault.audit.state()).size
    assert await vault.resolve(_nid(4), link=_ci(4)) == apart_ci != apart_nid
    assert await vault.resolve(_nid(4), link=_ci(4)) == apart_ci
    assert await vault.resolve(_nid(4)) == apart_nid
    assert (await vault.audit.state()).size == size + 1
    told = await vault.audit.repo.entry(size)
    assert told is not None
    assert {k: told.entry[k] for k in ("action", "actor", "citizen_id", "outcome")} == {
        "action": "citizen.link_conflict",
        "actor": {"type": "system", "id": "identity-link"},
        "citizen_id": apart_ci,
        "outcome": "error",
    }
    # Two index rows a person (the pair kept apart: two citizens, one row each).
    assert await _count(database, "SELECT count(*) AS n FROM citizen_index") == 8
    assert await _count(database, "SELECT count(*) AS n FROM citizens") == 5
    # Concurrent first sign-ins with both identifiers make one citizen.
    many = await asyncio.gather(*(vault.resolve(_nid(5), link=_ci(5)) for _ in range(10)))
    assert len(set(many)) == 1
    assert await vault.resolve(_ci(5)) == many[0]


async def test_an_own_record_that_does_not_open_after_its_entry_leaves_an_error_entry(
    vault: VaultService, database: Database
) -> None:
    citizen = await vault.resolve(Subject.parse({"nid": CANARY_NID}))
    await _put(vault, citizen, {"year": 2025})
    await vault.read(citizen_id=citizen, record_type="income_certificate", actor=CITIZEN)
    await alter_the_ciphertext(database)
    size = (await vault.audit.state()).size
    with pytest.raises(DecryptionError) as caught:
        await vault.read(citizen_id=citizen, record_type="income_certificate", actor=CITIZEN)
    assert caught.value.audit_seq == size + 1
    released, error = [await vault.audit.repo.entry(seq) for seq in (size, size + 1)]
    assert released is not None and error is not None
    assert (released.entry["outcome"], error.entry["outcome"]) == ("ok", "error")
    assert (error.entry["reason_code"], error.entry["items"]) == ("decryption_failed", [])


async def test_first_requests_share_commits(vault: VaultService, database: Database) -> None:
    """New citizens and their first DEKs are created in group-committed units: twenty
    concurrent first writes to twenty new citizens share COMMITs (and stay distinct)."""
    before = vault.audit.batches
    citizens = await asyncio.gather(
        *(vault.resolve(Subject.parse({"nid": f"70010112345{i:02d}"})) for i in range(20))
    )
    assert len(set(citizens)) == 20
    assert vault.audit.batches - before < 20
    results = await asyncio.gather(
        *(_put(vault, citizen, {"year": 2024, "total_income": 1}) for citizen in citizens)
    )
    assert results == [(1, True)] * 20
    assert await _count(database, "SELECT count(*) AS n FROM deks") == 20
    assert await _count(database, "SELECT count(*) AS n FROM citizens") == 20


async def test_submit_once(vault: VaultService, database: Database) -> None:
    citizen = await vault.resolve(Subject.parse({"nid": CANARY_NID}))
    a = {"year": 2025, "total_income": 51_000_000, "employer": "ACME"}
    b = {"year": 2025, "total_income": 52_000_000, "employer": "ACME"}
    assert await _put(vault, citizen, a) == (1, True)
    # Key order does not matter: the digest is over JCS.
    assert await _put(vault, citizen, dict(reversed(list(a.items())))) == (1, False)
    assert await _count(database, "SELECT count(*) AS n FROM records") == 1
    assert await _put(vault, citizen, b) == (2, True)
    assert await _put(vault, citizen, a) == (3, True)
    assert await _count(database, "SELECT count(*) AS n FROM records") == 3
    assert (
        await _count(database, "SELECT count(*) AS n FROM records WHERE superseded_at IS NULL") == 1
    )
    content, seq = await vault.read(
        citizen_id=citizen, record_type="income_certificate", actor=CITIZEN
    )
    assert content.data == a
    assert content.meta.version == 3
    assert seq >= 0


async def test_twenty_concurrent_identical_submissions_make_one_version(
    vault: VaultService, database: Database
) -> None:
    citizen = await vault.resolve(Subject.parse({"nid": CANARY_NID}))
    data = {"year": 2024, "total_income": 1}
    results = await asyncio.gather(*(_put(vault, citizen, data) for _ in range(20)))
    assert sorted(results) == [(1, False)] * 19 + [(1, True)]
    assert await _count(database, "SELECT count(*) AS n FROM records") == 1
    assert await _count(database, "SELECT count(*) AS n FROM deks") == 1


async def test_same_content_two_citizens_different_digests(
    vault: VaultService, database: Database
) -> None:
    one = await vault.resolve(Subject.parse({"nid": "9001011234567"}))
    two = await vault.resolve(Subject.parse({"nid": "9001021234567"}))
    data = {"year": 2025, "total_income": 10}
    await _put(vault, one, data)
    await _put(vault, two, data)
    rows = await database.fetch("SELECT content_digest FROM records")
    assert len({bytes(r["content_digest"]) for r in rows}) == 2


@pytest.mark.parametrize("moved", ["citizen", "type", "version", "row"])
async def test_a_moved_ciphertext_does_not_decrypt(
    vault: VaultService, database: Database, moved: str
) -> None:
    one = await vault.resolve(Subject.parse({"nid": "9001011234567"}))
    two = await vault.resolve(Subject.parse({"nid": "9001021234567"}))
    await _put(vault, one, {"v": 1})
    await _put(vault, one, {"v": 2})
    await _put(vault, one, {"v": 1}, t="address")
    await _put(vault, two, {"v": 1})
    source_sql = (
        "SELECT ciphertext FROM records WHERE citizen_id = $1 AND record_type = $2 AND version = $3"
    )
    targets = {
        # (copy from, paste into) as (citizen, type, version)
        "citizen": ((one, "income_certificate", 2), (two, "income_certificate", 1)),
        "type": ((one, "income_certificate", 2), (one, "address", 1)),
        "version": ((one, "income_certificate", 1), (one, "income_certificate", 2)),
        "row": ((one, "income_certificate", 1), (one, "income_certificate", 2)),
    }
    (src, dst) = targets[moved]
    row = await database.fetchrow(source_sql, *src)
    assert row is not None
    if moved == "row":
        # Same citizen, type and version, another record id: swap the ids instead.
        await database.execute(
            "UPDATE records SET record_id = 'rec_forged' WHERE citizen_id = $1 AND record_type = $2 AND version = $3",
            *dst,
        )
    else:
        await database.execute(
            "UPDATE records SET ciphertext = $1 WHERE citizen_id = $2 AND record_type = $3 AND version = $4",
            row["ciphertext"],
            *dst,
        )
    with pytest.raises(DecryptionError) as caught:
        await vault.read(citizen_id=dst[0], record_type=dst[1], actor=CITIZEN)
    assert str(caught.value) == "decryption failed"


async def test_a_moved_wrapped_dek_does_not_unwrap(vault: VaultService, database: Database) -> None:
    one = await vault.resolve(Subject.parse({"nid": "9001011234567"}))
    two = await vault.resolve(Subject.parse({"nid": "9001021234567"}))
    await _put(vault, one, {"v": 1})
    await _put(vault, two, {"v": 2})
    vault.cache.clear()
    wrapped = await database.fetchrow("SELECT wrapped FROM deks WHERE citizen_id = $1", one)
    assert wrapped is not None
    await database.execute(
        "UPDATE deks SET wrapped = $1 WHERE citizen_id = $2", wrapped["wrapped"], two
    )
    with pytest.raises(DecryptionError):
        await vault.read(citizen_id=two, record_type="income_certificate", actor=CITIZEN)


async def test_read_of_a_missing_record(vault: VaultService) -> None:
    citizen = await vault.resolve(Subject.parse({"nid": CANARY_NID}))
    with pytest.raises(RecordNotFound):
        await vault.read(citizen_id=citizen, record_type="address", actor=CITIZEN)


async def test_no_canary_in_the_database(
    vault: VaultService, database: Database, runtime: Runtime
) -> None:
    citizen = await vault.resolve(Subject.parse({"nid": CANARY_NID}))
    await _put(vault, citizen, {"employer": CANARY_VALUE, "year": 2025})
    await _put(vault, citizen, {"employer": CANARY_VALUE + "-2", "year": 2025})
    canaries = [CANARY_NID, CANARY_NID.replace("-", ""), CANARY_VALUE, "홍길동"]
    if database.dialect == "sqlite":
        assert database.sqlite_path is not None
        blobs = b"".join(
            p.read_bytes()
            for p in database.sqlite_path.parent.glob(database.sqlite_path.name + "*")
        )
        for canary in canaries:
            assert canary.encode("utf-8") not in blobs, canary
    # Both engines: no column of any table holds a canary.
    tables = [
        r["name"]
        for r in await database.fetch(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            if database.dialect == "sqlite"
            else "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    ]
    for table in tables:
        for row in await database.fetch(f"SELECT * FROM {table}"):
            text = repr(row)
            for canary in canaries:
                assert canary not in text, (table, canary)
