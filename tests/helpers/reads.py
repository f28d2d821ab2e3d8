"""A consent-checked read as one unit (what the HTTP read path does, minus records)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from audit.models import EntryDraft, Item
from consent.errors import ConsentError
from consent.service import ConsentService
from vault.models import Subject
from vault.service import Actor

if TYPE_CHECKING:
    from api.runtime import Runtime
    from vault.service import VaultService
    from vault.storage import Database

INCOME = "income_certificate"


async def citizen_with_consent(
    runtime: Runtime,
    n: int,
    *,
    max_fetches: int | None = None,
    valid_days: int = 30,
    data: Mapping[str, Any] | None = None,
    fields: Sequence[str] = ("year", "total_income"),
) -> str:
    """Citizen ``n`` with one income certificate (issued by ``nts``) and a standing
    ``mortgage_screening`` consent of ``kbank`` to ``fields``, approved; its id."""
    assert runtime.vault is not None and runtime.consents is not None
    citizen = await runtime.vault.resolve(Subject.parse({"nid": f"90010{n:08d}"}))
    await runtime.vault.put(
        citizen_id=citizen,
        record_type=INCOME,
        data=data or {"year": 2025, "total_income": 1000 + n, "employer": "E", "tax_paid": 1},
        source="nts",
        actor=Actor("client", "nts", "req_issue"),
        client_id="nts",
    )
    consent, _ = await runtime.consents.request(
        citizen_id=citizen,
        client_id="kbank",
        purpose="mortgage_screening",
        items=[{"type": INCOME, "fields": list(fields)}],
        access="standing",
        valid_days=valid_days,
        max_fetches=max_fetches,
        case_reference=None,
        actor=Actor("client", "kbank"),
    )
    await runtime.consents.approve(
        consent.consent_id, citizen_id=citizen, actor=Actor("citizen", citizen)
    )
    return consent.consent_id


async def consented_read(
    consents: ConsentService,
    consent_id: str,
    *,
    client_id: str,
    types: Sequence[str] | None = None,
) -> tuple[dict[str, tuple[str, ...]] | ConsentError, int]:
    """Lock, decide, count the fetch and append ``data.read``; return (released | error, seq)."""
    actor = Actor("client", client_id)

    async def work() -> tuple[object, list[EntryDraft]]:
        grant, drafts = await consents.lock_for_read(
            consent_id, client_id=client_id, types=types, actor=actor
        )
        if isinstance(grant, ConsentError):
            return grant, [*drafts, _read_entry(actor, consent_id, None, grant.code)]
        counted, more = await consents.count_fetch(grant, actor=actor)
        if isinstance(counted, ConsentError):
            return counted, [*drafts, _read_entry(actor, consent_id, None, counted.code)]
        items = tuple(Item(t, 1, f) for t, f in grant.released.items())
        entry = EntryDraft(
            action="data.read",
            actor_type="client",
            actor_id=client_id,
            citizen_id=grant.consent.citizen_id,
            client_id=client_id,
            consent_id=consent_id,
            purpose=grant.consent.purpose,
            items=items,
        )
        return grant.released, [*drafts, *more, entry]

    value, entries = await consents.audit.run(work)
    seq = entries[-1].seq
    return value, seq  # type: ignore[return-value]


def _read_entry(actor: Actor, consent_id: str, citizen_id: str | None, reason: str) -> EntryDraft:
    return EntryDraft(
        action="data.read",
        actor_type="client",
        actor_id=actor.id,
        outcome="denied",
        client_id=actor.id,
        consent_id=None if reason == "consent_not_found" else consent_id,
        citizen_id=citizen_id,
        items=(),
        reason_code=reason,
    )


async def citizen_with_cached_key(vault: VaultService, nid: str) -> str:
    """A citizen with one ``address`` record, read through ``vault`` so its DEK is in
    that process's DEK cache; its id."""
    citizen = await vault.resolve(Subject.parse({"nid": nid}))
    await vault.put(
        citizen_id=citizen,
        record_type="address",
        data={"line1": "Sejong-daero 1"},
        source="court",
        actor=Actor("client", "court"),
    )
    await vault.read(citizen_id=citizen, record_type="address", actor=Actor("citizen", None))
    return citizen


async def alter_the_ciphertext(database: Database) -> None:
    """Flip one bit of the database's one record ciphertext, as a writer with access to
    the database could: the row no longer opens (its GCM tag fails)."""
    (row,) = await database.fetch_values("SELECT record_id, ciphertext FROM records")
    ciphertext = bytes(row[1])
    altered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    async with database.transaction():
        await database.execute(
            "UPDATE records SET ciphertext = $1 WHERE record_id = $2", altered, row[0]
        )
