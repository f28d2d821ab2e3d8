"""The OpenAPI document against the app itself, in-process, on both engines.

- Every success status the document declares is answered once by a scripted home
  purchase, and every body answered matches its declared schema (closed schemas, so an
  undocumented key fails too). schemathesis (tests/reliability/test_fuzz.py) checks the
  same against a live server, but random input seldom reaches a 201.
- Every bound the document declares on a parameter or a request body is refused at
  run time just outside it, and every body that the document closes
  (``additionalProperties: false``) refuses an unknown field.
- OPTIONS names every documented method of each path in ``Allow``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema_rs
import pytest

from tests.e2e.conftest import Platform
from tests.e2e.test_proactive import _family
from tests.e2e.test_product import _issue
from tests.helpers.clients import TestClient
from tests.helpers.home import (
    BUYER_NID,
    CONTRACT,
    INCOME,
    MORTGAGE_ITEMS,
    TITLE,
    mortgage_request,
)

MAX_SEQ = 2**53 - 1
#: The bank's standing consent request for the buyer's mortgage screening.
MORTGAGE_REQUEST = mortgage_request({"nid": BUYER_NID})
ADDRESS = {
    "road_address": "서울특별시 마포구 월드컵북로 396",
    "detail": "101동",
    "postal_code": "03925",
}


@pytest.fixture
async def home(platform: Platform) -> Platform:
    for client in (
        TestClient("court", roles=("issuer",)),
        TestClient("mois", roles=("issuer",)),
        TestClient("bokjiro", roles=("consumer",)),
        TestClient("wetax", roles=("consumer",)),
        TestClient("bai", roles=("auditor",)),
    ):
        await platform.register(client)
    return platform


async def _document(p: Platform) -> dict[str, Any]:
    response = await p.http.get("/schema/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Conformance:
    """Checks each answer against the document; remembers the success statuses seen."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.seen: set[tuple[str, str, str]] = set()

    def __call__(self, method: str, path: str, response: httpx.Response) -> httpx.Response:
        status = str(response.status_code)
        assert response.status_code < 300, (method, path, status, response.text[:300])
        declared = self.document["paths"][path][method.lower()]["responses"]
        assert status in declared, (method, path, status)
        content = declared[status].get("content")
        if content is None:
            assert response.content == b"", (method, path)
        elif "application/json" not in content:  # text: /metrics (Prometheus)
            (media_type,) = content
            assert response.headers["content-type"].startswith(media_type), (method, path)
            assert content[media_type]["schema"]["type"] == "string"
            assert response.text.strip(), (method, path)
        else:
            assert response.headers["content-type"].startswith("application/json")
            schema = {
                **content["application/json"]["schema"],
                "components": self.document["components"],
            }
            errors = [
                f"{list(e.instance_path)}: {e.message}"
                for e in jsonschema_rs.Draft202012Validator(schema).iter_errors(response.json())
            ]
            assert errors == [], (method, path, status, response.text[:1000])
        self.seen.add((method.upper(), path, status))
        return response

    def declared(self) -> set[tuple[str, str, str]]:
        return {
            (method.upper(), path, status)
            for path, operations in self.document["paths"].items()
            for method, operation in operations.items()
            for status in operation["responses"]
            if status.startswith("2")
        }


