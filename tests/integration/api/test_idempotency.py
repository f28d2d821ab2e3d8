"""Idempotency-Key storage and replay, on both engines (DESIGN section 10)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from api.idempotency import (
    IdempotencyInProgress,
    IdempotencyKeyReused,
    IdempotencyStore,
    InvalidIdempotencyKey,
    StoredResponse,
)
from vault import crypto
from vault.clock import ManualClock
from vault.errors import OncevaultError
from vault.storage import Database

PATH = "POST /v1/records"
BODY = b'{"subject":{"nid":"9001011234567"},"type":"income_certificate","data":{"year":2025}}'
KEY = "3f0c9b2e-6a51-4a43-9d7e-5f9b1c2a7e11"
#: The request digests' key (the runtime derives it from the platform's index key).
DIGEST_KEY = crypto.request_digest_key(bytes(range(32)))


class Producer:
    """A handler stand-in that counts its calls and answers a fresh record id each time."""

    def __init__(self, *, delay: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self.delay = delay
        self.fail = fail

    async def __call__(self) -> StoredResponse:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("handler failed")
        body = json.dumps(
            {"record_id": f"rec_{self.calls:04d}", "type": "income_certificate", "version": 1},
            separators=(",", ":"),
        ).encode()
        return StoredResponse(
            status=201,
            body=body,
            content_type="application/json",
            headers={"Location": f"/v1/records/rec_{self.calls:04d}", "X-Audit-Seq": "7"},
        )


@pytest.fixture
def store(database: Database, clock: ManualClock) -> IdempotencyStore:
    return IdempotencyStore(database, clock, digest_key=DIGEST_KEY)


@pytest.fixture
async def other(database: Database) -> AsyncIterator[Database]:
    """A second worker's handle on the same database."""
    twin = database.clone()
    await twin.start()
    try:
        yield twin
    finally:
        await twin.close()


async def _rows(database: Database) -> list[dict[str, object]]:
    return await database.fetch(
        "SELECT client_id, key, method_path, body_digest, status, response, content_type,"
        " headers, created_at FROM idempotency_keys ORDER BY client_id, key"
    )


# -- replay ---------------------------------------------------------------------------


async def test_same_key_same_body_replays_the_stored_response(store: IdempotencyStore) -> None:
    produce = Producer()
    first, replayed = await store.run("kbank", KEY, PATH, BODY, produce)
    assert not replayed
    assert first.status == 201
    again, replayed = await store.run("kbank", KEY, PATH, BODY, produce)
    assert replayed
    assert produce.calls == 1
    assert again.body == first.body  # byte-identical
    assert again.status == 201
    assert again.content_type == "application/json"
    assert dict(again.headers) == {"Location": "/v1/records/rec_0001", "X-Audit-Seq": "7"}
    assert await store.lookup("kbank", KEY, PATH, BODY) == again


async def test_only_a_digest_of_the_request_is_stored(
    database: Database, store: IdempotencyStore
) -> None:
    await store.run("kbank", KEY, PATH, BODY, Producer())
    [row] = await _rows(database)
    digest = bytes(row["body_digest"])  # type: ignore[arg-type]
    # Keyed: an unkeyed hash would let a copy of the database confirm a guessed nid.
    assert digest == crypto.request_digest(DIGEST_KEY, "kbank", PATH, BODY)
    assert digest != hashlib.sha256(BODY).digest()
    assert digest != crypto.request_digest(crypto.random_key(), "kbank", PATH, BODY)
    assert row["method_path"] == PATH
    assert row["status"] == 201
    stored = repr(row).encode()
    assert b"9001011234567" not in stored
    assert b"9001011234567" not in bytes(row["response"])  # type: ignore[arg-type]


async def test_without_a_key_every_request_runs(
    store: IdempotencyStore, database: Database
) -> None:
    produce = Producer()
    for _ in range(3):
        _, replayed = await store.run("kbank", None, PATH, BODY, produce)
        assert not replayed
    assert produce.calls == 3
    assert await _rows(database) == []


