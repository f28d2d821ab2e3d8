"""`POST /v1/records:batch` over HTTP (in-process, SQLite): one result per record in
order, the set-based store agrees with `POST /v1/records`, refusals are audited, and a
new version is announced once to the standing consent's client ("tell us once")."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.reliability.inprocess import Local, local_platform
from tests.reliability.scenario import income, nid_for, setup_home, token


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    async with local_platform(tmp_path) as platform:
        yield platform


def record(nid: str, data: object, record_type: str = "income_certificate") -> dict[str, object]:
    return {"subject": {"nid": nid}, "type": record_type, "data": data}


async def test_a_batch_answers_in_order_and_announces_new_versions_once(local: Local) -> None:
    home = await setup_home(local.http, local, citizens=2)
    a, b = home.nids
    bank = {"Authorization": "Bearer " + await token(local.http, local, "kbank", scope="consumer")}
    cursor = (await local.http.get("/v1/events", headers=bank)).json()["next"]
    nts = {"Authorization": "Bearer " + await token(local.http, local, "nts", scope="issuer")}
    newer = income(a, 99)
    newcomer = nid_for(5, 4242)
    size = (await local.runtime.audit.state()).size
    answer = await local.http.post(
        "/v1/records:batch",
        headers=nts,
        json={
            "records": [
                record(a, newer),  # a new version of an existing record
                record(a, newer),  # the same content again: unchanged
                record(b, income(b, 1)),  # what b already holds: unchanged
                record(newcomer, income(newcomer)),  # a new citizen
                record(a, {"year": "not a number"}),  # invalid data
                record(a, {"unique_number": "x", "address": "y"}, "real_estate_title"),
                {"subject": {"nid": "12"}, "type": "income_certificate", "data": income(a)},
            ]
        },
    )
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["index"] for r in results] == list(range(7))
    assert [(r["status"], r.get("version")) for r in results] == [
        (201, 2),
        (200, 2),
        (200, 1),
        (201, 1),
        (422, None),
        (403, None),
        (422, None),
    ]
    assert results[0]["record_id"] == results[1]["record_id"]
    assert [r.get("code") for r in results[4:]] == [
        "validation_error",
        "type_not_issuable",
        "validation_error",
    ]

    # One entry per stored or unchanged record, and the audited refusal.
    rows = await local.database.fetch(
        "SELECT leaf FROM audit_entries WHERE seq >= $1 ORDER BY seq", size
    )
    entries = [json.loads(bytes(r["leaf"])) for r in rows]
    assert sorted((e["action"], e["outcome"], e.get("record_version")) for e in entries) == sorted(
        [
            ("record.put", "ok", 2),
            ("record.put", "ok", 2),
            ("record.put", "ok", 1),
            ("record.put", "ok", 1),
            ("record.put", "denied", None),
        ]
    )

    # Tell us once: the bank's standing consent on a hears of version 2, once.
    feed = (await local.http.get(f"/v1/events?after={cursor}", headers=bank)).json()["events"]
    assert [(e["type"], e["consent_id"], e["version"]) for e in feed] == [
        ("record.updated", home.consent_of[a], 2)
    ]

    # The consented read serves the new version.
    bound = home.tokens[home.consent_of[a]]
    read = await local.http.get(
        "/v1/data/income_certificate", headers={"Authorization": f"Bearer {bound}"}
    )
    assert read.status_code == 200
    assert (read.json()["version"], read.json()["data"]["total_income"]) == (
        2,
        newer["total_income"],
    )


async def test_a_batch_without_its_key_provider_stores_nothing(
    local: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole batch is one unit: the key provider down is 503 `kms_unavailable` with
    no record, no citizen and no entry (before, the records handled first stayed)."""
    from vault.errors import KeyProviderUnavailable  # noqa: PLC0415

    nts = {"Authorization": "Bearer " + await token(local.http, local, "nts", scope="issuer")}
    ok = await local.http.post(
        "/v1/records:batch", headers=nts, json={"records": [record(nid_for(1, 77), income(""))]}
    )
    assert ok.status_code == 200
    assert ok.json()["results"][0]["status"] == 201

    async def down(*_: object, **__: object) -> list[str]:
        raise KeyProviderUnavailable("key provider unreachable")

    monkeypatch.setattr(local.runtime.keys, "wrap", down)
    size = (await local.runtime.audit.state()).size
    counts = [
        len(await local.database.fetch(f"SELECT 1 FROM {table}"))
        for table in ("records", "citizens", "deks")
    ]
    answer = await local.http.post(
        "/v1/records:batch",
        headers=nts,
        json={
            "records": [
                record(nid_for(1, 77), income("", 5)),  # existing citizen: its DEK is cached
                record(nid_for(2, 77), income("")),  # new citizen: needs a wrap
            ]
        },
    )
    assert answer.status_code == 503
    assert answer.json()["code"] == "kms_unavailable"
    assert "retry-after" in answer.headers
    assert (await local.runtime.audit.state()).size == size
    assert [
        len(await local.database.fetch(f"SELECT 1 FROM {table}"))
        for table in ("records", "citizens", "deks")
    ] == counts


async def test_refusals_in_a_batch_share_their_commits(local: Local) -> None:
    """Each refused record is audited (`denied`), and the refusals are appended in
    group-committed batches together, not one COMMIT after another."""
    nts = {"Authorization": "Bearer " + await token(local.http, local, "nts", scope="issuer")}
    title = {"unique_number": "x", "address": "y"}
    batches = local.runtime.audit.batches
    size = (await local.runtime.audit.state()).size
    answer = await local.http.post(
        "/v1/records:batch",
        headers=nts,
        json={"records": [record(nid_for(i, 78), title, "real_estate_title") for i in range(20)]},
    )
    assert answer.status_code == 200
    assert {(r["status"], r["code"]) for r in answer.json()["results"]} == {
        (403, "type_not_issuable")
    }
    assert (await local.runtime.audit.state()).size == size + 20
    assert local.runtime.audit.batches - batches <= 3
