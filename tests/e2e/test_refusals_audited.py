"""Every refusal to an authenticated client appends one entry (DESIGN section 7): a 403
``forbidden`` for a role the client does not hold (on every client route), a 429
``rate_limited`` from the role dependency (shown on one route: every client route
goes through it) and a token not bound to a consent on the reads, as a ``denied`` entry
of the action the route performs. A 401 (no caller known) appends nothing. A
consent-bound read refused for the role is audited inside the read's unit
(tests/integration/consent/test_read_group.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar.handlers import HTTPRouteHandler

from api.app import create_app
from api.auth import AUDIT_ACTION
from tests.e2e.conftest import Platform
from tests.helpers.clients import TestClient
from tests.helpers.home import mortgage_request

#: (method, path, body, the action its refusals are audited as)
ROUTES: list[tuple[str, str, Any, str]] = [
    (
        "POST",
        "/v1/records",
        {"subject": {"nid": "9001011234567"}, "type": "x", "data": {}},
        "record.put",
    ),
    ("POST", "/v1/records:batch", {"records": []}, "record.put"),
    ("POST", "/v1/consent-requests", {"subject": {"nid": "9001011234567"}}, "consent.requested"),
    ("GET", "/v1/consents/cns_x", None, "consent.viewed"),
    ("GET", "/v1/events", None, "events.read"),
    ("GET", "/v1/data", None, "data.read"),
    ("GET", "/v1/data/income_certificate", None, "data.read"),
    ("GET", "/v1/audit/entries", None, "audit.queried"),
    ("GET", "/v1/audit/proofs/inclusion?seq=0&tree_size=1", None, "audit.queried"),
    ("GET", "/v1/audit/proofs/consistency?first=1&second=1", None, "audit.queried"),
]
#: The role each route needs; the caller used holds every other role.
NEEDS = {
    "record.put": "issuer",
    "consent.requested": "consumer",
    "consent.viewed": "consumer",
    "events.read": "consumer",
    "data.read": "consumer",
    "audit.queried": "auditor",
}
ROLES = ("issuer", "consumer", "auditor")


async def entry_at(p: Platform, seq: int) -> dict[str, Any]:
    rows = await p.runtime.database.fetch("SELECT leaf FROM audit_entries WHERE seq = $1", seq)
    leaf: dict[str, Any] = json.loads(bytes(rows[0]["leaf"]))
    return leaf


async def send(p: Platform, method: str, path: str, body: Any, token: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if method == "POST":
        return await p.http.post(path, json=body, headers=headers)
    return await p.http.get(path, headers=headers)


def assert_refusal_entry(
    entry: dict[str, Any],
    *,
    action: str,
    client_id: str,
    reason: str,
    record_type: str | None = None,
) -> None:
    assert entry["action"] == action
    assert entry["outcome"] == "denied"
    assert entry["actor"] == {"type": "client", "id": client_id}
    assert entry["client_id"] == client_id
    assert entry["reason_code"] == reason
    assert entry["request_id"]
    assert entry["record_type"] == record_type
    for field in ("citizen_id", "consent_id", "purpose", "record_version"):
        assert entry[field] is None, field
    assert entry["items"] == ([] if action == "data.read" else None)


@pytest.mark.parametrize(("method", "path", "body", "action"), ROUTES)
async def test_a_role_not_held_is_refused_and_audited_as_the_routes_action(
    platform: Platform, method: str, path: str, body: Any, action: str
) -> None:
    p = platform
    others = tuple(role for role in ROLES if role != NEEDS[action])
    await p.register(TestClient("other_agency", roles=others))
    token = await p.token("other_agency")
    size = (await p.runtime.audit.state()).size
    response = await send(p, method, path, body, token)
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    seq = int(response.headers["x-audit-seq"])
    assert (await p.runtime.audit.state()).size == size + 1  # exactly its entry
    assert seq == size
    assert_refusal_entry(
        await entry_at(p, seq),
        action=action,
        client_id="other_agency",
        reason="forbidden",
        record_type="income_certificate" if path.endswith("/income_certificate") else None,
    )


@pytest.mark.parametrize(("method", "path", "body", "action"), ROUTES)
async def test_an_unknown_caller_appends_nothing(
    platform: Platform, method: str, path: str, body: Any, action: str
) -> None:
    p = platform
    size = (await p.runtime.audit.state()).size
    response = await send(p, method, path, body, "not-a-token")
    assert (response.status_code, response.json()["code"]) == (401, "invalid_token")
    assert "x-audit-seq" not in response.headers
    assert (await p.runtime.audit.state()).size == size


async def test_the_rate_limit_on_a_route_is_audited_as_its_action(platform: Platform) -> None:
    p = platform
    token = await p.token("kbank")
    p.limit_rate(1)
    first = await send(p, "GET", "/v1/events", None, token)
    assert first.status_code == 200
    size = (await p.runtime.audit.state()).size
    refused = await send(p, "GET", "/v1/events", None, token)
    assert (refused.status_code, refused.json()["code"]) == (429, "rate_limited")
    assert "retry-after" in refused.headers
    seq = int(refused.headers["x-audit-seq"])
    assert (await p.runtime.audit.state()).size == size + 1
    assert_refusal_entry(
        await entry_at(p, seq), action="events.read", client_id="kbank", reason="rate_limited"
    )


@pytest.mark.parametrize("path", ["/v1/data", "/v1/data/income_certificate"])
async def test_a_token_not_bound_to_a_consent_is_a_refused_read(
    platform: Platform, path: str
) -> None:
    """A consumer's token without a consent: 403 ``scope_not_consented``, audited as a
    read; such a token of a client without the consumer role: 403 ``forbidden``."""
    p = platform
    await p.register(TestClient("registry", roles=("issuer",)))
    for client_id, code in (("kbank", "scope_not_consented"), ("registry", "forbidden")):
        token = await p.token(client_id)
        size = (await p.runtime.audit.state()).size
        response = await send(p, "GET", path, None, token)
        assert (response.status_code, response.json()["code"]) == (403, code)
        assert (await p.runtime.audit.state()).size == size + 1
        assert_refusal_entry(
            await entry_at(p, int(response.headers["x-audit-seq"])),
            action="data.read",
            client_id=client_id,
            reason=code,
            record_type="income_certificate" if path.endswith("/income_certificate") else None,
        )


def test_every_client_route_names_the_action_its_refusals_are_audited_as(
    platform: Platform,
) -> None:
    """A route added later without ``audit_action`` fails here, not in production (a
    refusal there would raise instead of answering 403)."""
    app = create_app(platform.settings, database=platform.runtime.database)
    client_routes = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler):
                continue
            dependencies = handler.resolve_dependencies()
            if "principal" in dependencies or "token" in dependencies:
                client_routes.append(route.path)
                assert handler.opt.get(AUDIT_ACTION) in NEEDS, route.path
    assert sorted(client_routes) == sorted(
        path.split("?")[0]
        .replace("cns_x", "{consent_id:str}")
        .replace("income_certificate", "{record_type:str}")
        for _, path, _, _ in ROUTES
    )


# -- refusals once the caller is known (api.auth.audit_late_refusal) -----------------------

BUYER = "900101-1234567"
SELLER = "850505-2345678"


async def _citizen_id(p: Platform, nid: str) -> str:
    me = await p.http.get("/v1/me", headers=p.citizen(nid))
    assert me.status_code == 200
    return str(me.json()["citizen_id"])


def assert_citizen_refusal(
    entry: dict[str, Any], *, citizen_id: str, action: str, reason: str
) -> None:
    assert entry["action"] == action
    assert entry["outcome"] == "denied"
    assert entry["actor"] == {"type": "citizen", "id": citizen_id}
    assert entry["citizen_id"] == citizen_id  # the caller's own
    assert entry["reason_code"] == reason
    assert entry["request_id"]
    for field in ("client_id", "consent_id", "purpose", "record_type", "record_version"):
        assert entry[field] is None, field  # nothing of an object the caller does not own
    assert entry["items"] == ([] if action == "data.read" else None)


async def test_a_citizens_refusals_are_audited_as_the_routes_action(platform: Platform) -> None:
    """Another citizen's receipt (404), a missing record of one's own (404), approving
    with a stale sign-in (401 once the citizen is known), a bad parameter (400): each
    is one ``denied`` entry of the citizen's, answered with its ``X-Audit-Seq``."""
    p = platform
    kbank = {"Authorization": f"Bearer {await p.token('kbank', scope='consumer')}"}
    asked = await p.http.post(
        "/v1/consent-requests",
        json=mortgage_request({"nid": SELLER}),
        headers=kbank,
    )
    assert asked.status_code == 201, asked.text
    sellers = asked.json()["consent_id"]
    buyer = await _citizen_id(p, BUYER)
    cases = [
        ("GET", f"/v1/me/consents/{sellers}/receipt", {}, "consent.viewed", 404, "consent_not_found"),
        ("GET", "/v1/me/records/income_certificate", {}, "data.read", 404, "record_not_found"),
        ("GET", "/v1/me/consents?status=nonsense", {}, "consent.viewed", 400, "malformed_request"),
        ("POST", f"/v1/me/consents/{sellers}/approve", {"fresh": False}, "consent.approved",
         401, "insufficient_user_authentication"),
        ("DELETE", "/v1/me", {"fresh": False}, "record.erased",
         401, "insufficient_user_authentication"),
    ]  # fmt: skip
    for method, path, kw, action, status, code in cases:
        size = (await p.runtime.audit.state()).size
        response = await p.http.request(method, path, headers=p.citizen(BUYER, **kw))
        assert (response.status_code, response.json()["code"]) == (status, code), path
        seq = int(response.headers["x-audit-seq"])
        assert (seq, (await p.runtime.audit.state()).size) == (size, size + 1), path
        entry = await entry_at(p, seq)
        assert_citizen_refusal(entry, citizen_id=buyer, action=action, reason=code)
        assert sellers not in json.dumps(entry)


