"""`VaultService.put_many` (the set-based path behind `POST /v1/records:batch`) against
`resolve` + `put` one by one, on both engines: the same versions, the same "created"
answers, the same latest content, one entry per record; requests that raced a
concurrent writer are left to the caller, with nothing stored for them."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.runtime import Runtime
from tests.conftest import ENGINES, runtime_on_its_own_loop
from tests.helpers.ids import ordered_head, ordered_ms
from vault import service as service_module
from vault.clock import ManualClock
from vault.errors import ConnectionLostBeforeCommit, DecryptionError
from vault.models import PutResult, StoredVersion, Subject
from vault.service import Actor, PutRequest, VaultService
from vault.storage import Database

ISSUER = Actor("client", "nts", "req_batch")
TYPES = ("income_certificate", "real_estate_title")
CONTENTS = ({"year": 2024}, {"year": 2025}, {"year": 2025, "note": "가"})
_salts = itertools.count(1)

#: (subject, type, content) indexes: few of each, so repeats and duplicates are common.
OPS = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from(TYPES), st.integers(0, len(CONTENTS) - 1)),
    max_size=12,
)


def subject(salt: int, index: int) -> Subject:
    return Subject.parse({"nid": f"{900101 + salt % 9:06d}-{salt * 10 + index:07d}"})


def request(salt: int, op: tuple[int, str, int]) -> PutRequest:
    who, record_type, content = op
    return PutRequest(subject(salt, who), record_type, CONTENTS[content], "nts")


async def one_by_one(
    vault: VaultService, salt: int, ops: list[tuple[int, str, int]]
) -> list[PutResult]:
    out = []
    for op in ops:
        r = request(salt, op)
        citizen = await vault.resolve(r.subject)
        out.append(
            await vault.put(
                citizen_id=citizen,
                record_type=r.record_type,
                data=r.data,
                source="nts",
                actor=ISSUER,
                client_id="nts",
            )
        )
    return out


async def latest(vault: VaultService, salt: int) -> dict[tuple[int, str], tuple[int, Any]]:
    """(subject, type) -> (version, data) of every latest version of this salt's citizens."""
    out = {}
    for who in range(4):
        citizen = await vault.lookup(subject(salt, who))
        if citizen is None:
            continue
        for meta in await vault.list_records(citizen):
            content, _ = await vault.read(
                citizen_id=citizen, record_type=meta.record_type, actor=ISSUER
            )
            out[(who, meta.record_type)] = (meta.version, content.data)
    return out


async def entries_since(database: Database, seq: int) -> list[tuple[str, str | None, int | None]]:
    rows = await database.fetch("SELECT leaf FROM audit_entries WHERE seq >= $1 ORDER BY seq", seq)
    out = []
    for row in rows:
        entry = json.loads(bytes(row["leaf"]))
        out.append((entry["action"], entry.get("record_type"), entry.get("record_version")))
    return out


async def compare(runtime: Runtime, prefix: list[Any], batch: list[Any]) -> None:
    vault = runtime.vault
    assert vault is not None
    database = runtime.database
    many, single = next(_salts), next(_salts)
    await one_by_one(vault, many, prefix)
    await one_by_one(vault, single, prefix)

    seq = (await runtime.audit.state()).size
    got = await vault.put_many([request(many, op) for op in batch], actor=ISSUER, client_id="nts")
    got_entries = await entries_since(database, seq)
    seq = (await runtime.audit.state()).size
    want = await one_by_one(vault, single, batch)
    want_entries = await entries_since(database, seq)

    assert all(r is not None for r in got)
    assert [(r.version, r.created) for r in got if r] == [(r.version, r.created) for r in want]
    assert await latest(vault, many) == await latest(vault, single)
    assert got_entries == want_entries  # one record.put per record, same versions
    # Exactly one live version per (citizen, type), all others superseded.
    rows = await database.fetch(
        "SELECT citizen_id, record_type, count(*) AS n FROM records"
        " WHERE superseded_at IS NULL GROUP BY citizen_id, record_type HAVING count(*) > 1"
    )
    assert rows == []


