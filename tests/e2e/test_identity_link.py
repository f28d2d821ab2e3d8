"""A citizen sign-in carrying the resident number and the CI (``ONCEVAULT_IDP_CI_CLAIM``)
reaches the one citizen both name (DESIGN sections 3 and 6): what agencies issued by
resident number and what a private service asked by CI (docs/decisions.md, "Vault")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.home import mortgage_request
from tests.reliability.inprocess import Local, local_platform
from tests.reliability.scenario import income, token

NID = "900101-1234567"
CI = "Q0ktbGlua2VkLXRlc3Q="
ANY_INCOME = [{"type": "income_certificate", "fields": ["*"]}]


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    async with local_platform(tmp_path, ONCEVAULT_IDP_CI_CLAIM="ci") as platform:
        yield platform


async def test_records_by_nid_and_a_request_by_ci_meet_at_one_citizen(local: Local) -> None:
    nts = {"Authorization": f"Bearer {await token(local.http, local, 'nts', scope='issuer')}"}
    issued = await local.http.post(
        "/v1/records",
        json={"subject": {"nid": NID}, "type": "income_certificate", "data": income(NID)},
        headers=nts,
    )
    assert issued.status_code == 201, issued.text
    bank = {"Authorization": f"Bearer {await token(local.http, local, 'kbank', scope='consumer')}"}
    asked = await local.http.post(
        "/v1/consent-requests",
        json=mortgage_request({"ci": CI}, items=ANY_INCOME),
        headers=bank,
    )
    assert asked.status_code == 201, asked.text
    # Apart until the citizen signs in with both: then the CI's citizen (the bank's
    # request) and the resident number's (the tax office's record) are one.
    signed_in = {"Authorization": f"Bearer {local.idp.token(NID, ci=CI)}"}
    me = (await local.http.get("/v1/me", headers=signed_in)).json()
    assert [c["consent_id"] for c in me["consents"]] == [asked.json()["consent_id"]]
    records = (await local.http.get("/v1/me/records", headers=signed_in)).json()["records"]
    assert records == []  # two citizens already apart are not merged by a sign-in
    # A citizen known only by the resident number gets the CI linked at sign-in: a
    # request by that CI afterwards reaches the same citizen.
    other_nid, other_ci = "850505-2345678", "Q0ktb3RoZXI="
    await local.http.post(
        "/v1/records",
        json={
            "subject": {"nid": other_nid},
            "type": "income_certificate",
            "data": income(other_nid),
        },
        headers=nts,
    )
    both = {"Authorization": f"Bearer {local.idp.token(other_nid, ci=other_ci)}"}
    mine = (await local.http.get("/v1/me", headers=both)).json()
    assert [r["type"] for r in mine["records"]] == ["income_certificate"]
    requested = await local.http.post(
        "/v1/consent-requests",
        json=mortgage_request({"ci": other_ci}, items=ANY_INCOME),
        headers=bank,
    )
    assert requested.status_code == 201
    after = (await local.http.get("/v1/me/consents", headers=both)).json()["consents"]
    assert [c["consent_id"] for c in after] == [requested.json()["consent_id"]]