async def test_a_clients_refusals_past_its_role_are_audited(platform: Platform) -> None:
    """An issuer's record the policy refuses (422) and another client's consent (404)."""
    p = platform
    nts = {"Authorization": f"Bearer {await p.token('nts', scope='issuer')}"}
    cases = [
        (
            "POST",
            "/v1/records",
            {"subject": {"nid": BUYER}, "type": "income_certificate", "data": {"x": 1}},
            nts,
            "nts",
            "record.put",
            (422, "validation_error"),
        ),
        (
            "GET",
            "/v1/consents/cns_aaaaaaaaaaaaaaaaaaaaaaaaaa",
            None,
            {"Authorization": f"Bearer {await p.token('kbank', scope='consumer')}"},
            "kbank",
            "consent.viewed",
            (404, "consent_not_found"),
        ),
    ]
    for method, path, body, headers, client_id, action, (status, code) in cases:
        size = (await p.runtime.audit.state()).size
        response = await p.http.request(method, path, json=body, headers=headers)
        assert (response.status_code, response.json()["code"]) == (status, code), path
        seq = int(response.headers["x-audit-seq"])
        assert (await p.runtime.audit.state()).size == size + 1
        entry = await entry_at(p, seq)
        assert_refusal_entry(entry, action=action, client_id=client_id, reason=code)
        assert BUYER not in json.dumps(entry)


async def test_a_refusal_whose_entry_cannot_be_written_is_still_answered(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = platform
    headers = p.citizen(BUYER)
    await _citizen_id(p, BUYER)

    async def down(*_: Any, **__: Any) -> Any:
        from vault.errors import StorageError  # noqa: PLC0415

        raise StorageError("database unavailable")

    monkeypatch.setattr(p.runtime.audit, "run", down)
    response = await p.http.get("/v1/me/records/income_certificate", headers=headers)
    assert (response.status_code, response.json()["code"]) == (404, "record_not_found")
    assert "x-audit-seq" not in response.headers
