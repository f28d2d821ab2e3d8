"""The development IdP over HTTP: a minimal OpenID provider (code flow + PKCE S256).

Mounted at ``/dev-idp`` only when ``ONCEVAULT_DEV_IDP=1``, so the citizen web
sign-in runs the same relying-party code in development as in production:

- ``GET  /dev-idp/.well-known/openid-configuration`` and ``GET /dev-idp/jwks.json``;
- ``GET  /dev-idp/authorize``: checks the request and shows a sign-in page
  (Korean and English, a red "development only" banner) asking for a resident
  registration number;
- ``POST /dev-idp/authorize``: answers 303 to ``redirect_uri`` with ``code``,
  ``state`` and ``iss`` (RFC 9207);
- ``POST /dev-idp/token``: ``authorization_code`` + ``code_verifier`` ->
  ``{id_token, access_token, token_type, expires_in}``; RFC 6749 error bodies.

Nothing here keeps state: the sign-in form carries a sealed copy of the
authorization request, and the code is a sealed blob (AES-256-GCM, key derived
from the dev IdP key) holding the nid, client, redirect URI, PKCE challenge,
nonce and a 60-second expiry, so any server worker can redeem it. A code is
refused a second time by the worker that redeemed it (best effort across
workers; PKCE binds it to the verifier's holder anyway).

Safety: ``redirect_uri`` must be an absolute URL on the origin of
``ONCEVAULT_ISSUER`` (anything else is 400 problem+json, never a redirect);
every URL shown or compared derives from ``ONCEVAULT_ISSUER``, never from
``Host``; the form is bound to a ``SameSite=Strict`` cookie and cross-site
posts are refused (login CSRF); the number typed in is never echoed or logged.
"""

from __future__ import annotations

import html
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit

import structlog
from litestar import Request, Response, Router, get, post
from litestar.datastructures import Cookie

from api.errors import problem
from api.idp import DEV_TOKEN_LIFETIME, DevIdP, dev_issuer
from api.settings import Settings, SettingsError
from vault import crypto
from vault.errors import DecryptionError, InvalidSubject
from vault.models import Subject

__all__ = ["CODE_LIFETIME", "FORM_LIFETIME", "MOUNT_PATH", "dev_idp_router"]

log = structlog.get_logger(__name__)

CODE_LIFETIME: Final = 60
"""Seconds an authorization code stays redeemable."""

FORM_LIFETIME: Final = 600
"""Seconds the sign-in form stays valid."""

MOUNT_PATH: Final = "/dev-idp"
"""Where the router is mounted (the path of ``<ONCEVAULT_ISSUER>/dev-idp``)."""

