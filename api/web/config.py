"""Where the citizen pages send people to sign in, and what they trust back.

The relying party (``/my/login`` and ``/my/callback``) talks to one OpenID
provider, chosen once when the router is built:

* an external IdP when ``ONCEVAULT_IDP_ISSUER`` is set **and** both
  :data:`AUTHORIZATION_ENDPOINT_ENV` and :data:`TOKEN_ENDPOINT_ENV` are in the
  environment; its ``client_id`` is ``ONCEVAULT_IDP_AUDIENCE`` (the audience
  the id_token must carry, so :class:`api.idp.CitizenTokenVerifier` accepts it);
  a confidential client adds :data:`CLIENT_SECRET_FILE_ENV`
  (``client_secret_basic``);
* otherwise the built-in development IdP when ``ONCEVAULT_DEV_IDP=1``:
  ``<ONCEVAULT_ISSUER>/dev-idp/authorize`` and ``/token``, ``client_id``
  ``oncevault`` (:data:`api.idp.DEV_AUDIENCE`);
* otherwise none: ``/my/login`` says sign-in is not configured.

The extra names are read from the process environment (``oncevault serve``
passes its environment to the workers); ``api/settings.py`` does not know them
yet, so they cannot be put in the data directory's ``.env`` (see README.md here).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from api.idp import DEV_AUDIENCE, dev_issuer
from api.settings import Settings, SettingsError

__all__ = [
    "AUTHORIZATION_ENDPOINT_ENV",
    "CLIENT_SECRET_FILE_ENV",
    "SESSION_KEY_FILE_ENV",
    "TOKEN_ENDPOINT_ENV",
    "IdPEndpoints",
    "WebConfig",
    "load_web_config",
]

AUTHORIZATION_ENDPOINT_ENV: Final = "ONCEVAULT_IDP_AUTHORIZATION_ENDPOINT"
"""The external IdP's OIDC authorization endpoint (absolute https URL)."""

TOKEN_ENDPOINT_ENV: Final = "ONCEVAULT_IDP_TOKEN_ENDPOINT"  # noqa: S105 - a setting name
"""The external IdP's token endpoint (absolute https URL)."""

CLIENT_SECRET_FILE_ENV: Final = "ONCEVAULT_IDP_CLIENT_SECRET_FILE"  # noqa: S105 - a setting name
"""Optional: a file holding our client secret at the external IdP (mode 0600)."""

SESSION_KEY_FILE_ENV: Final = "ONCEVAULT_WEB_SESSION_KEY_FILE"
"""Optional: the 32-byte web session secret; default ``<data_dir>/web-session.key``."""

SESSION_KEY_FILE: Final = "web-session.key"


@dataclass(frozen=True)
class IdPEndpoints:
    """One OpenID provider as the relying party sees it."""

    issuer: str
    """The ``iss`` of its id_tokens and of its RFC 9207 ``iss`` response parameter."""
    authorization_endpoint: str
    token_endpoint: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    development: bool = False

    @property
    def authorization_origin(self) -> str:
        """``scheme://host[:port]`` of the authorization endpoint (for CSP form-action)."""
        parts = urlsplit(self.authorization_endpoint)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class WebConfig:
    """What the citizen pages need beyond :class:`api.settings.Settings`."""

    issuer: str
    """``ONCEVAULT_ISSUER`` without a trailing slash: every URL we make derives from it."""
    idp: IdPEndpoints | None
    session_key_file: Path
    secure_cookies: bool

    @property
    def callback_url(self) -> str:
        return self.issuer + "/my/callback"

    @property
    def origin(self) -> str:
        parts = urlsplit(self.issuer)
        return f"{parts.scheme}://{parts.netloc}"


def _endpoint(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SettingsError(f"{name}: must be an absolute https URL")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SettingsError(f"{name}: must use https (http only on loopback)")
    if parts.fragment or parts.username or parts.password:
        raise SettingsError(f"{name}: must not carry a fragment or user information")
    return raw


def _secret(path_text: str) -> str:
    path = Path(path_text).expanduser()
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"{CLIENT_SECRET_FILE_ENV}: {path} cannot be read ({exc.__class__.__name__})"
        ) from None
    if info.st_mode & 0o077:
        raise SettingsError(f"{CLIENT_SECRET_FILE_ENV}: {path} must be mode 0600")
    if not text or len(text) > 1024:
        raise SettingsError(f"{CLIENT_SECRET_FILE_ENV}: {path} holds no usable secret")
    return text


def load_web_config(settings: Settings, environ: Mapping[str, str] | None = None) -> WebConfig:
    """Choose the IdP and the session key file from ``settings`` and the environment.

    Raises:
        SettingsError: a malformed endpoint URL or an unreadable client secret file.
    """
    env = os.environ if environ is None else environ
    issuer = settings.issuer.rstrip("/")
    idp: IdPEndpoints | None = None
    authorize = env.get(AUTHORIZATION_ENDPOINT_ENV)
    token = env.get(TOKEN_ENDPOINT_ENV)
    if settings.idp_issuer and settings.idp_audience and authorize and token:
        secret_file = env.get(CLIENT_SECRET_FILE_ENV)
        idp = IdPEndpoints(
            issuer=settings.idp_issuer,
            authorization_endpoint=_endpoint(AUTHORIZATION_ENDPOINT_ENV, authorize),
            token_endpoint=_endpoint(TOKEN_ENDPOINT_ENV, token),
            client_id=settings.idp_audience,
            client_secret=_secret(secret_file) if secret_file else None,
        )
    elif settings.dev_idp:
        dev = dev_issuer(settings.issuer)
        idp = IdPEndpoints(
            issuer=dev,
            authorization_endpoint=dev + "/authorize",
            token_endpoint=dev + "/token",
            client_id=DEV_AUDIENCE,
            development=True,
        )
    key_file = env.get(SESSION_KEY_FILE_ENV)
    return WebConfig(
        issuer=issuer,
        idp=idp,
        session_key_file=Path(key_file).expanduser()
        if key_file
        else settings.data_dir / SESSION_KEY_FILE,
        secure_cookies=urlsplit(issuer).scheme == "https",
    )
