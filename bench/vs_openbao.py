"""Audited reads: oncevault ``GET /v1/data/{type}`` against OpenBao KV v2 reads, same machine.

Usage: .venv/bin/python bench/vs_openbao.py [--citizens 100] [--duration 20] [--rounds 3]
       [--warmup 3] [--threads 1] [--connections 64] [--workers 2]
       [--engine sqlite|postgres] [--postgres DSN] [--key-provider local|transit]
       [--dek-cache 60] [--rate-limit 10000000] [--worker-affinity spread|off]
       [--only oncevault|openbao]
       [--probe DIR] [--profile DIR [--native]] [--keep] [--write-doc]

Both servers run on this machine, one at a time, loaded by the same wrk command (same
threads, connections, duration and Lua script) over one request per citizen:

* **oncevault**: ``oncevault init`` on a temporary data dir, ``serve --workers 2``
  with each worker pinned to a CPU of its own (``ONCEVAULT_WORKER_AFFINITY=spread``;
  ``--worker-affinity off`` leaves them to the scheduler), local KEK, ``ONCEVAULT_DEK_CACHE_SECONDS`` (60), bearer tokens. An issuer client
  ``nts`` issues one ~1 KiB ``income_certificate`` per citizen through
  ``POST /v1/records:batch``; the consumer ``kbank`` asks each citizen for a standing
  ``mortgage_screening`` consent, which the citizen approves (a development-IdP token
  on SQLite with the local KEK; otherwise, where the dev IdP is refused, a test IdP
  whose JWKS file this script writes); before each run ``kbank`` gets one consent-bound token per
  citizen (they live 300 s; a run is far shorter). wrk reads
  ``GET /v1/data/income_certificate`` with each citizen's token in turn.
* **OpenBao**: ``bao server -dev`` (in-memory storage) with a ``file`` audit device
  declared in its config file (the only way OpenBao 2.x enables one), one KV v2 secret
  ``secret/citizens/<nid>`` per citizen holding the same ~1 KiB record, and one token
  whose only policy (besides ``default``) reads ``secret/data/citizens/*``. wrk reads
  ``GET /v1/secret/data/citizens/<nid>`` with ``X-Vault-Token``.

Runs alternate (oncevault first in odd rounds, OpenBao first in even ones), each after
a short warm-up; medians are reported. A run is **valid** only if

* oncevault: the audit tree (``audit_state.size`` read from the database once the load
  has stopped and the size is stable) grew by at least the 2xx count and at most that
  plus the connection count (requests in flight when wrk stopped), and every
  ``X-Audit-Seq`` sampled by the Lua script is an ``ok`` ``data.read`` entry of
  ``kbank`` inside the run's range;
* OpenBao: the audit file gained at least one ``response`` entry for
  ``secret/data/citizens/`` per 2xx and at most that plus the connection count;
* both: no non-2xx answer and no socket error.

Printed: every run (req/s, p50, p99, errors, audit growth, the servers' CPU time per
request, the 1-minute load average at its start), the medians and the ratio, and a
Markdown block; ``--write-doc`` puts that block in docs/performance.md between the
markers of the section "Audited reads: oncevault vs OpenBao" (nothing else is touched).
Every process started here (oncevault, bao, wrk, py-spy) is stopped on the way out,
errors and SIGTERM included.

Diagnostics (not part of the comparison): ``--probe DIR`` times the read path's steps
inside oncevault's workers (bench/vs_openbao_probe.py), ``--profile DIR`` adds one
oncevault run under py-spy (bench/vs_openbao_profile.py), ``--keep`` leaves the data
dir for bench/vs_openbao_unit.py. ``--only`` loads one system (no ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg
import httpx
import vs_openbao_probe as probe
from benchlib import (
    PURPOSE,
    RECORD_BYTES,
    RECORD_TYPE,
    RELEASED,
    ROOT,
    bao_version,
    bearer,
    block_head,
    client_token,
    cpu_model,
    create_schema,
    default_postgres_dsn,
    drop_schema,
    gather_bounded,
    group_cpu_seconds,
    income_record,
    init_data_dir,
    load1,
    machine_busy_seconds,
    med,
    ms,
    nid,
    postgres_version,
    publish,
    settle,
    spread_indices,
    with_search_path,
    workspace,
)

from api.idp import dev_token
from api.settings import load_settings
from tests.helpers.clients import TestClient
from tests.helpers.server import ServerProcess, clean_env, free_port
from vault import crypto

IDP_ISSUER = "https://idp.bench.invalid"
IDP_AUDIENCE = "oncevault-bench"
DOC_BEGIN = "<!-- vs_openbao:begin (bench/vs_openbao.py --write-doc rewrites this block) -->"
DOC_END = "<!-- vs_openbao:end -->"
DOC_HEADING = "## Audited reads: oncevault vs OpenBao"

LUA = r"""
-- bench/vs_openbao.py: one script for both servers. Lines of the requests file:
-- PATH <tab> HEADER-NAME <tab> HEADER-VALUE, one per citizen; each thread rotates
-- over all of them from its own offset. response() counts 2xx exactly and keeps a few
-- X-Audit-Seq values; done() prints one line "VS_OPENBAO {json}".
local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