CSRF_COOKIE: Final = "oncevault_dev_idp_csrf"
FORM_MEDIA_TYPE: Final = "application/x-www-form-urlencoded"
NO_STORE: Final[Mapping[str, str]] = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PAGE_HEADERS: Final[Mapping[str, str]] = {
    **NO_STORE,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_MAX_BODY: Final = 16 * 1024
_CLIENT_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_PRINTABLE: Final = re.compile(r"[\x20-\x7e]{1,512}")
_CODE_CHALLENGE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_CODE_VERIFIER: Final = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_URI: Final = re.compile(r"[!#-;=?-\[\]-_a-z{-~]{1,2048}")  # visible ASCII minus " < > \\ `
_CSRF_VALUE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_MAX_SPENT_CODES: Final = 10_000

_Origin = tuple[str, str, int]


class _BadRequest(Exception):
    """Internal: refuse with 400 problem+json; the message names the parameter only."""


def _origin(url: str) -> _Origin | None:
    """``(scheme, host, port)`` of an absolute http(s) URL, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def _check_redirect_uri(raw: str | None, platform: _Origin) -> str:
    """``redirect_uri`` must be an absolute URL on the platform's own origin."""
    if raw is None or not raw:
        raise _BadRequest("redirect_uri is required")
    if not _URI.fullmatch(raw):
        raise _BadRequest("redirect_uri is not a valid URL")
    parts = urlsplit(raw)
    if parts.fragment or "#" in raw or "@" in parts.netloc:
        raise _BadRequest("redirect_uri must not carry a fragment or user information")
    if _origin(raw) != platform:
        raise _BadRequest("redirect_uri must be on this platform's origin (ONCEVAULT_ISSUER)")
    return raw


def _single(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name, [])
    if len(values) > 1:
        raise _BadRequest(f"{name} is repeated")
    return values[0] if values else None


def _with_query(url: str, params: Mapping[str, str | None]) -> str:
    query = urlencode({name: value for name, value in params.items() if value is not None})
    return url + ("&" if urlsplit(url).query else "?") + query


def _redirect(location: str) -> Response[bytes]:
    return Response(b"", status_code=303, headers={"Location": location, **NO_STORE})


def _oauth_error(error: str, description: str) -> Response[dict[str, str]]:
    return Response(
        {"error": error, "error_description": description},
        status_code=400,
        headers=dict(NO_STORE),
    )


async def _form(request: Request[Any, Any, Any]) -> dict[str, list[str]]:
    """The body as a form (``application/x-www-form-urlencoded`` only)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_MEDIA_TYPE:
        raise _BadRequest(f"the body must be {FORM_MEDIA_TYPE}")
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise _BadRequest("malformed form body") from None
    form: dict[str, list[str]] = {}
    for name, value in pairs:
        form.setdefault(name, []).append(value)
    return form


# --------------------------------------------------------------------------
# The sign-in page
# --------------------------------------------------------------------------

_PAGE: Final = """<!doctype html>
<html lang="ko">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>개발용 로그인 / Development sign-in</title>
<style>
body {{ font-family: "Noto Sans KR", "Nanum Gothic", sans-serif; margin: 0; background: #fafafa; }}
.banner {{ background: #b00020; color: #fff; font-size: 1.6rem; font-weight: 700;
  padding: 1.2rem; text-align: center; }}
main {{ max-width: 32rem; margin: 2rem auto; padding: 0 1rem; }}
label {{ display: block; font-weight: 600; margin: 1rem 0 .4rem; }}
input[type=text] {{ font-size: 1.2rem; padding: .5rem; width: 100%; box-sizing: border-box; }}
button {{ margin-top: 1rem; font-size: 1.1rem; padding: .6rem 1.4rem; }}
.error {{ color: #b00020; font-weight: 600; }}
.hint {{ color: #555; font-size: .9rem; }}
</style>
</head>
<body>
<div class="banner" role="alert">개발용 로그인 / Development sign-in — not for production</div>
<main>
<h1>로그인 / Sign in</h1>
<p>이 화면은 개발용 신원 제공자입니다. 실제 본인 확인을 하지 않습니다.<br>
This is the development identity provider. It does not verify anyone's identity.</p>
<p class="hint">요청한 서비스 / Requested by: <code>{client_id}</code></p>
{error}<form method="post" action="{action}" autocomplete="off">
<input type="hidden" name="request" value="{request}">
<label for="nid">주민등록번호 / Resident registration number</label>
<input type="text" id="nid" name="nid" required inputmode="numeric" maxlength="14"
  pattern="[0-9]{{6}}-?[0-9]{{7}}" placeholder="YYMMDD-NNNNNNN" aria-describedby="nid-hint"
  spellcheck="false" autocomplete="off">
<p id="nid-hint" class="hint">13자리 숫자 (예: 900101-1234567) /
13 digits (e.g. 900101-1234567)</p>
<button type="submit">로그인 / Sign in</button>
</form>
</main>
</body>
</html>
"""

_NID_ERROR: Final = (
    '<p class="error" role="alert" id="nid-error">주민등록번호 형식이 올바르지 않습니다. '
    "13자리 숫자(YYMMDD-NNNNNNN)를 입력하세요.<br>"
    "The resident registration number is not valid: enter 13 digits (YYMMDD-NNNNNNN).</p>\n"
)


def _page(*, action: str, form_token: str, client_id: str, nid_error: bool) -> str:
    return _PAGE.format(
        action=html.escape(action, quote=True),
        request=html.escape(form_token, quote=True),
        client_id=html.escape(client_id, quote=True),
        error=_NID_ERROR if nid_error else "",
    )


# --------------------------------------------------------------------------
# The router
# --------------------------------------------------------------------------


def _wall_clock() -> int:
    return int(time.time())


def dev_idp_router(
    dev_idp: DevIdP, settings: Settings, *, clock: Callable[[], int] | None = None
) -> Router:
    """The ``/dev-idp`` router; mount it only when ``ONCEVAULT_DEV_IDP=1``.

    ``clock`` returns epoch seconds (tests move it; defaults to the wall clock).

    Raises:
        SettingsError: the development IdP is off, or ``dev_idp`` belongs to another issuer.
    """
    if not settings.dev_idp:
        raise SettingsError("ONCEVAULT_DEV_IDP: the development IdP is off; do not mount it")
    if dev_idp.issuer != dev_issuer(settings.issuer):
        raise SettingsError("ONCEVAULT_DEV_IDP: the development IdP has another issuer")
    now = clock or _wall_clock
    issuer = dev_idp.issuer
    platform = _origin(settings.issuer)
    assert platform is not None  # settings validated ONCEVAULT_ISSUER as an http(s) URL
    base_path = urlsplit(issuer).path  # "/dev-idp", or under a path prefix of the issuer
    authorize_path = base_path + "/authorize"
    secure_cookie = platform[0] == "https"
    spent: dict[str, int] = {}  # code id -> exp, this worker's redeemed codes

    @get("/.well-known/openid-configuration", sync_to_thread=False)
    def configuration() -> Response[dict[str, Any]]:
        """OpenID Provider metadata (OIDC Discovery 1.0, RFC 8414)."""
        return Response(
            {
                "issuer": issuer,
                "authorization_endpoint": issuer + "/authorize",
                "token_endpoint": issuer + "/token",
                "jwks_uri": issuer + "/jwks.json",
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": ["authorization_code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["EdDSA"],
                "token_endpoint_auth_methods_supported": ["none"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid"],
                "claims_supported": [
                    "iss",
                    "sub",
                    "aud",
                    "iat",
                    "exp",
                    "auth_time",
                    "nonce",
                    "jti",
                    "nid",
                ],
                "authorization_response_iss_parameter_supported": True,
            }
        )

    @get("/jwks.json", sync_to_thread=False)
    def jwks() -> dict[str, list[dict[str, str]]]:
        """The development IdP's public key."""
        return dev_idp.jwks()

    def authorization_request(params: Mapping[str, list[str]]) -> dict[str, Any] | Response[Any]:
        """Check an authorization request; return its fields or an error response."""
        client_id = _single(params, "client_id")
        if client_id is None or not _CLIENT_ID.fullmatch(client_id):
            raise _BadRequest("client_id is missing or malformed")
        redirect_uri = _check_redirect_uri(_single(params, "redirect_uri"), platform)
        state = _single(params, "state")
        nonce = _single(params, "nonce")
        for name, value in (("state", state), ("nonce", nonce)):
            if value is not None and not _PRINTABLE.fullmatch(value):
                raise _BadRequest(f"{name} must be 1 to 512 printable ASCII characters")
        for name in ("response_type", "code_challenge", "code_challenge_method", "scope"):
            _single(params, name)  # refuse repeats before any redirect

        # From here on the redirect URI is trusted: errors go back to the client.
        def error(code: str, description: str) -> Response[bytes]:
            return _redirect(
                _with_query(
                    redirect_uri,
                    {
                        "error": code,
                        "error_description": description,
                        "state": state,
                        "iss": issuer,
                    },
                )
            )

        if _single(params, "response_type") != "code":
            return error("unsupported_response_type", "response_type must be code")
        if _single(params, "code_challenge_method") != "S256":
            return error("invalid_request", "code_challenge_method must be S256")
        challenge = _single(params, "code_challenge")
        if challenge is None or not _CODE_CHALLENGE.fullmatch(challenge):
            return error("invalid_request", "code_challenge must be 43 base64url characters")
        return {
            "cid": client_id,
            "ru": redirect_uri,
            "st": state,
            "n": nonce,
            "cc": challenge,
        }

    def sign_in_page(
        fields: Mapping[str, Any], form_token: str, *, status: int, nid_error: bool
    ) -> Response[str]:
        return Response(
            _page(
                action=authorize_path,
                form_token=form_token,
                client_id=str(fields["cid"]),
                nid_error=nid_error,
            ),
            status_code=status,
            media_type="text/html",
            headers=dict(PAGE_HEADERS),
        )

    @get("/authorize", sync_to_thread=False)
    def authorize_page(request: Request[Any, Any, Any]) -> Response[Any]:
        """Check the authorization request and show the sign-in form."""
        params = {name: request.query_params.getall(name) for name in request.query_params}
        try:
            checked = authorization_request(params)
        except _BadRequest as exc:
            return problem("malformed_request", str(exc))
        if isinstance(checked, Response):
            return checked
        cookie_value = request.cookies.get(CSRF_COOKIE)
        if cookie_value is None or not _CSRF_VALUE.fullmatch(cookie_value):
            cookie_value = crypto.b64url_encode(secrets.token_bytes(32))
        form_token = dev_idp.seal(
            "form",
            {**checked, "csrf": crypto.sha256_b64url(cookie_value), "exp": now() + FORM_LIFETIME},
        )
        response = sign_in_page(checked, form_token, status=200, nid_error=False)
        response.set_cookie(
            Cookie(
                key=CSRF_COOKIE,
                value=cookie_value,
                path=base_path,
                max_age=FORM_LIFETIME,
                httponly=True,
                secure=secure_cookie,
                samesite="strict",
            )
        )
        return response

    @post("/authorize", status_code=303)
    async def authorize_submit(request: Request[Any, Any, Any]) -> Response[Any]:
        """Take the typed resident registration number; redirect with a code."""
        # Login CSRF: a cross-site page must not sign the browser in as someone else.
        # The page is served with Referrer-Policy: no-referrer, so browsers post it with
        # `Origin: null`; the form stays bound to the SameSite=Strict cookie, which a
        # cross-site post never carries.
        origin = request.headers.get("origin")
        fetch_site = request.headers.get("sec-fetch-site")
        if fetch_site in ("cross-site", "same-site") or (
            origin not in (None, "null") and _origin(origin) != platform
        ):
            return problem("forbidden", "cross-site sign-in forms are refused")
        try:
            form = await _form(request)
            form_token = _single(form, "request")
            nid = _single(form, "nid")
        except _BadRequest as exc:
            return problem("malformed_request", str(exc))
        try:
            fields = dev_idp.unseal("form", form_token or "")
        except DecryptionError:
            fields = None
        if fields is None or not isinstance(fields.get("exp"), int) or fields["exp"] < now():
            return problem(
                "malformed_request", "the sign-in form expired or is not valid; start again"
            )
        cookie_value = request.cookies.get(CSRF_COOKIE) or ""
        if not cookie_value.isascii() or not crypto.constant_time_equal(
            crypto.sha256_b64url(cookie_value).encode(), str(fields.get("csrf", "")).encode()
        ):
            return problem(
                "malformed_request", "the sign-in form does not belong to this browser; start again"
            )
        try:
            subject = Subject.parse({"nid": nid})
        except InvalidSubject:
            assert form_token is not None
            return sign_in_page(fields, form_token, status=400, nid_error=True)
        issued = now()
        code = dev_idp.seal(
            "code",
            {
                "nid": subject.value,
                "cid": fields["cid"],
                "ru": fields["ru"],
                "cc": fields["cc"],
                "n": fields["n"],
                "at": issued,
                "exp": issued + CODE_LIFETIME,
                "id": secrets.token_urlsafe(12),
            },
        )
        log.info("dev_idp.code_issued", client_id=fields["cid"])
        return _redirect(
            _with_query(fields["ru"], {"code": code, "state": fields["st"], "iss": issuer})
        )

    @post("/token", status_code=200)
    async def token(request: Request[Any, Any, Any]) -> Response[Any]:
        """Redeem a code: PKCE S256, same client and redirect URI, not expired."""
        try:
            form = await _form(request)
            values = {
                name: _single(form, name)
                for name in ("grant_type", "code", "redirect_uri", "client_id", "code_verifier")
            }
        except _BadRequest as exc:
            return _oauth_error("invalid_request", str(exc))
        grant_type = values["grant_type"]
        if grant_type is None:
            return _oauth_error("invalid_request", "grant_type is required")
        if grant_type != "authorization_code":
            return Response(
                {"error": "unsupported_grant_type", "error_description": "use authorization_code"},
                status_code=400,
                headers=dict(NO_STORE),
            )
        for name in ("code", "redirect_uri", "client_id", "code_verifier"):
            if not values[name]:
                return _oauth_error("invalid_request", f"{name} is required")
        verifier = values["code_verifier"]
        assert verifier is not None
        if not _CODE_VERIFIER.fullmatch(verifier):
            return _oauth_error("invalid_request", "code_verifier must be 43 to 128 characters")

        moment = now()
        try:
            code = dev_idp.unseal("code", values["code"] or "")
        except DecryptionError:
            code = None
        if code is None or not isinstance(code.get("exp"), int) or code["exp"] < moment:
            return _oauth_error("invalid_grant", "the code is invalid or expired")
        if code["cid"] != values["client_id"]:
            return _oauth_error("invalid_grant", "the code was issued to another client")
        if code["ru"] != values["redirect_uri"]:
            return _oauth_error("invalid_grant", "redirect_uri does not match the authorization")
        if not crypto.constant_time_equal(
            crypto.sha256_b64url(verifier).encode(), str(code["cc"]).encode()
        ):
            return _oauth_error("invalid_grant", "code_verifier does not match the challenge")
        for code_id in [c for c, exp in spent.items() if exp < moment]:
            del spent[code_id]
        if code["id"] in spent:
            return _oauth_error("invalid_grant", "the code was already used")
        if len(spent) >= _MAX_SPENT_CODES:
            del spent[next(iter(spent))]
        spent[code["id"]] = code["exp"]

        id_token = dev_idp.mint_for(
            code["nid"],
            now=moment,
            audience=code["cid"],
            auth_time=code["at"],
            nonce=code["n"],
        )
        access_token = dev_idp.mint(code["nid"], now=moment, auth_time=code["at"])
        log.info("dev_idp.tokens_issued", client_id=code["cid"])
        return Response(
            {
                "id_token": id_token,
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": DEV_TOKEN_LIFETIME,
                "scope": "openid",
            },
            status_code=200,
            headers=dict(NO_STORE),
        )

    return Router(
        path=MOUNT_PATH,
        route_handlers=[configuration, jwks, authorize_page, authorize_submit, token],
        include_in_schema=False,
        request_max_body_size=_MAX_BODY,
        tags=["development"],
    )
