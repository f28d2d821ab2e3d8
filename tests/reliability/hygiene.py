"""A full flow with canary personal data, for the log-hygiene test and its twin.

Every value below is unique and greppable. The flow issues records holding them for a
canary citizen, asks for and approves a consent, reads, lets the citizen read and
write, triggers many refusals whose bodies are kept (they must not echo a canary),
and finally erases the citizen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.reliability.scenario import Deployment, token
from tests.reliability.stack import bearer

CANARY_NID = "771231-2999337"

#: name -> value; none may appear in plaintext in logs, files, audit entries or errors.
CANARIES: dict[str, str] = {
    "nid": CANARY_NID,
    "nid digits": CANARY_NID.replace("-", ""),
    "name": "CanaryNameQx7",
    "korean address": "카나리아동칠번지",
    "employer": "CanaryEmployerQx7",
    "income": "918273645",
    "title address": "CanaryRoadQx7",
    "owner": "CanaryOwnerQx7",
    "self-asserted address": "CanarySelfQx7",
    "account number": "CANARY-556677-ACCT",
    "unknown field value": "CanaryExtraQx7",
    "wrong type value": "CanaryBadTypeQx7",
    "bad nid": "7712312999337Qx",
}

RESIDENT = {
    "name": CANARIES["name"],
    "birth_date": "1977-12-31",
    "address": CANARIES["korean address"],
    "moved_in_on": "2020-01-01",
    "household_head": True,
    "household_members": 3,
}
INCOME = {
    "year": 2025,
    "total_income": int(CANARIES["income"]),
    "tax_paid": 1,
    "employer": CANARIES["employer"],
}
TITLE = {
    "unique_number": "1111-2222-333333",
    "address": CANARIES["title address"],
    "property_kind": "apartment",
    "area_m2": 59.9,
    "registered_on": "2019-03-04",
    "owners": [{"name": CANARIES["owner"], "share": "1/1"}],
    "mortgages": [],
}
ADDRESS = {
    "road_address": CANARIES["self-asserted address"],
    "detail": "101",
    "postal_code": "04000",
}
ACCOUNT = {
    "bank_code": "004",
    "bank_name": "KB",
    "account_number": CANARIES["account number"],
    "holder_name": CANARIES["name"],
}
ITEMS = [
    {"type": "resident_registration", "fields": ["name", "address"]},
    {"type": "income_certificate", "fields": ["year", "total_income", "employer"]},
    {"type": "real_estate_title", "fields": ["*"]},
    {"type": "bank_account", "fields": ["*"]},
]


@dataclass
class Flow:
    """What the flow saw: refusal bodies (checked for canaries), data bodies (which
    must hold them: the canaries are real), and the token values used."""

    errors: dict[str, bytes] = field(default_factory=dict)
    data: list[bytes] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)


def _record(nid: str, record_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"subject": {"nid": nid}, "type": record_type, "data": data}


def _code(response: httpx.Response) -> object:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") or body.get("error") if isinstance(body, dict) else None


async def before_erasure(http: httpx.AsyncClient, dep: Deployment) -> Flow:
    flow = Flow()
    citizen = dep.idp.headers(CANARY_NID)
    flow.tokens["citizen token"] = citizen["Authorization"].split()[1]
    mois = await token(http, dep, "mois")
    nts = await token(http, dep, "nts", scope="issuer")
    court = await token(http, dep, "court")
    bank = await token(http, dep, "kbank", scope="consumer")
    for name, value in (("mois", mois), ("nts", nts), ("court", court), ("kbank", bank)):
        flow.tokens[f"{name} token"] = value

    def expect(response: httpx.Response, status: int) -> httpx.Response:
        # Never the body in the message: it may hold canary data or a token.
        assert response.status_code == status, (response.status_code, _code(response))
        return response

    for issuer, record_type, data in (
        (mois, "resident_registration", RESIDENT),
        (nts, "income_certificate", INCOME),
        (court, "real_estate_title", TITLE),
    ):
        expect(
            await http.post(
                "/v1/records", json=_record(CANARY_NID, record_type, data), headers=bearer(issuer)
            ),
            201,
        )
    expect(await http.put("/v1/me/records/address", json={"data": ADDRESS}, headers=citizen), 201)
    expect(
        await http.put("/v1/me/records/bank_account", json={"data": ACCOUNT}, headers=citizen), 201
    )
    request = {
        "subject": {"nid": CANARY_NID},
        "purpose": "mortgage_screening",
        "items": ITEMS,
        "access": "standing",
        "valid_days": 30,
    }
    consent = expect(
        await http.post("/v1/consent-requests", json=request, headers=bearer(bank)), 201
    )
    consent_id = consent.json()["consent_id"]
    expect(await http.post(f"/v1/me/consents/{consent_id}/approve", headers=citizen), 200)
    bound = await token(http, dep, "kbank", consent_id=consent_id)
    flow.tokens["bank token"] = bound
    flow.data.append(expect(await http.get("/v1/data", headers=bearer(bound)), 200).content)
    flow.data.append(
        expect(await http.get("/v1/data/income_certificate", headers=bearer(bound)), 200).content
    )
    for path in (
        "/v1/me",
        "/v1/me/records",
        "/v1/me/records/resident_registration",
        "/v1/me/records/bank_account",
        "/v1/me/consents",
        f"/v1/me/consents/{consent_id}/receipt",
        "/v1/me/access-log",
        "/v1/me/suggestions",
    ):
        flow.data.append(expect(await http.get(path, headers=citizen), 200).content)

    # Refusals: none may echo a canary.
    json_headers = {"Content-Type": "application/json"}
    bad = {
        "unknown field": (
            "POST",
            "/v1/records",
            nts,
            _record(
                CANARY_NID,
                "income_certificate",
                {**INCOME, "extra": CANARIES["unknown field value"]},
            ),
            422,
        ),
        "wrong type": (
            "POST",
            "/v1/records",
            nts,
            _record(
                CANARY_NID,
                "income_certificate",
                {**INCOME, "total_income": CANARIES["wrong type value"]},
            ),
            422,
        ),
        "bad nid": (
            "POST",
            "/v1/records",
            nts,
            _record(CANARIES["bad nid"], "income_certificate", INCOME),
            422,
        ),
        "type not issuable": (
            "POST",
            "/v1/records",
            nts,
            _record(CANARY_NID, "real_estate_title", TITLE),
            403,
        ),
        "purpose not allowed": (
            "POST",
            "/v1/consent-requests",
            bank,
            {**request, "purpose": "acquisition_tax"},
            403,
        ),
    }
    for name, (method, path, bearer_token, body, status) in bad.items():
        response = await http.request(method, path, json=body, headers=bearer(bearer_token))
        flow.errors[name] = expect(response, status).content
    raw = {
        "malformed json": (
            b'{"subject": {"nid": "'
            + CANARY_NID.encode()
            + b'"}, "data": {"employer": "'
            + CANARIES["employer"].encode()
            + b'"',
            400,
        ),
        "duplicate keys": (
            json.dumps(_record(CANARY_NID, "income_certificate", INCOME))
            .replace('"year": 2025', f'"employer": "{CANARIES["employer"]}", "year": 2025')
            .encode(),
            400,
        ),
        "lone surrogate": (
            json.dumps(_record(CANARY_NID, "income_certificate", INCOME))
            .replace(CANARIES["employer"], CANARIES["employer"] + "\\ud800")
            .encode(),
            400,
        ),
    }
    for name, (body_bytes, status) in raw.items():
        response = await http.post(
            "/v1/records", content=body_bytes, headers={**bearer(nts), **json_headers}
        )
        flow.errors[name] = expect(response, status).content
    stale = dep.idp.headers(CANARY_NID, fresh=False)
    flow.errors["stale erase"] = expect(await http.delete("/v1/me", headers=stale), 401).content
    flow.errors["no such record"] = expect(
        await http.get("/v1/me/records/sale_contract", headers=citizen), 404
    ).content
    flow.errors["not consented"] = expect(
        await http.get("/v1/data/sale_contract", headers=bearer(bound)), 403
    ).content
    forged = citizen["Authorization"][:-4] + "AAAA"
    flow.errors["forged citizen token"] = expect(
        await http.get("/v1/me", headers={"Authorization": forged}), 401
    ).content
    flow.errors["not self-asserted"] = expect(
        await http.put("/v1/me/records/income_certificate", json={"data": INCOME}, headers=citizen),
        403,
    ).content
    flow.errors["self-asserted unknown field"] = expect(
        await http.put(
            "/v1/me/records/address",
            json={"data": {**ADDRESS, "extra": CANARIES["unknown field value"]}},
            headers=citizen,
        ),
        422,
    ).content
    return flow


async def erase(http: httpx.AsyncClient, dep: Deployment, flow: Flow) -> None:
    citizen = dep.idp.headers(CANARY_NID)
    erased = await http.delete("/v1/me", headers=citizen)
    assert erased.status_code == 200, erased.text
    assert "resident_registration" in erased.json()["erased"]
    after = await http.get("/v1/data", headers=bearer(flow.tokens["bank token"]))
    assert after.status_code == 403
    flow.errors["read after erasure"] = after.content
    gone = await http.get("/v1/me/records/income_certificate", headers=citizen)
    assert gone.status_code == 404
    flow.errors["own read after erasure"] = gone.content