local requests = {}
local n = 0
local index = 0
ok2xx = 0
other = 0
seen = 0
samples = ""
local nsamples = 0

function init(args)
   local path = args[1]
   if path == nil then
      error("give the requests file after --")
   end
   for line in io.lines(path) do
      local target, name, value = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)$")
      if target ~= nil then
         n = n + 1
         requests[n] = wrk.format("GET", target, { [name] = value })
      end
   end
   if n == 0 then
      error("no requests in " .. path)
   end
   index = ((tid or 1) - 1) * 7919 % n
end

function request()
   index = index % n + 1
   return requests[index]
end

function response(status, headers, body)
   seen = seen + 1
   if status >= 200 and status < 300 then
      ok2xx = ok2xx + 1
      if nsamples < 40 and (seen <= 8 or seen % 997 == 0) then
         local seq = headers["x-audit-seq"] or headers["X-Audit-Seq"]
         if seq ~= nil then
            nsamples = nsamples + 1
            samples = samples .. seq .. ","
         end
      end
   else
      other = other + 1
   end
end

function done(summary, latency, requests)
   local total2xx, totalother, all = 0, 0, ""
   for _, thread in ipairs(threads) do
      total2xx = total2xx + thread:get("ok2xx")
      totalother = totalother + thread:get("other")
      all = all .. thread:get("samples")
   end
   if all:sub(-1) == "," then
      all = all:sub(1, -2)
   end
   local e = summary.errors
   io.write(string.format(
      'VS_OPENBAO {"requests":%d,"duration_us":%d,"ok2xx":%d,"other":%d,'
         .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
         .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"samples":[%s]}\n',
      summary.requests, summary.duration, total2xx, totalother,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, all
   ))
end
"""


# -- small helpers ---------------------------------------------------------------------


def stop_group(proc: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """SIGTERM the process group of ``proc`` (started with a new session), then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


# -- wrk -------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    seconds: float
    ok2xx: int
    other: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    samples: list[int]
    wrk_cpu: float

    @property
    def rate(self) -> float:
        """2xx answers per second (errors are not throughput)."""
        return self.ok2xx / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.other + self.socket_errors


