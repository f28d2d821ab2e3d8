"""The consent lifecycle, receipts, expiry and catalogue narrowing, on both engines."""

from __future__ import annotations

import dataclasses
import json
from types import MappingProxyType

import pytest

from api.runtime import Runtime
from consent.errors import (
    ConsentExhausted,
    ConsentExpired,
    ConsentNotActive,
    ConsentNotFound,
    ConsentRevoked,
    ConsentStateConflict,
    ScopeNotConsented,
)
from consent.models import DAY_MS, Status
from consent.service import ConsentService
from policies import PolicyDenied
from tests.helpers.reads import consented_read
from vault import crypto
from vault.clock import ManualClock
from vault.service import Actor

BANK = Actor("client", "kbank", "req_bank")
CITIZEN = Actor("citizen", "cit_x")
MORTGAGE_ITEMS = [
    {"type": "income_certificate", "fields": ["year", "total_income"]},
    {"type": "real_estate_title", "fields": ["*"]},
]


async def _request(consents: ConsentService, citizen: str = "cit_aaaa", **kw: object) -> tuple:
    args: dict[str, object] = {
        "citizen_id": citizen,
        "client_id": "kbank",
        "purpose": "mortgage_screening",
        "items": MORTGAGE_ITEMS,
        "access": "standing",
        "valid_days": 30,
        "max_fetches": None,
        "case_reference": None,
        "actor": BANK,
    }
    args.update(kw)
    return await consents.request(**args)  # type: ignore[arg-type]


def _receipt_payload(runtime: Runtime, jws: str) -> dict[str, object]:
    assert runtime.keyring is not None
    _, payload = crypto.verify_jws(
        jws,
        keys=runtime.keyring.public_keys("rc"),
        typ="consent-receipt+jwt",
        allowed_kid_prefix="rc-",
    )
    return payload


async def test_request_approve_read_revoke(
    consents: ConsentService, runtime: Runtime, clock: ManualClock
) -> None:
    consent, created = await _request(consents)
    assert created and consent.status == Status.PENDING
    assert consent.consent_id.startswith("cns_")
    # "*" is expanded at creation to the explicit list.
    items = dict(consent.items)
    assert items["income_certificate"] == ("total_income", "year")
    assert "*" not in items["real_estate_title"] and items["real_estate_title"]
    again, created_again = await _request(consents)
    assert (again.consent_id, created_again) == (consent.consent_id, False)

    with pytest.raises(ConsentNotActive):
        raise (await consented_read(consents, consent.consent_id, client_id="kbank"))[0]  # type: ignore[misc]

    clock.advance(seconds=10)
    approved = await consents.approve(consent.consent_id, citizen_id="cit_aaaa", actor=CITIZEN)
    assert approved.status == Status.ACTIVE
    assert approved.valid_from == clock.now_ms()
    assert approved.valid_until == clock.now_ms() + 30 * DAY_MS
    receipt = await consents.receipt(consent.consent_id, citizen_id="cit_aaaa", version=None)
    payload = _receipt_payload(runtime, receipt.jws)
    assert (payload["status"], payload["version"], payload["consent_id"]) == (
        "active",
        1,
        consent.consent_id,
    )
    assert payload["policy_version"] == runtime.current_catalogue().version

    released, _ = await consented_read(consents, consent.consent_id, client_id="kbank")
    assert released == dict(consent.items)
    released, _ = await consented_read(
        consents, consent.consent_id, client_id="kbank", types=["income_certificate"]
    )
    assert released == {"income_certificate": ("total_income", "year")}
    denied, _ = await consented_read(
        consents, consent.consent_id, client_id="kbank", types=["bank_account"]
    )
    assert isinstance(denied, ScopeNotConsented)
    other, _ = await consented_read(consents, consent.consent_id, client_id="wetax")
    assert isinstance(other, ConsentNotFound)

    revoked = await consents.revoke(consent.consent_id, citizen_id="cit_aaaa", actor=CITIZEN)
    assert revoked.status == Status.REVOKED
    after, _ = await consented_read(consents, consent.consent_id, client_id="kbank")
    assert isinstance(after, ConsentRevoked)
    second = await consents.receipt(consent.consent_id, citizen_id="cit_aaaa", version=None)
    assert _receipt_payload(runtime, second.jws)["status"] == "revoked"
    assert second.version == 2
    first = await consents.receipt(consent.consent_id, citizen_id="cit_aaaa", version=1)
    assert _receipt_payload(runtime, first.jws)["status"] == "active"


async def test_wrong_state_and_wrong_citizen(consents: ConsentService) -> None:
    consent, _ = await _request(consents)
    with pytest.raises(ConsentStateConflict) as conflict:
        await consents.revoke(consent.consent_id, citizen_id="cit_aaaa", actor=CITIZEN)
    assert conflict.value.audit_seq is not None
    with pytest.raises(ConsentNotFound):
        await consents.approve(consent.consent_id, citizen_id="cit_other", actor=CITIZEN)
    await consents.reject(consent.consent_id, citizen_id="cit_aaaa", actor=CITIZEN)
    for transition in (consents.approve, consents.reject, consents.revoke):
        with pytest.raises(ConsentStateConflict):
            await transition(consent.consent_id, citizen_id="cit_aaaa", actor=CITIZEN)
    with pytest.raises(ConsentNotFound):
        await consents.get_for_client(
            consent.consent_id, client_id="wetax", actor=Actor("client", "wetax")
        )
    assert (
        await consents.get_for_client(consent.consent_id, client_id="kbank", actor=BANK)
    ).status == Status.REJECTED


