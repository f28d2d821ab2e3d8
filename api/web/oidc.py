"""The relying-party side of OpenID Connect (authorization code flow with PKCE S256).

1. ``/my/login`` makes ``state``, ``nonce`` and a PKCE verifier, keeps them in a
   sealed HttpOnly cookie (:class:`api.web.session.LoginState`) and redirects to
   :func:`authorization_url`.
2. ``/my/callback`` checks ``state`` (and the RFC 9207 ``iss`` parameter when
   the IdP sends one), then :func:`exchange_code` posts the code and the
   verifier to the token endpoint **over HTTP**, for the development IdP too:
   its codes are sealed and stateless, so whichever worker answers can redeem
   them, and the same code path runs in development and production.
3. :func:`verify_id_token` checks the id_token with the platform's
   :class:`api.idp.CitizenTokenVerifier` (signature, issuer, audience = our
   ``client_id``, lifetime), that it came from the configured IdP, the
   ``nonce``, and ``azp`` when present.

Every failure raises :class:`SignInFailed` with a short reason that never
quotes a token, a code or an identifier.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from api.idp import CitizenAuthError, CitizenPrincipal, CitizenTokenVerifier
from api.web.config import IdPEndpoints
from api.web.session import LoginState
from vault import crypto
from vault.errors import OncevaultError

__all__ = [
    "TOKEN_TIMEOUT_SECONDS",
    "SignInFailed",
    "authorization_url",
    "exchange_code",
    "pkce_challenge",
    "verify_id_token",
]

TOKEN_TIMEOUT_SECONDS: Final = 10.0
_MAX_TOKEN_RESPONSE: Final = 64 * 1024


def safe_error(value: object) -> str:
    """An identity provider's ``error`` code as it may appear in a log line: short
    ASCII or ``?`` (it is text from outside and may carry anything)."""
    return value if isinstance(value, str) and value.isascii() and len(value) < 64 else "?"


class SignInFailed(OncevaultError):
    """The sign-in could not be completed (the citizen starts again)."""

    code = "invalid_token"


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: ``BASE64URL(SHA256(ASCII(verifier)))``."""
    return crypto.sha256_b64url(verifier)


def authorization_url(
    idp: IdPEndpoints, login: LoginState, *, redirect_uri: str, fresh: bool
) -> str:
    """The authorization request for ``login``; ``fresh`` asks the IdP to re-authenticate."""
    params = {
        "response_type": "code",
        "client_id": idp.client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid",
        "state": login.state,
        "nonce": login.nonce,
        "code_challenge": pkce_challenge(login.verifier),
        "code_challenge_method": "S256",
    }
    if fresh:
        params["prompt"] = "login"
        params["max_age"] = "0"
    separator = "&" if urlsplit(idp.authorization_endpoint).query else "?"
    return idp.authorization_endpoint + separator + urlencode(params)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A token endpoint answers; it never redirects (and a code must not travel on)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _post_form(
    url: str, form: dict[str, str], headers: dict[str, str], *, use_proxies: bool
) -> tuple[int, bytes]:
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if not use_proxies:
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(  # noqa: S310 - url is the configured http(s) token endpoint
        url, data=urlencode(form).encode("ascii"), headers=headers, method="POST"
    )
    try:
        with opener.open(request, timeout=TOKEN_TIMEOUT_SECONDS) as response:
            return int(response.status), response.read(_MAX_TOKEN_RESPONSE + 1)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(_MAX_TOKEN_RESPONSE + 1)


async def exchange_code(
    idp: IdPEndpoints, code: str, login: LoginState, *, redirect_uri: str
) -> str:
    """Redeem ``code`` at the token endpoint; return the id_token.

    Raises:
        SignInFailed: the endpoint is unreachable or refuses, or sends no id_token.
    """
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": login.verifier,
    }
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
    }
    if idp.client_secret is None:
        form["client_id"] = idp.client_id
    else:  # RFC 6749 §2.3.1 client_secret_basic
        pair = f"{_form_encode(idp.client_id)}:{_form_encode(idp.client_secret)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    try:
        status, body = await asyncio.to_thread(
            _post_form, idp.token_endpoint, form, headers, use_proxies=not _loopback(idp)
        )
    except (OSError, ValueError) as exc:
        raise SignInFailed(f"token endpoint unreachable ({exc.__class__.__name__})") from None
    if len(body) > _MAX_TOKEN_RESPONSE:
        raise SignInFailed("token endpoint answered too much")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SignInFailed(f"token endpoint answered {status} without JSON") from None
    if status != 200 or not isinstance(document, dict):
        shown = safe_error(document.get("error") if isinstance(document, dict) else None)
        raise SignInFailed(f"token endpoint refused the code ({status} {shown})")
    id_token = document.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise SignInFailed("token endpoint sent no id_token")
    return id_token


def _loopback(idp: IdPEndpoints) -> bool:
    """A loopback token endpoint (the development IdP) is never reached through a proxy."""
    return urlsplit(idp.token_endpoint).hostname in ("127.0.0.1", "localhost", "::1")


def _form_encode(value: str) -> str:
    return urlencode({"": value})[1:]


def verify_id_token(
    verifier: CitizenTokenVerifier,
    idp: IdPEndpoints,
    id_token: str,
    login: LoginState,
    *,
    now: int,
) -> CitizenPrincipal:
    """Check the id_token for this sign-in; return the citizen.

    Raises:
        SignInFailed: any check fails.
    """
    try:
        principal, claims = verifier.verify_with_claims(id_token, now=now)
    except CitizenAuthError as exc:
        raise SignInFailed(f"id_token refused: {exc}") from None
    if principal.issuer != idp.issuer:
        raise SignInFailed("id_token from another identity provider")
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not crypto.constant_time_equal(
        nonce.encode("utf-8"), login.nonce.encode("utf-8")
    ):
        raise SignInFailed("id_token nonce does not match this sign-in")
    azp = claims.get("azp")
    if azp is not None and azp != idp.client_id:
        raise SignInFailed("id_token was issued to another client")
    return principal