async def test_every_success_status_answers_its_documented_body(home: Platform) -> None:
    p = home
    check = Conformance(await _document(p))
    http = p.http
    citizen = p.citizen(BUYER_NID)

    # operations and public
    for path in ("/healthz", "/readyz", "/metrics", "/.well-known/oauth-authorization-server"):
        check("GET", path, await http.get(path))
    check("GET", "/.well-known/jwks.json", await http.get("/.well-known/jwks.json"))

    # OAuth: a plain token, then revoke it
    form = p.clients["nts"].token_form(p.issuer, scope="issuer")
    issued = check("POST", "/oauth/token", await http.post("/oauth/token", data=form))
    revoke = p.clients["nts"].token_form(p.issuer)
    revoke.pop("grant_type")
    revoke["token"] = issued.json()["access_token"]
    check("POST", "/oauth/revoke", await http.post("/oauth/revoke", data=revoke))

    # issuers: 201, 200 unchanged, a batch with a refused record
    court = _bearer(await p.token("court", scope="issuer"))
    for record_type, data in (("real_estate_title", TITLE), ("sale_contract", CONTRACT)):
        body = {"subject": {"nid": BUYER_NID}, "type": record_type, "data": data}
        first = await http.post("/v1/records", json=body, headers=court)
        assert check("POST", "/v1/records", first).status_code == 201
        again = await http.post("/v1/records", json=body, headers=court)
        assert check("POST", "/v1/records", again).status_code == 200
    nts = _bearer(await p.token("nts", scope="issuer"))
    batch = {
        "records": [
            {"subject": {"nid": BUYER_NID}, "type": "income_certificate", "data": INCOME},
            {"subject": {"nid": BUYER_NID}, "type": "sale_contract", "data": CONTRACT},
        ]
    }
    results = check(
        "POST", "/v1/records:batch", await http.post("/v1/records:batch", json=batch, headers=nts)
    ).json()["results"]
    assert [(r["status"], "code" in r, "record_id" in r) for r in results] == [
        (201, False, True),
        (403, True, False),
    ]

    # consumers: a request (201), its duplicate (200), a statute consent (201, active)
    kbank = _bearer(await p.token("kbank", scope="consumer"))
    request = MORTGAGE_REQUEST
    created = await http.post("/v1/consent-requests", json=request, headers=kbank)
    assert check("POST", "/v1/consent-requests", created).status_code == 201
    duplicate = await http.post("/v1/consent-requests", json=request, headers=kbank)
    assert check("POST", "/v1/consent-requests", duplicate).status_code == 200
    consent_id = created.json()["consent_id"]
    statute = await http.post(
        "/v1/consent-requests",
        json={
            "subject": {"nid": BUYER_NID},
            "purpose": "income_tax_audit",
            "items": [{"type": "income_certificate", "fields": ["*"]}],
            "access": "once",
            "valid_days": 10,
            "case_reference": "NTS-2026-0042",
        },
        headers=_bearer(await p.token("nts", scope="consumer")),
    )
    assert check("POST", "/v1/consent-requests", statute).json()["case_reference"] is not None
    check(
        "GET",
        "/v1/consents/{consent_id}",
        await http.get(f"/v1/consents/{consent_id}", headers=kbank),
    )

    # citizens: approve, read, write, receipts, one to reject
    check(
        "POST",
        "/v1/me/consents/{consent_id}/approve",
        await http.post(f"/v1/me/consents/{consent_id}/approve", headers=citizen),
    )
    wetax = await http.post(
        "/v1/consent-requests",
        json={
            "subject": {"nid": BUYER_NID},
            "purpose": "acquisition_tax",
            "items": [{"type": "sale_contract", "fields": ["*"]}],
            "access": "once",
            "valid_days": 10,
        },
        headers=_bearer(await p.token("wetax", scope="consumer")),
    )
    check("POST", "/v1/consent-requests", wetax)
    check(
        "POST",
        "/v1/me/consents/{consent_id}/reject",
        await http.post(f"/v1/me/consents/{wetax.json()['consent_id']}/reject", headers=citizen),
    )
    for status in (201, 200):
        put = await http.put("/v1/me/records/address", json={"data": ADDRESS}, headers=citizen)
        assert check("PUT", "/v1/me/records/{record_type}", put).status_code == status
    check("GET", "/v1/me", await http.get("/v1/me", headers=citizen))
    check("GET", "/v1/me/records", await http.get("/v1/me/records", headers=citizen))
    check(
        "GET",
        "/v1/me/records/{record_type}",
        await http.get("/v1/me/records/income_certificate", headers=citizen),
    )
    check("GET", "/v1/me/consents", await http.get("/v1/me/consents", headers=citizen))
    check(
        "GET",
        "/v1/me/consents/{consent_id}/receipt",
        await http.get(f"/v1/me/consents/{consent_id}/receipt?version=1", headers=citizen),
    )

    # the consented reads, with a consent-bound token from the token endpoint
    bound_form = p.clients["kbank"].token_form(p.issuer, scope="consumer", consent_id=consent_id)
    bound = check("POST", "/oauth/token", await http.post("/oauth/token", data=bound_form))
    assert "authorization_details" in bound.json()
    reader = _bearer(bound.json()["access_token"])
    read = check("GET", "/v1/data", await http.get("/v1/data", headers=reader))
    check(
        "GET",
        "/v1/data/{record_type}",
        await http.get("/v1/data/income_certificate", headers=reader),
    )
    check("GET", "/v1/events", await http.get("/v1/events", headers=kbank))

    # life events: a newborn makes a suggestion, accepted in one click
    mois = await _issue(p, "mois", "family_relations", _family(30))
    assert mois.status_code == 201, mois.text
    suggestions = check(
        "GET", "/v1/me/suggestions", await http.get("/v1/me/suggestions", headers=citizen)
    ).json()["suggestions"]
    check(
        "POST",
        "/v1/me/suggestions/{suggestion_id}/accept",
        await http.post(
            f"/v1/me/suggestions/{suggestions[0]['suggestion_id']}/accept", headers=citizen
        ),
    )
    check(
        "POST",
        "/v1/me/consents/{consent_id}/revoke",
        await http.post(f"/v1/me/consents/{consent_id}/revoke", headers=citizen),
    )

    # the audit: auditors, anyone, the citizen
    bai = _bearer(await p.token("bai", scope="auditor"))
    page = check("GET", "/v1/audit/entries", await http.get("/v1/audit/entries", headers=bai))
    size = page.json()["tree_size"]
    seq = int(read.headers["x-audit-seq"])
    check(
        "GET",
        "/v1/audit/proofs/inclusion",
        await http.get(f"/v1/audit/proofs/inclusion?seq={seq}&tree_size={size}", headers=bai),
    )
    check(
        "GET",
        "/v1/audit/proofs/consistency",
        await http.get(f"/v1/audit/proofs/consistency?first=1&second={size}", headers=bai),
    )
    check("GET", "/v1/audit/checkpoint", await http.get("/v1/audit/checkpoint"))
    mine = check(
        "GET", "/v1/me/access-log", await http.get("/v1/me/access-log", headers=citizen)
    ).json()
    check(
        "GET",
        "/v1/me/access-log/{seq}/proof",
        await http.get(
            f"/v1/me/access-log/{mine['entries'][0]['seq']}/proof?tree_size={mine['tree_size']}",
            headers=citizen,
        ),
    )

    # erasure last: the sale contract is kept by statute
    erased = check("DELETE", "/v1/me", await http.delete("/v1/me", headers=citizen)).json()
    assert [k["type"] for k in erased["kept"]] == ["sale_contract"]

    assert check.seen == check.declared()


