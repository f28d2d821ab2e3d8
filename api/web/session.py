"""Sealed cookies for the citizen pages: the sign-in in progress and the session.

Both are stateless, so any server worker can read them: a JSON object sealed
with AES-256-GCM (:func:`vault.crypto.seal`) under a key derived by HKDF from
one 32-byte platform secret, with associated data naming the purpose and the
platform issuer (a login cookie never opens as a session, nor a cookie of
another deployment).

The secret lives in ``<data_dir>/web-session.key`` (mode 0600; created on
first use, atomically, so concurrent workers agree) or in the file named by
``ONCEVAULT_WEB_SESSION_KEY_FILE`` when several hosts must share it. Deleting
the file signs everybody out.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from api.secretfiles import create_private_file, read_private_file
from api.settings import SettingsError
from vault import crypto
from vault.errors import DecryptionError

__all__ = [
    "CSRF_FIELD",
    "LANG_COOKIE",
    "LOGIN_COOKIE",
    "LOGIN_SECONDS",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "LoginState",
    "Sealer",
    "Session",
    "load_or_create_secret",
]

SESSION_COOKIE: Final = "oncevault_session"
LOGIN_COOKIE: Final = "oncevault_login"
LANG_COOKIE: Final = "oncevault_lang"
CSRF_FIELD: Final = "csrf"

SESSION_SECONDS: Final = 1800
"""A session lasts 30 minutes from sign-in (then the citizen signs in again)."""

LOGIN_SECONDS: Final = 600
"""A sign-in must come back to ``/my/callback`` within 10 minutes."""

_AAD_LABEL: Final = "oncevault/web/v1"
_MAX_COOKIE: Final = 4096
_SECRET_SIZE: Final = 32

Purpose = Literal["session", "login"]


def load_or_create_secret(path: Path) -> bytes:
    """Read the 32-byte secret at ``path``; create it (0600, atomically) if missing.

    Raises:
        SettingsError: the directory is missing, or the file is not a private
            regular file of 32 bytes.
    """
    if not path.parent.is_dir():
        raise SettingsError(f"{path.parent}: does not exist; run `oncevault init` first")
    if not path.exists():
        create_private_file(path, crypto.random_key())
    secret = read_private_file(path, max_size=_SECRET_SIZE, holds="the web session secret")
    if len(secret) != _SECRET_SIZE:
        raise SettingsError(f"{path}: must hold exactly {_SECRET_SIZE} bytes")
    return secret


class Sealer:
    """Seal and open the web cookies of one deployment."""

    __slots__ = ("_issuer", "_keys")

    def __init__(self, secret: bytes, *, issuer: str) -> None:
        self._issuer = issuer
        self._keys: dict[str, bytes] = {
            purpose: crypto.hkdf_sha256(secret, f"oncevault/web/{purpose}/v1".encode())
            for purpose in ("session", "login")
        }

    def __repr__(self) -> str:
        return f"Sealer(issuer={self._issuer!r})"

    def seal(self, purpose: Purpose, value: dict[str, Any]) -> str:
        aad = crypto.encode_aad(_AAD_LABEL, purpose, self._issuer)
        return crypto.seal_json(self._keys[purpose], value, aad)

    def open(self, purpose: Purpose, text: str | None) -> dict[str, Any] | None:
        """The sealed object, or ``None`` for anything missing, foreign or tampered."""
        if not text:
            return None
        aad = crypto.encode_aad(_AAD_LABEL, purpose, self._issuer)
        try:
            return crypto.open_json(self._keys[purpose], text, aad, max_len=_MAX_COOKIE)
        except DecryptionError:
            return None


def _int(value: object) -> int | None:
    return value if type(value) is int else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Session:
    """A signed-in citizen: who, when they authenticated, until when, and the CSRF token."""

    citizen_id: str
    auth_time: int | None
    """Epoch seconds of the sign-in at the IdP (from the id_token), if it said."""
    expires_at: int
    """Epoch seconds."""
    csrf: str
    """The synchronizer token every form of this session carries."""

    def as_json(self) -> dict[str, Any]:
        return {
            "cid": self.citizen_id,
            "at": self.auth_time,
            "exp": self.expires_at,
            "csrf": self.csrf,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any] | None, *, now: int) -> Session | None:
        """The session in ``value`` when well formed and not expired at ``now``."""
        if value is None:
            return None
        citizen_id, csrf = _str(value.get("cid")), _str(value.get("csrf"))
        expires_at = _int(value.get("exp"))
        auth_time = _int(value.get("at"))
        if citizen_id is None or expires_at is None or csrf is None or now >= expires_at:
            return None
        return cls(citizen_id=citizen_id, auth_time=auth_time, expires_at=expires_at, csrf=csrf)

    @classmethod
    def start(cls, citizen_id: str, *, auth_time: int | None, now: int) -> Session:
        return cls(
            citizen_id=citizen_id,
            auth_time=auth_time,
            expires_at=now + SESSION_SECONDS,
            csrf=secrets.token_urlsafe(32),
        )


@dataclass(frozen=True)
class LoginState:
    """A sign-in in progress: what the callback must find again."""

    state: str
    nonce: str
    verifier: str
    """The PKCE ``code_verifier`` (its S256 challenge went to the IdP)."""
    next_path: str
    expires_at: int

    def as_json(self) -> dict[str, Any]:
        return {
            "st": self.state,
            "n": self.nonce,
            "v": self.verifier,
            "next": self.next_path,
            "exp": self.expires_at,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any] | None, *, now: int) -> LoginState | None:
        if value is None:
            return None
        fields = [_str(value.get(k)) for k in ("st", "n", "v", "next")]
        expires_at = _int(value.get("exp"))
        if expires_at is None or now >= expires_at:
            return None
        state, nonce, verifier, next_path = fields
        if state is None or nonce is None or verifier is None or next_path is None:
            return None
        return cls(state, nonce, verifier, next_path, expires_at)

    @classmethod
    def start(cls, next_path: str, *, now: int) -> LoginState:
        return cls(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),  # 64 characters of [A-Za-z0-9_-]
            next_path=next_path,
            expires_at=now + LOGIN_SECONDS,
        )
