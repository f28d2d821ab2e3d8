"""Twins: each key guard removed in-process, and the same check reports the violation.

The reliability tests against real servers assert that a check function in
`tests/reliability/checks.py` returns no violation. Each twin here runs the same
workload over HTTP against the app in-process (httpx over ASGI, SQLite), once with the
guard kept (no violation, so the workload is sound in-process too) and once with the
guard monkeypatched out (the check must report it), so no check passes vacuously.

| guard removed                                    | check                     |
|--------------------------------------------------|---------------------------|
| conditional fetch-count UPDATE always succeeds   | once_violations           |
| the `ok` data.read append is skipped             | read_violations (counts)  |
| lock_for_read decides on a stale consent snapshot| read_violations (revoked) |
| the write's record.put entry is not appended     | record_entry_violations   |
| erasure does not delete rows (ledger written)    | ledger_violations         |
| an acknowledged version is lost                  | acked_write_violations    |
| records stored without encryption                | canary_violations         |
| a success body off its declared schema           | schemathesis conformance  |
| the proof size check (a 500)                     | schemathesis server error |
| database driver errors known as failures (503)   | status_violations         |
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from audit.log import AuditLog
from audit.models import EntryDraft, StoredEntry
from consent.models import Consent, Status
from consent.repository import ConsentRepository
from consent.service import ConsentService
from tests.reliability import hygiene
from tests.reliability.checks import (
    Write,
    acked_write_violations,
    canary_violations,
    files_under,
    ledger_violations,
    once_violations,
    read_ledger,
    read_violations,
    record_entry_violations,
    seq_violations,
    status_violations,
)
from tests.reliability.fuzzing import Credentials, command, config_file, failures
from tests.reliability.inprocess import Local, local_platform, served
from tests.reliability.scenario import (
    audit_entries,
    income,
    nid_for,
    once_storm,
    put_record,
    read_storm,
    revoke_consent,
    setup_home,
    token,
)
from tests.reliability.stack import bearer as bearer_header
from vault import crypto
from vault.repository import VaultRepository

GUARD = pytest.mark.parametrize("guard", ["kept", "removed"])


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    async with local_platform(tmp_path) as platform:
        yield platform


# -- guards, removed --------------------------------------------------------------------


async def _unconditional_count_fetch(
    self: ConsentRepository, consent_id: str, now: int
) -> tuple[int, Status]:
    """The fetch count without its condition: every fetch 'succeeds'."""
    rows = await self.db.fetch(
        "UPDATE consents SET fetch_count = fetch_count + 1, updated_at = $1"
        " WHERE consent_id = $2 RETURNING fetch_count",
        now,
        consent_id,
    )
    return int(rows[0]["fetch_count"]), Status.ACTIVE


def remove_conditional_fetch_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ConsentRepository, "count_fetch", _unconditional_count_fetch)


def drop_from_units(
    monkeypatch: pytest.MonkeyPatch,
    dropped: Callable[[EntryDraft], bool],
    *,
    answer_a_seq: bool,
) -> None:
    """Units run and commit, but the drafts ``dropped`` selects are never appended.

    With ``answer_a_seq`` a unit that lost its last entry still answers with a seq (the
    next one, which is some other request's or nobody's), as a careless implementation
    that reserved a seq would.
    """
    run = AuditLog.run

    async def skipping_run(
        self: AuditLog, work: Any, **grouping: Any
    ) -> tuple[Any, list[StoredEntry]]:
        lost: list[EntryDraft] = []

        async def without() -> tuple[Any, list[EntryDraft]]:
            value, drafts = await work()
            lost.extend(d for d in drafts if dropped(d))
            return value, [d for d in drafts if not dropped(d)]

        value, entries = await run(self, without, **grouping)
        if lost and answer_a_seq:
            size = (await self.state()).size
            entries = [*entries, StoredEntry(seq=size, leaf=b"", leaf_hash=b"", entry={})]
        return value, entries

    monkeypatch.setattr(AuditLog, "run", skipping_run)


def skip_ok_read_appends(monkeypatch: pytest.MonkeyPatch) -> None:
    """The read unit answers with a seq, but its `ok` data.read entry is never written."""
    drop_from_units(
        monkeypatch, lambda d: d.action == "data.read" and d.outcome == "ok", answer_a_seq=True
    )


def serve_from_a_stale_consent_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """lock_for_read decides on the consent as first seen (a cache never invalidated)."""
    snapshots: dict[str, Consent | None] = {}
    in_read = contextvars.ContextVar("in_read", default=False)
    lock_for_read = ConsentService.lock_for_read
    get = ConsentRepository.get

    async def stale_lock_for_read(self: ConsentService, consent_id: str, **kw: Any) -> Any:
        marker = in_read.set(True)
        try:
            return await lock_for_read(self, consent_id, **kw)
        finally:
            in_read.reset(marker)

    async def stale_get(
        self: ConsentRepository, consent_id: str, *, lock: bool = False
    ) -> Consent | None:
        if not in_read.get():
            return await get(self, consent_id, lock=lock)
        if consent_id not in snapshots:
            snapshots[consent_id] = await get(self, consent_id, lock=lock)
        return snapshots[consent_id]

    monkeypatch.setattr(ConsentService, "lock_for_read", stale_lock_for_read)
    monkeypatch.setattr(ConsentRepository, "get", stale_get)


def skip_write_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The write unit stores the version, but its record.put entry is never written."""
    drop_from_units(monkeypatch, lambda d: d.action == "record.put", answer_a_seq=False)