@pytest.mark.parametrize("engine", ENGINES)
def test_put_many_equals_resolve_and_put_one_by_one(engine: str) -> None:
    with runtime_on_its_own_loop(engine) as (loop, runtime):

        @settings(max_examples=40, deadline=None)
        @given(prefix=OPS, batch=OPS)
        def check(prefix: list[Any], batch: list[Any]) -> None:
            loop.run_until_complete(compare(runtime, prefix, batch))

        check()


async def test_a_batch_is_one_unit_with_one_entry_per_record(
    vault: VaultService, runtime: Runtime, database: Database
) -> None:
    announced: list[StoredVersion] = []

    async def on_stored(stored: Any) -> list[Any]:
        announced.extend(stored)
        return []

    before = runtime.audit.batches
    size = (await runtime.audit.state()).size
    results = await vault.put_many(
        [request(0, (i, "income_certificate", 0)) for i in range(4)]
        + [request(0, (0, "income_certificate", 1))],
        actor=ISSUER,
        client_id="nts",
        on_stored=on_stored,
    )
    assert [(r.version, r.created) for r in results if r] == [(1, True)] * 4 + [(2, True)]
    assert runtime.audit.batches == before + 1  # citizens, DEKs and records: one COMMIT
    assert (await runtime.audit.state()).size == size + 5
    assert [(s.record_type, s.version) for s in announced] == [("income_certificate", 1)] * 4 + [
        ("income_certificate", 2)
    ]
    stored = await database.fetch("SELECT superseded_at FROM records ORDER BY version")
    assert sum(1 for r in stored if r["superseded_at"] is None) == 4


async def test_deks_get_time_ordered_ids_and_records_and_citizens_random_ones(
    vault: VaultService, database: Database
) -> None:
    """DEK ids start with the millisecond of the vault's clock (sorted base32), so a
    batch appends at the right edge of their unique index; record ids (an issuer may
    get another writer's) and citizen ids do not carry a time."""
    clock = vault.clock
    assert isinstance(clock, ManualClock)
    clock.advance(ms=123_456)  # a time no random head is likely to spell
    now = clock.now_ms()
    results = await vault.put_many(
        [request(0, (i, "income_certificate", 0)) for i in range(3)], actor=ISSUER, client_id="nts"
    )
    assert all(isinstance(r, PutResult) for r in results)
    records = await database.fetch("SELECT record_id, dek_id, citizen_id FROM records")
    assert len(records) == 3
    assert [ordered_ms(row["dek_id"]) for row in records] == [now] * 3
    # Three random heads match the clock's time, or one another, with odds of ~2^-48.
    for column in ("record_id", "citizen_id"):
        values = [row[column] for row in records]
        assert all(ordered_ms(v) != now for v in values), column
        assert len({ordered_head(v) for v in values}) == 3, column