async def test_keys_are_per_client(store: IdempotencyStore) -> None:
    produce = Producer()
    mine, _ = await store.run("kbank", KEY, PATH, BODY, produce)
    theirs, replayed = await store.run("hana", KEY, PATH, b"{}", produce)
    assert not replayed
    assert produce.calls == 2
    assert theirs.body != mine.body


# -- misuse -----------------------------------------------------------------------------


async def test_different_body_is_a_validation_error(store: IdempotencyStore) -> None:
    produce = Producer()
    await store.run("kbank", KEY, PATH, BODY, produce)
    with pytest.raises(IdempotencyKeyReused) as caught:
        await store.run("kbank", KEY, PATH, BODY.replace(b"2025", b"2024"), produce)
    assert caught.value.code == "validation_error"
    assert str(caught.value) == "Idempotency-Key was used with a different request body"
    assert KEY not in str(caught.value)
    with pytest.raises(IdempotencyKeyReused):
        await store.lookup("kbank", KEY, PATH, b"")
    assert produce.calls == 1


async def test_different_path_is_a_validation_error(store: IdempotencyStore) -> None:
    produce = Producer()
    await store.run("kbank", KEY, PATH, BODY, produce)
    with pytest.raises(IdempotencyKeyReused) as caught:
        await store.run("kbank", KEY, "POST /v1/consent-requests", BODY, produce)
    assert caught.value.code == "validation_error"
    assert "different method or path" in str(caught.value)
    assert produce.calls == 1


# -- expiry -----------------------------------------------------------------------------


async def test_after_24_hours_the_key_is_new(
    database: Database, store: IdempotencyStore, clock: ManualClock
) -> None:
    produce = Producer()
    first, _ = await store.run("kbank", KEY, PATH, BODY, produce)
    clock.advance(days=1, ms=-1)
    _, replayed = await store.run("kbank", KEY, PATH, BODY, produce)
    assert replayed  # still within 24 h
    clock.advance(ms=1)
    assert await store.lookup("kbank", KEY, PATH, BODY) is None
    # Expired: ignored and replaced, even by another body.
    second, replayed = await store.run("kbank", KEY, PATH, b'{"other":1}', produce)
    assert not replayed
    assert produce.calls == 2
    assert second.body != first.body
    again, replayed = await store.run("kbank", KEY, PATH, b'{"other":1}', produce)
    assert replayed
    assert again.body == second.body
    [row] = await _rows(database)
    assert row["created_at"] == clock.now_ms()


async def test_expired_entries_are_purged(
    database: Database, store: IdempotencyStore, clock: ManualClock
) -> None:
    for i in range(3):
        await store.run("kbank", f"old-{i}", PATH, BODY, Producer())
    clock.advance(days=1, seconds=1)
    await store.run("kbank", "new", PATH, BODY, Producer())
    assert [row["key"] for row in await _rows(database)] == ["new"]


# -- failures and concurrency ----------------------------------------------------------


async def test_produce_raising_releases_the_claim(
    database: Database, store: IdempotencyStore
) -> None:
    failing = Producer(fail=True)
    with pytest.raises(RuntimeError, match="handler failed"):
        await store.run("kbank", KEY, PATH, BODY, failing)
    assert await _rows(database) == []
    assert await store.lookup("kbank", KEY, PATH, BODY) is None
    produce = Producer()
    response, replayed = await store.run("kbank", KEY, PATH, BODY, produce)
    assert not replayed
    assert produce.calls == 1
    assert response.status == 201


async def test_cancelled_produce_releases_the_claim(
    database: Database, store: IdempotencyStore
) -> None:
    slow = Producer(delay=30)
    task = asyncio.create_task(store.run("kbank", KEY, PATH, BODY, slow))
    while slow.calls == 0:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _rows(database) == []