def shred_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    async def keep_everything(self: VaultRepository, *_: Any) -> int:
        return 0

    monkeypatch.setattr(VaultRepository, "shred", keep_everything)


def store_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records sealed with an 'encryption' that is the identity."""
    monkeypatch.setattr(crypto, "seal", lambda _key, plaintext, _aad: b"\x00" + plaintext)
    monkeypatch.setattr(crypto, "open_", lambda _key, sealed, _aad: sealed[1:])


# -- twins ---------------------------------------------------------------------------------


@GUARD
async def test_twin_once_reads_without_the_conditional_update(
    local: Local, guard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = await setup_home(local.http, local, citizens=1)
    if guard == "removed":
        remove_conditional_fetch_count(monkeypatch)
    once = await once_storm(local.http, local, home, readers=50)
    violations = once_violations(once)
    if guard == "kept":
        assert violations == []
    else:
        assert any("successful reads of a once consent" in v for v in violations), violations
        assert sum(1 for r in once if r.status == 200) > 1


@GUARD
async def test_twin_reads_without_their_audit_entry(
    local: Local, guard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = await setup_home(local.http, local, citizens=2)
    if guard == "removed":
        skip_ok_read_appends(monkeypatch)
    reads = await read_storm(local.http, home, clients=4, reads_per_client=5)
    monkeypatch.undo()
    entries, _ = await audit_entries(local.http, local)
    violations = read_violations(reads, entries)
    if guard == "kept":
        assert violations == []
    else:
        assert any("ok data.read entries for 20 responses 200" in v for v in violations), violations


@pytest.mark.parametrize("guard", ["kept", "stale cache", "stale cache and unconditional count"])
async def test_twin_reads_after_a_revocation(
    local: Local, guard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = await setup_home(local.http, local, citizens=2)
    victim = home.nids[0]
    victim_consent = home.consent_of[victim]
    if guard != "kept":
        serve_from_a_stale_consent_cache(monkeypatch)
    if guard == "stale cache and unconditional count":
        remove_conditional_fetch_count(monkeypatch)
    reads = await read_storm(
        local.http,
        home,
        clients=8,
        reads_per_client=10,
        revoke=lambda: revoke_consent(local.http, local, victim, victim_consent),
        revoke_after=40,
    )
    monkeypatch.undo()
    entries, _ = await audit_entries(local.http, local)
    violations = read_violations(reads, entries)
    after = [r for r in reads if r.consent_id == victim_consent and r.status != 200]
    if guard == "kept":
        assert violations == []
        assert {r.code for r in after} == {"consent_revoked"}
    elif guard == "stale cache":
        # The conditional UPDATE (status = 'active') is a second guard: a stale decision
        # still serves nothing after the revocation; it only refuses with another code.
        assert violations == []
        assert after
        assert {r.code for r in after} == {"consent_exhausted"}
    else:
        assert any("after the revocation" in v for v in violations), violations


@GUARD
async def test_twin_record_without_its_write_entry(
    local: Local, guard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if guard == "removed":
        skip_write_entries(monkeypatch)
    nts = await token(local.http, local, "nts", scope="issuer")
    for n in range(3):
        put = await put_record(
            local.http, nts, "800101-1000001", "income_certificate", income("", n)
        )
        assert put.status_code == 201
    monkeypatch.undo()
    records = await local.database.fetch(
        "SELECT record_id, citizen_id, record_type, version FROM records"
    )
    violations = record_entry_violations(records, await local.entries())
    if guard == "kept":
        assert violations == []
    else:
        assert len(violations) == 3, violations


@GUARD
async def test_twin_erasure_that_leaves_rows(
    local: Local, guard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    nid = "800101-1000002"
    nts = await token(local.http, local, "nts", scope="issuer")
    assert (
        await put_record(local.http, nts, nid, "income_certificate", income(""))
    ).status_code == 201
    if guard == "removed":
        shred_nothing(monkeypatch)
    erased = await local.http.delete("/v1/me", headers=local.idp.headers(nid))
    assert erased.status_code == 200, erased.text
    monkeypatch.undo()
    records = await local.database.fetch("SELECT citizen_id, record_type, created_at FROM records")
    deks = await local.database.fetch("SELECT citizen_id, record_type, created_at FROM deks")
    indexed = [
        r["citizen_id"] for r in await local.database.fetch("SELECT citizen_id FROM citizen_index")
    ]
    ledger = read_ledger(local.kek_dir)
    assert len(ledger) == 1
    violations = ledger_violations(ledger, records, deks, indexed)
    if guard == "kept":
        assert violations == []
    else:
        assert any("record row(s) survive" in v for v in violations), violations
        assert any("DEK row(s) survive" in v for v in violations), violations


@GUARD
async def test_twin_an_acknowledged_write_lost(local: Local, guard: str) -> None:
    nid = "800101-1000003"
    nts = await token(local.http, local, "nts", scope="issuer")
    acked = []
    for n in range(3):
        put = await put_record(local.http, nts, nid, "income_certificate", income("", n))
        assert put.status_code == 201
        acked.append(Write(nid, "income_certificate", put.json()["version"], income("", n)))
    if guard == "removed":  # the last version never became durable
        await local.database.execute("DELETE FROM records WHERE version = 3")
        await local.database.execute("UPDATE records SET superseded_at = NULL WHERE version = 2")
    mine = await local.http.get("/v1/me/records/income_certificate", headers=local.idp.headers(nid))
    body = mine.json()
    found = {(nid, "income_certificate"): (body["version"], body["data"])}
    violations = acked_write_violations(acked, found)
    if guard == "kept":
        assert violations == []
    else:
        assert violations == ["acknowledged income_certificate v3 read back as v2"]


@GUARD
async def test_twin_records_stored_in_plaintext(
    local: Local, guard: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if guard == "removed":
        store_plaintext(monkeypatch)
    await hygiene.before_erasure(local.http, local)
    violations = canary_violations(hygiene.CANARIES, files_under(tmp_path))
    if guard == "kept":
        assert violations == []
    else:
        assert any("canary employer in plaintext" in v for v in violations), violations
        assert any("canary korean address in plaintext" in v for v in violations), violations


@GUARD
async def test_twin_audit_seqs_with_a_gap(local: Local, guard: str) -> None:
    """The concurrency bullet's seq check: answered seqs are unique and the log is
    0..N-1. Removed: one appended entry lost (its row deleted) is reported."""
    home = await setup_home(local.http, local, citizens=2)
    reads = await read_storm(local.http, home, clients=3, reads_per_client=4)
    answered = [r.seq for r in reads if r.status == 200]
    assert len(answered) == 12 and len(set(answered)) == 12, "X-Audit-Seq is unique"
    if guard == "removed":
        await local.database.execute("DELETE FROM audit_entries WHERE seq = $1", answered[5])
    size = (await local.runtime.audit.state()).size
    violations = seq_violations((await local.entries()).keys(), size)
    if guard == "kept":
        assert violations == []
    else:
        assert len(violations) == 1 and f"missing [{answered[5]}]" in violations[0], violations


@GUARD
async def test_twin_reads_past_the_rate_limit(
    local: Local, guard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rate-limit bullet's check (tests/reliability/test_rate_limits.py): past the
    limit a read is 429 rate_limited with Retry-After. Removed: no limit, reported."""
    from tests.reliability.test_rate_limits import Answer, refusal_violations  # noqa: PLC0415

    limiter = local.runtime.rate_limiter
    assert limiter is not None
    monkeypatch.setattr(limiter, "per_minute", 3 if guard == "kept" else 10**9)
    home = await setup_home(local.http, local, citizens=1)
    bearer = {"Authorization": f"Bearer {next(iter(home.tokens.values()))}"}
    answers = []
    for _ in range(6):
        response = await local.http.get("/v1/data", headers=bearer)
        answers.append(Answer(response.status_code, 0, dict(response.headers), response.content))
    violations = refusal_violations(answers[3:])
    if guard == "kept":
        assert [a.status for a in answers[:3]] == [200] * 3
        assert violations == []
    else:
        assert violations == ["200 instead of 429"] * 3


