"""Life events: a newborn in a family-relations record suggests child allowance."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from api.runtime import Runtime
from consent.errors import ConsentNotFound, ConsentStateConflict
from consent.models import Status
from consent.service import ConsentService
from vault.clock import ManualClock
from vault.models import Subject
from vault.service import Actor, VaultService

COURT = Actor("client", "court")
CITIZEN = Actor("citizen", None)


def _family(clock: ManualClock, child_age_days: int) -> dict[str, object]:
    today = datetime.fromtimestamp(clock.now_ms() / 1000, tz=UTC).date()
    born = (today - timedelta(days=child_age_days)).isoformat()
    return {
        "name": "Hong Gildong",
        "birth_date": "1990-01-01",
        "marital_status": "married",
        "children": [{"name": "Hong Saebyeok", "birth_date": born}],
    }


async def _write(
    vault: VaultService, consents: ConsentService, citizen: str, data: dict[str, object]
) -> None:
    async def hook(version: int) -> list:  # type: ignore[type-arg]
        return await consents.after_record_stored(
            citizen_id=citizen, record_type="family_relations", data=data
        )

    await vault.put(
        citizen_id=citizen,
        record_type="family_relations",
        data=data,
        source="court",
        actor=COURT,
        client_id="court",
        on_stored=hook,
    )


async def test_newborn_creates_a_suggestion_accepted_in_one_click(
    vault: VaultService, consents: ConsentService, clock: ManualClock, runtime: Runtime
) -> None:
    citizen = await vault.resolve(Subject.parse({"nid": "9001011234567"}))
    await _write(vault, consents, citizen, _family(clock, child_age_days=20))
    suggestions = await consents.list_suggestions(citizen)
    assert [(s.rule, s.client_id, s.purpose, s.status) for s in suggestions] == [
        ("newborn_child_allowance", "bokjiro", "child_allowance", "open")
    ]
    # The suggested client learns nothing before acceptance.
    assert await consents.repo.list_for_client("bokjiro") == []
    leaves = [
        json.loads(bytes(r["leaf"]))
        for r in await runtime.database.fetch("SELECT leaf FROM audit_entries")
    ]
    assert all(e["client_id"] != "bokjiro" for e in leaves)
    # A second write with the same newborn does not duplicate the open suggestion.
    data = _family(clock, child_age_days=20)
    data["marital_status"] = "divorced"
    await _write(vault, consents, citizen, data)
    assert len(await consents.list_suggestions(citizen)) == 1

    with pytest.raises(ConsentNotFound):
        await consents.accept_suggestion(
            suggestions[0].suggestion_id, citizen_id="cit_other", actor=CITIZEN
        )
    consent = await consents.accept_suggestion(
        suggestions[0].suggestion_id, citizen_id=citizen, actor=CITIZEN
    )
    assert consent.status == Status.ACTIVE
    assert (consent.client_id, consent.purpose, consent.access) == (
        "bokjiro",
        "child_allowance",
        "standing",
    )
    assert [c.consent_id for c in await consents.repo.list_for_client("bokjiro")] == [
        consent.consent_id
    ]
    assert (await consents.list_suggestions(citizen))[0].status == "accepted"
    with pytest.raises(ConsentStateConflict):
        await consents.accept_suggestion(
            suggestions[0].suggestion_id, citizen_id=citizen, actor=CITIZEN
        )


async def test_older_children_suggest_nothing(
    vault: VaultService, consents: ConsentService, clock: ManualClock
) -> None:
    citizen = await vault.resolve(Subject.parse({"nid": "9001011234567"}))
    await _write(vault, consents, citizen, _family(clock, child_age_days=800))
    assert await consents.list_suggestions(citizen) == []
