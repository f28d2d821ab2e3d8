"""Settings of DESIGN section 11, read once and validated.

Precedence:

* the data directory: ``--data-dir``, then ``ONCEVAULT_DATA_DIR``, then ``./.oncevault``;
* every other setting: the CLI flag, then the environment, then the ``.env`` file in
  the data directory, then the default.

A bad value raises :class:`SettingsError` whose message is one line naming the
setting and the problem (never the value of a secret). The CLI prints it and exits 2.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from api.affinity import supported as supports_affinity
from vault.errors import OncevaultError

DEFAULT_DATA_DIR = ".oncevault"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DOTENV = ".env"

#: Every setting name the ``.env`` file and the environment may carry.
SETTING_NAMES: tuple[str, ...] = (
    "ONCEVAULT_DATA_DIR",
    "ONCEVAULT_DATABASE_URL",
    "ONCEVAULT_KEY_PROVIDER",
    "ONCEVAULT_KEK_DIR",
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "ONCEVAULT_TRANSIT_KEY",
    "ONCEVAULT_KMS_TIMEOUT_SECONDS",
    "ONCEVAULT_ISSUER",
    "ONCEVAULT_POLICY_DIR",
    "ONCEVAULT_IDP_ISSUER",
    "ONCEVAULT_IDP_JWKS_FILE",
    "ONCEVAULT_IDP_AUDIENCE",
    "ONCEVAULT_IDP_NID_CLAIM",
    "ONCEVAULT_IDP_CI_CLAIM",
    "ONCEVAULT_DEV_IDP",
    "ONCEVAULT_DEK_CACHE_SECONDS",
    "ONCEVAULT_RATE_LIMIT_PER_MINUTE",
    "ONCEVAULT_SQLITE_SYNCHRONOUS",
    "ONCEVAULT_WORKER_AFFINITY",
    # Web sign-in against an external OpenID provider (read by api/web; see its README).
    "ONCEVAULT_IDP_AUTHORIZATION_ENDPOINT",
    "ONCEVAULT_IDP_TOKEN_ENDPOINT",
    "ONCEVAULT_IDP_CLIENT_SECRET_FILE",
    "ONCEVAULT_WEB_SESSION_KEY_FILE",
)

KeyProviderName = Literal["local", "transit"]


class SettingsError(OncevaultError):
    """A setting is missing or has a bad value."""

    code = "bad_setting"


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed ``ONCEVAULT_DATABASE_URL``."""

    dialect: Literal["sqlite", "postgres"]
    url: str
    sqlite_path: Path | None = None

    @property
    def redacted(self) -> str:
        """The URL with any password replaced, safe for logs."""
        if self.dialect == "sqlite":
            return self.url
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class Settings:
    """Every setting of DESIGN section 11, validated."""

    data_dir: Path
    database: DatabaseURL
    key_provider: KeyProviderName
    kek_dir: Path
    vault_addr: str | None
    vault_token: str | None = field(repr=False)
    transit_key: str
    kms_timeout_seconds: float
    issuer: str
    policy_dir: Path | None
    idp_issuer: str | None
    idp_jwks_file: Path | None
    idp_audience: str | None
    idp_nid_claim: str
    idp_ci_claim: str | None
    dev_idp: bool
    dek_cache_seconds: float
    rate_limit_per_minute: int
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    #: SQLite's ``synchronous`` pragma: FULL fsyncs the WAL at every COMMIT (an
    #: acknowledged write survives power loss); NORMAL only at checkpoints (it
    #: survives a crash of the process, not of the machine).
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    #: ``spread``: each ``serve`` worker pins itself to a CPU of its own
    #: (:mod:`api.affinity`); ``off`` leaves placement to the scheduler.
    worker_affinity: Literal["off", "spread"] = "off"

    @property
    def embedded(self) -> bool:
        """True for the embedded setup: SQLite and the local key provider."""
        return self.database.dialect == "sqlite" and self.key_provider == "local"

    def as_environment(self) -> dict[str, str]:
        """The settings as environment variables, for server worker processes."""
        env = {
            "ONCEVAULT_DATA_DIR": str(self.data_dir),
            "ONCEVAULT_DATABASE_URL": self.database.url,
            "ONCEVAULT_KEY_PROVIDER": self.key_provider,
            "ONCEVAULT_KEK_DIR": str(self.kek_dir),
            "ONCEVAULT_TRANSIT_KEY": self.transit_key,
            "ONCEVAULT_KMS_TIMEOUT_SECONDS": repr(self.kms_timeout_seconds),
            "ONCEVAULT_ISSUER": self.issuer,
            "ONCEVAULT_IDP_NID_CLAIM": self.idp_nid_claim,
            "ONCEVAULT_DEV_IDP": "1" if self.dev_idp else "0",
            "ONCEVAULT_DEK_CACHE_SECONDS": repr(self.dek_cache_seconds),
            "ONCEVAULT_RATE_LIMIT_PER_MINUTE": str(self.rate_limit_per_minute),
            "ONCEVAULT_SQLITE_SYNCHRONOUS": self.sqlite_synchronous,
            "ONCEVAULT_WORKER_AFFINITY": self.worker_affinity,
        }
        optional = {
            "VAULT_ADDR": self.vault_addr,
            "VAULT_TOKEN": self.vault_token,
            "ONCEVAULT_POLICY_DIR": str(self.policy_dir) if self.policy_dir else None,
            "ONCEVAULT_IDP_ISSUER": self.idp_issuer,
            "ONCEVAULT_IDP_JWKS_FILE": str(self.idp_jwks_file) if self.idp_jwks_file else None,
            "ONCEVAULT_IDP_AUDIENCE": self.idp_audience,
            "ONCEVAULT_IDP_CI_CLAIM": self.idp_ci_claim,
        }
        env.update({k: v for k, v in optional.items() if v is not None})
        return env