@GUARD
async def test_twin_reads_while_the_key_provider_is_down(
    local: Local, guard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key-provider bullet (DEK cache 0: a read while the provider is down is 503
    `kms_unavailable` and records nothing; `tests/integration/vault/test_transit_vault.py`
    shows it on a real OpenBao). Removed: the DEK cache ignores its TTL of 0 and keeps
    serving unwrapped keys, so reads succeed with the provider down; the check reports it."""
    from vault.errors import KeyProviderUnavailable  # noqa: PLC0415

    vault = local.runtime.vault
    assert vault is not None
    home = await setup_home(local.http, local, citizens=1)
    bearer = {"Authorization": f"Bearer {next(iter(home.tokens.values()))}"}
    monkeypatch.setattr(vault.cache, "ttl_ms", 0 if guard == "kept" else 3_600_000)
    assert (await local.http.get("/v1/data", headers=bearer)).status_code == 200  # warm

    async def down(*_: object, **__: object) -> list[bytes]:
        raise KeyProviderUnavailable("key provider unreachable")

    monkeypatch.setattr(local.runtime.keys, "unwrap", down)
    size = (await local.runtime.audit.state()).size
    answers = [await local.http.get("/v1/data", headers=bearer) for _ in range(3)]
    violations = [
        f"{a.status_code} {a.json().get('code')} while the key provider is down"
        for a in answers
        if (a.status_code, a.json().get("code")) != (503, "kms_unavailable")
    ]
    if (await local.runtime.audit.state()).size != size:
        violations.append("entries appended while the key provider is down")
    if guard == "kept":
        assert violations == []
        assert all("retry-after" in a.headers for a in answers)
    else:
        assert violations[:3] == ["200 None while the key provider is down"] * 3, violations


@GUARD
async def test_twin_hostile_json_without_the_strict_body_check(
    local: Local, guard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hostile-input bullet (tests/reliability/test_hostile_http.py): a body with a
    duplicated key is 400 and stores nothing. Removed: the strict JSON check
    (`api.bodies.check_json_body`) is skipped, the parser keeps the last value, the
    record is stored and the check reports both."""
    import api.bodies  # noqa: PLC0415

    if guard == "removed":
        monkeypatch.setattr(api.bodies, "check_json_body", lambda *_, **__: None)
    issuer = await token(local.http, local, "nts", scope="issuer")
    record = (
        b'{"subject": {"nid": "900101-1234567"}, "type": "income_certificate", "data":'
        b' {"year": 2025, "year": 2024, "total_income": 1, "tax_paid": 1, "employer": "E"}}'
    )
    response = await local.http.post(
        "/v1/records",
        content=record,
        headers={"Authorization": f"Bearer {issuer}", "Content-Type": "application/json"},
    )
    stored = await local.database.fetch("SELECT record_id FROM records")
    violations = []
    if response.status_code != 400:
        violations.append(f"{response.status_code} instead of 400")
    if stored:
        violations.append(f"{len(stored)} record(s) stored")
    if guard == "kept":
        assert violations == []
        assert response.json()["code"] == "malformed_request"
    else:
        assert violations == ["201 instead of 400", "1 record(s) stored"], violations


FUZZED = ("GET /v1/me/records", "GET /v1/audit/proofs/inclusion")


def serve_a_success_body_off_its_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record summary whose `version` is a string where the schema declares an integer
    (a handler that drifted from `api.responses`)."""
    from api.routes import citizens  # noqa: PLC0415

    summary = citizens._record
    monkeypatch.setattr(
        citizens,
        "_record",
        lambda meta: msgspec.structs.replace(summary(meta), version=str(meta.version)),
    )


def skip_the_proof_size_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inclusion proofs for a `tree_size` past the log's: the Merkle code looks up nodes
    that do not exist."""
    from api.routes import auditors  # noqa: PLC0415

    monkeypatch.setattr(auditors, "_check_size", lambda *_: None)


@pytest.mark.parametrize("guard", ["kept", "success body off its schema", "proof size check"])
async def test_twin_fuzzing_finds_server_errors_and_bodies_off_their_schema(
    local: Local, guard: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The fuzzing bullet (tests/reliability/test_fuzz.py): the same schemathesis run
    (config, checks, seed, report) over two operations of the app served in-process.
    Kept: no failure. Removed: the conformance check reports the off-schema body, and
    `not_a_server_error` the 500 of an unchecked proof size, each on its operation."""
    home = await setup_home(local.http, local, citizens=1)
    ((consent_id, bound),) = home.tokens.items()
    read = await local.http.get("/v1/data", headers=bearer_header(bound))
    assert read.status_code == 200
    credentials = Credentials(
        headers={
            "issuer": "Bearer " + await token(local.http, local, "nts", scope="issuer"),
            "consumer": "Bearer " + bound,
            "auditor": "Bearer " + await token(local.http, local, "bai"),
            "citizen": "Bearer " + local.idp.token(home.nids[0]),
            "citizen_b": "Bearer " + local.idp.token(nid_for(2, 7)),
        },
        consent_ids=[consent_id],
        seqs=[int(read.headers["x-audit-seq"])],
    )
    if guard == "success body off its schema":
        serve_a_success_body_off_its_schema(monkeypatch)
    elif guard == "proof size check":
        skip_the_proof_size_check(monkeypatch)
    junit = tmp_path / "junit.xml"
    async with served(local.app) as base_url:
        argv = command(base_url, config_file(credentials, tmp_path), junit, names=FUZZED)
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=600)
    tail = output.decode(errors="replace")[-3000:]
    assert re.search(r"Tested: 2\b", tail), tail
    found = failures(junit)
    if guard == "kept":
        assert found == {}, tail
        assert process.returncode == 0, tail
    elif guard == "success body off its schema":
        assert list(found) == ["GET /v1/me/records"], tail
        assert any("Response violates schema" in m for m in found["GET /v1/me/records"]), found
        assert process.returncode != 0
    else:
        operation = "GET /v1/audit/proofs/inclusion"
        assert list(found) == [operation], tail
        assert any("Server error" in m for m in found[operation]), found
        assert process.returncode != 0


@GUARD
async def test_twin_database_down_without_the_unavailable_answer(
    local: Local, guard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outage bullet's status check (tests/reliability/test_database_outage.py): with
    the database gone, answers are 503 with Retry-After, never 500. Every statement
    raises the driver's error for a terminated backend. Removed: the driver errors are no
    longer known as database failures (`api.errors.DATABASE_FAILURES` empty), and the
    check reports the 500s of a route whose statements run outside a group-committed
    unit (``/v1/events``: its token check). The consented read runs every statement in
    its unit, whose failure is a StorageError (503) with or without that list."""
    import asyncpg  # noqa: PLC0415

    import api.errors  # noqa: PLC0415
    from vault.storage import Database  # noqa: PLC0415

    home = await setup_home(local.http, local, citizens=1)
    bound = next(iter(home.tokens.values()))
    if guard == "removed":
        monkeypatch.setattr(api.errors, "DATABASE_FAILURES", ())

    async def terminated(self: Database, *_: Any) -> Any:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")

    monkeypatch.setattr(Database, "_run", terminated)
    answers = [
        await local.http.get(path, headers=bearer_header(bound))
        for path in ("/v1/data", "/v1/events") * 3
    ]
    monkeypatch.undo()
    statuses = [a.status_code for a in answers]
    violations = status_violations(statuses, frozenset({200, 201, 403, 503}))
    violations += [
        f"{a.status_code} without Retry-After"
        for a in answers
        if a.status_code == 503 and "retry-after" not in a.headers
    ]
    if guard == "kept":
        assert violations == []
        assert statuses == [503] * 6
        assert {a.json()["code"] for a in answers} == {"unavailable"}
    else:
        assert violations == ["3 x response 500"], violations
        assert statuses[::2] == [503] * 3  # the reads
    # Back up: the next read is served.
    assert (await local.http.get("/v1/data", headers=bearer_header(bound))).status_code == 200