# -- bounds ----------------------------------------------------------------------------


def _parameter_bounds(document: dict[str, Any]) -> set[tuple[str, str, str, str, int]]:
    """(METHOD, path, where, name, bound) for every minimum/maximum of a parameter."""
    found = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                for keyword in ("minimum", "maximum"):
                    if keyword in parameter["schema"]:
                        found.add(
                            (
                                method.upper(),
                                path,
                                parameter["in"],
                                parameter["name"],
                                int(parameter["schema"][keyword]),
                            )
                        )
    return found


def _body_bounds(document: dict[str, Any]) -> set[tuple[str, str, str, int | bool]]:
    """(schema, property, keyword, value) for the request-body schemas' bounds."""
    found: set[tuple[str, str, str, int | bool]] = set()
    for name, schema in document["components"]["schemas"].items():
        if not name.endswith("In"):
            continue
        if "additionalProperties" in schema:
            found.add((name, "", "additionalProperties", schema["additionalProperties"]))
        for field, spec in schema["properties"].items():
            for keyword in ("minimum", "maximum", "maxItems", "minItems"):
                if keyword in spec:
                    found.add((name, field, keyword, int(spec[keyword])))
    return found


PARAMETER_BOUNDS = {
    ("GET", "/v1/audit/entries", "query", "after", 0),
    ("GET", "/v1/audit/entries", "query", "after", MAX_SEQ),
    ("GET", "/v1/audit/entries", "query", "limit", 1),
    ("GET", "/v1/audit/entries", "query", "limit", 1000),
    ("GET", "/v1/audit/proofs/inclusion", "query", "seq", 0),
    ("GET", "/v1/audit/proofs/inclusion", "query", "seq", MAX_SEQ),
    ("GET", "/v1/audit/proofs/inclusion", "query", "tree_size", 1),
    ("GET", "/v1/audit/proofs/inclusion", "query", "tree_size", MAX_SEQ),
    ("GET", "/v1/audit/proofs/consistency", "query", "first", 1),
    ("GET", "/v1/audit/proofs/consistency", "query", "first", MAX_SEQ),
    ("GET", "/v1/audit/proofs/consistency", "query", "second", 1),
    ("GET", "/v1/audit/proofs/consistency", "query", "second", MAX_SEQ),
    ("GET", "/v1/events", "query", "after", 0),
    ("GET", "/v1/events", "query", "after", MAX_SEQ),
    ("GET", "/v1/events", "query", "limit", 1),
    ("GET", "/v1/events", "query", "limit", 1000),
    ("GET", "/v1/me/access-log", "query", "before", 0),
    ("GET", "/v1/me/access-log", "query", "before", MAX_SEQ),
    ("GET", "/v1/me/access-log", "query", "limit", 1),
    ("GET", "/v1/me/access-log", "query", "limit", 1000),
    ("GET", "/v1/me/access-log/{seq}/proof", "path", "seq", 0),
    ("GET", "/v1/me/access-log/{seq}/proof", "path", "seq", MAX_SEQ),
    ("GET", "/v1/me/access-log/{seq}/proof", "query", "tree_size", 1),
    ("GET", "/v1/me/access-log/{seq}/proof", "query", "tree_size", MAX_SEQ),
    ("GET", "/v1/me/consents/{consent_id}/receipt", "query", "version", 1),
    ("GET", "/v1/me/consents/{consent_id}/receipt", "query", "version", 1_000_000),
}

