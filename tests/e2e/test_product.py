"""The HTTP product in-process, on both engines: issuers, consumers, citizens, every error code."""

from __future__ import annotations

import dataclasses
import json
from types import MappingProxyType
from typing import Any

import pytest

from tests.e2e.conftest import Platform
from tests.helpers.clients import TestClient
from tests.helpers.home import BUYER_NID, CONTRACT, INCOME, MORTGAGE_ITEMS, TITLE
from vault.errors import KeyProviderUnavailable


@pytest.fixture
async def home(platform: Platform) -> Platform:
    await platform.register(TestClient("court", roles=("issuer",)))
    await platform.register(TestClient("wetax", roles=("consumer",)))
    return platform


async def _issue(
    p: Platform, client: str, record_type: str, data: dict[str, Any], nid: str = BUYER_NID
) -> Any:
    token = await p.token(client, scope="issuer")
    return await p.http.post(
        "/v1/records",
        json={"subject": {"nid": nid}, "type": record_type, "data": data},
        headers={"Authorization": f"Bearer {token}"},
    )


async def _request_consent(p: Platform, client: str = "kbank", **body: Any) -> Any:
    token = await p.token(client, scope="consumer")
    payload = {
        "subject": {"nid": BUYER_NID},
        "purpose": "mortgage_screening",
        "items": MORTGAGE_ITEMS,
        "access": "standing",
        "valid_days": 30,
        **body,
    }
    return await p.http.post(
        "/v1/consent-requests", json=payload, headers={"Authorization": f"Bearer {token}"}
    )


async def _approved(p: Platform, **body: Any) -> str:
    created = await _request_consent(p, **body)
    assert created.status_code in (200, 201), created.text
    consent_id = str(created.json()["consent_id"])
    approved = await p.http.post(
        f"/v1/me/consents/{consent_id}/approve", headers=p.citizen(BUYER_NID)
    )
    assert approved.status_code == 200, approved.text
    return consent_id


async def _read(p: Platform, consent_id: str, path: str = "/v1/data", client: str = "kbank") -> Any:
    token = await p.token(client, scope="consumer", consent_id=consent_id)
    return await p.http.get(path, headers={"Authorization": f"Bearer {token}"})


async def _entry(p: Platform, seq: int) -> dict[str, Any]:
    row = await p.runtime.database.fetchrow("SELECT leaf FROM audit_entries WHERE seq = $1", seq)
    assert row is not None
    return json.loads(bytes(row["leaf"]))  # type: ignore[no-any-return]