def resolve_data_dir(flag: str | None, environ: Mapping[str, str]) -> Path:
    """The data directory: flag, then environment, then ``./.oncevault``."""
    raw = flag or environ.get("ONCEVAULT_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(raw).expanduser().resolve()


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``NAME=value`` lines, ``#`` comments, optional quotes.

    Refuses a file holding ``VAULT_TOKEN`` unless its mode is 0600 (or stricter),
    and refuses names that are not settings (a typo must not pass silently).
    """
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot be read ({exc.__class__.__name__})") from None
    values: dict[str, str] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SettingsError(f"{path}:{number}: expected NAME=value")
        if name not in SETTING_NAMES:
            raise SettingsError(f"{path}:{number}: {name} is not an oncevault setting")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name] = value
    if "VAULT_TOKEN" in values and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise SettingsError(f"{path}: holds VAULT_TOKEN but is not mode 0600")
    return values


def parse_database_url(raw: str, *, data_dir: Path) -> DatabaseURL:
    """Validate ``ONCEVAULT_DATABASE_URL`` (``sqlite:///path`` or ``postgresql://...``)."""
    name = "ONCEVAULT_DATABASE_URL"
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc:
            raise SettingsError(f"{name}: sqlite URL must be sqlite:///PATH (no host)")
        path_text = parts.path
        if not path_text or path_text == "/":
            raise SettingsError(f"{name}: sqlite URL has no file path")
        # As in SQLAlchemy: sqlite:///relative.db is relative to the data directory,
        # sqlite:////abs/path.db is absolute.
        path = Path(path_text[1:])
        if not path.is_absolute():
            path = data_dir / path
        return DatabaseURL(dialect="sqlite", url=f"sqlite:///{path}", sqlite_path=path)
    if scheme in ("postgresql", "postgres"):
        if not parts.hostname and "host=" not in parts.query:
            raise SettingsError(f"{name}: postgresql URL has no host")
        if not parts.path.strip("/"):
            raise SettingsError(f"{name}: postgresql URL has no database name")
        try:
            _ = parts.port
        except ValueError:
            raise SettingsError(f"{name}: postgresql URL has a bad port") from None
        return DatabaseURL(dialect="postgres", url=raw)
    shown = scheme or "none"
    raise SettingsError(f"{name}: unsupported scheme {shown!r} (use sqlite:/// or postgresql://)")


def _directory(name: str, raw: str, *, must_exist: bool) -> Path:
    path = Path(raw).expanduser().resolve()
    if path.exists():
        if not path.is_dir():
            raise SettingsError(f"{name}: {path} is not a directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise SettingsError(f"{name}: {path} is not readable")
    elif must_exist:
        raise SettingsError(f"{name}: {path} does not exist")
    return path


def _file(name: str, raw: str) -> Path:
    path = Path(raw).expanduser().resolve()
    if not path.is_file():
        raise SettingsError(f"{name}: {path} is not a file")
    if not os.access(path, os.R_OK):
        raise SettingsError(f"{name}: {path} is not readable")
    return path


def _number(name: str, raw: str, *, minimum: float, maximum: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: not a number") from None
    if not minimum <= value <= maximum:  # also rejects NaN
        raise SettingsError(f"{name}: must be between {minimum:g} and {maximum:g}")
    return value


def _integer(name: str, raw: str, *, minimum: int, maximum: int) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise SettingsError(f"{name}: not an integer") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name}: must be between {minimum} and {maximum}")
    return value


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}: expected 1 or 0")


def _url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name}: must be an http(s) URL with a host")
    if parts.query or parts.fragment:
        raise SettingsError(f"{name}: must not have a query or fragment")
    return raw.rstrip("/")


def load_settings(
    flags: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    data_dir_flag: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 1,
) -> Settings:
    """Resolve and validate every setting.

    Args:
        flags: values given on the command line, keyed by setting name (``None`` = not given).
        environ: the process environment (``os.environ`` when omitted).
        data_dir_flag: ``--data-dir``.
        host, port, workers: ``serve``'s listening options (they shape the default issuer).

    Raises:
        SettingsError: one line naming the setting and the problem.
    """
    environ = os.environ if environ is None else environ
    flags = flags or {}
    data_dir = resolve_data_dir(data_dir_flag, environ)
    if data_dir.exists() and not data_dir.is_dir():
        raise SettingsError(f"ONCEVAULT_DATA_DIR: {data_dir} is not a directory")
    if data_dir.exists() and not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
        raise SettingsError(f"ONCEVAULT_DATA_DIR: {data_dir} is not readable and writable")
    dotenv = read_dotenv(data_dir / DOTENV) if data_dir.is_dir() else {}

    def get(name: str) -> str | None:
        for source in (flags, environ, dotenv):
            value = source.get(name)
            if value is not None and value != "":
                return value
        return None

    if not 1 <= port <= 65535:
        raise SettingsError("--port: must be between 1 and 65535")
    if not 1 <= workers <= 64:
        raise SettingsError("--workers: must be between 1 and 64")

    database = parse_database_url(
        get("ONCEVAULT_DATABASE_URL") or f"sqlite:///{data_dir / 'oncevault.sqlite'}",
        data_dir=data_dir,
    )

    provider = (get("ONCEVAULT_KEY_PROVIDER") or "local").strip().lower()
    if provider not in ("local", "transit"):
        raise SettingsError(
            "ONCEVAULT_KEY_PROVIDER: unknown key provider (expected local or transit)"
        )
    key_provider: KeyProviderName = "local" if provider == "local" else "transit"

    kek_raw = get("ONCEVAULT_KEK_DIR")
    kek_dir = (
        _directory("ONCEVAULT_KEK_DIR", kek_raw, must_exist=False) if kek_raw else data_dir / "keys"
    )

    vault_addr = get("VAULT_ADDR")
    vault_token = get("VAULT_TOKEN")
    if key_provider == "transit":
        if not vault_addr:
            raise SettingsError("VAULT_ADDR: required with ONCEVAULT_KEY_PROVIDER=transit")
        vault_addr = _url("VAULT_ADDR", vault_addr)
        if not vault_token:
            raise SettingsError("VAULT_TOKEN: required with ONCEVAULT_KEY_PROVIDER=transit")

    transit_key = get("ONCEVAULT_TRANSIT_KEY") or "oncevault"
    if not transit_key.replace("-", "").replace("_", "").isalnum() or len(transit_key) > 128:
        raise SettingsError("ONCEVAULT_TRANSIT_KEY: use letters, digits, '-' and '_' only")

    kms_timeout = _number(
        "ONCEVAULT_KMS_TIMEOUT_SECONDS",
        get("ONCEVAULT_KMS_TIMEOUT_SECONDS") or "2",
        minimum=0.05,
        maximum=60,
    )

    issuer_raw = get("ONCEVAULT_ISSUER")
    issuer = _url("ONCEVAULT_ISSUER", issuer_raw) if issuer_raw else f"http://{host}:{port}"

    policy_raw = get("ONCEVAULT_POLICY_DIR")
    policy_dir = (
        _directory("ONCEVAULT_POLICY_DIR", policy_raw, must_exist=True) if policy_raw else None
    )

    idp_issuer_raw = get("ONCEVAULT_IDP_ISSUER")
    idp_issuer = _url("ONCEVAULT_IDP_ISSUER", idp_issuer_raw) if idp_issuer_raw else None
    jwks_raw = get("ONCEVAULT_IDP_JWKS_FILE")
    idp_jwks_file = _file("ONCEVAULT_IDP_JWKS_FILE", jwks_raw) if jwks_raw else None
    idp_audience = get("ONCEVAULT_IDP_AUDIENCE")
    if idp_issuer and not (idp_jwks_file and idp_audience):
        raise SettingsError(
            "ONCEVAULT_IDP_ISSUER: needs ONCEVAULT_IDP_JWKS_FILE and ONCEVAULT_IDP_AUDIENCE"
        )

    dek_cache = _number(
        "ONCEVAULT_DEK_CACHE_SECONDS",
        get("ONCEVAULT_DEK_CACHE_SECONDS") or "60",
        minimum=0,
        maximum=3600,
    )
    rate_limit = _integer(
        "ONCEVAULT_RATE_LIMIT_PER_MINUTE",
        get("ONCEVAULT_RATE_LIMIT_PER_MINUTE") or "6000",
        minimum=0,
        maximum=10_000_000,
    )

    synchronous = (get("ONCEVAULT_SQLITE_SYNCHRONOUS") or "FULL").upper()
    if synchronous not in ("FULL", "NORMAL"):
        raise SettingsError("ONCEVAULT_SQLITE_SYNCHRONOUS: use FULL or NORMAL")

    affinity = (get("ONCEVAULT_WORKER_AFFINITY") or "off").strip().lower()
    if affinity not in ("off", "spread"):
        raise SettingsError("ONCEVAULT_WORKER_AFFINITY: use off or spread")
    if affinity == "spread" and not supports_affinity():
        raise SettingsError("ONCEVAULT_WORKER_AFFINITY: spread needs Linux (sched_setaffinity)")

    return Settings(
        data_dir=data_dir,
        database=database,
        key_provider=key_provider,
        kek_dir=kek_dir,
        vault_addr=vault_addr,
        vault_token=vault_token,
        transit_key=transit_key,
        kms_timeout_seconds=kms_timeout,
        issuer=issuer,
        policy_dir=policy_dir,
        idp_issuer=idp_issuer,
        idp_jwks_file=idp_jwks_file,
        idp_audience=idp_audience,
        idp_nid_claim=get("ONCEVAULT_IDP_NID_CLAIM") or "sub",
        idp_ci_claim=get("ONCEVAULT_IDP_CI_CLAIM"),
        dev_idp=_boolean("ONCEVAULT_DEV_IDP", get("ONCEVAULT_DEV_IDP") or "0"),
        dek_cache_seconds=dek_cache,
        rate_limit_per_minute=rate_limit,
        host=host,
        port=port,
        workers=workers,
        sqlite_synchronous="NORMAL" if synchronous == "NORMAL" else "FULL",
        worker_affinity="spread" if affinity == "spread" else "off",
    )