def run_wrk(
    url: str, script: Path, requests_file: Path, *, threads: int, connections: int, seconds: int
) -> WrkResult:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
            "--",
            str(requests_file),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("VS_OPENBAO ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(line.split(" ", 1)[1])
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        ok2xx=data["ok2xx"],
        other=data["other"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        samples=[int(s) for s in data["samples"]],
        wrk_cpu=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    )


# -- the two systems -----------------------------------------------------------------


class System(Protocol):
    name: str
    url: str
    pgid: int

    def prepare_round(self, workdir: Path) -> Path: ...

    def audit_count(self) -> int: ...

    def check_samples(self, samples: list[int], first: int, last: int) -> list[str]: ...


def add_oncevault_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the oncevault server (:meth:`Oncevault.from_args`, ``--probe``)."""
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dek-cache", type=float, default=60.0)
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=10_000_000,
        help="ONCEVAULT_RATE_LIMIT_PER_MINUTE: on (one counter bump per request), never hit",
    )
    parser.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="ONCEVAULT_SQLITE_SYNCHRONOUS (FULL: fsync at every COMMIT)",
    )
    parser.add_argument(
        "--worker-affinity",
        choices=("spread", "off"),
        default="spread",
        help="ONCEVAULT_WORKER_AFFINITY (spread: each worker pinned to a CPU of its own)",
    )
    parser.add_argument(
        "--probe",
        type=Path,
        metavar="DIR",
        help="time the read path's steps inside the workers (bench/vs_openbao_probe.py)",
    )


class Oncevault:
    """``oncevault serve --workers N`` on a fresh data dir, seeded over HTTP."""

    name = "oncevault"

    def __init__(
        self,
        workdir: Path,
        *,
        citizens: int,
        engine: str,
        postgres_dsn: str,
        workers: int,
        rate_limit: int,
        dek_cache: float,
        synchronous: str = "FULL",
        worker_affinity: str = "spread",
    ) -> None:
        self.workdir = workdir
        self.synchronous = synchronous
        self.worker_affinity = worker_affinity
        self.citizens = citizens
        self.read = list(range(citizens))  # which citizens the load reads
        self.engine = engine
        self.postgres_dsn = postgres_dsn
        self.workers = workers
        self.data_dir = workdir / "data"
        self.env = clean_env(
            ONCEVAULT_DEK_CACHE_SECONDS=repr(dek_cache),
            ONCEVAULT_RATE_LIMIT_PER_MINUTE=str(rate_limit),
            ONCEVAULT_SQLITE_SYNCHRONOUS=synchronous,
            ONCEVAULT_WORKER_AFFINITY=worker_affinity,
        )
        self.schema: str | None = None
        self.database_url = ""
        self.idp_pem = b""
        self.idp_kid = ""
        self.server: ServerProcess | None = None
        self.nts = TestClient("nts", roles=("issuer",))
        self.kbank = TestClient("kbank", roles=("consumer",))
        self.consent_ids: list[str] = []
        self.url = ""
        self.pgid = 0

    @classmethod
    def from_args(
        cls,
        workdir: Path,
        args: argparse.Namespace,
        *,
        engine: str = "sqlite",
        postgres_dsn: str = "",
    ) -> Oncevault:
        """``args.citizens`` citizens on the server :func:`add_oncevault_arguments` set up."""
        return cls(
            workdir,
            citizens=args.citizens,
            engine=engine,
            postgres_dsn=postgres_dsn,
            workers=args.workers,
            rate_limit=args.rate_limit,
            dek_cache=args.dek_cache,
            synchronous=args.synchronous,
            worker_affinity=args.worker_affinity,
        )

    def use_probe(self, probe_dir: Path, site: Path) -> None:
        """Time the read path's steps inside the workers (bench/vs_openbao_probe.py): a
        ``sitecustomize`` written to ``site`` arms the probes, which write to ``probe_dir``."""
        probe_dir.mkdir(parents=True, exist_ok=True)
        site.mkdir()
        (site / "sitecustomize.py").write_text(probe.sitecustomize_text())
        self.env["PYTHONPATH"] = str(site)
        self.env["VS_OPENBAO_PROBE_DIR"] = str(probe_dir.resolve())

    # -- lifecycle

    @property
    def embedded(self) -> bool:
        """SQLite and local KEK: the only setup where the development IdP is allowed."""
        return self.engine == "sqlite" and "ONCEVAULT_KEY_PROVIDER" not in self.env

    def use_transit(self, bao: OpenBao) -> None:
        """Wrap DEKs with OpenBao transit (on the OpenBao server under test, root token)."""
        bao.mount_transit()
        self.env |= {
            "ONCEVAULT_KEY_PROVIDER": "transit",
            "VAULT_ADDR": bao.url,
            "VAULT_TOKEN": bao.root,
            "ONCEVAULT_TRANSIT_KEY": "vs-openbao",
        }

    def start(self) -> None:
        if self.engine == "postgres":
            self.schema = asyncio.run(create_schema(self.postgres_dsn, "t_vsbao_"))
            self.database_url = with_search_path(self.postgres_dsn, self.schema)
            self.env["ONCEVAULT_DATABASE_URL"] = self.database_url
        if not self.embedded:
            # The development IdP is refused off SQLite + local KEK: a test IdP with a JWKS file.
            self.idp_pem, jwk = crypto.generate_client_keypair("EdDSA")
            self.idp_kid = jwk["kid"]
            jwks = self.workdir / "idp.jwks.json"
            jwks.write_text(json.dumps({"keys": [jwk]}))
            self.env |= {
                "ONCEVAULT_IDP_ISSUER": IDP_ISSUER,
                "ONCEVAULT_IDP_JWKS_FILE": str(jwks),
                "ONCEVAULT_IDP_AUDIENCE": IDP_AUDIENCE,
            }
        init_data_dir(self.data_dir, self.env, (self.nts, self.kbank), self.workdir)
        self.server = ServerProcess(self.data_dir, workers=self.workers, env=self.env)
        self.server.start(timeout=60)
        assert self.server.process is not None
        self.url = self.server.base_url
        self.pgid = self.server.process.pid

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.schema is not None:
            with contextlib.suppress(Exception):
                asyncio.run(drop_schema(self.postgres_dsn, self.schema))
            self.schema = None

    # -- tokens

    def citizen_token(self, number: str) -> str:
        if self.embedded:
            assert self.server is not None
            settings = load_settings(
                {}, self.env, data_dir_flag=str(self.data_dir), port=self.server.port
            )
            return dev_token(settings, number)
        now = int(time.time())
        claims = {
            "iss": IDP_ISSUER,
            "aud": IDP_AUDIENCE,
            "sub": number,
            "iat": now,
            "exp": now + 600,
            "auth_time": now,
            "jti": crypto.b64url_encode(os.urandom(12)),
        }
        return crypto.sign_jws_with_pem(
            claims, private_pem=self.idp_pem, kid=self.idp_kid, typ="JWT", alg="EdDSA"
        )

    # -- seeding

    def seed(self) -> None:
        asyncio.run(self._seed())
        if self.engine == "postgres":
            asyncio.run(self._analyze())

    async def _analyze(self) -> None:
        """ANALYZE the freshly seeded schema, as autovacuum soon would in a running
        deployment: the measured rounds then see the plans of a steady state, not of
        tables PostgreSQL has no statistics for yet."""
        assert self.schema is not None
        connection = await asyncpg.connect(self.postgres_dsn)
        try:
            tables = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", self.schema
            )
            for row in tables:
                await connection.execute(f'ANALYZE "{self.schema}"."{row["tablename"]}"')
        finally:
            await connection.close()

    async def _seed(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=120) as http:
            for start in range(0, self.citizens, 500):
                token = await client_token(http, self.url, self.nts)
                batch = [
                    {"subject": {"nid": nid(i)}, "type": RECORD_TYPE, "data": income_record(i)}
                    for i in range(start, min(start + 500, self.citizens))
                ]
                response = await http.post(
                    "/v1/records:batch", json={"records": batch}, headers=bearer(token)
                )
                if response.status_code != 200:
                    raise RuntimeError(f"records:batch: {response.status_code} {response.text}")
                bad = [r for r in response.json()["results"] if r["status"] not in (200, 201)]
                if bad:
                    raise RuntimeError(f"records:batch refused {len(bad)}: {bad[:3]}")
            ids: list[str] = []
            for start in range(0, self.citizens, 1000):
                token = await client_token(http, self.url, self.kbank)
                chunk = range(start, min(start + 1000, self.citizens))
                ids += await gather_bounded(32, [self._consent(http, token, i) for i in chunk])
            self.consent_ids = ids

    async def _consent(self, http: httpx.AsyncClient, token: str, i: int) -> str:
        response = await http.post(
            "/v1/consent-requests",
            json={
                "subject": {"nid": nid(i)},
                "purpose": PURPOSE,
                "items": [{"type": RECORD_TYPE, "fields": RELEASED}],
                "access": "standing",
                "valid_days": 30,
            },
            headers=bearer(token),
        )
        if response.status_code != 201:
            raise RuntimeError(f"consent request: {response.status_code} {response.text}")
        consent_id = str(response.json()["consent_id"])
        approved = await http.post(
            f"/v1/me/consents/{consent_id}/approve", headers=bearer(self.citizen_token(nid(i)))
        )
        if approved.status_code != 200 or approved.json().get("status") != "active":
            raise RuntimeError(f"approve: {approved.status_code} {approved.text}")
        return consent_id

    # -- rounds

    def prepare_round(self, workdir: Path) -> Path:
        """One fresh consent-bound token per citizen (they live 300 s) and the request lines."""

        async def mint() -> list[str]:
            async with httpx.AsyncClient(base_url=self.url, timeout=60) as http:
                wanted = [self.consent_ids[i] for i in self.read]
                return await gather_bounded(
                    32, [client_token(http, self.url, self.kbank, cid) for cid in wanted]
                )

        tokens = asyncio.run(mint())
        path = workdir / "oncevault.requests"
        path.write_text(
            "".join(f"/v1/data/{RECORD_TYPE}\tAuthorization\tBearer {t}\n" for t in tokens)
        )
        return path

    def check_one_read(self, path: Path) -> None:
        """One read by hand: 200, exactly the released fields, an X-Audit-Seq."""
        line = path.read_text().splitlines()[0].split("\t")
        response = httpx.get(self.url + line[0], headers={line[1]: line[2]}, timeout=10)
        if response.status_code != 200:
            raise RuntimeError(f"read: {response.status_code} {response.text}")
        if set(response.json()["data"]) != set(RELEASED) or "x-audit-seq" not in response.headers:
            raise RuntimeError(f"read answered an unexpected shape: {response.text[:300]}")

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.engine == "sqlite":
            path = self.data_dir / "oncevault.sqlite"
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                return list(db.execute(sql.replace("$", "?"), args).fetchall())

        async def fetch() -> list[tuple[Any, ...]]:
            assert self.schema is not None
            connection = await asyncpg.connect(
                self.postgres_dsn, server_settings={"search_path": self.schema}
            )
            try:
                return [tuple(r) for r in await connection.fetch(sql, *args)]
            finally:
                await connection.close()

        return asyncio.run(fetch())

    def audit_count(self) -> int:
        """The audit tree size, read from the database."""
        return int(self._query("SELECT size FROM audit_state WHERE id = 1")[0][0])

    def check_samples(self, samples: list[int], first: int, last: int) -> list[str]:
        problems = []
        if not samples:
            return ["no X-Audit-Seq sampled"]
        for seq in samples:
            rows = self._query(
                "SELECT action, outcome, client_id FROM audit_entries WHERE seq = $1", seq
            )
            if not rows:
                problems.append(f"seq {seq} has no entry")
            elif rows[0] != ("data.read", "ok", "kbank"):
                problems.append(f"seq {seq} is {rows[0]}")
            elif not first <= seq < last:
                problems.append(f"seq {seq} outside the run's range [{first}, {last})")
        return problems

    def sqlite_synchronous(self) -> str:
        """The file's journal mode and the synchronous pragma the app's connections set."""
        path = self.data_dir / "oncevault.sqlite"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        return f"journal_mode={mode}, synchronous={self.synchronous}"


class OpenBao:
    """``bao server -dev`` with a file audit device from its config file, KV v2, one token."""

    name = "openbao"

    def __init__(self, workdir: Path, *, citizens: int) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.citizens = citizens
        self.read = list(range(citizens))  # which citizens the load reads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = crypto.b64url_encode(os.urandom(18))
        self.token = ""
        self.audit_path = workdir / "audit.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pgid = 0
        self._offset = 0
        self._count = 0

    def start(self) -> None:
        binary = Path(sys.executable).parent / "bao"
        config = self.workdir / "bao.hcl"
        config.write_text(
            f'audit "file" "file" {{\n  options {{\n    file_path = "{self.audit_path}"\n  }}\n}}\n'
        )
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = str(home)
        with (self.workdir / "bao.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(binary),
                    "server",
                    "-dev",
                    f"-dev-root-token-id={self.root}",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                    "-dev-no-store-token",
                    f"-config={config}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        self.pgid = self.proc.pid
        self._wait("sys/health")
        self._wait("secret/config")
        audit = self._call("GET", "sys/audit").json()
        if "file/" not in audit.get("data", audit):
            raise RuntimeError(f"no file audit device: {audit}")
        policy = 'path "secret/data/citizens/*" {\n  capabilities = ["read"]\n}\n'
        self._call("PUT", "sys/policies/acl/citizens-read", {"policy": policy})
        created = self._call(
            "POST", "auth/token/create", {"policies": ["citizens-read"], "ttl": "4h"}
        )
        self.token = created.json()["auth"]["client_token"]

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, ok: bool = True
    ) -> httpx.Response:
        response = httpx.request(
            method,
            f"{self.url}/v1/{path}",
            json=body,
            headers={"X-Vault-Token": self.root},
            timeout=30,
        )
        if ok and response.status_code not in (200, 204):
            raise RuntimeError(f"bao {method} {path}: {response.status_code} {response.text}")
        return response

    def _wait(self, path: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError("bao server exited: " + (self.workdir / "bao.log").read_text())
            with contextlib.suppress(httpx.HTTPError):
                if self._call("GET", path, ok=False).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"bao not ready ({path})")

    def stop(self) -> None:
        stop_group(self.proc)

    def mount_transit(self) -> None:
        self._call("POST", "sys/mounts/transit", {"type": "transit"})

    def seed(self) -> None:
        async def put_all() -> None:
            async with httpx.AsyncClient(
                base_url=self.url, headers={"X-Vault-Token": self.root}, timeout=60
            ) as http:

                async def put(i: int) -> None:
                    response = await http.post(
                        f"/v1/secret/data/citizens/{nid(i)}", json={"data": income_record(i)}
                    )
                    if response.status_code != 200:
                        raise RuntimeError(f"kv put: {response.status_code} {response.text}")

                await gather_bounded(16, [put(i) for i in range(self.citizens)])

        asyncio.run(put_all())
        # The scoped token reads a citizen and nothing outside secret/data/citizens/.
        own = httpx.get(
            f"{self.url}/v1/secret/data/citizens/{nid(0)}",
            headers={"X-Vault-Token": self.token},
            timeout=10,
        )
        if own.status_code != 200 or own.json()["data"]["data"] != income_record(0):
            raise RuntimeError(f"scoped read failed: {own.status_code} {own.text}")
        other = httpx.get(
            f"{self.url}/v1/secret/data/other", headers={"X-Vault-Token": self.token}, timeout=10
        )
        if other.status_code != 403:
            raise RuntimeError(f"the token is not scoped: {other.status_code}")

    def prepare_round(self, workdir: Path) -> Path:
        path = workdir / "openbao.requests"
        path.write_text(
            "".join(
                f"/v1/secret/data/citizens/{nid(i)}\tX-Vault-Token\t{self.token}\n"
                for i in self.read
            )
        )
        return path

    def audit_count(self) -> int:
        """``response`` entries for ``secret/data/citizens/`` in the audit file so far
        (read incrementally; oncevault's own transit calls, with ``--key-provider
        transit``, are not counted)."""
        with self.audit_path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # only whole lines
        self._count += sum(
            1
            for line in data[:end].splitlines()
            if b'"type":"response"' in line and b'"path":"secret/data/citizens/' in line
        )
        self._offset += end
        return self._count

    def check_samples(self, samples: list[int], first: int, last: int) -> list[str]:
        return []


# -- runs --------------------------------------------------------------------------------


class Load(Protocol):
    """What a load run reports that :func:`measure` checks against the audit."""

    ok2xx: int
    samples: list[int]


L = TypeVar("L", bound=Load)


def measure(
    system: System, run: Callable[[], L], *, connections: int, probe_dir: Path | None
) -> tuple[L, float, int, float, list[str]]:
    """``run()`` between two settled audit counts. Returns its result, the 1-minute load
    average at the start, the audit growth, the server's CPU seconds, and what is wrong
    with the audit: a growth outside 2xx..2xx + ``connections`` (requests in flight when
    the load stopped), sampled entries that are not this run's reads. ``probe_dir``:
    print the read path's steps (bench/vs_openbao_probe.py) over the run."""
    first = settle(system)
    load = load1()
    probe_before = probe.snapshot(probe_dir) if probe_dir else {}
    cpu_before = group_cpu_seconds(system.pgid)
    result = run()
    cpu = group_cpu_seconds(system.pgid) - cpu_before
    if probe_dir:
        time.sleep(1.0)  # the workers dump their counters every 0.5 s
        lines = probe.diff(probe_before, probe.snapshot(probe_dir), result.ok2xx)
        print("\n".join("    " + x for x in lines))
    last = settle(system)
    growth = last - first
    problems = growth_problems(growth, result.ok2xx, connections)
    problems += system.check_samples(result.samples, first, last)
    return result, load, growth, cpu, problems


def growth_problems(growth: int, ok2xx: int, connections: int) -> list[str]:
    """Issue #11's validity rule: the audit tree grew by at least the 2xx count and at
    most that plus the connection count (requests in flight when wrk stopped)."""
    if ok2xx <= growth <= ok2xx + connections:
        return []
    return [f"audit grew by {growth} for {ok2xx} 2xx (allowed {ok2xx}..{ok2xx + connections})"]


@dataclass
class Run:
    system: str
    round: int
    load: float
    wrk: WrkResult
    audit_growth: int
    server_cpu: float
    problems: list[str] = field(default_factory=list)
    #: Busy CPU seconds of the whole machine over the measured run (servers, database,
    #: wrk, kernel): what a request really costs on shared cores.
    machine_cpu: float = float("nan")

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu * 1000 / self.wrk.ok2xx if self.wrk.ok2xx else float("nan")

    @property
    def machine_ms_per_request(self) -> float:
        return self.machine_cpu * 1000 / self.wrk.ok2xx if self.wrk.ok2xx else float("nan")


def one_run(
    system: Oncevault | OpenBao, number: int, workdir: Path, args: argparse.Namespace
) -> Run:
    script = workdir / "vs_openbao.lua"
    requests_file = system.prepare_round(workdir)
    if isinstance(system, Oncevault):
        system.check_one_read(requests_file)

    def wrk(seconds: int) -> WrkResult:
        return run_wrk(
            system.url,
            script,
            requests_file,
            threads=args.threads,
            connections=args.connections,
            seconds=seconds,
        )

    if args.warmup:
        wrk(args.warmup)
    busy_before = machine_busy_seconds()
    result, load, growth, cpu, audit_problems = measure(
        system,
        lambda: wrk(args.duration),
        connections=args.connections,
        probe_dir=args.probe if system.name == "oncevault" else None,
    )
    machine_cpu = machine_busy_seconds() - busy_before  # the settles around it idle
    problems = []
    if result.errors:
        problems.append(
            f"{result.other} non-2xx answers, {result.socket_errors} socket errors/timeouts"
        )
    problems += audit_problems
    run = Run(system.name, number, load, result, growth, cpu, problems, machine_cpu)
    print_run(run)
    return run


def profile_run(system: Oncevault, workdir: Path, args: argparse.Namespace) -> None:
    """One extra oncevault run with py-spy sampling every worker (not counted in the medians)."""
    import vs_openbao_profile as prof  # noqa: PLC0415 - only this option needs it

    assert system.server is not None and system.server.process is not None
    requests_file = system.prepare_round(workdir)
    pids = prof.worker_pids(system.pgid, system.server.process.pid)
    spies = prof.start(pids, args.duration, args.profile, native=args.native)
    try:
        time.sleep(1.0)  # py-spy attaches
        result = run_wrk(
            system.url,
            workdir / "vs_openbao.lua",
            requests_file,
            threads=args.threads,
            connections=args.connections,
            seconds=args.duration,
        )
    finally:
        prof.finish(spies)
    print(
        f"  profiled run (py-spy on {len(pids)} workers): {result.rate:,.0f} req/s, "
        f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, errors {result.errors}"
    )
    summary = prof.summarise(sorted(args.profile.glob("worker-*.txt")))
    (args.profile / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\n".join(summary[:40]))


def print_run(run: Run) -> None:
    w = run.wrk
    verdict = "VALID" if run.valid else "INVALID: " + "; ".join(run.problems)
    print(
        f"  round {run.round} {run.system:<9} {w.rate:8,.0f} req/s  p50 {w.p50_ms:6.1f} ms"
        f"  p99 {w.p99_ms:6.1f} ms  2xx {w.ok2xx:,}  errors {w.errors}"
        f"  audit +{run.audit_growth:,}  samples {len(w.samples)}"
        f"  server CPU {run.cpu_ms_per_request:.2f} ms/req"
        f"  machine CPU {run.machine_ms_per_request:.2f} ms/req  wrk CPU {w.wrk_cpu:.1f} s"
        f"  load {run.load:.2f}  {verdict}",
        flush=True,
    )


@dataclass
class Summary:
    system: str
    rate: float
    p50: float
    p99: float
    errors: int
    cpu_ms: float
    valid: int
    runs: int
    machine_ms: float = float("nan")


def summarise(name: str, runs: list[Run]) -> Summary:
    return Summary(
        system=name,
        rate=med([r.wrk.rate for r in runs]),
        p50=med([r.wrk.p50_ms for r in runs]),
        p99=med([r.wrk.p99_ms for r in runs]),
        errors=sum(r.wrk.errors for r in runs),
        cpu_ms=med([r.cpu_ms_per_request for r in runs]),
        valid=sum(r.valid for r in runs),
        runs=len(runs),
        machine_ms=med([r.machine_ms_per_request for r in runs]),
    )


#: Issue #11: audited reads at 2x OpenBao on SQLite, 1.5x on PostgreSQL.
TARGET_RATIO = {"sqlite": 2.0, "postgres": 1.5}


def report(
    args: argparse.Namespace, machine: str, config: str, runs: dict[str, list[Run]]
) -> list[str]:
    ours, theirs = summarise("oncevault", runs["oncevault"]), summarise("openbao", runs["openbao"])
    ratio = ours.rate / theirs.rate if theirs.rate else float("nan")
    lines = [
        *block_head(command_line(args), machine, config),
        "| system | req/s | p50 | p99 | errors | server CPU/req | machine CPU/req | valid runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, label in ((ours, "oncevault"), (theirs, "OpenBao")):
        lines.append(
            f"| {label} | {s.rate:,.0f} | {ms(s.p50)} | {ms(s.p99)} | {s.errors} "
            f"| {s.cpu_ms:.2f} ms | {s.machine_ms:.2f} ms | {s.valid}/{s.runs} |"
        )
    wanted = TARGET_RATIO[args.engine]
    cores = os.cpu_count() or 1
    every_run_valid = ours.valid == ours.runs and theirs.valid == theirs.runs
    target = every_run_valid and ratio >= wanted and ours.p99 <= theirs.p99
    lines += [
        "",
        f"Ratio oncevault/OpenBao: **{ratio:.2f}x** req/s; p99 {ms(ours.p99)} vs "
        f"{ms(theirs.p99)}. Target on {args.engine} (≥ {wanted}x with p99 ≤ OpenBao's): "
        + ("**met**." if target else "**not met**.")
        + ("" if every_run_valid else " (not every run was valid)"),
        *ceiling(ours, theirs, wanted, cores),
        "",
        "Every run (1-minute load average at its start):",
        "",
        "| round | system | req/s | p50 | p99 | 2xx | errors | audit growth | load | valid |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in sorted(runs["oncevault"] + runs["openbao"], key=lambda r: (r.round, r.system)):
        w = run.wrk
        lines.append(
            f"| {run.round} | {run.system} | {w.rate:,.0f} | {ms(w.p50_ms)} | {ms(w.p99_ms)} "
            f"| {w.ok2xx:,} | {w.errors} | {run.audit_growth:,} | {run.load:.2f} "
            f"| {'yes' if run.valid else 'NO: ' + '; '.join(run.problems)} |"
        )
    return lines


def ceiling(ours: Summary, theirs: Summary, wanted: float, cores: int) -> list[str]:
    """What the machine's busy CPU per request allows: every core busy, nothing else
    running. Machine CPU counts the servers, the database, wrk and the kernel."""
    if not (ours.machine_ms > 0 and theirs.rate > 0):
        return []
    need = cores * 1000 / (wanted * theirs.rate)
    return [
        "",
        f"Machine CPU per request: oncevault {ours.machine_ms:.2f} ms, OpenBao "
        f"{theirs.machine_ms:.2f} ms. With all {cores} cores busy, oncevault's cost allows at "
        f"most {cores * 1000 / ours.machine_ms:,.0f} req/s "
        f"({cores * 1000 / ours.machine_ms / theirs.rate:.2f}x OpenBao's measured rate); "
        f"{wanted}x would need at most {need:.2f} ms a request.",
    ]


def git_revision() -> str:
    """The commit the servers ran, ``+dirty`` when the product code had local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "api", "audit", "consent", "policies", "vault"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown revision"
    return f"commit {head}" + (" +local changes" if dirty else "")


def command_line(args: argparse.Namespace) -> str:
    return ".venv/bin/python bench/vs_openbao.py " + " ".join(args.argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--citizens", type=int, default=100)
    parser.add_argument(
        "--read-citizens",
        type=int,
        default=None,
        help="read this many of the citizens, spread evenly (default: all)",
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before each run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    add_oncevault_arguments(parser)
    parser.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres", default=default_postgres_dsn(), help="DSN (postgres rows)")
    parser.add_argument("--native", action="store_true", help="--profile with C frames")
    parser.add_argument(
        "--key-provider",
        choices=("local", "transit"),
        default="local",
        help="transit: DEKs wrapped by the OpenBao server under test (its root token)",
    )
    parser.add_argument("--only", choices=("oncevault", "openbao"), help="load one system only")
    parser.add_argument("--write-doc", action="store_true", help="update docs/performance.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after the rounds, one more oncevault run under py-spy; stacks and summary in DIR",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.duration + args.warmup > 240:
        parser.error("--duration + --warmup must stay under the 300 s token lifetime")
    if args.citizens < 1 or args.connections < args.threads:
        parser.error("need at least one citizen and one connection per thread")
    if args.engine == "postgres" and not args.postgres:
        parser.error("--engine postgres needs --postgres DSN or ONCEVAULT_TEST_POSTGRES_DSN")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with workspace(args.keep, "vs_openbao_") as workdir:
        (workdir / "vs_openbao.lua").write_text(LUA)
        ours = Oncevault.from_args(
            workdir / "oncevault", args, engine=args.engine, postgres_dsn=args.postgres
        )
        (workdir / "oncevault").mkdir()
        if args.probe is not None:
            ours.use_probe(args.probe, workdir / "probe_site")
            if os.environ.get("VS_OPENBAO_PROBE_SQL"):
                ours.env["VS_OPENBAO_PROBE_SQL"] = "1"
        theirs = OpenBao(workdir / "openbao", citizens=args.citizens)
        # With 10⁵ citizens one token each cannot be minted within the tokens' 300 s
        # lifetime; a run reads fewer than 10⁵ times anyway.
        ours.read = theirs.read = spread_indices(args.citizens, args.read_citizens)
        runs: dict[str, list[Run]] = {"oncevault": [], "openbao": []}
        try:
            started = time.monotonic()
            theirs.start()
            theirs.seed()
            if args.key_provider == "transit":
                ours.use_transit(theirs)
            ours.start()
            ours.seed()
            print(
                f"seeded {args.citizens} citizens in both in {time.monotonic() - started:.0f} s",
                flush=True,
            )
            pg = asyncio.run(postgres_version(args.postgres if args.engine == "postgres" else ""))
            machine = (
                f"Machine: CPU {cpu_model()}, {os.cpu_count()} cores, Python "
                f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
                f"PostgreSQL {pg}, {bao_version()}, wrk sharing the cores; oncevault at "
                f"{git_revision()}; "
                f"load avg {', '.join(f'{x:.2f}' for x in os.getloadavg())} after seeding."
            )
            database = (
                f"SQLite ({ours.sqlite_synchronous()}, ONCEVAULT_SQLITE_SYNCHRONOUS)"
                if args.engine == "sqlite"
                else "PostgreSQL (fresh schema via ?search_path=)"
            )
            provider = (
                "local KEK" if args.key_provider == "local" else "transit on the same OpenBao"
            )
            config = (
                f"Configuration: {args.citizens} citizens"
                + (
                    f" ({len(ours.read):,} of them read, spread evenly)"
                    if len(ours.read) < args.citizens
                    else ""
                )
                + f", ~{RECORD_BYTES} B record each; "
                f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s "
                f"(+{args.warmup} s warm-up), {args.rounds} alternated rounds, medians. "
                f"oncevault: serve --workers {args.workers}"
                + (
                    " (each pinned to a CPU of its own, ONCEVAULT_WORKER_AFFINITY=spread)"
                    if args.worker_affinity == "spread"
                    else " (placed by the scheduler, ONCEVAULT_WORKER_AFFINITY=off)"
                )
                + f", {database}, {provider}, "
                f"DEK cache {args.dek_cache:g} s, bearer tokens, rate limit "
                f"{args.rate_limit:,}/min. OpenBao: bao server -dev (inmem), file audit "
                "device from the config file, KV v2, one policy-scoped token."
            )
            print(machine)
            print(config, flush=True)
            systems: list[Any] = [ours, theirs]
            if args.only:
                systems = [s for s in systems if s.name == args.only]
            for number in range(1, args.rounds + 1):
                order = systems if number % 2 else list(reversed(systems))
                for system in order:
                    runs[system.name].append(one_run(system, number, workdir, args))
            if args.profile is not None:
                profile_run(ours, workdir, args)
        finally:
            ours.stop()
            theirs.stop()
        if args.only:
            summary = summarise(args.only, runs[args.only])
            print(summary)
            return 0 if summary.valid == summary.runs else 1
        publish(
            report(args, machine, config, runs),
            write=args.write_doc,
            begin=DOC_BEGIN,
            end=DOC_END,
            heading=DOC_HEADING,
        )
        everything = runs["oncevault"] + runs["openbao"]
        return 0 if all(r.valid for r in everything) else 1


if __name__ == "__main__":
    raise SystemExit(main())