async def test_the_same_body_of_two_clients_is_stored_under_two_digests(
    database: Database, store: IdempotencyStore
) -> None:
    await store.run("kbank", KEY, PATH, BODY, Producer())
    await store.run("nts", KEY, PATH, BODY, Producer())
    digests = {bytes(row["body_digest"]) for row in await _rows(database)}  # type: ignore[arg-type]
    assert len(digests) == 2


def test_a_store_needs_a_32_byte_digest_key(database: Database, clock: ManualClock) -> None:
    for bad in (b"", b"k" * 16, b"k" * 33):
        with pytest.raises(ValueError, match="32 bytes"):
            IdempotencyStore(database, clock, digest_key=bad)


async def test_concurrent_identical_requests_produce_once(
    database: Database, other: Database, clock: ManualClock
) -> None:
    """20 concurrent first requests over two workers: one runs the handler, 19 replay."""
    stores = [
        IdempotencyStore(database, clock, digest_key=DIGEST_KEY),
        IdempotencyStore(other, clock, digest_key=DIGEST_KEY),
    ]
    produce = Producer(delay=0.3)
    results = await asyncio.gather(
        *(stores[i % 2].run("kbank", KEY, PATH, BODY, produce) for i in range(20))
    )
    assert produce.calls == 1
    assert sorted(replayed for _, replayed in results) == [False] + [True] * 19
    assert len({response.body for response, _ in results}) == 1
    [row] = await _rows(database)
    assert row["status"] == 201


async def test_waiting_too_long_for_an_unfinished_request_is_in_progress(
    database: Database, clock: ManualClock
) -> None:
    patient = IdempotencyStore(database, clock, digest_key=DIGEST_KEY)
    impatient = IdempotencyStore(database, clock, digest_key=DIGEST_KEY, wait_seconds=0.2)
    slow = Producer(delay=1.5)
    first = asyncio.create_task(patient.run("kbank", KEY, PATH, BODY, slow))
    while slow.calls == 0:
        await asyncio.sleep(0.01)
    with pytest.raises(IdempotencyInProgress) as caught:
        await impatient.run("kbank", KEY, PATH, BODY, Producer())
    assert caught.value.code == "idempotency_in_progress"
    assert KEY not in str(caught.value)
    with pytest.raises(IdempotencyInProgress):
        await patient.lookup("kbank", KEY, PATH, BODY)
    # A different body is refused at once, even while the first is in progress.
    with pytest.raises(IdempotencyKeyReused):
        await impatient.run("kbank", KEY, PATH, b"{}", Producer())
    response, replayed = await first
    assert not replayed
    assert await patient.lookup("kbank", KEY, PATH, BODY) == response


async def test_an_abandoned_claim_is_taken_over_and_the_first_completion_wins(
    database: Database, clock: ManualClock
) -> None:
    store = IdempotencyStore(database, clock, digest_key=DIGEST_KEY, claim_lease_seconds=60)
    gate = asyncio.Event()
    calls: list[str] = []

    def producer(name: str) -> Callable[[], Awaitable[StoredResponse]]:
        async def produce() -> StoredResponse:
            calls.append(name)
            if name == "stuck":
                await gate.wait()
            return StoredResponse(201, name.encode(), "application/json", {})

        return produce

    stuck = asyncio.create_task(store.run("kbank", KEY, PATH, BODY, producer("stuck")))
    while not calls:
        await asyncio.sleep(0.01)
    clock.advance(seconds=61)  # the claim's lease has run out: its worker is presumed dead
    taken, replayed = await store.run("kbank", KEY, PATH, BODY, producer("taker"))
    assert not replayed
    assert taken.body == b"taker"
    gate.set()
    late, replayed = await stuck
    assert replayed  # it completed second: the first stored response is what it answers
    assert late.body == b"taker"
    assert calls == ["stuck", "taker"]


# -- lookup and save -----------------------------------------------------------------------


