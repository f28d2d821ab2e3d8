"""The development IdP over HTTP: the whole OIDC code + PKCE flow, and every refusal."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from structlog.testing import capture_logs

from api.errors import EXCEPTION_HANDLERS
from api.idp import DEV_AUDIENCE, CitizenTokenVerifier, DevIdP
from api.routes.dev_idp import CODE_LIFETIME, CSRF_COOKIE, dev_idp_router
from api.settings import Settings, SettingsError, load_settings
from vault import crypto
from vault.models import Subject

PLATFORM = "http://127.0.0.1:8000"
REDIRECT_URI = PLATFORM + "/app/callback"
CLIENT_ID = DEV_AUDIENCE
NID = "850315-2345678"  # the canary: never echoed, never logged
NID_DIGITS = NID.replace("-", "")
START = 1_780_000_000


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now


def make_settings(data_dir: Path, *, dev: bool = True) -> Settings:
    data_dir.mkdir(mode=0o700, exist_ok=True)
    flags: dict[str, str | None] = {
        "ONCEVAULT_ISSUER": PLATFORM,
        "ONCEVAULT_DEV_IDP": "1" if dev else "0",
    }
    return load_settings(flags, {}, data_dir_flag=str(data_dir))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def dev_idp(settings: Settings) -> DevIdP:
    return DevIdP.load_or_create(settings.data_dir, settings.issuer)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_app(dev_idp: DevIdP, settings: Settings, clock: Clock) -> Litestar:
    return Litestar(
        route_handlers=[dev_idp_router(dev_idp, settings, clock=clock)],
        exception_handlers=EXCEPTION_HANDLERS,
        logging_config=None,
    )


@pytest.fixture
def client(dev_idp: DevIdP, settings: Settings, clock: Clock) -> Iterator[TestClient[Litestar]]:
    with TestClient(make_app(dev_idp, settings, clock), base_url=PLATFORM) as test_client:
        yield test_client


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = crypto.b64url_encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge


def authorize_params(challenge: str, **changes: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "state": "st-123",
        "nonce": "n-456",
        "scope": "openid",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(changes)
    return {name: value for name, value in params.items() if value is not None}


def form_token(page: str) -> str:
    match = re.search(r'<input type="hidden" name="request" value="([A-Za-z0-9_-]+)">', page)
    assert match is not None
    return match.group(1)


def sign_in(
    client: TestClient[Litestar], challenge: str, *, nid: str = NID, **changes: str | None
) -> httpx.Response:
    page = client.get("/dev-idp/authorize", params=authorize_params(challenge, **changes))
    assert page.status_code == 200, page.text
    return client.post(
        "/dev-idp/authorize",
        data={"request": form_token(page.text), "nid": nid},
        follow_redirects=False,
    )


def code_from(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return query["code"][0]


def exchange(
    client: TestClient[Litestar], code: str, verifier: str, /, **changes: str | None
) -> httpx.Response:
    form: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "client_id": CLIENT_ID,
        "code_verifier": verifier,
    }
    form.update(changes)
    return client.post(
        "/dev-idp/token", data={name: value for name, value in form.items() if value is not None}
    )


def oauth_error(response: httpx.Response, error: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["error"] == error
    assert NID not in response.text
    assert NID_DIGITS not in response.text
    return body


# --------------------------------------------------------------------------
# The happy path
# --------------------------------------------------------------------------


def test_code_flow_with_pkce_end_to_end(
    client: TestClient[Litestar], dev_idp: DevIdP, settings: Settings, clock: Clock
) -> None:
    verifier, challenge = pkce()

    with capture_logs() as logs:
        # 1. The sign-in page: banner, labelled input, form token, CSRF cookie.
        page = client.get("/dev-idp/authorize", params=authorize_params(challenge))
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "개발용 로그인 / Development sign-in — not for production" in page.text
        assert 'class="banner" role="alert"' in page.text
        assert '<label for="nid">주민등록번호 / Resident registration number</label>' in page.text
        assert '<input type="text" id="nid" name="nid"' in page.text
        assert 'action="/dev-idp/authorize"' in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(CSRF_COOKIE + "=")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/dev-idp" in cookie
        assert "st-123" not in page.text  # the request travels sealed, not in hidden fields

        # 2. Submitting the number: 303 back to the client with code, state and iss.
        clock.now += 5
        answer = client.post(
            "/dev-idp/authorize",
            data={"request": form_token(page.text), "nid": NID},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        location = urlsplit(answer.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
        query = parse_qs(location.query)
        assert query["state"] == ["st-123"]
        assert query["iss"] == [PLATFORM + "/dev-idp"]
        code = query["code"][0]
        assert NID not in answer.headers["location"]
        assert NID_DIGITS not in answer.headers["location"]

        # 3. The token request.
        clock.now += 10
        tokens = exchange(client, code, verifier)

    assert tokens.status_code == 200, tokens.text
    assert tokens.headers["cache-control"] == "no-store"
    body = tokens.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert set(body) == {"id_token", "access_token", "token_type", "expires_in", "scope"}

    # 4. Both tokens pass the same verifier the citizen API uses.
    verifier_ = CitizenTokenVerifier(settings)
    for token in (body["id_token"], body["access_token"]):
        principal = verifier_.verify(token, now=clock.now)
        assert principal.subject == Subject("nid", NID_DIGITS)
        assert principal.issuer == PLATFORM + "/dev-idp"
        assert principal.auth_time == START + 5
        assert principal.expires_at == START + 15 + 900
    _header, id_claims = crypto.verify_jws(
        body["id_token"], keys={dev_idp.kid: dev_idp.jwks()["keys"][0]}, typ="JWT"
    )
    assert id_claims["nonce"] == "n-456"
    assert id_claims["aud"] == CLIENT_ID

    # Nothing logged the number.
    assert logs
    assert NID not in repr(logs)
    assert NID_DIGITS not in repr(logs)


def test_discovery_and_jwks(client: TestClient[Litestar], dev_idp: DevIdP) -> None:
    config = client.get("/dev-idp/.well-known/openid-configuration", headers={"Host": "evil"})
    assert config.status_code == 200
    metadata = config.json()
    issuer = PLATFORM + "/dev-idp"
    assert metadata["issuer"] == issuer  # from ONCEVAULT_ISSUER, never from Host
    assert metadata["authorization_endpoint"] == issuer + "/authorize"
    assert metadata["token_endpoint"] == issuer + "/token"
    assert metadata["jwks_uri"] == issuer + "/jwks.json"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["response_types_supported"] == ["code"]
    jwks = client.get("/dev-idp/jwks.json").json()
    assert jwks == dev_idp.jwks()
    assert "d" not in jwks["keys"][0]


def test_a_code_works_on_another_worker(
    client: TestClient[Litestar], settings: Settings, clock: Clock
) -> None:
    """Stateless codes: a second process loading the same data dir redeems them."""
    verifier, challenge = pkce()
    code = code_from(sign_in(client, challenge))
    other_worker = DevIdP.load_or_create(settings.data_dir, settings.issuer)
    with TestClient(make_app(other_worker, settings, clock), base_url=PLATFORM) as other:
        assert exchange(other, code, verifier).status_code == 200


def test_state_and_nonce_are_optional(client: TestClient[Litestar], settings: Settings) -> None:
    verifier, challenge = pkce()
    answer = sign_in(client, challenge, state=None, nonce=None)
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert "state" not in query
    body = exchange(client, query["code"][0], verifier).json()
    _header, claims = crypto.verify_jws(body["id_token"], keys=_keys(settings), typ="JWT")
    assert "nonce" not in claims


def _keys(settings: Settings) -> dict[str, Any]:
    idp = DevIdP.load_or_create(settings.data_dir, settings.issuer)
    return {idp.kid: idp.jwks()["keys"][0]}


# --------------------------------------------------------------------------
# Token endpoint refusals
# --------------------------------------------------------------------------


def test_wrong_code_verifier(client: TestClient[Litestar]) -> None:
    _verifier, challenge = pkce()
    code = code_from(sign_in(client, challenge))
    other_verifier, _ = pkce()
    body = oauth_error(exchange(client, code, other_verifier), "invalid_grant")
    assert body["error_description"] == "code_verifier does not match the challenge"


def test_the_challenge_itself_is_not_a_verifier(client: TestClient[Litestar]) -> None:
    _verifier, challenge = pkce()
    code = code_from(sign_in(client, challenge))
    oauth_error(exchange(client, code, challenge), "invalid_grant")


def test_expired_code(client: TestClient[Litestar], clock: Clock) -> None:
    verifier, challenge = pkce()
    code = code_from(sign_in(client, challenge))
    clock.now += CODE_LIFETIME + 1
    body = oauth_error(exchange(client, code, verifier), "invalid_grant")
    assert body["error_description"] == "the code is invalid or expired"


def test_code_at_its_last_second_still_works(client: TestClient[Litestar], clock: Clock) -> None:
    verifier, challenge = pkce()
    code = code_from(sign_in(client, challenge))
    clock.now += CODE_LIFETIME
    assert exchange(client, code, verifier).status_code == 200


def test_code_for_another_client(client: TestClient[Litestar]) -> None:
    verifier, challenge = pkce()
    code = code_from(sign_in(client, challenge, client_id="citizen-portal"))
    body = oauth_error(exchange(client, code, verifier), "invalid_grant")
    assert body["error_description"] == "the code was issued to another client"
    # The right client still redeems it: a refusal does not burn the code.
    assert exchange(client, code, verifier, client_id="citizen-portal").status_code == 200


def test_redirect_uri_must_match(client: TestClient[Litestar]) -> None:
    verifier, challenge = pkce()
    code = code_from(sign_in(client, challenge))
    body = oauth_error(
        exchange(client, code, verifier, redirect_uri=PLATFORM + "/app/other"), "invalid_grant"
    )
    assert body["error_description"] == "redirect_uri does not match the authorization"


def test_code_is_single_use_on_a_worker(client: TestClient[Litestar]) -> None:
    verifier, challenge = pkce()
    code = code_from(sign_in(client, challenge))
    assert exchange(client, code, verifier).status_code == 200
    body = oauth_error(exchange(client, code, verifier), "invalid_grant")
    assert body["error_description"] == "the code was already used"


@pytest.mark.parametrize(
    "code", ["", "garbage", "A" * 400, "!!!!", crypto.b64url_encode(b"\x01" + bytes(40))]
)
def test_forged_codes(client: TestClient[Litestar], code: str) -> None:
    verifier, _ = pkce()
    error = "invalid_request" if not code else "invalid_grant"
    oauth_error(exchange(client, code, verifier), error)


def test_a_form_token_is_not_a_code(client: TestClient[Litestar]) -> None:
    verifier, challenge = pkce()
    page = client.get("/dev-idp/authorize", params=authorize_params(challenge))
    oauth_error(exchange(client, form_token(page.text), verifier), "invalid_grant")


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"grant_type": None}, "invalid_request"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"code": None}, "invalid_request"),
        ({"redirect_uri": None}, "invalid_request"),
        ({"client_id": None}, "invalid_request"),
        ({"code_verifier": None}, "invalid_request"),
        ({"code_verifier": "short"}, "invalid_request"),
        ({"code_verifier": "x" * 129}, "invalid_request"),
        ({"code_verifier": "a" * 42 + "+"}, "invalid_request"),
    ],
)
def test_token_request_shape(
    client: TestClient[Litestar], changes: dict[str, str | None], error: str
) -> None:
    verifier, challenge = pkce()
    code = code_from(sign_in(client, challenge))
    oauth_error(exchange(client, code, verifier, **changes), error)


def test_token_request_must_be_a_form(client: TestClient[Litestar]) -> None:
    response = client.post("/dev-idp/token", json={"grant_type": "authorization_code"})
    assert oauth_error(response, "invalid_request")["error_description"].startswith(
        "the body must be"
    )


def test_repeated_token_parameters_are_refused(client: TestClient[Litestar]) -> None:
    verifier, challenge = pkce()
    code = code_from(sign_in(client, challenge))
    body = (
        f"grant_type=authorization_code&code={code}&code={code}&redirect_uri={REDIRECT_URI}"
        f"&client_id={CLIENT_ID}&code_verifier={verifier}"
    )
    response = client.post(
        "/dev-idp/token",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert oauth_error(response, "invalid_request")["error_description"] == "code is repeated"


# --------------------------------------------------------------------------
# Authorization endpoint refusals: never an open redirect
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/callback",
        "http://127.0.0.1:8001/app/callback",
        "https://127.0.0.1:8000/app/callback",
        "http://localhost:8000/app/callback",
        "http://127.0.0.1:8000@evil.example/callback",
        "http://evil.example\\@127.0.0.1:8000/",
        "http://127.0.0.1:8000/app/callback#frag",
        "//evil.example/callback",
        "/app/callback",
        "javascript:alert(1)",
        "data:text/html,hi",
        "http://127.0.0.1:8000 /x",
        "http://127.0.0.1:99999/",
        "",
        None,
    ],
)
def test_foreign_redirect_uri_is_400(
    client: TestClient[Litestar], redirect_uri: str | None
) -> None:
    _verifier, challenge = pkce()
    params = authorize_params(challenge, redirect_uri=redirect_uri)
    response = client.get("/dev-idp/authorize", params=params, follow_redirects=False)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "location" not in response.headers
    problem = response.json()
    assert problem["code"] == "malformed_request"
    assert problem["detail"].startswith("redirect_uri")
    if redirect_uri:
        assert redirect_uri not in response.text


def test_repeated_redirect_uri_is_400(client: TestClient[Litestar]) -> None:
    _verifier, challenge = pkce()
    params: list[tuple[str, str | int | float | bool | None]] = [
        *authorize_params(challenge).items(),
        ("redirect_uri", "https://evil.example/"),
    ]
    response = client.get("/dev-idp/authorize", params=params, follow_redirects=False)
    assert response.status_code == 400
    assert response.json()["detail"] == "redirect_uri is repeated"


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"client_id": None}, "client_id is missing or malformed"),
        ({"client_id": "bad client"}, "client_id is missing or malformed"),
        ({"state": "\x00"}, "state must be 1 to 512 printable ASCII characters"),
        ({"nonce": "n" * 513}, "nonce must be 1 to 512 printable ASCII characters"),
    ],
)
def test_unsafe_requests_are_400_without_redirect(
    client: TestClient[Litestar], changes: dict[str, str | None], detail: str
) -> None:
    _verifier, challenge = pkce()
    response = client.get(
        "/dev-idp/authorize", params=authorize_params(challenge, **changes), follow_redirects=False
    )
    assert response.status_code == 400
    assert response.json()["detail"] == detail


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "unsupported_response_type"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
    ],
)
def test_protocol_errors_go_back_to_the_client(
    client: TestClient[Litestar], changes: dict[str, str | None], error: str
) -> None:
    _verifier, challenge = pkce()
    response = client.get(
        "/dev-idp/authorize", params=authorize_params(challenge, **changes), follow_redirects=False
    )
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    query = parse_qs(location.query)
    assert query["error"] == [error]
    assert query["state"] == ["st-123"]
    assert "code" not in query


# --------------------------------------------------------------------------
# The sign-in form: national ids, CSRF, tampering
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nid",
    [
        "85031-52345678",
        "8503152345678X",
        "850315_2345678",
        "",
        "850315-2345678 ",
        "\uff11\uff12\uff13",
    ],
)
def test_invalid_nid_is_refused_without_echo(client: TestClient[Litestar], nid: str) -> None:
    _verifier, challenge = pkce()
    with capture_logs() as logs:
        response = sign_in(client, challenge, nid=nid)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "주민등록번호 형식이 올바르지 않습니다" in response.text
    assert "The resident registration number is not valid" in response.text
    assert '<input type="text" id="nid" name="nid"' in response.text  # the form again
    if nid.strip():
        assert nid.strip() not in response.text
    assert nid.strip() not in repr(logs) or not nid.strip()


def test_the_form_token_can_be_retried_after_a_typo(client: TestClient[Litestar]) -> None:
    verifier, challenge = pkce()
    page = client.get("/dev-idp/authorize", params=authorize_params(challenge))
    token = form_token(page.text)
    retry = client.post("/dev-idp/authorize", data={"request": token, "nid": "123"})
    assert retry.status_code == 400
    assert form_token(retry.text) == token
    answer = client.post(
        "/dev-idp/authorize", data={"request": token, "nid": NID}, follow_redirects=False
    )
    assert exchange(client, code_from(answer), verifier).status_code == 200


def test_cross_site_post_is_refused(client: TestClient[Litestar]) -> None:
    _verifier, challenge = pkce()
    page = client.get("/dev-idp/authorize", params=authorize_params(challenge))
    data = {"request": form_token(page.text), "nid": NID}
    for headers in (
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        response = client.post(
            "/dev-idp/authorize", data=data, headers=headers, follow_redirects=False
        )
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"
    same_origin = client.post(
        "/dev-idp/authorize", data=data, headers={"Origin": PLATFORM}, follow_redirects=False
    )
    assert same_origin.status_code == 303
    # The page is served with Referrer-Policy: no-referrer, so browsers send `Origin: null`
    # for their own form; the SameSite=Strict form cookie is what binds it.
    page = client.get("/dev-idp/authorize", params=authorize_params(challenge))
    data = {"request": form_token(page.text), "nid": NID}
    null_origin = client.post(
        "/dev-idp/authorize", data=data, headers={"Origin": "null"}, follow_redirects=False
    )
    assert null_origin.status_code == 303


def test_form_without_the_browser_cookie_is_refused(
    client: TestClient[Litestar], dev_idp: DevIdP, settings: Settings, clock: Clock
) -> None:
    """Login CSRF: an attacker's own form token does not work in the victim's browser."""
    _verifier, challenge = pkce()
    attacker_page = client.get("/dev-idp/authorize", params=authorize_params(challenge))
    token = form_token(attacker_page.text)
    with TestClient(make_app(dev_idp, settings, clock), base_url=PLATFORM) as victim:
        response = victim.post(
            "/dev-idp/authorize", data={"request": token, "nid": NID}, follow_redirects=False
        )
        assert response.status_code == 400
        assert response.json()["detail"].startswith("the sign-in form does not belong")
        victim.cookies.set(CSRF_COOKIE, "A" * 43, domain="127.0.0.1", path="/dev-idp")
        response = victim.post(
            "/dev-idp/authorize", data={"request": token, "nid": NID}, follow_redirects=False
        )
        assert response.status_code == 400


@pytest.mark.parametrize("token", ["", "garbage", "A" * 5000])
def test_tampered_form_token(client: TestClient[Litestar], token: str) -> None:
    _verifier, challenge = pkce()
    client.get("/dev-idp/authorize", params=authorize_params(challenge))
    response = client.post(
        "/dev-idp/authorize", data={"request": token, "nid": NID}, follow_redirects=False
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "the sign-in form expired or is not valid; start again"


def test_expired_form(client: TestClient[Litestar], clock: Clock) -> None:
    _verifier, challenge = pkce()
    page = client.get("/dev-idp/authorize", params=authorize_params(challenge))
    clock.now += 601
    response = client.post(
        "/dev-idp/authorize",
        data={"request": form_token(page.text), "nid": NID},
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert "expired" in response.json()["detail"]


def test_html_escapes_the_client_id(client: TestClient[Litestar]) -> None:
    _verifier, challenge = pkce()
    page = client.get(
        "/dev-idp/authorize", params=authorize_params(challenge, client_id="a:b.c-d_e")
    )
    assert "<code>a:b.c-d_e</code>" in page.text


# --------------------------------------------------------------------------
# Only with ONCEVAULT_DEV_IDP=1
# --------------------------------------------------------------------------


def test_router_refuses_to_exist_while_the_flag_is_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "off", dev=False)
    idp = DevIdP.load_or_create(settings.data_dir, settings.issuer)
    with pytest.raises(SettingsError, match="development IdP is off"):
        dev_idp_router(idp, settings)


def test_router_refuses_a_dev_idp_of_another_platform(settings: Settings) -> None:
    other = DevIdP.load_or_create(settings.data_dir, "http://127.0.0.1:9000")
    with pytest.raises(SettingsError, match="another issuer"):
        dev_idp_router(other, settings)


def test_tokens_from_the_flow_are_refused_once_the_flag_is_off(
    client: TestClient[Litestar], tmp_path: Path, settings: Settings
) -> None:
    verifier, challenge = pkce()
    body = exchange(client, code_from(sign_in(client, challenge)), verifier).json()
    off = make_settings(settings.data_dir, dev=False)
    with pytest.raises(
        Exception, match=r"^(unknown kid|no identity provider is configured)$"
    ) as excinfo:
        CitizenTokenVerifier(off).verify(body["access_token"], now=START)
    assert getattr(excinfo.value, "code", None) == "invalid_token"
