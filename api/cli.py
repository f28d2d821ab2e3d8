"""The ``oncevault`` command (DESIGN section 11).

Exit codes: 0 success, 1 the operation failed (unmigrated database, rollback, failed
verification), 2 bad usage or a bad setting (one line naming it).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from granian.constants import Interfaces, Loops
from granian.server import Server

from api import metrics
from api.db import NotMigrated, migrate, open_database, require_migrated
from api.idp import dev_token
from api.logging import configure_logging
from api.runtime import Runtime, prepare_provider
from api.settings import DOTENV, Settings, SettingsError, load_settings
from audit.checkpoints import Checkpoint, RollbackDetected
from audit.repository import AuditRepository
from audit.verify import VerifyResult, export_lines, verify_database, verify_export
from vault import crypto
from vault.errors import OncevaultError
from vault.keyring import Keyring
from vault.repository import VaultRepository
from vault.service import Actor
from vault.storage import Database

OPERATOR = Actor("operator", "cli")


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


async def _init(settings: Settings) -> tuple[list[str], list[str]]:
    runtime = await Runtime.open(settings, create=True, load_keys=False)
    try:
        applied = await migrate(runtime.database)
        await prepare_provider(settings, runtime.keys, runtime.ledger, create=True)
        await _record_instance(runtime.database)
        made = await Keyring.create_missing(
            repo=runtime.repo,
            keys=runtime.keys,
            audit=runtime.audit,
            clock=runtime.clock,
        )
        await runtime.load_services()
        assert runtime.checkpointer is not None
        await runtime.checkpointer.make()  # the first checkpoint, copied outside the database
    finally:
        await runtime.close()
    return applied, made


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
    applied, made = asyncio.run(_init(settings))
    print(f"data dir   {settings.data_dir}")
    print(f"database   {settings.database.redacted}")
    print(
        f"keys       {settings.key_provider}"
        + (
            f" ({settings.kek_dir})"
            if settings.key_provider == "local"
            else f" ({settings.transit_key})"
        )
    )
    print(f"migrations {len(applied)} applied" if applied else "migrations up to date")
    print(f"created    {', '.join(made)}" if made else "platform keys present")
    return 0


# -- serve --------------------------------------------------------------------------


async def _check_ready_to_serve(settings: Settings, *, accept_rollback: bool) -> int:
    """Before any worker starts: migrated, provider safe, keys usable, no rollback,
    erasures re-applied, the checkpoint copy current."""
    database = open_database(settings.database, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        await database.start()
        await require_migrated(database)
        runtime = await Runtime.open(settings, database=database, load_keys=False)
        try:
            await prepare_provider(settings, runtime.keys, runtime.ledger, create=False)
            await runtime.load_services()
            assert runtime.vault is not None
            assert runtime.checkpointer is not None
            try:
                await runtime.checkpointer.check_rollback()
            except RollbackDetected:
                if not accept_rollback:
                    raise
                old, new = await runtime.checkpointer.accept_rollback(
                    reapply=runtime.vault.reapply_erasures
                )
                print(f"rollback accepted: checkpoint copy had {old} entries, log has {new}")
                return 0
            reapplied = await runtime.vault.reapply_erasures()
            await runtime.checkpointer.make()
            return reapplied
        finally:
            await runtime.close(database=False)
    finally:
        await database.close()


def _kek_inside_data_dir(settings: Settings) -> bool:
    """Whether the local KEK lives in the data dir (DESIGN section 4: ``serve`` warns)."""
    return settings.kek_dir.resolve().is_relative_to(settings.data_dir.resolve())


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
        reapplied = asyncio.run(
            _check_ready_to_serve(settings, accept_rollback=args.accept_rollback)
        )
    except (NotMigrated, RollbackDetected) as exc:
        raise CommandFailed(str(exc)) from None
    if reapplied:
        print(f"re-applied {reapplied} erasure(s) from the ledger", flush=True)

    if settings.key_provider == "local" and _kek_inside_data_dir(settings):
        print(
            f"warning: the KEK directory {settings.kek_dir} is inside the data dir, so a copy "
            "of the data dir holds the keys that open it: fine for development; in "
            "production set ONCEVAULT_KEK_DIR outside the data dir and its backups",
            file=sys.stderr,
            flush=True,
        )
    os.environ.update(settings.as_environment())
    metrics.clear(settings.data_dir / metrics.METRICS_DIR)  # the counters start with the server
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


# -- keys -------------------------------------------------------------------------


async def _rotate(settings: Settings, *, kek: bool, signing: bool) -> list[str]:
    runtime = await Runtime.open(settings, load_keys=False)
    lines: list[str] = []
    try:
        await require_migrated(runtime.database)
        await prepare_provider(settings, runtime.keys, runtime.ledger, create=False)
        await runtime.load_services()
        assert runtime.vault is not None
        if kek:
            version, count, retired = await runtime.vault.rotate_kek(actor=OPERATOR)
            lines.append(f"kek        now v{version}; {count} wrapped secrets rewrapped")
            if retired:
                lines.append(f"retired    kek v{', v'.join(str(v) for v in retired)}")
        if signing:
            kids = await Keyring.rotate_signing(
                repo=runtime.repo,
                keys=runtime.keys,
                audit=runtime.audit,
                clock=runtime.clock,
            )
            lines.append(f"signing    new keys {', '.join(kids)} (old keys stay published)")
    finally:
        await runtime.close()
    return lines


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    if not (args.kek or args.signing):
        raise SettingsError("keys rotate: choose --kek, --signing or both")
    settings = load_settings(data_dir_flag=args.data_dir)
    for line in asyncio.run(_rotate(settings, kek=args.kek, signing=args.signing)):
        print(line)
    return 0


# -- clients ----------------------------------------------------------------------


def _read_jwks(path: str) -> dict[str, object]:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"--jwks {path}: unreadable ({exc.__class__.__name__})") from None
    if not isinstance(value, dict):
        raise SettingsError(f"--jwks {path}: expected a JSON object with keys")
    return value


async def _clients(settings: Settings, action: str, args: argparse.Namespace) -> list[str]:
    runtime = await Runtime.open(settings, load_keys=False)
    try:
        await require_migrated(runtime.database)
        await runtime.load_services()
        service = runtime.clients
        assert service is not None
        if action == "add":
            client = await service.add(
                client_id=args.id,
                name=args.name,
                kind=args.kind,
                roles=args.role,
                jwks=_read_jwks(args.jwks),
                approved=args.approved,
                dpop_required=args.dpop_required,
                actor=OPERATOR,
            )
            return [f"added {client.client_id} ({client.kind}; {' '.join(sorted(client.roles))})"]
        if action == "list":
            rows = []
            for c in await service.repo.list():
                state = "enabled" if c.enabled else "disabled"
                if c.kind == "private" and not c.approved:
                    state += ", not approved"
                flags = ", dpop" if c.dpop_required else ""
                roles = " ".join(sorted(c.roles))
                rows.append(f"{c.client_id}\t{c.kind}\t{roles}\t{state}{flags}\t{c.name}")
            return rows or ["no clients"]
        if action == "set-jwks":
            await service.set_jwks(args.id, _read_jwks(args.jwks), actor=OPERATOR)
            return [f"{args.id}: keys replaced"]
        method = {"approve": service.approve, "enable": service.enable, "disable": service.disable}
        await method[action](args.id, actor=OPERATOR)
        return [f"{args.id}: {action}d"]
    finally:
        await runtime.close()


def cmd_clients(args: argparse.Namespace) -> int:
    settings = load_settings(data_dir_flag=args.data_dir)
    for line in asyncio.run(_clients(settings, args.clients_command, args)):
        print(line)
    return 0


def cmd_assertion(args: argparse.Namespace) -> int:
    """Print a client assertion (RFC 7523) signed with the client's private key."""
    try:
        pem = Path(args.key).read_bytes()
    except OSError as exc:
        raise SettingsError(f"--key {args.key}: unreadable ({exc.__class__.__name__})") from None
    audience = args.aud or load_settings(data_dir_flag=args.data_dir).issuer + "/oauth/token"
    now = int(time.time())
    try:
        jwk = crypto.public_jwk_from_pem(pem)
        assertion = crypto.sign_jws_with_pem(
            {
                "iss": args.client_id,
                "sub": args.client_id,
                "aud": audience,
                "iat": now,
                "exp": now + 120,
                "jti": secrets.token_urlsafe(24),
            },
            private_pem=pem,
            kid=args.kid or str(jwk["kid"]),
            typ="JWT",
            alg=str(jwk["alg"]),
        )
    except ValueError as exc:
        raise SettingsError(f"--key {args.key}: {exc}") from None
    print(assertion)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from api.demo import run_demo  # noqa: PLC0415 - only this command needs httpx

    return run_demo(serve=args.serve)


