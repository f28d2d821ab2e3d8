"""Settings: the precedence rules of DESIGN section 11 and every bad value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from api.settings import SettingsError, load_settings, read_dotenv


def _dotenv(data_dir: Path, text: str, mode: int = 0o600) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ".env"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


# -- data dir: flag, then environment, then ./.oncevault ------------------------------


def test_data_dir_flag_wins_over_environment(tmp_path: Path) -> None:
    env = {"ONCEVAULT_DATA_DIR": str(tmp_path / "env")}
    settings = load_settings(environ=env, data_dir_flag=str(tmp_path / "flag"))
    assert settings.data_dir == tmp_path / "flag"


def test_data_dir_from_environment(tmp_path: Path) -> None:
    settings = load_settings(environ={"ONCEVAULT_DATA_DIR": str(tmp_path / "env")})
    assert settings.data_dir == tmp_path / "env"


def test_data_dir_defaults_to_dot_oncevault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.data_dir == tmp_path / ".oncevault"


def test_data_dir_from_dotenv_is_ignored(tmp_path: Path) -> None:
    """The data dir locates the .env file, so the .env cannot move it."""
    _dotenv(tmp_path, f"ONCEVAULT_DATA_DIR={tmp_path / 'elsewhere'}\n")
    settings = load_settings(environ={}, data_dir_flag=str(tmp_path))
    assert settings.data_dir == tmp_path


# -- everything else: flag, then environment, then .env, then default ----------------------


@pytest.mark.parametrize(
    ("flag", "env", "dotenv", "expected"),
    [
        ("11", "22", "33", 11.0),
        (None, "22", "33", 22.0),
        (None, None, "33", 33.0),
        (None, None, None, 60.0),
    ],
    ids=["flag", "environment", "dotenv", "default"],
)
def test_setting_precedence(
    tmp_path: Path, flag: str | None, env: str | None, dotenv: str | None, expected: float
) -> None:
    name = "ONCEVAULT_DEK_CACHE_SECONDS"
    if dotenv is not None:
        _dotenv(tmp_path, f"{name}={dotenv}\n")
    environ = {name: env} if env is not None else {}
    settings = load_settings({name: flag}, environ, data_dir_flag=str(tmp_path))
    assert settings.dek_cache_seconds == expected


def test_defaults_for_the_embedded_setup(tmp_path: Path) -> None:
    settings = load_settings(environ={}, data_dir_flag=str(tmp_path), port=8123)
    assert settings.database.dialect == "sqlite"
    assert settings.database.sqlite_path == tmp_path / "oncevault.sqlite"
    assert settings.key_provider == "local"
    assert settings.kek_dir == tmp_path / "keys"
    assert settings.issuer == "http://127.0.0.1:8123"
    assert settings.transit_key == "oncevault"
    assert settings.kms_timeout_seconds == 2.0
    assert settings.idp_nid_claim == "sub"
    assert settings.dev_idp is False
    assert settings.sqlite_synchronous == "FULL"
    assert settings.embedded


def test_dotenv_quotes_comments_and_export(tmp_path: Path) -> None:
    _dotenv(
        tmp_path,
        "# comment\n\nexport ONCEVAULT_TRANSIT_KEY='tk-1'\nONCEVAULT_DEV_IDP=\"1\"\n",
    )
    settings = load_settings(environ={}, data_dir_flag=str(tmp_path))
    assert settings.transit_key == "tk-1"
    assert settings.dev_idp is True


def test_postgres_url_and_redaction(tmp_path: Path) -> None:
    url = "postgresql://app:s3cret@db.internal:5432/oncevault"
    settings = load_settings({"ONCEVAULT_DATABASE_URL": url}, {}, data_dir_flag=str(tmp_path))
    assert settings.database.dialect == "postgres"
    assert "s3cret" not in settings.database.redacted
    assert "s3cret" not in repr(settings.database.redacted)


def test_relative_sqlite_url_is_inside_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(
        {"ONCEVAULT_DATABASE_URL": "sqlite:///db/ov.sqlite"}, {}, data_dir_flag=str(tmp_path)
    )
    assert settings.database.sqlite_path == tmp_path / "db" / "ov.sqlite"


def test_transit_settings(tmp_path: Path) -> None:
    env = {
        "ONCEVAULT_KEY_PROVIDER": "transit",
        "VAULT_ADDR": "http://127.0.0.1:8200",
        "VAULT_TOKEN": "hvs.secret-token",
    }
    settings = load_settings(environ=env, data_dir_flag=str(tmp_path))
    assert settings.key_provider == "transit"
    assert not settings.embedded
    assert "hvs.secret-token" not in repr(settings)


# -- bad values: one line naming the setting and the problem -----------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "ONCEVAULT_DATABASE_URL",
            "mysql://root@localhost/x",
            r"^ONCEVAULT_DATABASE_URL: unsupported scheme 'mysql'",
        ),
        (
            "ONCEVAULT_DATABASE_URL",
            "not a url",
            r"^ONCEVAULT_DATABASE_URL: unsupported scheme 'none'",
        ),
        (
            "ONCEVAULT_DATABASE_URL",
            "postgresql:///nohost",
            r"^ONCEVAULT_DATABASE_URL: postgresql URL has no host",
        ),
        (
            "ONCEVAULT_DATABASE_URL",
            "postgresql://h:99999/db",
            r"^ONCEVAULT_DATABASE_URL: postgresql URL has a bad port",
        ),
        (
            "ONCEVAULT_DATABASE_URL",
            "postgresql://h:5432/",
            r"^ONCEVAULT_DATABASE_URL: postgresql URL has no database name",
        ),
        (
            "ONCEVAULT_DATABASE_URL",
            "sqlite://host/x.db",
            r"^ONCEVAULT_DATABASE_URL: sqlite URL must be sqlite:///PATH",
        ),
        ("ONCEVAULT_KEY_PROVIDER", "kms", r"^ONCEVAULT_KEY_PROVIDER: unknown key provider"),
        ("ONCEVAULT_KMS_TIMEOUT_SECONDS", "soon", r"^ONCEVAULT_KMS_TIMEOUT_SECONDS: not a number"),
        ("ONCEVAULT_KMS_TIMEOUT_SECONDS", "0", r"^ONCEVAULT_KMS_TIMEOUT_SECONDS: must be between"),
        (
            "ONCEVAULT_KMS_TIMEOUT_SECONDS",
            "nan",
            r"^ONCEVAULT_KMS_TIMEOUT_SECONDS: must be between",
        ),
        ("ONCEVAULT_DEK_CACHE_SECONDS", "-1", r"^ONCEVAULT_DEK_CACHE_SECONDS: must be between"),
        (
            "ONCEVAULT_RATE_LIMIT_PER_MINUTE",
            "1.5",
            r"^ONCEVAULT_RATE_LIMIT_PER_MINUTE: not an integer",
        ),
        ("ONCEVAULT_DEV_IDP", "maybe", r"^ONCEVAULT_DEV_IDP: expected 1 or 0"),
        ("ONCEVAULT_ISSUER", "ftp://x", r"^ONCEVAULT_ISSUER: must be an http\(s\) URL"),
        ("ONCEVAULT_ISSUER", "https://x/?a=b", r"^ONCEVAULT_ISSUER: must not have a query"),
        ("ONCEVAULT_TRANSIT_KEY", "a/b", r"^ONCEVAULT_TRANSIT_KEY: use letters"),
        ("ONCEVAULT_SQLITE_SYNCHRONOUS", "OFF", r"^ONCEVAULT_SQLITE_SYNCHRONOUS: use FULL or"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings({name: value}, {}, data_dir_flag=str(tmp_path))
    assert "\n" not in str(caught.value)


def test_transit_requires_address_and_token(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^VAULT_ADDR: required"):
        load_settings({"ONCEVAULT_KEY_PROVIDER": "transit"}, {}, data_dir_flag=str(tmp_path))
    with pytest.raises(SettingsError, match=r"^VAULT_TOKEN: required"):
        load_settings(
            {"ONCEVAULT_KEY_PROVIDER": "transit", "VAULT_ADDR": "http://127.0.0.1:8200"},
            {},
            data_dir_flag=str(tmp_path),
        )


def test_unreadable_directories(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(SettingsError, match=r"^ONCEVAULT_POLICY_DIR: .* does not exist"):
        load_settings(
            {"ONCEVAULT_POLICY_DIR": str(tmp_path / "missing")}, {}, data_dir_flag=str(tmp_path)
        )
    with pytest.raises(SettingsError, match=r"^ONCEVAULT_POLICY_DIR: .* is not a directory"):
        load_settings({"ONCEVAULT_POLICY_DIR": str(a_file)}, {}, data_dir_flag=str(tmp_path))
    with pytest.raises(SettingsError, match=r"^ONCEVAULT_KEK_DIR: .* is not a directory"):
        load_settings({"ONCEVAULT_KEK_DIR": str(a_file)}, {}, data_dir_flag=str(tmp_path))
    with pytest.raises(SettingsError, match=r"^ONCEVAULT_DATA_DIR: .* is not a directory"):
        load_settings(environ={}, data_dir_flag=str(a_file))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
def test_unreadable_directory_by_mode(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o000)
    try:
        with pytest.raises(SettingsError, match=r"^ONCEVAULT_POLICY_DIR: .* is not readable"):
            load_settings({"ONCEVAULT_POLICY_DIR": str(locked)}, {}, data_dir_flag=str(tmp_path))
    finally:
        locked.chmod(0o700)


def test_dotenv_with_vault_token_must_be_0600(tmp_path: Path) -> None:
    _dotenv(tmp_path, "VAULT_TOKEN=hvs.abc\n", mode=0o644)
    with pytest.raises(SettingsError, match=r"holds VAULT_TOKEN but is not mode 0600") as caught:
        load_settings(environ={}, data_dir_flag=str(tmp_path))
    assert "hvs.abc" not in str(caught.value)
    (tmp_path / ".env").chmod(0o600)
    assert read_dotenv(tmp_path / ".env") == {"VAULT_TOKEN": "hvs.abc"}


def test_dotenv_refuses_unknown_names_and_bad_lines(tmp_path: Path) -> None:
    _dotenv(tmp_path, "ONCEVAULT_DATABSE_URL=sqlite:///x\n")
    with pytest.raises(
        SettingsError, match=r"\.env:1: ONCEVAULT_DATABSE_URL is not an oncevault setting"
    ):
        load_settings(environ={}, data_dir_flag=str(tmp_path))
    _dotenv(tmp_path, "JUSTTEXT\n")
    with pytest.raises(SettingsError, match=r"\.env:1: expected NAME=value"):
        load_settings(environ={}, data_dir_flag=str(tmp_path))


def test_bad_serve_options(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^--port: must be between 1 and 65535"):
        load_settings(environ={}, data_dir_flag=str(tmp_path), port=0)
    with pytest.raises(SettingsError, match=r"^--workers: must be between 1 and 64"):
        load_settings(environ={}, data_dir_flag=str(tmp_path), workers=0)


def test_idp_issuer_needs_jwks_and_audience(tmp_path: Path) -> None:
    with pytest.raises(
        SettingsError, match=r"^ONCEVAULT_IDP_ISSUER: needs ONCEVAULT_IDP_JWKS_FILE"
    ):
        load_settings(
            {"ONCEVAULT_IDP_ISSUER": "https://idp.example"}, {}, data_dir_flag=str(tmp_path)
        )


def test_environment_export_round_trips(tmp_path: Path) -> None:
    settings = load_settings(
        {"ONCEVAULT_DEK_CACHE_SECONDS": "5"}, {}, data_dir_flag=str(tmp_path), port=9001
    )
    again = load_settings(environ=settings.as_environment())
    assert again == settings.__class__(**{**settings.__dict__, "port": 8000})


def test_sqlite_synchronous_normal_is_applied_to_the_connections(tmp_path: Path) -> None:
    import asyncio  # noqa: PLC0415

    from api.db import open_database  # noqa: PLC0415

    settings = load_settings(
        {"ONCEVAULT_SQLITE_SYNCHRONOUS": "normal"}, {}, data_dir_flag=str(tmp_path)
    )
    assert settings.sqlite_synchronous == "NORMAL"
    assert settings.as_environment()["ONCEVAULT_SQLITE_SYNCHRONOUS"] == "NORMAL"

    async def pragmas() -> list[int]:
        database = open_database(settings.database, sqlite_synchronous=settings.sqlite_synchronous)
        await database.start(create=True)
        try:
            outside = await database.fetchrow("SELECT synchronous FROM pragma_synchronous")
            async with database.transaction():
                inside = await database.fetchrow("SELECT synchronous FROM pragma_synchronous")
        finally:
            await database.close()
        assert outside is not None and inside is not None
        return [outside["synchronous"], inside["synchronous"]]

    assert asyncio.run(pragmas()) == [1, 1]  # 1 = NORMAL, 2 = FULL
