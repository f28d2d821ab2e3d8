"""The ``oncevault`` command (DESIGN section 11).

Exit codes: 0 success, 1 the operation failed (unmigrated database, rollback, failed
verification), 2 bad usage or a bad setting (one line naming it).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import secrets
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from granian.constants import Interfaces, Loops
from granian.server import Server

from api.db import NotMigrated, migrate, open_database, require_migrated
from api.logging import configure_logging
from api.settings import DOTENV, Settings, SettingsError, load_settings
from vault.errors import OncevaultError
from vault.storage import Database


class CommandFailed(Exception):
    """The command ran but failed; the message is printed and the exit code is 1."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- init ---------------------------------------------------------------------------


async def _init(settings: Settings) -> list[str]:
    database = open_database(settings.database)
    try:
        await database.start(create=True)
        applied = await migrate(database)
        await _record_instance(database)
    finally:
        await database.close()
    return applied


async def _record_instance(database: Database) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    instance = "ins_" + secrets.token_hex(10)
    async with database.transaction():
        for key, value in (("instance_id", instance), ("initialised_at", now)):
            if await database.fetchrow("SELECT key FROM oncevault_meta WHERE key = $1", key):
                continue
            await database.execute(
                "INSERT INTO oncevault_meta (key, value) VALUES ($1, $2)", key, value
            )


def cmd_init(args: argparse.Namespace) -> int:
    data_dir_flag: str | None = args.data_dir
    settings = load_settings(data_dir_flag=data_dir_flag)
    fresh = not settings.data_dir.exists()
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    dotenv = settings.data_dir / DOTENV
    if fresh and settings.embedded and not dotenv.exists():
        # A fresh embedded data dir is a developer's: turn the development IdP on.
        fd = os.open(dotenv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("# written by `oncevault init` for an embedded development setup\n")
            handle.write("ONCEVAULT_DEV_IDP=1\n")
        settings = load_settings(data_dir_flag=data_dir_flag)
    applied = asyncio.run(_init(settings))
    print(f"data dir   {settings.data_dir}")
    print(f"database   {settings.database.redacted}")
    print(f"migrations {len(applied)} applied" if applied else "migrations up to date")
    return 0


# -- serve --------------------------------------------------------------------------


async def _check_ready_to_serve(settings: Settings) -> None:
    database = open_database(settings.database)
    try:
        await database.start()
        await require_migrated(database)
    finally:
        await database.close()


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(
        data_dir_flag=args.data_dir, host=args.host, port=args.port, workers=args.workers
    )
    if settings.dev_idp and not (_is_loopback(settings.host) and settings.embedded):
        raise SettingsError(
            "ONCEVAULT_DEV_IDP: the development IdP needs a loopback host, "
            "the local key provider and SQLite"
        )
    if (
        settings.database.dialect == "sqlite"
        and not (settings.database.sqlite_path or Path()).exists()
    ):
        raise CommandFailed(f"no database in {settings.data_dir}; run `oncevault init` first")
    try:
        asyncio.run(_check_ready_to_serve(settings))
    except NotMigrated as exc:
        raise CommandFailed(str(exc)) from None

    os.environ.update(settings.as_environment())
    base = f"http://{settings.host}:{settings.port}"
    print(f"oncevault serving on {base}  (workers: {settings.workers})", flush=True)
    print(f"  health   {base}/healthz", flush=True)
    print(f"  ready    {base}/readyz", flush=True)
    print(f"  data dir {settings.data_dir}", flush=True)

    server = Server(
        "api.asgi:app_factory",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        loop=Loops.auto,
        factory=True,
        log_enabled=True,
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=10,
    )
    server.serve()
    return 0


# -- entry point ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oncevault", description="Consent and submit-once personal-data vault."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_init = sub.add_parser("init", help="create the data dir, database, keys")
    p_init.add_argument("--data-dir", metavar="DIR")
    p_init.set_defaults(func=cmd_init)

    p_serve = sub.add_parser("serve", help="serve the HTTP API")
    p_serve.add_argument("--data-dir", metavar="DIR")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8000)
    p_serve.add_argument("--workers", type=int, default=1)
    p_serve.add_argument(
        "--accept-rollback",
        action="store_true",
        help="start after a deliberate restore of an older database",
    )
    p_serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(level=os.environ.get("ONCEVAULT_LOG_LEVEL", "warning"))
    try:
        code: int = args.func(args)
    except SettingsError as exc:
        print(f"oncevault: {exc}", file=sys.stderr)
        return 2
    except CommandFailed as exc:
        print(f"oncevault: {exc}", file=sys.stderr)
        return 1
    except OncevaultError as exc:
        print(f"oncevault: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