BODY_BOUNDS = {
    ("BatchIn", "", "additionalProperties", False),
    ("BatchIn", "records", "maxItems", 1000),
    ("ConsentRequestIn", "", "additionalProperties", False),
    ("ConsentRequestIn", "valid_days", "minimum", 1),
    ("ConsentRequestIn", "valid_days", "maximum", 36500),
    ("ConsentRequestIn", "max_fetches", "minimum", 1),
    ("ConsentRequestIn", "max_fetches", "maximum", 1_000_000),
    ("ItemIn", "", "additionalProperties", False),
    ("RecordIn", "", "additionalProperties", False),
    ("SelfAssertedIn", "", "additionalProperties", False),
    ("SubjectIn", "", "additionalProperties", False),
}


async def test_the_document_declares_these_bounds(home: Platform) -> None:
    """A new bound in the document needs a refusal below: this list is that reminder."""
    document = await _document(home)
    assert _parameter_bounds(document) == PARAMETER_BOUNDS
    assert _body_bounds(document) == BODY_BOUNDS


async def test_parameters_outside_their_documented_bounds_are_refused(home: Platform) -> None:
    p = home
    auth = {
        "/v1/audit": _bearer(await p.token("bai", scope="auditor")),
        "/v1/events": _bearer(await p.token("kbank", scope="consumer")),
        "/v1/me": p.citizen(BUYER_NID),
    }
    for method, path, where, name, bound in sorted(PARAMETER_BOUNDS):
        value = bound - 1 if bound in (0, 1) else bound + 1
        query = {
            "/v1/audit/proofs/inclusion": {"seq": "0", "tree_size": "1"},
            "/v1/audit/proofs/consistency": {"first": "1", "second": "1"},
            "/v1/me/access-log/{seq}/proof": {"tree_size": "1"},
        }.get(path, {})
        url = path.replace("{consent_id}", "cns_x").replace("{seq}", "0")
        if where == "path":
            url = path.replace("{seq}", str(value))
        else:
            query = {**query, name: str(value)}
        headers = next(h for prefix, h in auth.items() if path.startswith(prefix))
        response = await p.http.request(method, url, params=query, headers=headers)
        problem = response.json()
        assert (response.status_code, problem["code"]) == (400, "malformed_request"), (path, value)
        assert name in problem["detail"], (path, value, problem["detail"])


