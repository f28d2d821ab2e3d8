"""`RecordIntake.issue_many` (behind `POST /v1/records:batch`): how many batches one
process expands at once, and the weight a batch's unit carries in the group commit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from api.runtime import Runtime
from consent.intake import BATCHES_IN_FLIGHT, IssueRequest, RecordIntake
from vault.models import PutResult
from vault.service import Actor

ISSUER = Actor("client", "nts", "req_batches")
INCOME = {"year": 2024, "total_income": 41_000_000, "tax_paid": 3_100_000, "employer": "ACME"}


def batch(first: int, size: int) -> list[IssueRequest]:
    return [
        IssueRequest({"nid": f"900101{first + i:07d}"}, "income_certificate", INCOME)
        for i in range(size)
    ]


def intake_of(runtime: Runtime) -> RecordIntake:
    assert runtime.intake is not None
    return runtime.intake


@pytest.mark.parametrize("limit", [None, 1, 3])
async def test_at_most_the_limit_of_batches_expand_at_once_and_every_one_is_stored(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, limit: int | None
) -> None:
    """Six batches sent at once: never more than the limit (BATCHES_IN_FLIGHT, 2, by
    default) inside the whole expansion (checks, sealing, storing), and each of the
    others runs when one finishes (all six stored, in full)."""
    if limit is None:
        intake, limit = intake_of(runtime), BATCHES_IN_FLIGHT
    else:
        intake = RecordIntake(
            vault=intake_of(runtime).vault, consents=runtime.consents, batches_in_flight=limit
        )
    expand = intake._issue_many
    inside = 0
    most = 0
    full = asyncio.Event()

    async def counting(*args: Any) -> Any:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        if inside >= limit:
            full.set()
        try:
            # Hold the first callers until the gate is full, however slowly the others
            # arrive (no race with a busy machine), then a moment more: a caller a
            # broken gate let through would be inside now too.
            await asyncio.wait_for(full.wait(), timeout=10)
            await asyncio.sleep(0.01)
            return await expand(*args)
        finally:
            inside -= 1

    monkeypatch.setattr(intake, "_issue_many", counting)
    results = await asyncio.gather(
        *(
            intake.issue_many(client_id="nts", records=batch(100 * n, 3), actor=ISSUER)
            for n in range(6)
        )
    )
    assert BATCHES_IN_FLIGHT == 2
    assert most == limit
    assert [[(r.version, r.created) for r in rs if isinstance(r, PutResult)] for rs in results] == [
        [(1, True)] * 3
    ] * 6


async def test_a_failed_batch_frees_its_place(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that raises (here: the store fails) gives its place back: the next
    batches still run."""
    intake = RecordIntake(
        vault=intake_of(runtime).vault, consents=runtime.consents, batches_in_flight=1
    )
    assert runtime.vault is not None
    put_many = runtime.vault.put_many
    calls = 0

    async def fail_first(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("store failed (test)")
        return await put_many(*args, **kwargs)

    monkeypatch.setattr(runtime.vault, "put_many", fail_first)
    with pytest.raises(RuntimeError, match="store failed"):
        await intake.issue_many(client_id="nts", records=batch(700, 2), actor=ISSUER)
    results = await asyncio.wait_for(
        intake.issue_many(client_id="nts", records=batch(800, 2), actor=ISSUER), timeout=10
    )
    assert [r.created for r in results if isinstance(r, PutResult)] == [True, True]


async def test_a_batch_unit_weighs_its_record_count(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group commit counts a bulk unit as its records (a batch holds at most
    ``max_batch`` of weight), not as one unit."""
    run = runtime.audit.run
    weights: list[int] = []

    async def spy(work: Any, **kwargs: Any) -> Any:
        weights.append(kwargs.get("weight", 1))
        return await run(work, **kwargs)

    monkeypatch.setattr(runtime.audit, "run", spy)
    records: Sequence[IssueRequest] = batch(900, 7)
    results = await intake_of(runtime).issue_many(client_id="nts", records=records, actor=ISSUER)
    assert [type(r) for r in results] == [PutResult] * 7
    assert weights == [7]
