"""The relying party against an external OpenID provider (production settings).

A tiny token endpoint on loopback stands in for the IdP: it checks the client's
``client_secret_basic`` credentials and the PKCE verifier, and answers an id_token
signed with a key from ``ONCEVAULT_IDP_JWKS_FILE``. The citizen's browser is httpx.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from api.settings import Settings, SettingsError
from api.web.config import (
    AUTHORIZATION_ENDPOINT_ENV,
    CLIENT_SECRET_FILE_ENV,
    TOKEN_ENDPOINT_ENV,
    load_web_config,
)
from api.web.session import load_or_create_secret
from tests.helpers.lifespan import lifespan
from tests.helpers.runtime import local_settings, open_runtime
from tests.web.conftest import make_web_app
from vault import crypto
from vault.clock import ManualClock
from vault.storage import Database

IDP = "https://idp.example.go.kr"
CLIENT_ID = "oncevault-web"
SECRET = "s3cret-for-tests"
PLATFORM = "https://vault.example.go.kr"
NID = "900101-1234567"


@dataclass
class FakeIdP:
    """The token endpoint of an external IdP (the authorization page is skipped)."""

    seed: bytes
    kid: str
    grants: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def grant(self, code: str, *, nonce: str, challenge: str, **claims: Any) -> None:
        self.grants[code] = {"nonce": nonce, "challenge": challenge, "claims": claims}

    def id_token(self, nonce: str, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": IDP,
            "sub": NID,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "auth_time": now,
            "nonce": nonce,
            **overrides,
        }
        return crypto.sign_jws(claims, private_key=self.seed, kid=self.kid, typ="JWT")


def _handler(idp: FakeIdP) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            auth = self.headers.get("Authorization", "")
            idp.seen.append({"form": form, "authorization": auth})
            expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
            if auth != expected:
                self._answer(401, {"error": "invalid_client"})
                return
            grant = idp.grants.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            challenge = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                .rstrip(b"=")
                .decode()
            )
            if grant is None or grant["challenge"] != challenge:
                self._answer(400, {"error": "invalid_grant"})
                return
            self._answer(
                200,
                {
                    "id_token": idp.id_token(grant["nonce"], **grant["claims"]),
                    "token_type": "Bearer",
                },
            )

    return Handler


@pytest.fixture
def fake_idp(tmp_path: Path) -> Iterator[FakeIdP]:
    seed = crypto.generate_signing_key()
    idp = FakeIdP(seed=seed, kid="idp-key-1")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(idp))
    idp.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield idp
    finally:
        server.shutdown()
        server.server_close()


def _external_settings(tmp_path: Path, idp: FakeIdP) -> tuple[Settings, dict[str, str]]:
    jwks = tmp_path / "idp-jwks.json"
    jwks.write_text(json.dumps({"keys": [crypto.public_jwk(idp.seed, idp.kid)]}))
    secret = tmp_path / "idp-client-secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    settings = local_settings(
        tmp_path,
        ONCEVAULT_ISSUER=PLATFORM,
        ONCEVAULT_IDP_ISSUER=IDP,
        ONCEVAULT_IDP_JWKS_FILE=str(jwks),
        ONCEVAULT_IDP_AUDIENCE=CLIENT_ID,
    )
    environ = {
        AUTHORIZATION_ENDPOINT_ENV: IDP + "/oauth2/authorize",
        TOKEN_ENDPOINT_ENV: idp.url + "/token",
        CLIENT_SECRET_FILE_ENV: str(secret),
    }
    return settings, environ


@pytest.fixture
async def rp(
    database: Database, tmp_path: Path, fake_idp: FakeIdP, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    settings, environ = _external_settings(tmp_path, fake_idp)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)  # as `oncevault serve` hands them to its workers
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    seed = await open_runtime(settings, database, ManualClock())
    await seed.close(database=False)
    app = make_web_app(settings, database=database)
    transport = httpx.ASGITransport(app=app)
    async with lifespan(app), httpx.AsyncClient(transport=transport, base_url=PLATFORM) as http:
        yield http


async def _start(http: httpx.AsyncClient) -> dict[str, str]:
    response = await http.get("/my/login", params={"next": "/my/records"})
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(IDP + "/oauth2/authorize?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def test_sign_in_through_an_external_idp(rp: httpx.AsyncClient, fake_idp: FakeIdP) -> None:
    query = await _start(rp)
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == PLATFORM + "/my/callback"
    fake_idp.grant("code-1", nonce=query["nonce"], challenge=query["code_challenge"])

    done = await rp.get(
        "/my/callback", params={"code": "code-1", "state": query["state"], "iss": IDP}
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/my/records"
    cookie = done.headers["set-cookie"]
    assert "oncevault_session=" in cookie
    assert "HttpOnly" in cookie
    assert "Secure" in cookie  # the platform is https
    assert "SameSite=lax" in cookie
    assert fake_idp.seen[-1]["form"]["grant_type"] == "authorization_code"
    assert "client_id" not in fake_idp.seen[-1]["form"]  # client_secret_basic instead

    page = await rp.get("/my/records")
    assert page.status_code == 200
    assert "로그아웃" in page.text
    # The IdP's origin is allowed as a form target (fresh sign-in redirects go there).
    assert f"form-action 'self' {IDP}; base-uri 'none'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("overrides", "iss"),
    [
        ({"nonce": "another"}, IDP),
        ({"aud": "someone-else"}, IDP),
        ({"iss": "https://evil.example"}, IDP),
        ({}, "https://evil.example"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 3700}, IDP),
    ],
    ids=["nonce", "audience", "issuer", "iss-parameter", "expired"],
)
async def test_a_bad_id_token_starts_no_session(
    rp: httpx.AsyncClient, fake_idp: FakeIdP, overrides: dict[str, Any], iss: str
) -> None:
    query = await _start(rp)
    claims = dict(overrides)  # the parameter is shared by both engines' runs
    nonce = claims.pop("nonce", query["nonce"])
    fake_idp.grant("code-2", nonce=nonce, challenge=query["code_challenge"], **claims)
    done = await rp.get(
        "/my/callback", params={"code": "code-2", "state": query["state"], "iss": iss}
    )
    assert done.status_code == 400
    assert "oncevault_session" not in done.headers.get("set-cookie", "")
    assert (await rp.get("/my/records")).status_code == 303


async def test_a_code_redeemed_with_another_verifier_is_refused(
    rp: httpx.AsyncClient, fake_idp: FakeIdP
) -> None:
    query = await _start(rp)
    fake_idp.grant("code-3", nonce=query["nonce"], challenge="x" * 43)
    done = await rp.get("/my/callback", params={"code": "code-3", "state": query["state"]})
    assert done.status_code == 400
    assert "oncevault_session" not in done.headers.get("set-cookie", "")


def test_config_picks_the_development_idp_and_secure_cookies(tmp_path: Path) -> None:
    settings = local_settings(
        tmp_path, ONCEVAULT_ISSUER="http://127.0.0.1:8000", ONCEVAULT_DEV_IDP="1"
    )
    config = load_web_config(settings, {})
    assert config.idp is not None
    assert config.idp.development
    assert config.idp.client_id == "oncevault"
    assert config.idp.authorization_endpoint == "http://127.0.0.1:8000/dev-idp/authorize"
    assert config.idp.token_endpoint == "http://127.0.0.1:8000/dev-idp/token"
    assert not config.secure_cookies
    assert config.session_key_file == settings.data_dir / "web-session.key"

    https = local_settings(tmp_path, ONCEVAULT_ISSUER="https://vault.example.go.kr")
    plain = load_web_config(https, {})
    assert plain.idp is None
    assert plain.secure_cookies


def test_session_secret_is_private_stable_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "web-session.key"
    first = load_or_create_secret(path)
    assert len(first) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(path) == first
    path.chmod(0o644)
    with pytest.raises(SettingsError, match="must be mode 0600"):
        load_or_create_secret(path)