async def test_home_purchase_flow(home: Platform) -> None:
    p = home
    for record_type, data in (("real_estate_title", TITLE), ("sale_contract", CONTRACT)):
        first = await _issue(p, "court", record_type, data)
        assert first.status_code == 201, first.text
        assert first.json()["version"] == 1
        again = await _issue(p, "court", record_type, data)
        assert (again.status_code, again.json()) == (200, first.json())
    assert (await _issue(p, "nts", "income_certificate", INCOME)).status_code == 201

    created = await _request_consent(p)
    assert created.status_code == 201
    assert created.json()["status"] == "pending"
    duplicate = await _request_consent(p)
    assert (duplicate.status_code, duplicate.json()["consent_id"]) == (
        200,
        created.json()["consent_id"],
    )
    consent_id = created.json()["consent_id"]

    pending = (
        await p.http.get("/v1/me/consents?status=pending", headers=p.citizen(BUYER_NID))
    ).json()["consents"]
    assert [(c["consent_id"], c["client_name"], c["purpose_title"]) for c in pending] == [
        (consent_id, "KBANK", "Mortgage loan screening")
    ]
    approved = await p.http.post(
        f"/v1/me/consents/{consent_id}/approve", headers=p.citizen(BUYER_NID)
    )
    assert approved.json()["status"] == "active"

    read = await _read(p, consent_id)
    assert read.status_code == 200, read.text
    body = read.json()
    assert body["consent_id"] == consent_id
    items = {item["type"]: item for item in body["items"]}
    assert items["income_certificate"]["data"] == {"year": 2025, "total_income": 86_400_000}
    assert items["real_estate_title"]["data"] == {
        k: TITLE[k] for k in ("unique_number", "address", "area_m2")
    }
    assert items["real_estate_title"]["source"] == "court"
    assert "sale_contract" not in items
    entry = await _entry(p, int(read.headers["x-audit-seq"]))
    assert (entry["action"], entry["outcome"], entry["client_id"]) == ("data.read", "ok", "kbank")
    assert entry["items"] == [
        {"type": "income_certificate", "version": 1, "fields": ["total_income", "year"]},
        {
            "type": "real_estate_title",
            "version": 1,
            "fields": ["address", "area_m2", "unique_number"],
        },
    ]
    one = await _read(p, consent_id, "/v1/data/income_certificate")
    assert one.json()["data"] == {"year": 2025, "total_income": 86_400_000}
    assert (await _entry(p, int(one.headers["x-audit-seq"])))["record_type"] == "income_certificate"

    mine = await p.http.get("/v1/me/records/income_certificate", headers=p.citizen(BUYER_NID))
    assert mine.json()["data"] == INCOME
    own = await _entry(p, int(mine.headers["x-audit-seq"]))
    assert (own["action"], own["actor"]["type"]) == ("data.read", "citizen")

    summary = (await p.http.get("/v1/me", headers=p.citizen(BUYER_NID))).json()
    assert sorted(r["type"] for r in summary["records"]) == [
        "income_certificate",
        "real_estate_title",
        "sale_contract",
    ]
    assert all("data" not in r for r in summary["records"])

    revoked = await p.http.post(
        f"/v1/me/consents/{consent_id}/revoke", headers=p.citizen(BUYER_NID)
    )
    assert revoked.json()["status"] == "revoked"
    refused = await p.http.get(
        "/v1/data", headers={"Authorization": read.request.headers["authorization"]}
    )
    assert (refused.status_code, refused.json()["code"]) == (403, "consent_revoked")
    assert "x-audit-seq" in refused.headers
    receipt = (
        await p.http.get(f"/v1/me/consents/{consent_id}/receipt", headers=p.citizen(BUYER_NID))
    ).json()
    assert receipt["version"] == 2
    old = (
        await p.http.get(
            f"/v1/me/consents/{consent_id}/receipt?version=1", headers=p.citizen(BUYER_NID)
        )
    ).json()
    assert old["version"] == 1


