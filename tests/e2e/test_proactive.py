"""Tell us once, life events, erasure and the audit over HTTP, on both engines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.repository import AuditRepository
from audit.verify import verify_database
from tests import independent_verifier as ref
from tests.e2e.conftest import Platform
from tests.e2e.test_product import _approved, _issue
from tests.helpers.clients import TestClient
from tests.helpers.home import BUYER_NID, CONTRACT, INCOME, TITLE
from vault import crypto


@pytest.fixture
async def home(platform: Platform) -> Platform:
    await platform.register(TestClient("court", roles=("issuer",)))
    await platform.register(TestClient("mois", roles=("issuer",)))
    await platform.register(TestClient("bokjiro", roles=("consumer",)))
    await platform.register(TestClient("bai", roles=("auditor",)))
    return platform


async def _events(p: Platform, client: str, after: int | None = None) -> dict[str, Any]:
    token = await p.token(client, scope="consumer")
    query = "" if after is None else f"?after={after}"
    response = await p.http.get(f"/v1/events{query}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_tell_us_once(home: Platform) -> None:
    p = home
    consent_id = await _approved(
        p
    )  # kbank, standing, covers income_certificate + real_estate_title
    await p.register(TestClient("otherbank", roles=("consumer",)))
    # Version 1 issued after the standing consent exists: one event, to kbank only.
    await _issue(p, "nts", "income_certificate", INCOME)
    await _issue(p, "nts", "income_certificate", dict(INCOME, total_income=90_000_000))
    await _issue(p, "court", "sale_contract", CONTRACT)  # not covered by the consent
    feed = await _events(p, "kbank")
    kinds = [(e["type"], e["record_type"], e["version"]) for e in feed["events"]]
    assert kinds == [
        ("consent.requested", None, None),
        ("consent.approved", None, None),
        ("record.updated", "income_certificate", 1),
        ("record.updated", "income_certificate", 2),
    ]
    assert all(e["consent_id"] == consent_id for e in feed["events"])
    seqs = [e["seq"] for e in feed["events"]]
    assert seqs == sorted(seqs) and seqs[0] >= 1
    assert feed["next"] == seqs[-1]
    assert (await _events(p, "otherbank"))["events"] == []
    # A stable cursor while appends continue.
    cursor = feed["next"]
    await _issue(p, "court", "real_estate_title", TITLE)
    more = await _events(p, "kbank", after=cursor)
    assert [(e["type"], e["record_type"]) for e in more["events"]] == [
        ("record.updated", "real_estate_title")
    ]
    assert (await _events(p, "kbank", after=more["next"]))["events"] == []
    assert (await _events(p, "kbank", after=0))["events"] == feed["events"] + more["events"]


def _family(child_age_days: int) -> dict[str, Any]:
    born = (datetime.now(UTC).date() - timedelta(days=child_age_days)).isoformat()
    return {
        "name": "홍길동",
        "birth_date": "1990-01-01",
        "marital_status": "married",
        "children": [{"name": "홍새벽", "birth_date": born}],
    }


async def test_newborn_suggestion_accepted_in_one_click(home: Platform) -> None:
    p = home
    assert (await _issue(p, "mois", "family_relations", _family(30))).status_code == 201
    citizen = p.citizen(BUYER_NID)
    suggestions = (await p.http.get("/v1/me/suggestions", headers=citizen)).json()["suggestions"]
    assert [
        (s["rule"], s["client_id"], s["client_name"], s["purpose_title"], s["status"])
        for s in suggestions
    ] == [("newborn_child_allowance", "bokjiro", "BOKJIRO", "Child allowance", "open")]
    assert (await _events(p, "bokjiro"))[
        "events"
    ] == []  # the suggested client learns nothing before
    stale = await p.http.post(
        f"/v1/me/suggestions/{suggestions[0]['suggestion_id']}/accept",
        headers=p.citizen(BUYER_NID, fresh=False),
    )
    assert (stale.status_code, stale.json()["code"]) == (401, "insufficient_user_authentication")
    accepted = await p.http.post(
        f"/v1/me/suggestions/{suggestions[0]['suggestion_id']}/accept", headers=citizen
    )
    assert accepted.status_code == 200, accepted.text
    assert (accepted.json()["status"], accepted.json()["client_id"]) == ("active", "bokjiro")
    feed = (await _events(p, "bokjiro"))["events"]
    assert [(e["type"], e["consent_id"]) for e in feed] == [
        ("consent.approved", accepted.json()["consent_id"])
    ]


async def test_erasure_over_http(home: Platform) -> None:
    p = home
    await _issue(p, "nts", "income_certificate", INCOME)
    await _issue(p, "court", "sale_contract", CONTRACT)  # retained 1,825 days by statute
    consent_id = await _approved(p)
    pending = await p.http.post(
        "/v1/consent-requests",
        json={
            "subject": {"nid": BUYER_NID},
            "purpose": "acquisition_tax",
            "items": [{"type": "sale_contract", "fields": ["*"]}],
            "access": "once",
            "valid_days": 10,
        },
        headers={"Authorization": f"Bearer {await _wetax(p)}"},
    )
    assert pending.status_code == 201, pending.text
    citizen = p.citizen(BUYER_NID)
    stale = await p.http.delete("/v1/me", headers=p.citizen(BUYER_NID, fresh=False))
    assert (stale.status_code, stale.json()["code"]) == (401, "insufficient_user_authentication")
    erased = await p.http.delete("/v1/me", headers=citizen)
    assert erased.status_code == 200, erased.text
    body = erased.json()
    assert body["erased"] == ["income_certificate"]
    assert [k["type"] for k in body["kept"]] == ["sale_contract"]
    until = datetime.fromisoformat(body["kept"][0]["until"].replace("Z", "+00:00")).date()
    assert until - datetime.now(UTC).date() in (timedelta(days=1825), timedelta(days=1824))
    keys = {
        k["kid"]: k
        for k in (await p.http.get("/.well-known/jwks.json")).json()["keys"]
        if k["kid"].startswith("rc-")
    }
    _, receipt = crypto.verify_jws(
        body["receipt"], keys=keys, typ="erasure-receipt+jwt", allowed_kid_prefix="rc-"
    )
    assert receipt["erased"] == ["income_certificate"]
    assert sorted(receipt["revoked_consents"]) == sorted([consent_id, pending.json()["consent_id"]])
    # Consents revoked, with events to their clients.
    kinds = [e["type"] for e in (await _events(p, "kbank"))["events"]]
    assert kinds[-1] == "consent.revoked"
    # Records gone; the retained one still readable by the citizen.
    gone = await p.http.get("/v1/me/records/income_certificate", headers=citizen)
    assert (gone.status_code, gone.json()["code"]) == (404, "record_not_found")
    assert (await p.http.get("/v1/me/records/sale_contract", headers=citizen)).status_code == 200
    # The log still verifies.
    result = await verify_database(
        AuditRepository(p.runtime.database), jwks=p.runtime.jwks(), origin=p.issuer
    )
    assert result.ok, result.message
    # The retention job shreds the kept type once its retention ends.
    await p.runtime.database.execute("UPDATE erasure_holds SET until = 0")
    assert p.runtime.erasure is not None
    assert await p.runtime.erasure.run_retention() == 1
    assert (await p.http.get("/v1/me/records/sale_contract", headers=citizen)).status_code == 404
    assert await p.runtime.database.fetch("SELECT * FROM erasure_holds") == []


async def _wetax(p: Platform) -> str:
    await p.register(TestClient("wetax", roles=("consumer",)))
    return await p.token("wetax")


async def test_proof_endpoints(home: Platform) -> None:
    p = home
    await _issue(p, "nts", "income_certificate", INCOME)
    token = await p.token("bai", scope="auditor")
    auth = {"Authorization": f"Bearer {token}"}
    page = (await p.http.get("/v1/audit/entries?limit=1000", headers=auth)).json()
    size = page["tree_size"]
    assert [e["seq"] for e in page["entries"]] == list(range(len(page["entries"])))
    leaves = [
        json.dumps(e["entry"], sort_keys=True, separators=(",", ":")).encode()
        for e in page["entries"]
    ]
    root = ref.root_from_leaves(leaves[:size])
    for seq in range(size):
        proof = (
            await p.http.get(f"/v1/audit/proofs/inclusion?seq={seq}&tree_size={size}", headers=auth)
        ).json()
        assert proof["root_hash"] == root.hex()
        ref.verify_inclusion(
            ref.leaf_hash(leaves[seq]),
            seq,
            size,
            [bytes.fromhex(h) for h in proof["inclusion_path"]],
            root,
        )
    for first in range(1, size + 1):
        proof = (
            await p.http.get(
                f"/v1/audit/proofs/consistency?first={first}&second={size}", headers=auth
            )
        ).json()
        ref.verify_consistency(
            first,
            size,
            [bytes.fromhex(h) for h in proof["consistency_path"]],
            bytes.fromhex(proof["first_root"]),
            root,
        )
    for query in (
        "inclusion?seq=0&tree_size=0",
        f"inclusion?seq=0&tree_size={size + 1000}",  # each refusal is an entry too
        f"inclusion?seq={size}&tree_size={size}",
        "inclusion?seq=0&tree_size=-1",
        "consistency?first=2&second=1",
        "consistency?first=0&second=1",
        f"consistency?first=1&second={size + 1000}",
        "consistency?first=-1&second=1",
        "inclusion?seq=0&tree_size=99999999999999999999",
        "inclusion?seq=x&tree_size=1",
    ):
        bad = await p.http.get(f"/v1/audit/proofs/{query}", headers=auth)
        assert (bad.status_code, bad.json()["code"]) == (400, "malformed_request"), query
        assert "x-audit-seq" in bad.headers, query  # a refusal to a known caller
    # A citizen-filtered query is itself audited.
    citizen_id = next(
        e["entry"]["citizen_id"] for e in reversed(page["entries"]) if e["entry"]["citizen_id"]
    )
    filtered = await p.http.get(f"/v1/audit/entries?citizen_id={citizen_id}", headers=auth)
    assert filtered.status_code == 200
    queried = (await p.http.get("/v1/audit/entries?action=audit.queried", headers=auth)).json()[
        "entries"
    ]
    refused = [e for e in queried if e["entry"]["outcome"] == "denied"]
    assert len(refused) == 10  # the refused proof queries above, caller bai
    assert {(e["entry"]["citizen_id"], e["entry"]["client_id"]) for e in refused} == {(None, "bai")}
    queried = [e for e in queried if e["entry"]["outcome"] == "ok"]
    assert [(e["entry"]["citizen_id"], e["entry"]["client_id"]) for e in queried] == [
        (citizen_id, "bai")
    ]
    assert filtered.headers["x-audit-seq"] == str(queried[0]["seq"])
    assert "x-audit-seq" not in (await p.http.get("/v1/audit/entries", headers=auth)).headers
    # Anything but a citizen id (a national id pasted by mistake) is refused: the refusal
    # is an entry of the caller's, and the value it was given is not in it.
    size = (await p.runtime.audit.state()).size
    wrongs = ("900101-1234567", "9001011234567", citizen_id.upper(), citizen_id + "a")
    for wrong in wrongs:
        bad = await p.http.get("/v1/audit/entries", params={"citizen_id": wrong}, headers=auth)
        assert (bad.status_code, bad.json()["code"]) == (400, "malformed_request"), wrong
    leaves = await p.runtime.database.fetch_values(
        "SELECT leaf FROM audit_entries WHERE seq >= $1 ORDER BY seq", size
    )
    assert len(leaves) == len(wrongs)
    for (leaf,) in leaves:
        entry = json.loads(bytes(leaf))
        assert (entry["action"], entry["outcome"], entry["citizen_id"]) == (
            "audit.queried",
            "denied",
            None,
        )
        assert not any(wrong.encode() in bytes(leaf) for wrong in wrongs)
    checkpoint = (await p.http.get("/v1/audit/checkpoint")).json()
    assert set(checkpoint) == {"tree_size", "root_hash", "timestamp", "jws"}


NIDS = ["900101-1234567", "850505-2345678", "770707-1111111"]


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(NIDS), st.sampled_from(["nts", "court"]), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
async def test_a_citizen_never_sees_another_citizens_entries(
    home: Platform, ops: list[tuple[str, str, bool]]
) -> None:
    p = home
    for nid, issuer, read_back in ops:
        record_type, data = (
            ("income_certificate", INCOME) if issuer == "nts" else ("sale_contract", CONTRACT)
        )
        await _issue(p, issuer, record_type, data, nid=nid)
        if read_back:
            await p.http.get(f"/v1/me/records/{record_type}", headers=p.citizen(nid))
    for nid in NIDS:
        headers = p.citizen(nid)
        me = (await p.http.get("/v1/me", headers=headers)).json()["citizen_id"]
        log = (await p.http.get("/v1/me/access-log?limit=1000", headers=headers)).json()
        assert all(e["entry"]["citizen_id"] == me for e in log["entries"])
        for other in log["entries"][:1]:
            other_nid = next(n for n in NIDS if n != nid)
            denied = await p.http.get(
                f"/v1/me/access-log/{other['seq']}/proof?tree_size={log['tree_size']}",
                headers=p.citizen(other_nid),
            )
            assert (denied.status_code, denied.json()["code"]) == (404, "not_found")
