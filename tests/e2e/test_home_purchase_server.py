"""The home purchase end to end against a real `oncevault serve --workers 2`.

Court issues the title and the sale contract, the tax service the income certificate;
the bank asks for mortgage screening, the citizen approves, the bank reads only what
it asked for, the citizen's own read is audited, an independent stdlib verifier checks
the bank's read against a signed checkpoint, the citizen revokes, and the bank's
still-valid token gets 403 consent_revoked.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests import independent_verifier as ref
from tests.e2e.test_oauth_server import register
from tests.helpers.clients import TestClient
from tests.helpers.home import BUYER_NID, CONTRACT, INCOME, MORTGAGE_ITEMS, TITLE
from tests.helpers.server import ServerProcess, run_cli
from vault import crypto


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_home_purchase_over_http(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run_cli("init", "--data-dir", str(data_dir)).returncode == 0
    court = register(data_dir, TestClient("court", roles=("issuer",)))
    nts = register(data_dir, TestClient("nts", alg="ES256", roles=("issuer",)))
    bank = register(data_dir, TestClient("kbank", roles=("consumer",)))
    auditor = register(data_dir, TestClient("bai", roles=("auditor",)))
    with ServerProcess(data_dir, workers=2) as server:
        base = server.base_url
        http = httpx.Client(base_url=base, timeout=10)

        def token(client: TestClient, **kw: object) -> str:
            response = http.post("/oauth/token", data=client.token_form(base, **kw))  # type: ignore[arg-type]
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])

        citizen_token = run_cli(
            "dev-token", "--nid", BUYER_NID, "--data-dir", str(data_dir), "--port", str(server.port)
        )
        assert citizen_token.returncode == 0, citizen_token.stderr
        citizen = _bearer(citizen_token.stdout.strip())

        for client, record_type, data in (
            (court, "real_estate_title", TITLE),
            (court, "sale_contract", CONTRACT),
            (nts, "income_certificate", INCOME),
        ):
            put = http.post(
                "/v1/records",
                json={"subject": {"nid": BUYER_NID}, "type": record_type, "data": data},
                headers=_bearer(token(client)),
            )
            assert put.status_code == 201, put.text

        request = http.post(
            "/v1/consent-requests",
            json={
                "subject": {"nid": BUYER_NID},
                "purpose": "mortgage_screening",
                "items": MORTGAGE_ITEMS,
                "access": "standing",
                "valid_days": 30,
            },
            headers=_bearer(token(bank)),
        )
        assert request.status_code == 201, request.text
        consent_id = request.json()["consent_id"]
        assert (
            http.post(f"/v1/me/consents/{consent_id}/approve", headers=citizen).json()["status"]
            == "active"
        )

        bank_token = token(bank, consent_id=consent_id)
        read = http.get("/v1/data", headers=_bearer(bank_token))
        assert read.status_code == 200, read.text
        items = {i["type"]: i["data"] for i in read.json()["items"]}
        assert items == {
            "income_certificate": {"year": 2025, "total_income": 86_400_000},
            "real_estate_title": {k: TITLE[k] for k in ("unique_number", "address", "area_m2")},
        }
        bank_seq = int(read.headers["x-audit-seq"])

        own = http.get("/v1/me/records/sale_contract", headers=citizen)
        assert own.status_code == 200
        assert own.json()["data"]["price"] == CONTRACT["price"]
        own_seq = int(own.headers["x-audit-seq"])
        log = http.get("/v1/me/access-log", headers=citizen).json()["entries"]
        seqs = [e["seq"] for e in log]
        assert bank_seq in seqs and own_seq in seqs
        assert seqs == sorted(seqs, reverse=True)

        # The public checkpoint covers the bank's read within about a second.
        deadline = time.monotonic() + 10
        while True:
            checkpoint = http.get("/v1/audit/checkpoint").json()
            if checkpoint["tree_size"] > bank_seq or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert checkpoint["tree_size"] > bank_seq
        jwks = http.get("/.well-known/jwks.json").json()
        cp_keys = {k["kid"]: k for k in jwks["keys"] if k["kid"].startswith("cp-")}
        _, signed = crypto.verify_jws(
            checkpoint["jws"], keys=cp_keys, typ="checkpoint+jwt", allowed_kid_prefix="cp-"
        )
        assert signed["tree_size"] == checkpoint["tree_size"]
        assert signed["root_hash"] == checkpoint["root_hash"]
        assert signed["origin"] == base
        # The bank's read entry, fetched by an auditor, and its proof checked independently.
        audit_token = token(auditor)
        page = http.get(
            f"/v1/audit/entries?after={bank_seq - 1}&limit=1", headers=_bearer(audit_token)
        ).json()
        entry = page["entries"][0]
        assert entry["seq"] == bank_seq
        assert (
            entry["entry"]["action"],
            entry["entry"]["client_id"],
            entry["entry"]["outcome"],
        ) == ("data.read", "kbank", "ok")
        leaf = json.dumps(entry["entry"], sort_keys=True, separators=(",", ":")).encode()
        assert ref.leaf_hash(leaf).hex() == entry["leaf_hash"]
        proof = http.get(
            f"/v1/audit/proofs/inclusion?seq={bank_seq}&tree_size={checkpoint['tree_size']}",
            headers=_bearer(audit_token),
        ).json()
        ref.verify_inclusion(
            ref.leaf_hash(leaf),
            bank_seq,
            checkpoint["tree_size"],
            [bytes.fromhex(h) for h in proof["inclusion_path"]],
            bytes.fromhex(checkpoint["root_hash"]),
        )
        # The citizen's own proof endpoint agrees.
        mine = http.get(
            f"/v1/me/access-log/{bank_seq}/proof?tree_size={checkpoint['tree_size']}",
            headers=citizen,
        ).json()
        assert mine["inclusion_path"] == proof["inclusion_path"]

        assert (
            http.post(f"/v1/me/consents/{consent_id}/revoke", headers=citizen).json()["status"]
            == "revoked"
        )
        refused = http.get("/v1/data", headers=_bearer(bank_token))
        assert (refused.status_code, refused.json()["code"]) == (403, "consent_revoked")
        assert "x-audit-seq" in refused.headers
        http.close()
    verified = run_cli("audit", "verify", "--data-dir", str(data_dir))
    assert verified.returncode == 0, verified.stderr