async def test_error_codes(home: Platform) -> None:
    p = home
    # 403 type_not_issuable, audited
    refused = await _issue(p, "nts", "real_estate_title", TITLE)
    assert (refused.status_code, refused.json()["code"]) == (403, "type_not_issuable")
    # 403 forbidden: role not held
    token = await p.token("kbank")
    forbidden = await p.http.post(
        "/v1/records",
        json={"subject": {"nid": BUYER_NID}, "type": "address", "data": {}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, "forbidden")
    # 422 validation_error naming the field, never echoing the value
    bad = dict(INCOME, total_income="CANARY-9999")
    invalid = await _issue(p, "nts", "income_certificate", bad)
    assert (invalid.status_code, invalid.json()["code"]) == (422, "validation_error")
    assert "total_income" in invalid.json()["detail"] and "CANARY" not in invalid.text
    bad_subject = await _issue(p, "nts", "income_certificate", INCOME, nid="12-CANARY")
    assert (bad_subject.status_code, bad_subject.json()["code"]) == (422, "validation_error")
    assert "CANARY" not in bad_subject.text
    # 403 not_self_asserted / 201 self-asserted
    citizen = p.citizen(BUYER_NID)
    not_self = await p.http.put(
        "/v1/me/records/income_certificate", json={"data": INCOME}, headers=citizen
    )
    assert (not_self.status_code, not_self.json()["code"]) == (403, "not_self_asserted")
    address = {"road_address": "세종대로 1", "detail": "101호", "postal_code": "04524"}
    assert (
        await p.http.put("/v1/me/records/address", json={"data": address}, headers=citizen)
    ).status_code == 201
    assert (
        await p.http.put("/v1/me/records/address", json={"data": address}, headers=citizen)
    ).status_code == 200
    # 403 purpose_not_allowed / items_not_allowed: one denied entry each, the answer's
    size = (await p.runtime.audit.state()).size
    wrong_client = await _request_consent(p, client="wetax")
    assert (wrong_client.status_code, wrong_client.json()["code"]) == (403, "purpose_not_allowed")
    wrong_items = await _request_consent(
        p, items=[{"type": "family_relations", "fields": ["name"]}]
    )
    assert (wrong_items.status_code, wrong_items.json()["code"]) == (403, "items_not_allowed")
    # Each request also took a token (token.issued): two entries a refusal, no more.
    assert (await p.runtime.audit.state()).size == size + 4
    for refused, code in (
        (wrong_client, "purpose_not_allowed"),
        (wrong_items, "items_not_allowed"),
    ):
        entry = await _entry(p, int(refused.headers["x-audit-seq"]))
        assert (entry["action"], entry["outcome"], entry["reason_code"]) == (
            "consent.requested",
            "denied",
            code,
        )
    # 404 consent_not_found, 409 consent_state_conflict
    created = (await _request_consent(p)).json()
    missing = await p.http.post("/v1/me/consents/cns_nope/approve", headers=citizen)
    assert (missing.status_code, missing.json()["code"]) == (404, "consent_not_found")
    other = await p.http.post(
        f"/v1/me/consents/{created['consent_id']}/approve", headers=p.citizen("850505-2345678")
    )
    assert (other.status_code, other.json()["code"]) == (404, "consent_not_found")
    early = await p.http.post(f"/v1/me/consents/{created['consent_id']}/revoke", headers=citizen)
    assert (early.status_code, early.json()["code"]) == (409, "consent_state_conflict")
    # 401 insufficient_user_authentication: approval needs a fresh sign-in
    stale = await p.http.post(
        f"/v1/me/consents/{created['consent_id']}/approve",
        headers=p.citizen(BUYER_NID, fresh=False),
    )
    assert (stale.status_code, stale.json()["code"]) == (401, "insufficient_user_authentication")
    assert "www-authenticate" in stale.headers
    # 404 record_not_found: nothing consented exists yet, no fetch counted
    approved = await p.http.post(
        f"/v1/me/consents/{created['consent_id']}/approve", headers=citizen
    )
    assert approved.status_code == 200
    nothing = await _read(p, created["consent_id"])
    assert (nothing.status_code, nothing.json()["code"]) == (404, "record_not_found")
    assert "x-audit-seq" in nothing.headers
    assert (await p.runtime.consents.repo.get(created["consent_id"])).fetch_count == 0  # type: ignore[union-attr]
    # 403 scope_not_consented: a type outside the consent; or an unbound token
    outside = await _read(p, created["consent_id"], "/v1/data/bank_account")
    assert (outside.status_code, outside.json()["code"]) == (403, "scope_not_consented")
    unbound = await p.http.get(
        "/v1/data", headers={"Authorization": f"Bearer {await p.token('kbank')}"}
    )
    assert (unbound.status_code, unbound.json()["code"]) == (403, "scope_not_consented")
    # 401 invalid_token for a citizen token used as a client token, and the other way round
    as_client = await p.http.get("/v1/data", headers=citizen)
    assert (as_client.status_code, as_client.json()["code"]) == (401, "invalid_token")
    as_citizen = await p.http.get(
        "/v1/me", headers={"Authorization": f"Bearer {await p.token('kbank')}"}
    )
    assert (as_citizen.status_code, as_citizen.json()["code"]) == (401, "invalid_token")
    # 404 not_found for an unknown route, problem+json
    unknown = await p.http.get("/v1/nothing-here")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")


async def test_once_consent_and_statute_and_narrowing(home: Platform) -> None:
    p = home
    await _issue(p, "nts", "income_certificate", INCOME)
    consent_id = await _approved(p, access="once")
    first = await _read(p, consent_id)
    assert first.status_code == 200
    # The same still-valid token: the consent's one fetch is used up.
    second = await p.http.get(
        "/v1/data", headers={"Authorization": first.request.headers["authorization"]}
    )
    assert (second.status_code, second.json()["code"]) == (403, "consent_exhausted")
    assert "x-audit-seq" in second.headers
    # The bank hears of it in its event feed, once, as of every consent.* transition.
    feed = await p.http.get(
        "/v1/events", headers={"Authorization": f"Bearer {await p.token('kbank')}"}
    )
    mine = [(e["type"], e["consent_id"]) for e in feed.json()["events"]]
    assert mine[-1] == ("consent.exhausted", consent_id)
    assert mine.count(("consent.exhausted", consent_id)) == 1
    # And no new token can be bound to it.
    refused = await p.http.post(
        "/oauth/token", data=p.clients["kbank"].token_form(p.issuer, consent_id=consent_id)
    )
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")

    token = await p.token("nts", scope="consumer")
    statute = await p.http.post(
        "/v1/consent-requests",
        json={
            "subject": {"nid": BUYER_NID},
            "purpose": "income_tax_audit",
            "items": [{"type": "income_certificate", "fields": ["*"]}],
            "access": "once",
            "valid_days": 30,
            "case_reference": "NTS-AUDIT-2026-0042",
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert (statute.status_code, statute.json()["status"]) == (201, "active")
    mine = (await p.http.get("/v1/me/consents", headers=p.citizen(BUYER_NID))).json()["consents"]
    audit = [c for c in mine if c["purpose"] == "income_tax_audit"]
    assert audit[0]["case_reference"] == "NTS-AUDIT-2026-0042"
    assert audit[0]["legal_basis"] == "statute"

    standing = await _approved(p)
    catalogue = p.runtime.current_catalogue()
    purpose = catalogue.purposes["mortgage_screening"]
    narrowed = dataclasses.replace(
        purpose, items=MappingProxyType({**purpose.items, "income_certificate": ("year",)})
    )
    p.runtime.catalogue = dataclasses.replace(
        catalogue, purposes=MappingProxyType({**catalogue.purposes, "mortgage_screening": narrowed})
    )
    read = await _read(p, standing, "/v1/data/income_certificate")
    assert read.json()["data"] == {"year": 2025}


async def test_idempotency_key(home: Platform) -> None:
    p = home
    token = await p.token("nts", scope="issuer")
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "put-income-2025-0001"}
    body = {"subject": {"nid": BUYER_NID}, "type": "income_certificate", "data": INCOME}
    first = await p.http.post("/v1/records", json=body, headers=headers)
    assert first.status_code == 201
    again = await p.http.post("/v1/records", json=body, headers=headers)
    assert (again.status_code, again.json()) == (201, first.json())  # the stored first response
    assert again.headers["idempotent-replayed"] == "true"
    other = await p.http.post(
        "/v1/records", json={**body, "data": dict(INCOME, year=2024)}, headers=headers
    )
    assert (other.status_code, other.json()["code"]) == (422, "validation_error")
    assert "different request body" in other.json()["detail"]
    bad_key = await p.http.post(
        "/v1/records", json=body, headers={**headers, "Idempotency-Key": "x" * 65}
    )
    assert (bad_key.status_code, bad_key.json()["code"]) == (422, "validation_error")
    assert "x" * 65 not in bad_key.text
    rows = await p.runtime.database.fetch("SELECT version FROM records")
    assert [r["version"] for r in rows] == [1]


async def test_rate_limit(home: Platform) -> None:
    p = home
    token = await p.token("kbank")
    p.limit_rate(3)
    statuses = []
    for _ in range(5):
        response = await p.http.get(
            "/v1/consents/cns_none", headers={"Authorization": f"Bearer {token}"}
        )
        statuses.append(response.status_code)
    assert statuses == [404, 404, 404, 429, 429]
    assert response.json()["code"] == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    # The token endpoint has its own budget per client (one token was issued above).
    codes = [
        (
            await p.http.post("/oauth/token", data=p.clients["kbank"].token_form(p.issuer))
        ).status_code
        for _ in range(5)
    ]
    assert codes == [200, 200, 429, 429, 429]


async def test_hostile_bodies_on_real_routes(home: Platform) -> None:
    p = home
    token = await p.token("nts", scope="issuer")
    auth = {"Authorization": f"Bearer {token}"}
    json_headers = {**auth, "Content-Type": "application/json"}
    good = json.dumps({"subject": {"nid": BUYER_NID}, "type": "income_certificate", "data": INCOME})
    cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
        ("malformed", b'{"subject": ', json_headers, 400, "malformed_request"),
        ("deep", b"[" * 10_000 + b"]" * 10_000, json_headers, 400, "malformed_request"),
        ("duplicate keys", b'{"type": "a", "type": "b"}', json_headers, 400, "malformed_request"),
        ("NaN", good.replace("2025", "NaN").encode(), json_headers, 400, "malformed_request"),
        (
            "huge int",
            good.replace("2025", str(2**70)).encode(),
            json_headers,
            400,
            "malformed_request",
        ),
        (
            "lone surrogate",
            json.dumps({**json.loads(good), "data": dict(INCOME, employer="@@")})
            .replace("@@", "\\ud800")
            .encode(),
            json_headers,
            400,
            "malformed_request",
        ),
        (
            "wrong content type",
            good.encode(),
            {**auth, "Content-Type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        (
            "too large",
            b'{"x": "' + b"a" * (1 << 20) + b'"}',
            json_headers,
            413,
            "payload_too_large",
        ),
        (
            "unknown field",
            json.dumps({**json.loads(good), "CANARYFIELD": 1}).encode(),
            json_headers,
            422,
            "validation_error",
        ),
        (
            "wrong type",
            json.dumps({**json.loads(good), "type": 7}).encode(),
            json_headers,
            422,
            "validation_error",
        ),
    ]
    for name, body, headers, status, code in cases:
        response = await p.http.post("/v1/records", content=body, headers=headers)
        assert (response.status_code, response.json().get("code")) == (status, code), (
            name,
            response.text[:300],
        )
        assert response.headers["content-type"].startswith("application/problem+json"), name
    unknown = await p.http.post("/v1/records", content=cases[8][1], headers=json_headers)
    assert "CANARYFIELD" in unknown.json()["detail"]  # names the field, never a value
    too_long_id = await p.http.get(
        "/v1/consents/" + "c" * 10_000,
        headers={"Authorization": f"Bearer {await p.token('kbank')}"},
    )
    assert too_long_id.status_code in (400, 404)
    traversal = await p.http.get(
        "/v1/data/..%2F..%2Fetc%2Fpasswd",
        headers={"Authorization": f"Bearer {await p.token('kbank')}"},
    )
    assert traversal.status_code in (400, 403, 404)
    bad_query = await p.http.get(
        "/v1/events?after=-1", headers={"Authorization": f"Bearer {await p.token('kbank')}"}
    )
    assert (bad_query.status_code, bad_query.json()["code"]) == (400, "malformed_request")
    assert (await p.runtime.database.fetch("SELECT count(*) AS n FROM records"))[0]["n"] == 0


async def test_rate_limit_on_reads_is_counted_in_the_read_unit(home: Platform) -> None:
    p = home
    await _issue(p, "nts", "income_certificate", INCOME)
    consent_id = await _approved(p)
    token = await p.token("kbank", consent_id=consent_id)
    p.limit_rate(2)
    responses = [
        await p.http.get("/v1/data", headers={"Authorization": f"Bearer {token}"}) for _ in range(3)
    ]
    assert [r.status_code for r in responses] == [200, 200, 429]
    refused = responses[-1]
    assert refused.json()["code"] == "rate_limited"
    assert "retry-after" in refused.headers
    entry = await _entry(p, int(refused.headers["x-audit-seq"]))
    assert (entry["action"], entry["outcome"], entry["reason_code"]) == (
        "data.read",
        "denied",
        "rate_limited",
    )
    assert (await p.runtime.consents.repo.get(consent_id)).fetch_count == 2  # type: ignore[union-attr]


async def test_dpop_bound_reads_record_the_proof_inside_the_read(home: Platform) -> None:
    """A consented read with a DPoP-bound token records the proof's single use in the
    read's own unit (no COMMIT of its own): the first use reads, a replay of the same
    proof is 401 invalid_dpop_proof and is audited as a denied read."""
    p = home
    assert (await _issue(p, "nts", "income_certificate", INCOME)).status_code == 201
    consent_id = await _approved(p)
    kbank = p.clients["kbank"]
    token_url = p.issuer + "/oauth/token"
    issued = await p.http.post(
        "/oauth/token",
        data=kbank.token_form(p.issuer, scope="consumer", consent_id=consent_id),
        headers={"DPoP": kbank.dpop("POST", token_url)},
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    url = p.issuer + "/v1/data/income_certificate"
    proof = kbank.dpop("GET", url, token=token)
    batches = p.runtime.audit.batches
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}

    first = await p.http.get("/v1/data/income_certificate", headers=headers)
    assert first.status_code == 200, first.text
    assert p.runtime.audit.batches == batches + 1, "one group-committed unit, nothing else"
    replayed = await p.http.get("/v1/data/income_certificate", headers=headers)
    assert (replayed.status_code, replayed.json()["code"]) == (401, "invalid_dpop_proof")
    assert "DPoP" in replayed.headers["www-authenticate"]
    denied = await _entry(p, int(replayed.headers["x-audit-seq"]))
    assert (denied["action"], denied["outcome"], denied["reason_code"]) == (
        "data.read",
        "denied",
        "invalid_dpop_proof",
    )
    fresh = await p.http.get(
        "/v1/data/income_certificate",
        headers={"Authorization": f"DPoP {token}", "DPoP": kbank.dpop("GET", url, token=token)},
    )
    assert fresh.status_code == 200
    # Without a proof, with the Bearer scheme, or a proof for another URL: refused
    # before any unit runs (nothing recorded).
    before = (await p.runtime.audit.state()).size
    for refused in (
        {"Authorization": f"DPoP {token}"},
        {"Authorization": f"Bearer {token}", "DPoP": kbank.dpop("GET", url, token=token)},
        {"Authorization": f"DPoP {token}", "DPoP": kbank.dpop("GET", p.issuer + "/v1/data")},
    ):
        response = await p.http.get("/v1/data/income_certificate", headers=refused)
        assert response.status_code == 401
    assert (await p.runtime.audit.state()).size == before


async def test_an_erasure_the_ledger_cannot_record_changes_nothing(
    home: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DELETE /v1/me with the erasure ledger (outside the database) not answering: 503,
    and every consent still as it was, not withdrawn with nothing shredded. Retried
    once the ledger answers, the erasure completes."""
    p = home
    await _issue(p, "nts", "income_certificate", INCOME)
    consent_id = await _approved(p)
    ledger = p.runtime.vault.ledger  # type: ignore[union-attr]
    real = ledger.append_erasure

    async def down(entry: Any) -> None:
        raise KeyProviderUnavailable("the ledger does not answer")

    monkeypatch.setattr(ledger, "append_erasure", down)
    size = (await p.runtime.audit.state()).size
    refused = await p.http.delete("/v1/me", headers=p.citizen(BUYER_NID))
    assert (refused.status_code, refused.json()["code"]) == (503, "kms_unavailable")
    assert "retry-after" in refused.headers
    consents = await p.http.get("/v1/me/consents", headers=p.citizen(BUYER_NID))
    assert [(c["consent_id"], c["status"]) for c in consents.json()["consents"]] == [
        (consent_id, "active")
    ]
    assert (await _read(p, consent_id)).status_code == 200  # still served
    assert (await p.runtime.audit.state()).size == size + 2  # that read and its token
    monkeypatch.setattr(ledger, "append_erasure", real)
    erased = await p.http.delete("/v1/me", headers=p.citizen(BUYER_NID))
    assert erased.status_code == 200, erased.text
    assert erased.json()["erased"] == ["income_certificate"]
    status = await p.runtime.database.fetch_values(
        "SELECT status FROM consents WHERE consent_id = $1", consent_id
    )
    assert [tuple(row) for row in status] == [("revoked",)]
