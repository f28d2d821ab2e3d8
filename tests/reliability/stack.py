"""A real oncevault deployment for reliability tests: data dir, database, clients, IdP, server.

A :class:`Stack` is one ``oncevault init`` (SQLite in the data dir, or a PostgreSQL
schema of its own reached with ``?search_path=<schema>&application_name=<name>``),
its clients registered through the CLI (one subprocess for init and every
registration), a test identity provider whose JWKS file the server trusts
(``ONCEVAULT_IDP_*``: the development IdP is refused on PostgreSQL, so citizens use
this one on both engines), and ``oncevault serve --workers N`` in its own process
group, restartable on the same port after a ``kill -9``.

Counts scale with ``ONCEVAULT_SOAK=1`` (``make soak``) through :func:`scaled`.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiosqlite
import asyncpg
import httpx

from tests.helpers.clients import TestClient
from tests.helpers.server import ServerProcess, clean_env, run_cli
from vault import crypto

POSTGRES_DSN = os.environ.get("ONCEVAULT_TEST_POSTGRES_DSN")
T = TypeVar("T")

SOAK = os.environ.get("ONCEVAULT_SOAK", "") not in ("", "0")


#: For load tests: the per-client limit (default 6,000 a minute) stays on, out of reach.
LOAD_ENV = {"ONCEVAULT_RATE_LIMIT_PER_MINUTE": "10000000"}


def scaled(normal: int, soak: int) -> int:
    """``normal`` under ``make test``, ``soak`` under ``make soak`` (ONCEVAULT_SOAK=1)."""
    return soak if SOAK else normal


# -- citizens -------------------------------------------------------------------------


@dataclass
class TestIdP:
    """An external identity provider the server trusts through ``ONCEVAULT_IDP_JWKS_FILE``."""

    __test__ = False

    issuer: str = "https://idp.reliability.test"
    audience: str = "oncevault-reliability"
    private_pem: bytes = b""
    public_jwk: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.private_pem:
            self.private_pem, self.public_jwk = crypto.generate_client_keypair("EdDSA")

    def env(self, jwks_file: Path) -> dict[str, str]:
        jwks_file.write_text(json.dumps({"keys": [self.public_jwk]}))
        return {
            "ONCEVAULT_IDP_ISSUER": self.issuer,
            "ONCEVAULT_IDP_JWKS_FILE": str(jwks_file),
            "ONCEVAULT_IDP_AUDIENCE": self.audience,
        }

    def token(self, nid: str, *, fresh: bool = True, **extra: object) -> str:
        """A citizen token for ``nid`` (``extra``: more claims, e.g. a CI)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": nid,
            "aud": self.audience,
            "iat": now,
            "exp": now + 900,
            "auth_time": now if fresh else now - 3600,
            "jti": secrets.token_urlsafe(12),
            **extra,
        }
        return crypto.sign_jws_with_pem(
            claims, private_pem=self.private_pem, kid=self.public_jwk["kid"], typ="JWT", alg="EdDSA"
        )

    def headers(self, nid: str, *, fresh: bool = True) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(nid, fresh=fresh)}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the server -------------------------------------------------------------------------