def cmd_dev_token(args: argparse.Namespace) -> int:
    settings = load_settings(data_dir_flag=args.data_dir, host=args.host, port=args.port)
    print(dev_token(settings, args.nid))
    return 0


# -- audit ------------------------------------------------------------------------


def _read_trusted(paths: Sequence[str]) -> list[Checkpoint]:
    trusted: list[Checkpoint] = []
    for path in paths:
        try:
            trusted.append(Checkpoint.from_json(Path(path).read_bytes()))
        except (OSError, ValueError) as exc:
            raise SettingsError(
                f"--trusted-checkpoint {path}: unreadable ({exc.__class__.__name__})"
            ) from None
    return trusted


async def _verify_database(settings: Settings, trusted: list[Checkpoint]) -> VerifyResult:
    database = open_database(settings.database, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        await database.start()
        await require_migrated(database)
        repo = VaultRepository(database)
        jwks = {"keys": [json.loads(row.public_jwk) for row in await repo.signing_keys()]}
        return await verify_database(
            AuditRepository(database),
            jwks=jwks,
            origin=None,
            trusted=trusted,
            progress=sys.stderr.isatty(),
        )
    finally:
        await database.close()


def cmd_audit_verify(args: argparse.Namespace) -> int:
    trusted = _read_trusted(args.trusted_checkpoint or [])
    if args.export:
        try:
            with Path(args.export).open(encoding="ascii") as handle:
                result = verify_export(handle, trusted=trusted)
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(
                f"--export {args.export}: unreadable ({exc.__class__.__name__})"
            ) from None
    else:
        settings = load_settings(data_dir_flag=args.data_dir)
        result = asyncio.run(_verify_database(settings, trusted))
    if not result.ok:
        raise CommandFailed(result.message)
    print(result.message)
    return 0


async def _export(settings: Settings, target: Path) -> int:
    database = open_database(settings.database, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        await database.start()
        await require_migrated(database)
        repo = AuditRepository(database)
        jwks = {
            "keys": [
                json.loads(row.public_jwk) for row in await VaultRepository(database).signing_keys()
            ]
        }
        checkpoints = [Checkpoint.from_row(row) for row in await repo.checkpoints()]
        count = 0
        tmp = target.with_name(target.name + ".tmp")
        with tmp.open("w", encoding="ascii") as handle:
            after = -1
            while rows := await repo.scan(after=after, limit=5_000):
                batch = [(int(r["seq"]), bytes(r["leaf"]), bytes(r["leaf_hash"])) for r in rows]
                for line in export_lines(batch, (), {}):
                    if line.startswith('{"jwks"'):
                        continue
                    handle.write(line + "\n")
                count += len(batch)
                after = batch[-1][0]
            for line in export_lines((), checkpoints, jwks):
                handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
        return count
    finally:
        await database.close()


def cmd_audit_export(args: argparse.Namespace) -> int:
    settings = load_settings(data_dir_flag=args.data_dir)
    count = asyncio.run(_export(settings, Path(args.file)))
    print(f"exported {count} entries to {args.file}")
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

    p_keys = sub.add_parser("keys", help="key management")
    keys_sub = p_keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    p_rotate = keys_sub.add_parser("rotate", help="rotate the KEK and/or the signing keys")
    p_rotate.add_argument("--data-dir", metavar="DIR")
    p_rotate.add_argument("--kek", action="store_true", help="new KEK version; rewrap everything")
    p_rotate.add_argument("--signing", action="store_true", help="new signing key per use")
    p_rotate.set_defaults(func=cmd_keys_rotate)

    p_clients = sub.add_parser("clients", help="register and manage OAuth clients")
    clients_sub = p_clients.add_subparsers(dest="clients_command", required=True, metavar="COMMAND")
    p_add = clients_sub.add_parser("add", help="register a client")
    p_add.add_argument("--id", required=True)
    p_add.add_argument("--name", required=True)
    p_add.add_argument("--kind", required=True, choices=["agency", "private"])
    p_add.add_argument(
        "--role", required=True, action="append", choices=["issuer", "consumer", "auditor"]
    )
    p_add.add_argument("--jwks", required=True, metavar="FILE")
    p_add.add_argument("--approved", action="store_true")
    p_add.add_argument("--dpop-required", action="store_true")
    p_list = clients_sub.add_parser("list", help="list clients")
    for name in ("approve", "enable", "disable"):
        p_one = clients_sub.add_parser(name, help=f"{name} a client")
        p_one.add_argument("id")
        p_one.add_argument("--data-dir", metavar="DIR")
        p_one.set_defaults(func=cmd_clients)
    p_jwks = clients_sub.add_parser("set-jwks", help="replace a client's public keys")
    p_jwks.add_argument("id")
    p_jwks.add_argument("--jwks", required=True, metavar="FILE")
    for p in (p_add, p_list, p_jwks):
        p.add_argument("--data-dir", metavar="DIR")
        p.set_defaults(func=cmd_clients)

    p_assertion = sub.add_parser("assertion", help="print a client assertion (for curl users)")
    p_assertion.add_argument("--client-id", required=True)
    p_assertion.add_argument(
        "--key", required=True, metavar="FILE", help="the client's private key (PEM)"
    )
    p_assertion.add_argument("--aud", metavar="URL", help="default: the token endpoint")
    p_assertion.add_argument("--kid", help="default: the key's RFC 7638 thumbprint")
    p_assertion.add_argument("--data-dir", metavar="DIR")
    p_assertion.set_defaults(func=cmd_assertion)

    p_demo = sub.add_parser("demo", help="the home purchase end to end, on a throwaway data dir")
    p_demo.add_argument(
        "--serve", action="store_true", help="keep the server running afterwards (Ctrl-C stops it)"
    )
    p_demo.set_defaults(func=cmd_demo)

    p_dev = sub.add_parser("dev-token", help="a citizen token from the development IdP")
    p_dev.add_argument("--nid", required=True, metavar="NID", help="YYMMDD-NNNNNNN")
    p_dev.add_argument("--data-dir", metavar="DIR")
    p_dev.add_argument("--host", default="127.0.0.1", help="as given to serve")
    p_dev.add_argument(
        "--port", type=int, default=8000, help="as given to serve (shapes the issuer)"
    )
    p_dev.set_defaults(func=cmd_dev_token)

    p_audit = sub.add_parser("audit", help="verify or export the audit log")
    audit_sub = p_audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    p_verify = audit_sub.add_parser("verify", help="recompute and check the whole log")
    p_verify.add_argument("--data-dir", metavar="DIR")
    p_verify.add_argument("--export", metavar="FILE", help="check this export file instead")
    p_verify.add_argument(
        "--trusted-checkpoint", metavar="FILE", action="append", help="a checkpoint kept earlier"
    )
    p_verify.set_defaults(func=cmd_audit_verify)
    p_export = audit_sub.add_parser("export", help="write the log as JSONL")
    p_export.add_argument("file", metavar="FILE")
    p_export.add_argument("--data-dir", metavar="DIR")
    p_export.set_defaults(func=cmd_audit_export)
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