async def test_save_keeps_the_first_response(store: IdempotencyStore) -> None:
    assert await store.lookup("kbank", KEY, PATH, BODY) is None
    first = await store.save(
        "kbank",
        KEY,
        PATH,
        BODY,
        status=201,
        response_body=b'{"record_id":"rec_a","version":1}',
        content_type="application/json",
        headers={"Location": "/v1/records/rec_a"},
    )
    second = await store.save(
        "kbank",
        KEY,
        PATH,
        BODY,
        status=201,
        response_body=b'{"record_id":"rec_b","version":1}',
        content_type="application/json",
        headers={},
    )
    assert second == first
    assert await store.lookup("kbank", KEY, PATH, BODY) == first
    with pytest.raises(IdempotencyKeyReused):
        await store.save(
            "kbank",
            KEY,
            PATH,
            b"{}",
            status=201,
            response_body=b"{}",
            content_type="application/json",
            headers={},
        )


async def test_concurrent_saves_keep_one(
    database: Database, other: Database, clock: ManualClock
) -> None:
    stores = [
        IdempotencyStore(database, clock, digest_key=DIGEST_KEY),
        IdempotencyStore(other, clock, digest_key=DIGEST_KEY),
    ]
    saved = await asyncio.gather(
        *(
            stores[i % 2].save(
                "kbank",
                KEY,
                PATH,
                BODY,
                status=201,
                response_body=f'{{"n":{i}}}'.encode(),
                content_type="application/json",
                headers={},
            )
            for i in range(10)
        )
    )
    assert len({response.body for response in saved}) == 1


# -- key syntax -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "",
        "k" * 65,
        "키-값",
        "clé",
        "has space",
        " leading",
        "tab\there",
        "new\nline",
        "nul\x00",
        "del\x7f",
    ],
    ids=[
        "empty",
        "too-long",
        "hangul",
        "latin1",
        "space",
        "leading-space",
        "tab",
        "newline",
        "nul",
        "del",
    ],
)
async def test_bad_keys_are_refused_without_echo(
    database: Database, store: IdempotencyStore, key: str
) -> None:
    produce = Producer()
    with pytest.raises(InvalidIdempotencyKey) as caught:
        await store.run("kbank", key, PATH, BODY, produce)
    error = caught.value
    assert isinstance(error, OncevaultError)
    assert error.code == "validation_error"
    assert str(error) == "Idempotency-Key must be 1 to 64 visible ASCII characters"
    assert produce.calls == 0
    with pytest.raises(InvalidIdempotencyKey):
        await store.lookup("kbank", key, PATH, BODY)
    assert await _rows(database) == []


async def test_longest_and_odd_but_valid_keys_are_accepted(store: IdempotencyStore) -> None:
    for key in ("k" * 64, "a", "!#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"):
        IdempotencyStore.validate_key(key)
        _, replayed = await store.run("kbank", key, PATH, BODY, Producer())
        assert not replayed


async def test_the_upgrade_forgets_entries_stored_with_an_unkeyed_digest(
    database: Database,
) -> None:
    """api 0002: a database from before keyed digests loses its entries (a 24 h cache
    whose SHA-256 digests would let a copy of the database confirm a guessed body)."""
    from api.db import migrate  # noqa: PLC0415 - the runner, as `oncevault init` runs it
    from api.piccolo_migrations import api_2026_11_27t15_00_00_000000 as keyed  # noqa: PLC0415

    await database.execute(
        "INSERT INTO idempotency_keys (client_id, key, method_path, body_digest, status,"
        " response, content_type, headers, created_at)"
        " VALUES ($1, $2, $3, $4, 201, $5, 'application/json', '{}', 1)",
        "kbank",
        KEY,
        PATH,
        hashlib.sha256(BODY).digest(),
        b"{}",
    )
    await database.execute(
        "DELETE FROM migration WHERE app_name = 'api' AND name = $1", keyed.ID
    )  # the database as it was before the upgrade, with one legacy entry
    assert await migrate(database) == [f"api:{keyed.ID}"]
    assert await _rows(database) == []