def _patterned_parameters(document: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(METHOD, path, where, name, pattern) for every parameter with a pattern."""
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                for option in [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]:
                    if "pattern" in option:
                        found.append(
                            (
                                method.upper(),
                                path,
                                parameter["in"],
                                parameter["name"],
                                option["pattern"],
                            )
                        )
    return sorted(found)


async def test_a_value_with_a_trailing_newline_is_off_every_pattern(home: Platform) -> None:
    r"""``^...$`` lets ``value\n`` through msgspec's ``re.search``: every pattern of the
    document ends with ``(?![\s\S])`` instead (api.schemas.whole), and the server
    refuses a valid value plus a newline in each patterned parameter."""
    p = home
    document = await _document(p)
    patterned = _patterned_parameters(document)
    assert len(patterned) >= 13
    auth = {
        "/v1/audit": _bearer(await p.token("bai", scope="auditor")),
        "/v1/me": p.citizen(BUYER_NID),
        "/v1": _bearer(await p.token("kbank", scope="consumer")),
    }
    for method, path, where, name, pattern in patterned:
        assert pattern.endswith(r"(?![\s\S])") and "$" not in pattern, (path, name, pattern)
        valid = (
            "active" if "pending" in pattern else "cit_" + "a" * 26 if "cit_" in pattern else "x1"
        )
        answers = []
        for value in (valid, valid + "\n"):  # the same request, then with the newline
            url = path.replace("{" + name + "}", quote(value, safe="")) if where == "path" else path
            url = re.sub(r"\{[a-z_]+\}", valid, url)
            query = {name: value} if where == "query" else {}
            headers = next(h for prefix, h in auth.items() if path.startswith(prefix))
            body = {} if method in ("PUT", "POST") else None  # refused later than the path
            response = await p.http.request(method, url, params=query, headers=headers, json=body)
            answers.append((response.status_code, response.json().get("code")))
        assert answers[0] != (400, "malformed_request"), (method, path, name, answers)
        assert answers[1] == (400, "malformed_request"), (method, path, name, answers)


async def test_a_body_of_the_wrong_json_types_is_refused_and_nothing_is_made(
    home: Platform,
) -> None:
    """``"30"`` and ``30.0`` are not the integer the document declares (Litestar's lax
    conversion would take both): 422 naming the path and type, no consent made."""
    p = home
    kbank = _bearer(await p.token("kbank", scope="consumer"))
    consent = MORTGAGE_REQUEST
    cases = {
        "$.valid_days: expected `int`, got `str`": {**consent, "valid_days": "30"},
        "$.valid_days: expected `int`, got `float`": {**consent, "valid_days": 30.0},
        "$.max_fetches: expected `int | null`, got `str`": {**consent, "max_fetches": "2"},
    }
    for detail, body in cases.items():
        response = await p.http.post("/v1/consent-requests", json=body, headers=kbank)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_error"
        assert response.json()["detail"] == detail
    mine = await p.http.get("/v1/me/consents", headers=p.citizen(BUYER_NID))
    assert mine.json()["consents"] == []
    nts = _bearer(await p.token("nts", scope="issuer"))
    batch = {"records": [{"subject": {"nid": BUYER_NID}, "type": "income_certificate",
                          "data": INCOME, "attestation": None}] * 2}  # fmt: skip
    batch["records"][1] = {**batch["records"][1], "subject": {"nid": 9001011234567}}
    refused = await p.http.post("/v1/records:batch", json=batch, headers=nts)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == "$.records[1].subject.nid: expected `str | null`, got `int`"
    records = await p.http.get("/v1/me/records", headers=p.citizen(BUYER_NID))
    assert "income_certificate" not in {r["type"] for r in records.json()["records"]}


async def test_bodies_outside_their_documented_bounds_are_refused(home: Platform) -> None:
    p = home
    kbank = _bearer(await p.token("kbank", scope="consumer"))
    nts = _bearer(await p.token("nts", scope="issuer"))
    citizen = p.citizen(BUYER_NID)
    consent = MORTGAGE_REQUEST
    record = {"subject": {"nid": BUYER_NID}, "type": "income_certificate", "data": INCOME}
    cases: list[tuple[str, str, dict[str, Any], dict[str, str], str]] = [
        ("POST", "/v1/consent-requests", {**consent, "valid_days": 0}, kbank, "valid_days"),
        ("POST", "/v1/consent-requests", {**consent, "valid_days": 36501}, kbank, "valid_days"),
        ("POST", "/v1/consent-requests", {**consent, "max_fetches": 0}, kbank, "max_fetches"),
        (
            "POST",
            "/v1/consent-requests",
            {**consent, "max_fetches": 1_000_001},
            kbank,
            "max_fetches",
        ),
        ("POST", "/v1/records:batch", {"records": [record] * 1001}, nts, "records"),
        # additionalProperties: false, at every level
        ("POST", "/v1/consent-requests", {**consent, "extra": 1}, kbank, "extra"),
        (
            "POST",
            "/v1/consent-requests",
            {**consent, "subject": {"nid": BUYER_NID, "extra": 1}},
            kbank,
            "extra",
        ),
        (
            "POST",
            "/v1/consent-requests",
            {**consent, "items": [{**MORTGAGE_ITEMS[0], "extra": 1}]},
            kbank,
            "extra",
        ),
        ("POST", "/v1/records", {**record, "extra": 1}, nts, "extra"),
        ("POST", "/v1/records:batch", {"records": [record], "extra": 1}, nts, "extra"),
        ("POST", "/v1/records:batch", {"records": [{**record, "extra": 1}]}, nts, "extra"),
        ("PUT", "/v1/me/records/address", {"data": ADDRESS, "extra": 1}, citizen, "extra"),
    ]
    for method, path, body, headers, field in cases:
        response = await p.http.request(method, path, json=body, headers=headers)
        problem = response.json()
        assert (response.status_code, problem["code"]) == (422, "validation_error"), (path, body)
        assert field in problem["detail"], (path, problem["detail"])


async def test_options_names_every_documented_method_of_a_path(home: Platform) -> None:
    """Litestar lists one handler's methods for a path served by several (api/middleware.py)."""
    document = await _document(home)
    for path, operations in document["paths"].items():
        url = path.replace("{seq}", "0").replace("{", "").replace("}", "")
        response = await home.http.options(url)
        allow = {m.strip() for m in response.headers["allow"].split(",")}
        assert response.status_code == 204, path
        assert allow == {m.upper() for m in operations} | {"OPTIONS"}, path