async def test_a_citizen_created_meanwhile_is_left_to_the_caller(
    vault: VaultService, runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer creates the same new citizen between the lookup and the unit: that
    request is not stored (None, no record, no entry); the others are."""
    racing = subject(7, 1)
    wrap = vault.keys.wrap

    async def wrap_while_another_writer_resolves(items: Any) -> list[str]:
        await vault.resolve(racing)  # commits the citizen before put_many's unit
        return await wrap(items)

    monkeypatch.setattr(vault.keys, "wrap", wrap_while_another_writer_resolves)
    size = (await runtime.audit.state()).size
    results = await vault.put_many(
        [request(7, (0, "income_certificate", 0)), request(7, (1, "income_certificate", 0))],
        actor=ISSUER,
        client_id="nts",
    )
    assert results[0] is not None and results[0].created
    assert results[1] is None
    winner = await vault.lookup(racing)
    assert winner is not None
    assert await vault.list_records(winner) == []
    assert (await runtime.audit.state()).size == size + 1
    orphans = await database.fetch(
        "SELECT d.dek_id FROM deks d LEFT JOIN citizens c ON c.citizen_id = d.citizen_id"
        " WHERE c.citizen_id IS NULL"
    )
    assert orphans == []


async def test_a_dek_erased_meanwhile_is_left_to_the_caller(
    vault: VaultService, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = request(8, (0, "income_certificate", 0))
    (stored,) = await vault.put_many([first], actor=ISSUER, client_id="nts")
    assert stored is not None
    wrap = vault.keys.wrap

    async def wrap_while_the_citizen_is_erased(items: Any) -> list[str]:
        await vault.erase(citizen_id=stored.citizen_id, types=None, actor=ISSUER)
        return await wrap(items)

    monkeypatch.setattr(vault.keys, "wrap", wrap_while_the_citizen_is_erased)
    size = (await runtime.audit.state()).size
    results = await vault.put_many(
        [request(8, (0, "income_certificate", 1)), request(8, (2, "income_certificate", 0))],
        actor=ISSUER,
        client_id="nts",
    )
    assert results[0] is None  # its DEK was shredded by the erasure
    assert results[1] is not None and results[1].created
    grown = (await runtime.audit.state()).size - size
    assert grown >= 2  # the erasure's entries and the one stored record's
    assert await vault.list_records(stored.citizen_id) == []


async def test_times_are_read_inside_the_unit(
    vault: VaultService, runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock moves while the key provider is called (before the unit): the stored
    versions, the superseded one and the new DEK carry the unit's time, so an erasure
    committed meanwhile (which shreds by `created_at`) never shreds them later."""
    clock = vault.clock
    assert isinstance(clock, ManualClock)
    (first,) = await vault.put_many(
        [request(9, (0, "income_certificate", 0))], actor=ISSUER, client_id="nts"
    )
    assert isinstance(first, PutResult)
    wrap = vault.keys.wrap
    before_unit = clock.now_ms()

    async def slow_wrap(items: Any) -> list[str]:
        clock.advance(seconds=5)
        return await wrap(items)

    monkeypatch.setattr(vault.keys, "wrap", slow_wrap)
    results = await vault.put_many(
        [request(9, (0, "income_certificate", 1)), request(9, (1, "income_certificate", 0))],
        actor=ISSUER,
        client_id="nts",
    )
    assert all(isinstance(r, PutResult) and r.created for r in results)
    unit_time = before_unit + 5000
    rows = await database.fetch(
        "SELECT record_id, created_at, superseded_at FROM records WHERE citizen_id IN ($1, $2)",
        first.citizen_id,
        results[1].citizen_id,  # type: ignore[union-attr]
    )
    by_id = {r["record_id"]: r for r in rows}
    assert by_id[first.record_id]["superseded_at"] == unit_time
    for result in results:
        assert by_id[result.record_id]["created_at"] == unit_time  # type: ignore[union-attr]
    dek = await database.fetchrow(
        "SELECT created_at FROM deks WHERE citizen_id = $1",
        results[1].citizen_id,  # type: ignore[union-attr]
    )
    assert dek is not None and dek["created_at"] == unit_time


async def test_a_citizen_erased_meanwhile_gets_no_record(
    vault: VaultService, runtime: Runtime, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure between the lookup and the unit, for a type the citizen had no DEK
    for: nothing is stored under the erased citizen's id (the item goes alone)."""
    (first,) = await vault.put_many(
        [request(10, (0, "income_certificate", 0))], actor=ISSUER, client_id="nts"
    )
    assert isinstance(first, PutResult)
    wrap = vault.keys.wrap

    async def wrap_while_the_citizen_is_erased(items: Any) -> list[str]:
        await vault.erase(citizen_id=first.citizen_id, types=None, actor=ISSUER)
        return await wrap(items)

    monkeypatch.setattr(vault.keys, "wrap", wrap_while_the_citizen_is_erased)
    (result,) = await vault.put_many(
        [request(10, (0, "real_estate_title", 0))], actor=ISSUER, client_id="nts"
    )
    assert result is None
    left = await database.fetch(
        "SELECT 1 FROM records WHERE citizen_id = $1 UNION ALL"
        " SELECT 1 FROM deks WHERE citizen_id = $1",
        first.citizen_id,
    )
    assert left == []


async def test_a_dek_that_does_not_unwrap_fails_its_records_only(
    vault: VaultService, runtime: Runtime, database: Database
) -> None:
    stored = await vault.put_many(
        [request(11, (i, "income_certificate", 0)) for i in range(3)],
        actor=ISSUER,
        client_id="nts",
    )
    assert all(isinstance(r, PutResult) for r in stored)
    broken = stored[1]
    assert isinstance(broken, PutResult)
    other = await database.fetchrow(
        "SELECT wrapped FROM deks WHERE citizen_id = $1",
        stored[0].citizen_id,  # type: ignore[union-attr]
    )
    assert other is not None
    # Another citizen's wrapped DEK: its AAD names another citizen, so it cannot unwrap.
    await database.execute(
        "UPDATE deks SET wrapped = $1, generation = generation + 1 WHERE citizen_id = $2",
        other["wrapped"],
        broken.citizen_id,
    )
    vault.cache.clear()
    size = (await runtime.audit.state()).size
    results = await vault.put_many(
        [request(11, (i, "income_certificate", 1)) for i in range(3)],
        actor=ISSUER,
        client_id="nts",
    )
    assert isinstance(results[1], DecryptionError)
    assert [(r.version, r.created) for r in (results[0], results[2])] == [(2, True), (2, True)]  # type: ignore[union-attr]
    assert (await runtime.audit.state()).size == size + 2


async def test_records_are_sealed_once_before_the_unit(
    vault: VaultService, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a concurrent writer, every record is sealed before the unit (which holds
    the write lock) and not again inside it; the ciphertexts open at their versions."""
    await one_by_one(vault, 12, [(0, "income_certificate", 0)])
    sealed: list[tuple[int, bool]] = []  # (version, inside a transaction)
    seal = service_module._seal_version

    def counting_seal(*args: Any, **kwargs: Any) -> Any:
        sealed.append((args[3], runtime.database.in_transaction()))
        return seal(*args, **kwargs)

    monkeypatch.setattr(service_module, "_seal_version", counting_seal)
    batch = [
        (0, "income_certificate", 1),
        (0, "income_certificate", 2),
        (1, "income_certificate", 0),
    ]
    results = await vault.put_many([request(12, op) for op in batch], actor=ISSUER, client_id="nts")
    assert [(r.version, r.created) for r in results if r] == [(2, True), (3, True), (1, True)]
    assert sealed == [(2, False), (3, False), (1, False)]  # each once, before the unit
    assert await latest(vault, 12) == {
        (0, "income_certificate"): (3, CONTENTS[2]),
        (1, "income_certificate"): (1, CONTENTS[0]),
    }


async def test_a_version_stored_meanwhile_is_sealed_again_at_its_new_version(
    vault: VaultService, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer stores a version between the seal-ahead and the unit: the batch's
    record becomes the next version after it, sealed again inside the unit (its AAD
    names the version it is stored at, so it reads back); a record whose version did
    not move keeps its ahead-sealed ciphertext."""
    await one_by_one(vault, 13, [(0, "income_certificate", 0), (1, "income_certificate", 0)])
    citizen = await vault.lookup(subject(13, 0))
    assert citizen is not None
    run = runtime.audit.run
    sealed_in_unit: list[tuple[str, int]] = []
    raced = False
    seal = service_module._seal_version

    def counting_seal(*args: Any, **kwargs: Any) -> Any:
        if raced and runtime.database.in_transaction():
            sealed_in_unit.append((args[1], args[3]))
        return seal(*args, **kwargs)

    async def run_after_another_writer(work: Any, **kwargs: Any) -> Any:
        nonlocal raced
        monkeypatch.setattr(runtime.audit, "run", run)
        await vault.put(
            citizen_id=citizen,
            record_type="income_certificate",
            data=CONTENTS[1],
            source="nts",
            actor=ISSUER,
            client_id="nts",
        )
        raced = True
        return await run(work, **kwargs)

    monkeypatch.setattr(service_module, "_seal_version", counting_seal)
    monkeypatch.setattr(runtime.audit, "run", run_after_another_writer)
    results = await vault.put_many(
        [request(13, (0, "income_certificate", 2)), request(13, (1, "income_certificate", 2))],
        actor=ISSUER,
        client_id="nts",
    )
    assert [(r.version, r.created) for r in results if r] == [(3, True), (2, True)]
    assert sealed_in_unit == [(citizen, 3)]  # planned at 2, stored at 3
    assert await latest(vault, 13) == {
        (0, "income_certificate"): (3, CONTENTS[2]),
        (1, "income_certificate"): (2, CONTENTS[2]),
    }


async def assert_read_back(vault: VaultService, batch: list[Any], results: Any) -> None:
    """Every stored version opens (its AAD names its row) with the content it was given,
    record ids are unique, and versions run 1..n per citizen and type."""
    assert all(isinstance(r, PutResult) and r.created for r in results)
    assert len({r.record_id for r in results}) == len(results)
    for op, result in zip(batch, results, strict=True):
        row = await vault.repo.version(result.citizen_id, result.record_type, result.version)
        assert row is not None and row.meta.record_id == result.record_id
        key = await vault.dek_for_read(result.citizen_id, result.record_type)
        assert key is not None
        content = vault.open_record(row, key[1])  # AAD: citizen, type, version, id
        assert (content.meta.version, content.data) == (result.version, CONTENTS[op[2]])
    assert sorted(r.version for r in results if r.citizen_id == results[0].citizen_id) == [1, 2]


def spy_seals(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Every record sealed from now on: (record id, sealed inside a transaction)."""
    seals: list[tuple[str, bool]] = []
    seal = service_module._seal_version

    def recording(*args: Any, **kwargs: Any) -> Any:
        sealed = seal(*args, **kwargs)
        seals.append((sealed.record_id, runtime.database.in_transaction()))
        return sealed

    monkeypatch.setattr(service_module, "_seal_version", recording)
    return seals


async def test_a_batch_run_again_after_a_lost_connection_reuses_its_sealed_records(
    vault: VaultService, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops before COMMIT: the log runs the batch again, and the unit's
    second run stores the same ahead-sealed ciphertexts under the same record ids (the
    first run's rows were rolled back)."""
    insert_records = vault.repo.insert_records
    dropped: list[int] = []

    async def drop_once(rows: Any) -> None:
        await insert_records(rows)
        if not dropped:
            dropped.append(len(rows))
            raise ConnectionLostBeforeCommit("database connection lost (test)")

    monkeypatch.setattr(vault.repo, "insert_records", drop_once)
    seals = spy_seals(runtime, monkeypatch)
    retried = runtime.audit.retried_batches
    batch = [(0, "income_certificate", 0), (0, "income_certificate", 1), (1, TYPES[1], 2)]
    results = await vault.put_many([request(14, op) for op in batch], actor=ISSUER, client_id="nts")
    assert dropped == [3] and runtime.audit.retried_batches == retried + 1
    await assert_read_back(vault, batch, results)
    # Sealed once, before the unit; both runs stored those very records.
    assert seals == [(r.record_id, False) for r in results]  # type: ignore[union-attr]


async def test_a_batch_run_again_with_savepoints_reuses_its_sealed_records(
    vault: VaultService, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another unit of the same batch raises: the batch runs again with a savepoint per
    unit, and the bulk unit's second run stores its ahead-sealed records correctly."""
    run = runtime.audit.run

    async def failing() -> Any:
        raise RuntimeError("another unit fails")

    async def run_beside_a_failing_unit(work: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(runtime.audit, "run", run)
        other = asyncio.ensure_future(run(failing))  # queued first: the same batch
        try:
            return await run(work, **kwargs)
        finally:
            with pytest.raises(RuntimeError, match="another unit fails"):
                await other

    monkeypatch.setattr(runtime.audit, "run", run_beside_a_failing_unit)
    seals = spy_seals(runtime, monkeypatch)
    reruns = runtime.audit.savepoint_reruns
    batch = [(0, "income_certificate", 0), (0, "income_certificate", 1), (1, TYPES[1], 2)]
    results = await vault.put_many([request(15, op) for op in batch], actor=ISSUER, client_id="nts")
    assert runtime.audit.savepoint_reruns == reruns + 1
    await assert_read_back(vault, batch, results)
    assert seals == [(r.record_id, False) for r in results]  # type: ignore[union-attr]