class Server(ServerProcess):
    """``oncevault serve`` that appends to its log across restarts and waits for every worker."""

    def __init__(self, data_dir: Path, *, workers: int, env: dict[str, str]) -> None:
        super().__init__(data_dir, workers=workers, env=env)
        self.workers = workers
        self.starts = 0

    def start(self, *, timeout: float = 60) -> Server:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self._args,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}:\n{self.log()}")
            # Every worker started (a SIGTERM to a booting worker costs a 10 s kill timeout,
            # and a test that needs two workers must not start with one).
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            started = len(re.findall(r"Started worker-\d+", text))
            if started >= self.workers:
                try:
                    if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server not ready within {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """``kill -9`` the whole process group (main process and workers) and reap it."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise RuntimeError("processes of the killed server are still alive")

    def worker_pids(self) -> list[int]:
        """The pids of the serving processes (descendants of the main process)."""
        assert self.process is not None
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        found: list[int] = []
        todo = [self.process.pid]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                found.append(child)
                todo.append(child)
        return sorted(found)

    def worker_of_connection(self, client_port: int, *, timeout: float = 2.0) -> int | None:
        """Which worker process accepted the TCP connection from ``client_port``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            inode = _server_socket_inode(self.port, client_port)
            if inode is not None:
                for pid in self.worker_pids():
                    if inode in _socket_inodes(pid):
                        return pid
            time.sleep(0.01)
        return None

    def connections_per_worker(self) -> dict[int, int]:
        """Established client connections held by each worker now."""
        inodes = _server_side_inodes(self.port)
        return {pid: len(inodes & _socket_inodes(pid)) for pid in self.worker_pids()}


def _tcp_rows() -> Iterable[list[str]]:
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            yield line.split()


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def _server_socket_inode(server_port: int, client_port: int) -> int | None:
    for row in _tcp_rows():
        if _port(row[1]) == server_port and _port(row[2]) == client_port and row[9] != "0":
            return int(row[9])
    return None


def _server_side_inodes(server_port: int) -> set[int]:
    established = "01"
    return {
        int(row[9])
        for row in _tcp_rows()
        if _port(row[1]) == server_port and row[3] == established and row[9] != "0"
    }


def _socket_inodes(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


# -- the stack ----------------------------------------------------------------------------

#: The clients every stack registers: home-purchase issuers, the bank, an auditor.
DEFAULT_CLIENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("court", ("issuer",)),
    ("nts", ("issuer", "consumer")),
    ("mois", ("issuer",)),
    ("kbank", ("consumer", "issuer")),
    ("bai", ("auditor",)),
)

_CLI_BATCH = (
    "import json, sys\n"
    "from api.cli import main\n"
    "for argv in json.loads(sys.argv[1]):\n"
    "    code = main(argv)\n"
    "    if code:\n"
    "        sys.exit(f'{argv[:2]} exited {code}')\n"
)


@dataclass
class Stack:
    """One deployment: data dir, database (engine), clients, IdP, server."""

    __test__ = False

    engine: str
    root: Path
    data_dir: Path
    env: dict[str, str]
    clients: dict[str, TestClient]
    idp: TestIdP
    schema: str | None = None
    app_name: str | None = None
    server: Server | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    def serve(self, *, workers: int = 2) -> Server:
        self.server = Server(self.data_dir, workers=workers, env=self.env).start()
        return self.server

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--data-dir", str(self.data_dir), env=self.env, timeout=timeout)

    def audit_verify(self) -> subprocess.CompletedProcess[str]:
        return self.cli("audit", "verify")

    def token_form(self, client_id: str, **kw: Any) -> dict[str, str]:
        return self.clients[client_id].token_form(self.base_url, **kw)

    async def token(self, http: httpx.AsyncClient, client_id: str, **kw: Any) -> str:
        response = await http.post("/oauth/token", data=self.token_form(client_id, **kw))
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    # -- direct database access (the server may be stopped) --------------------------

    async def fetch(self, sql: str, *args: object) -> list[dict[str, Any]]:
        """Rows of one query with ``$n`` parameters, straight from the database."""
        if self.engine == "sqlite":
            query = re.sub(r"\$(\d+)", r"?\1", sql)
            async with aiosqlite.connect(self.data_dir / "oncevault.sqlite") as db:
                db.row_factory = aiosqlite.Row
                async with db.execute(query, list(args)) as cursor:
                    return [dict(row) for row in await cursor.fetchall()]
        assert POSTGRES_DSN is not None
        connection = await asyncpg.connect(
            POSTGRES_DSN, server_settings={"search_path": str(self.schema)}
        )
        try:
            return [dict(r) for r in await connection.fetch(sql, *args)]
        finally:
            await connection.close()

    async def entries(self) -> dict[int, dict[str, Any]]:
        """Every audit entry, by seq, from the stored leaves."""
        rows = await self.fetch("SELECT seq, leaf FROM audit_entries ORDER BY seq")
        return {int(r["seq"]): json.loads(bytes(r["leaf"])) for r in rows}

    async def tree_size(self) -> int:
        rows = await self.fetch("SELECT size FROM audit_state")
        return int(rows[0]["size"]) if rows else 0


def postgres_url(schema: str, app_name: str) -> str:
    assert POSTGRES_DSN is not None
    parts = urlsplit(POSTGRES_DSN)
    query = "&".join(
        q
        for q in (parts.query, urlencode({"search_path": schema, "application_name": app_name}))
        if q
    )
    return urlunsplit(parts._replace(query=query))


async def create_schema(schema: str) -> None:
    assert POSTGRES_DSN is not None
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await connection.close()


async def drop_schema(schema: str) -> None:
    assert POSTGRES_DSN is not None
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        # Backends of a killed server may linger a moment; never wait on them forever.
        await connection.execute("SET lock_timeout = '10s'")
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh loop in a thread (callable inside a running loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _init_and_register(
    root: Path, data_dir: Path, env: dict[str, str], clients: Sequence[tuple[str, tuple[str, ...]]]
) -> dict[str, TestClient]:
    """``oncevault init`` plus ``clients add`` for each client, in one subprocess."""
    registered: dict[str, TestClient] = {}
    commands: list[list[str]] = [["init", "--data-dir", str(data_dir)]]
    for client_id, roles in clients:
        client = TestClient(client_id, roles=roles)
        registered[client_id] = client
        jwks = root / f"{client_id}.jwks.json"
        jwks.write_text(json.dumps(client.jwks))
        argv = ["clients", "add", "--data-dir", str(data_dir), "--id", client_id]
        argv += ["--name", client_id.upper(), "--kind", "agency", "--jwks", str(jwks)]
        for role in roles:
            argv += ["--role", role]
        commands.append(argv)
    done = subprocess.run(
        [sys.executable, "-c", _CLI_BATCH, json.dumps(commands)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return registered


@dataclass(frozen=True)
class _Template:
    data_dir: Path
    clients: dict[str, TestClient]
    idp: TestIdP


#: An initialised SQLite data dir per client list, copied for each SQLite stack
#: (``oncevault init`` and the registrations cost ~2.5 s; a copy, milliseconds).
_TEMPLATES: dict[tuple[tuple[str, tuple[str, ...]], ...], _Template] = {}


def _sqlite_template(clients: Sequence[tuple[str, tuple[str, ...]]]) -> _Template:
    key = tuple(clients)
    if key not in _TEMPLATES:
        root = Path(tempfile.mkdtemp(prefix="oncevault-template-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        idp = TestIdP()
        env = clean_env(**idp.env(root / "idp-jwks.json"))
        registered = _init_and_register(root, root / "data", env, clients)
        _TEMPLATES[key] = _Template(root / "data", registered, idp)
    return _TEMPLATES[key]


def build_stack(
    root: Path,
    engine: str,
    *,
    clients: Sequence[tuple[str, tuple[str, ...]]] = DEFAULT_CLIENTS,
    env: Mapping[str, str] | None = None,
) -> Stack:
    """A deployment in ``root``: initialised, clients registered, not serving yet.

    SQLite stacks are copies of one initialised template (same platform keys, client
    keys and IdP key; their own database, KEK dir and ledger); PostgreSQL stacks get a
    schema of their own, initialised through the CLI.
    """
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data"
    schema = app_name = None
    if engine == "sqlite":
        template = _sqlite_template(clients)
        shutil.copytree(template.data_dir, data_dir, symlinks=True)
        idp = template.idp
        extra = idp.env(root / "idp-jwks.json")
        extra.update(env or {})
        full_env = clean_env(**extra)
        registered = dict(template.clients)
    else:
        assert POSTGRES_DSN is not None, "set ONCEVAULT_TEST_POSTGRES_DSN"
        schema = "rel_" + secrets.token_hex(5)
        app_name = "ovtest_" + secrets.token_hex(5)
        run_blocking(create_schema(schema))
        idp = TestIdP()
        extra = idp.env(root / "idp-jwks.json")
        extra["ONCEVAULT_DATABASE_URL"] = postgres_url(schema, app_name)
        extra.update(env or {})
        full_env = clean_env(**extra)
        registered = _init_and_register(root, data_dir, full_env, clients)
    return Stack(
        engine=engine,
        root=root,
        data_dir=data_dir,
        env=full_env,
        clients=registered,
        idp=idp,
        schema=schema,
        app_name=app_name,
    )


def close_stack(stack: Stack) -> None:
    if stack.server is not None:
        stack.server.stop()
    if stack.schema is not None:
        run_blocking(drop_schema(stack.schema))
