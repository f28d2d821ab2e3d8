"""Against a real `oncevault serve --workers 2`: Authlib, disable, replays across workers and restarts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey, OKPKey

from tests.helpers.clients import TestClient
from tests.helpers.server import ServerProcess, run_cli
from vault import crypto

_CLIENTS: dict[str, dict[str, TestClient]] = {}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    assert run_cli("init", "--data-dir", str(data_dir)).returncode == 0
    return data_dir


def register(data_dir: Path, client: TestClient, *extra: str) -> TestClient:
    jwks = data_dir.parent / f"{client.client_id}.jwks.json"
    jwks.write_text(json.dumps(client.jwks))
    args = [
        "clients",
        "add",
        "--data-dir",
        str(data_dir),
        "--id",
        client.client_id,
        "--name",
        client.client_id.upper(),
        "--kind",
        client.kind,
        "--jwks",
        str(jwks),
    ]
    for role in client.roles:
        args += ["--role", role]
    result = run_cli(*args, *extra)
    assert result.returncode == 0, result.stderr
    _CLIENTS.setdefault(str(data_dir), {})[client.client_id] = client
    return client


@pytest.fixture
def server(data_dir: Path) -> Iterator[ServerProcess]:
    register(data_dir, TestClient("kbank", alg="EdDSA"))
    register(data_dir, TestClient("nts", alg="ES256", roles=("issuer", "consumer")))
    with ServerProcess(data_dir, workers=2) as server:
        yield server


def _authlib_token(server: ServerProcess, client: TestClient) -> dict[str, object]:
    token_url = server.base_url + "/oauth/token"
    key_class = OKPKey if client.alg == "EdDSA" else ECKey
    key = key_class.import_key(client.private_pem)
    session = OAuth2Session(
        client.client_id,
        key,
        token_endpoint_auth_method=PrivateKeyJWT(
            token_url, claims={"exp": int(time.time()) + 120}, alg=client.alg
        ),
    )
    try:
        return dict(session.fetch_token(token_url, grant_type="client_credentials"))
    finally:
        session.close()


def test_authlib_obtains_tokens_that_verify_against_the_jwks(
    server: ServerProcess, data_dir: Path
) -> None:
    jwks = httpx.get(server.base_url + "/.well-known/jwks.json").json()
    keys = {k["kid"]: k for k in jwks["keys"] if k["kid"].startswith("at-")}
    clients = _registered(data_dir)
    for client_id, expected_scope in (("kbank", "consumer"), ("nts", "consumer issuer")):
        token = _authlib_token(server, clients[client_id])
        assert token["token_type"] == "Bearer"
        assert token["scope"] == expected_scope
        header, claims = crypto.verify_jws(str(token["access_token"]), keys=keys, typ="at+jwt")
        assert header["alg"] == "EdDSA"
        assert claims["client_id"] == claims["sub"] == client_id
        assert claims["iss"] == claims["aud"] == server.base_url
        assert claims["exp"] - claims["iat"] <= 300


def _registered(data_dir: Path) -> dict[str, TestClient]:
    return _CLIENTS[str(data_dir)]


def test_disable_replays_and_restarts(data_dir: Path) -> None:
    kbank = register(data_dir, TestClient("kbank"))
    secbank = register(data_dir, TestClient("secbank", dpop_required=True), "--dpop-required")
    server = ServerProcess(data_dir, workers=2).start()
    try:
        base = server.base_url
        token_url = base + "/oauth/token"
        route = base + "/v1/consents/cns_missing"
        replayed_form = kbank.token_form(base)
        first = httpx.post(token_url, data=replayed_form)
        assert first.status_code == 200, first.text
        token = first.json()["access_token"]
        for _ in range(6):  # both workers answer
            assert httpx.get(route, headers={"Authorization": f"Bearer {token}"}).status_code == 404
        # A DPoP proof is single-use across workers.
        issued = httpx.post(
            token_url,
            data=secbank.token_form(base),
            headers={"DPoP": secbank.dpop("POST", token_url)},
        )
        assert issued.status_code == 200, issued.text
        bound = issued.json()["access_token"]
        proof = secbank.dpop("GET", route, token=bound)
        statuses = [
            httpx.get(route, headers={"Authorization": f"DPoP {bound}", "DPoP": proof}).status_code
            for _ in range(6)
        ]
        assert statuses == [404] + [401] * 5
        # Disabling the client: its still-valid token fails at once, on every worker.
        assert run_cli("clients", "disable", "kbank", "--data-dir", str(data_dir)).returncode == 0
        for _ in range(6):
            refused = httpx.get(route, headers={"Authorization": f"Bearer {token}"})
            assert (refused.status_code, refused.json()["code"]) == (401, "invalid_token")
        assert run_cli("clients", "enable", "kbank", "--data-dir", str(data_dir)).returncode == 0
    finally:
        server.stop()
    # After a restart the assertion's jti is still remembered.
    with ServerProcess(data_dir, workers=2) as again:
        replay = httpx.post(again.base_url + "/oauth/token", data=replayed_form)
        assert (replay.status_code, replay.json()["error"]) == (401, "invalid_client")