async def test_policy_refusals_are_audited(consents: ConsentService, runtime: Runtime) -> None:
    with pytest.raises(PolicyDenied) as caught:
        await _request(consents, client_id="wetax")
    assert caught.value.code == "purpose_not_allowed"
    with pytest.raises(PolicyDenied) as caught:
        await _request(consents, items=[{"type": "family_relations", "fields": ["*"]}])
    assert caught.value.code == "items_not_allowed"
    with pytest.raises(PolicyDenied) as caught:
        await _request(consents, valid_days=3650)
    assert caught.value.code == "validation_error"
    rows = await runtime.database.fetch(
        "SELECT leaf FROM audit_entries WHERE action = 'consent.requested'"
    )
    reasons = [json.loads(bytes(r["leaf"]))["reason_code"] for r in rows]
    assert reasons == ["purpose_not_allowed", "items_not_allowed", "validation_error"]


async def test_statute_consent_is_active_at_creation(consents: ConsentService) -> None:
    consent, created = await consents.request(
        citizen_id="cit_aaaa",
        client_id="nts",
        purpose="income_tax_audit",
        items=[{"type": "income_certificate", "fields": ["*"]}],
        access="once",
        valid_days=30,
        max_fetches=None,
        case_reference="NTS-2026-00123",
        actor=Actor("client", "nts"),
    )
    assert created and consent.status == Status.ACTIVE
    assert consent.legal_basis == "statute"
    assert consent.case_reference == "NTS-2026-00123"
    listed = await consents.list_for_citizen("cit_aaaa")
    assert [c.case_reference for c in listed] == ["NTS-2026-00123"]
    with pytest.raises(PolicyDenied) as caught:
        await consents.request(
            citizen_id="cit_aaaa",
            client_id="nts",
            purpose="income_tax_audit",
            items=[{"type": "income_certificate", "fields": ["*"]}],
            access="once",
            valid_days=30,
            max_fetches=None,
            case_reference=None,
            actor=Actor("client", "nts"),
        )
    assert caught.value.code == "validation_error"


async def test_once_consent_allows_one_read(consents: ConsentService) -> None:
    consent, _ = await _request(consents, access="once")
    assert consent.max_fetches == 1
    await consents.approve(consent.consent_id, citizen_id="cit_aaaa", actor=CITIZEN)
    first, _ = await consented_read(consents, consent.consent_id, client_id="kbank")
    assert isinstance(first, dict)
    second, _ = await consented_read(consents, consent.consent_id, client_id="kbank")
    assert isinstance(second, ConsentExhausted)


async def test_expiry(consents: ConsentService, clock: ManualClock, runtime: Runtime) -> None:
    pending, _ = await _request(consents)
    clock.advance(days=7)
    assert (await consents.list_for_citizen("cit_aaaa"))[0].status == Status.EXPIRED
    # A new request after the pending one expired creates a new consent.
    fresh, created = await _request(consents)
    assert created and fresh.consent_id != pending.consent_id
    await consents.approve(fresh.consent_id, citizen_id="cit_aaaa", actor=CITIZEN)
    clock.advance(days=30)
    expired, _ = await consented_read(consents, fresh.consent_id, client_id="kbank")
    assert isinstance(expired, ConsentExpired)
    receipt = await consents.receipt(fresh.consent_id, citizen_id="cit_aaaa", version=None)
    assert _receipt_payload(runtime, receipt.jws)["status"] == "expired"
    assert await consents.expire_due() >= 0
    stored = await runtime.database.fetch("SELECT status FROM consents ORDER BY created_at")
    assert [r["status"] for r in stored] == ["expired", "expired"]


async def test_catalogue_narrowing_applies_at_once(
    consents: ConsentService, runtime: Runtime
) -> None:
    consent, _ = await _request(consents)
    await consents.approve(consent.consent_id, citizen_id="cit_aaaa", actor=CITIZEN)
    catalogue = runtime.current_catalogue()
    purpose = catalogue.purposes["mortgage_screening"]
    narrowed = dataclasses.replace(
        purpose, items=MappingProxyType({**purpose.items, "income_certificate": ("year",)})
    )
    runtime.catalogue = dataclasses.replace(
        catalogue, purposes=MappingProxyType({**catalogue.purposes, "mortgage_screening": narrowed})
    )
    released, _ = await consented_read(
        consents, consent.consent_id, client_id="kbank", types=["income_certificate"]
    )
    assert released == {"income_certificate": ("year",)}
    # A widening never adds fields to an existing consent.
    widened = dataclasses.replace(
        purpose,
        items=MappingProxyType(
            {**purpose.items, "income_certificate": ("employer", "total_income", "year")}
        ),
    )
    runtime.catalogue = dataclasses.replace(
        catalogue, purposes=MappingProxyType({**catalogue.purposes, "mortgage_screening": widened})
    )
    released, _ = await consented_read(
        consents, consent.consent_id, client_id="kbank", types=["income_certificate"]
    )
    assert released == {"income_certificate": ("total_income", "year")}
