"""Workloads over HTTP, the same against a real server and against the app in-process.

A *deployment* is anything with ``base_url`` (the issuer), ``clients`` (registered
:class:`~tests.helpers.clients.TestClient` by id) and ``idp`` (the trusted test IdP):
a :class:`tests.reliability.stack.Stack` with its server, or the in-process platform
of the twins. The workloads only speak HTTP through the ``httpx.AsyncClient`` given.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from tests.helpers.clients import TestClient
from tests.reliability.checks import Read, observe
from tests.reliability.stack import TestIdP, bearer

MORTGAGE_ITEMS = [
    {"type": "income_certificate", "fields": ["year", "total_income"]},
    {"type": "real_estate_title", "fields": ["unique_number", "address"]},
]


class Deployment(Protocol):
    @property
    def base_url(self) -> str: ...

    clients: dict[str, TestClient]
    idp: TestIdP


def nid_for(index: int, salt: int = 0) -> str:
    """A well-formed, distinct resident registration number."""
    return f"{800101 + salt:06d}-{1_000_000 + index:07d}"


async def token(
    http: httpx.AsyncClient, dep: Deployment, client_id: str, *, dpop: bool = False, **kw: Any
) -> str:
    """An access token of ``client_id`` (``kw``: ``scope``, ``consent_id``); with
    ``dpop``, bound to the client's DPoP key (RFC 9449)."""
    client = dep.clients[client_id]
    form = client.token_form(dep.base_url, **kw)
    headers = {"DPoP": client.dpop("POST", dep.base_url + "/oauth/token")} if dpop else {}
    response = await http.post("/oauth/token", data=form, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == ("DPoP" if dpop else "Bearer")
    return str(response.json()["access_token"])


def income(nid: str, n: int = 0) -> dict[str, Any]:
    return {"year": 2025, "total_income": 50_000_000 + n, "tax_paid": 1_000 + n, "employer": "E"}


def title(nid: str, n: int = 0) -> dict[str, Any]:
    return {
        "unique_number": f"1146-2008-{n:06d}",
        "address": "Seoul",
        "property_kind": "apartment",
        "area_m2": 84.5,
        "registered_on": "2012-05-14",
        "owners": [],
        "mortgages": [],
    }


async def put_record(
    http: httpx.AsyncClient, issuer_token: str, nid: str, record_type: str, data: dict[str, Any]
) -> httpx.Response:
    return await http.post(
        "/v1/records",
        json={"subject": {"nid": nid}, "type": record_type, "data": data},
        headers=bearer(issuer_token),
    )


async def consent_for(
    http: httpx.AsyncClient,
    dep: Deployment,
    bank_token: str,
    nid: str,
    *,
    access: str = "standing",
    approve: bool = True,
) -> str:
    body = {
        "subject": {"nid": nid},
        "purpose": "mortgage_screening",
        "items": MORTGAGE_ITEMS,
        "access": access,
        "valid_days": 30,
    }
    requested = await http.post("/v1/consent-requests", json=body, headers=bearer(bank_token))
    assert requested.status_code in (200, 201), requested.text
    consent_id = str(requested.json()["consent_id"])
    if approve:
        approved = await http.post(
            f"/v1/me/consents/{consent_id}/approve", headers=dep.idp.headers(nid)
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "active"
    return consent_id


@dataclass
class Home:
    """Citizens with records and an approved consent each, and the bank's bound tokens."""

    nids: list[str]
    consent_of: dict[str, str] = field(default_factory=dict)  # nid -> consent_id
    tokens: dict[str, str] = field(default_factory=dict)  # consent_id -> bound bank token


async def setup_home(
    http: httpx.AsyncClient, dep: Deployment, *, citizens: int, salt: int | None = None
) -> Home:
    salt = secrets.randbelow(90_000) if salt is None else salt
    home = Home(nids=[nid_for(i, salt) for i in range(citizens)])
    nts = await token(http, dep, "nts", scope="issuer")
    court = await token(http, dep, "court")
    bank = await token(http, dep, "kbank", scope="consumer")
    for n, nid in enumerate(home.nids):
        for issuer, record_type, data in (
            (nts, "income_certificate", income(nid, n)),
            (court, "real_estate_title", title(nid, n)),
        ):
            put = await put_record(http, issuer, nid, record_type, data)
            assert put.status_code == 201, put.text
        consent_id = await consent_for(http, dep, bank, nid)
        home.consent_of[nid] = consent_id
        home.tokens[consent_id] = await token(http, dep, "kbank", consent_id=consent_id)
    return home


async def read_storm(
    http: httpx.AsyncClient,
    home: Home,
    *,
    clients: int,
    reads_per_client: int,
    revoke: Callable[[], Awaitable[None]] | None = None,
    revoke_after: int = 0,
) -> list[Read]:
    """``clients`` concurrent readers, each ``reads_per_client`` GET /v1/data across the
    citizens' consents; ``revoke`` runs once ``revoke_after`` reads have been answered,
    while the others keep reading."""
    consents = list(home.tokens)
    reads: list[Read] = []
    answered = 0
    trigger = asyncio.Event()

    async def reader(index: int) -> None:
        nonlocal answered
        for j in range(reads_per_client):
            consent_id = consents[(index + j) % len(consents)]
            response = await http.get("/v1/data", headers=bearer(home.tokens[consent_id]))
            reads.append(observe(consent_id, response))
            answered += 1
            if answered >= revoke_after:
                trigger.set()

    async def revoker() -> None:
        if revoke is None:
            return
        await trigger.wait()
        await revoke()

    await asyncio.gather(revoker(), *(reader(i) for i in range(clients)))
    return reads


async def once_storm(
    http: httpx.AsyncClient, dep: Deployment, home: Home, *, readers: int
) -> list[Read]:
    """``readers`` simultaneous reads of a fresh ``once`` consent."""
    nid = home.nids[0]
    bank = await token(http, dep, "kbank", scope="consumer")
    consent_id = await consent_for(http, dep, bank, nid, access="once")
    bound = await token(http, dep, "kbank", consent_id=consent_id)
    responses = await asyncio.gather(
        *(http.get("/v1/data", headers=bearer(bound)) for _ in range(readers))
    )
    return [observe(consent_id, r) for r in responses]


async def revoke_consent(
    http: httpx.AsyncClient, dep: Deployment, nid: str, consent_id: str
) -> None:
    response = await http.post(f"/v1/me/consents/{consent_id}/revoke", headers=dep.idp.headers(nid))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "revoked"


async def audit_entries(
    http: httpx.AsyncClient, dep: Deployment
) -> tuple[dict[int, dict[str, Any]], int]:
    """Every entry through the auditor API (``GET /v1/audit/entries``), and the tree size."""
    auditor = await token(http, dep, "bai")
    entries: dict[int, dict[str, Any]] = {}
    after: int | None = None
    tree_size = 0
    while True:
        query = "limit=1000" + (f"&after={after}" if after is not None else "")
        page = await http.get(f"/v1/audit/entries?{query}", headers=bearer(auditor))
        assert page.status_code == 200, page.text
        body = page.json()
        tree_size = int(body["tree_size"])
        for item in body["entries"]:
            assert item["seq"] == item["entry"]["seq"]
            entries[int(item["seq"])] = item["entry"]
        if not body["entries"]:
            return entries, tree_size
        after = int(body["next"])
