"""The vault at scale: bulk issuance, read latency as the vault grows, memory per worker.

Usage: .venv/bin/python bench/scale.py [--quick] [--sizes 1000,10000,100000,1000000]
       [--seed-budget 1500] [--seed-concurrency 2] [--seed-synchronous NORMAL|FULL]
       [--probe-citizens 100] [--reads 1000] [--rounds 3] [--alternate 3] [--wrk-seconds 10]
       [--wrk-connections 8] [--bulk-records 100000] [--bulk-updates 100000]
       [--batch-size 1000] [--bulk-concurrency 4] [--workers 2]
       [--worker-affinity spread|off] [--skip-bulk]
       [--skip-growth] [--profile DIR [--profile-seconds 30]] [--keep] [--write-doc]

Everything runs on SQLite with the local KEK, on temporary data dirs made by
``oncevault init``, served by ``oncevault serve --workers 2`` on a free loopback port
(``ONCEVAULT_SQLITE_SYNCHRONOUS=FULL``, DEK cache 60 s, rate limit 10,000,000/min: on,
never hit). The issuer client ``nts`` and the consumer ``kbank`` are registered with
``oncevault clients add``, as in bench/vs_openbao.py.

1. **Bulk issuance** (its own data dir): ``nts`` sends ``--bulk-records`` ~1 KiB
   ``income_certificate`` records, one per new citizen, through
   ``POST /v1/records:batch`` (``--batch-size`` records per request,
   ``--bulk-concurrency`` requests in flight); then ``--bulk-updates`` records that
   give those citizens a new version (changed data). Reported: records/s (created
   records over the phase's wall time), per-request p50/p99, the server's CPU time
   per record (every process of its group, from ``/proc``). A phase is **valid** only
   if every result has the expected status (201), every request answered 200, the
   ``records`` table grew by the created count, and the audit tree
   (``audit_state.size`` read from the SQLite file) grew by exactly one ``record.put``
   ``ok`` entry per created record plus one ``token.issued`` entry per token minted
   during the phase, and by nothing else.
2. **Reads as the vault grows** (a second data dir, grown ``--sizes`` in turn): while
   the server is stopped, citizens are seeded in-process through the project's own
   services (``Runtime.open`` as ``serve`` builds it; ``RecordIntake.issue_many``, the
   call behind ``POST /v1/records:batch``, 1,000 citizens a call, set-based in one
   group-committed unit (``VaultService.put_many``); ``ConsentService.request`` +
   ``approve`` for the probe citizens), ``--seed-concurrency`` calls in flight, one ~1 KiB
   ``income_certificate`` each. The seeding process runs with
   ``--seed-synchronous`` (NORMAL by default: no fsync per COMMIT while nothing is
   served; the server always runs FULL). ``--probe-citizens`` citizens spread evenly
   over the vault get a standing ``mortgage_screening`` consent for ``kbank``. Then
   ``serve --workers 2`` starts, ``kbank`` gets one consent-bound token per probe
   citizen, and after a warm-up pass ``--rounds`` rounds of ``--reads`` sequential
   ``GET /v1/data/income_certificate`` (one keep-alive connection, rotating over the
   probe citizens; fresh tokens before each round) give the pure latency p50/p99 (the
   median of the rounds' values: these cores are shared) and the server's CPU per
   read; then wrk (``--wrk-connections``, ``--wrk-seconds``) gives req/s at modest
   concurrency.
   Valid only if every read answered 200 with exactly the released fields and an
   ``X-Audit-Seq``, the audit tree grew by exactly one ``data.read`` ``ok`` entry per
   sequential read, and by the 2xx count (at most plus the connection count) under
   wrk. Seeding stops at ``--seed-budget`` seconds in all: a size not reached is
   measured at the size reached (marked) and no larger size is attempted.
   The p50 target compares the smallest and the largest size **read in turns** after
   the growth (``--alternate`` pairs): the smallest size's data dir is copied when it
   has been measured, and each pair starts a fresh server on each vault for a warm-up
   pass and ``--reads`` sequential reads. The verdict is the median of the pairs'
   ratios; the growth's own rounds, half an hour apart on shared cores, are reported
   beside it (they moved a 10⁶/10³ ratio between 0.88x and 1.36x from run to run).
3. **RSS per worker**: ``VmRSS`` (and the peak ``VmHWM``) from ``/proc/<pid>/status``
   of each granian worker (the server's process-group members except its main
   process) after each bulk phase and at the end of each read run.

Prints Markdown tables; ``--write-doc`` rewrites only the numbers block inside the
``<!-- scale:begin -->`` ... ``<!-- scale:end -->`` section of docs/performance.md
(created at the end of the file when missing). ``--profile DIR`` samples the workers
with py-spy during each bulk phase and this process during the last seeding stage
(bench/vs_openbao_profile.py; stacks and summaries in DIR). ``--quick`` runs in a few
minutes (sizes 1,000 and 10,000, 5,000 bulk records, 2 rounds of 300 reads). Every process started here is stopped on the
way out (errors and SIGTERM included); ``--keep`` keeps the temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import vs_openbao_profile as prof
from benchlib import (
    DOC,
    PURPOSE,
    RECORD_BYTES,
    RECORD_TYPE,
    RELEASED,
    bearer,
    block_head,
    client_token,
    code_version,
    cpu_model,
    gather_bounded,
    group_cpu_seconds,
    income_record,
    init_data_dir,
    load1,
    nid,
    percentile,
    settle,
    spread_indices,
    workspace,
)
from vs_openbao import LUA, WrkResult, run_wrk

from api.runtime import Runtime
from api.settings import load_settings
from consent.intake import IssueRequest
from consent.models import Status
from tests.helpers.clients import TestClient
from tests.helpers.server import ServerProcess, clean_env
from vault.models import PutResult, Subject
from vault.service import Actor

#: Citizens per `RecordIntake.issue_many` call while seeding (records:batch's maximum).
SEED_BATCH = 1000
#: The code whose uncommitted changes the machine line flags.
PRODUCT_CODE = ("api", "audit", "consent", "policies", "vault")
SECTION_BEGIN = "<!-- scale:begin -->"
SECTION_END = "<!-- scale:end -->"
NUMBERS_BEGIN = "<!-- scale:numbers:begin (bench/scale.py --write-doc rewrites this block) -->"
NUMBERS_END = "<!-- scale:numbers:end -->"
HEADING = "## The vault at scale: bulk issuance, reads as the vault grows, memory per worker"
TARGET_BULK = 10_000.0  # records/s
TARGET_P50_GROWTH = 1.20  # p50 at the largest size / p50 at the smallest
TARGET_RSS_MB = 200.0
TOKEN_REFRESH = 200.0  # seconds; consent-bound and client tokens live 300 s

# -- small helpers ---------------------------------------------------------------------


def loads() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass(frozen=True)
class Memory:
    pid: int
    rss_mb: float
    peak_mb: float


def memory(pid: int) -> Memory:
    """VmRSS and VmHWM of ``pid`` in MB (10**6 bytes; /proc reports KiB)."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in values:
            values[name] = int(rest.split()[0]) * 1024 / 1e6
    return Memory(pid, values["VmRSS"], values["VmHWM"])


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def fmt_memory(memories: Sequence[Memory]) -> str:
    return " / ".join(f"{m.rss_mb:.0f}" for m in memories) + " MB"


def fmt_peak(memories: Sequence[Memory]) -> str:
    return " / ".join(f"{m.peak_mb:.0f}" for m in memories) + " MB"


def machine_facts() -> str:
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 2**20:.0f} GiB"
    return (
        f"Machine: CPU {cpu_model()}, {os.cpu_count()} cores, {mem} RAM, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, granian "
        f"{importlib.metadata.version('granian')}; oncevault at commit "
        f"{code_version(PRODUCT_CODE)}; load avg {loads()} at start."
    )


# -- the server ------------------------------------------------------------------------


class Vault:
    """One data dir made by ``oncevault init``, its two clients, and its server."""

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        """The server's options come from ``args``: --workers, --dek-cache, --rate-limit."""
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.workers = args.workers
        self.env = clean_env(
            ONCEVAULT_DEK_CACHE_SECONDS=repr(args.dek_cache),
            ONCEVAULT_RATE_LIMIT_PER_MINUTE=str(args.rate_limit),
            ONCEVAULT_SQLITE_SYNCHRONOUS="FULL",
            ONCEVAULT_WORKER_AFFINITY=args.worker_affinity,
        )
        self.nts = TestClient("nts", roles=("issuer",))
        self.kbank = TestClient("kbank", roles=("consumer",))
        self.server: ServerProcess | None = None

    @property
    def database(self) -> Path:
        return self.data_dir / "oncevault.sqlite"

    def init(self) -> None:
        init_data_dir(self.data_dir, self.env, (self.nts, self.kbank), self.workdir)

    def start(self) -> None:
        self.server = ServerProcess(self.data_dir, workers=self.workers, env=self.env)
        self.server.start(timeout=180)
        # granian forks its workers before /healthz answers; give both a moment to be up.
        deadline = time.monotonic() + 30
        while len(self.worker_pids()) < self.workers and time.monotonic() < deadline:
            time.sleep(0.2)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    @property
    def pgid(self) -> int:
        assert self.server is not None and self.server.process is not None
        return self.server.process.pid

    def worker_pids(self) -> list[int]:
        """granian's workers: the server's process group minus its main process."""
        return prof.worker_pids(self.pgid, self.pgid)

    def server_cpu(self) -> float:
        return group_cpu_seconds(self.pgid)

    def memories(self) -> list[Memory]:
        return [memory(pid) for pid in self.worker_pids()]

    # -- the database, read-only

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(
            sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        ) as db:
            return list(db.execute(sql, args).fetchall())

    def audit_count(self) -> int:
        return int(self.query("SELECT size FROM audit_state WHERE id = 1")[0][0])

    def audit_actions(self, first: int, last: int) -> Counter[tuple[str, str]]:
        """(action, outcome) counts of the entries with ``first <= seq < last``."""
        rows = self.query(
            "SELECT action, outcome, COUNT(*) FROM audit_entries WHERE seq >= ? AND seq < ?"
            " GROUP BY action, outcome",
            first,
            last,
        )
        return Counter({(str(a), str(o)): int(n) for a, o, n in rows})

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT COUNT(*) FROM {table}")[0][0])

    def file_mb(self) -> float:
        files = self.data_dir.glob("oncevault.sqlite*")
        return sum(p.stat().st_size for p in files) / 1e6


def audit_problems(
    found: Counter[tuple[str, str]], expected: Counter[tuple[str, str]], span: int
) -> list[str]:
    problems = []
    if sum(found.values()) != span:
        problems.append(f"audit rows {sum(found.values()):,} for a tree growth of {span:,}")
    if found != expected:
        problems.append(f"audit entries {dict(found)}, expected {dict(expected)}")
    return problems


# -- 1. bulk issuance --------------------------------------------------------------------


@dataclass
class BulkResult:
    name: str
    sent: int
    created: int
    requests: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    load_start: float
    load_end: float
    audit_growth: int
    memories: list[Memory]
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.created / self.seconds if self.seconds else 0.0

    @property
    def valid(self) -> bool:
        return not self.problems


class TokenCache:
    """One client token, minted again when it is TOKEN_REFRESH seconds old."""

    def __init__(self, vault: Vault, http: httpx.AsyncClient, client: TestClient) -> None:
        self.vault, self.http, self.client = vault, http, client
        self.value = ""
        self.at = -math.inf
        self.minted = 0
        self.lock = asyncio.Lock()

    async def get(self) -> str:
        async with self.lock:
            if time.monotonic() - self.at > TOKEN_REFRESH:
                self.value = await client_token(self.http, self.vault.url, self.client)
                self.at = time.monotonic()
                self.minted += 1
            return self.value


async def bulk_phase(
    vault: Vault, name: str, citizens: int, version: int, args: argparse.Namespace
) -> BulkResult:
    """``citizens`` records (one per citizen, content ``version``) through records:batch."""
    chunks = [
        range(start, min(start + args.batch_size, citizens))
        for start in range(0, citizens, args.batch_size)
    ]
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    created = 0
    bad_requests: list[str] = []
    async with httpx.AsyncClient(base_url=vault.url, timeout=900) as http:
        tokens = TokenCache(vault, http, vault.nts)
        await tokens.get()
        first = vault.audit_count()
        records_before = vault.count("records")
        minted_before = tokens.minted
        next_chunk = 0
        # Request bodies are built before the clock starts (as wrk sends prebuilt
        # requests): the load generator shares the two cores with the server.
        bodies = [
            json.dumps(
                {
                    "records": [
                        {
                            "subject": {"nid": nid(i)},
                            "type": RECORD_TYPE,
                            "data": income_record(i, version),
                        }
                        for i in chunk
                    ]
                },
                separators=(",", ":"),
            ).encode()
            for chunk in chunks
        ]

        async def worker() -> None:
            nonlocal next_chunk, created
            while next_chunk < len(chunks):
                chunk, body = chunks[next_chunk], bodies[next_chunk]
                next_chunk += 1
                token = await tokens.get()
                t0 = time.perf_counter()
                response = await http.post(
                    "/v1/records:batch",
                    content=body,
                    headers={**bearer(token), "Content-Type": "application/json"},
                )
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    bad_requests.append(f"{response.status_code} {response.text[:200]}")
                    continue
                results = response.json()["results"]
                if [r["index"] for r in results] != list(range(len(chunk))):
                    bad_requests.append("results out of order or missing")
                for result in results:
                    statuses[f"{result['status']} {result.get('code') or ''}".strip()] += 1
                    if result["status"] == 201:
                        created += 1

        cpu_before = vault.server_cpu()
        load_start = load1()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.bulk_concurrency)))
        seconds = time.perf_counter() - started
        cpu = vault.server_cpu() - cpu_before
        load_end = load1()
        minted = tokens.minted - minted_before
    last = vault.audit_count()
    problems = [f"request answered {b}" for b in bad_requests[:3]]
    if len(bad_requests) > 3:
        problems.append(f"{len(bad_requests)} requests failed in all")
    if statuses != Counter({"201": citizens}):
        problems.append(f"result statuses {dict(statuses)}, expected 201 x {citizens:,}")
    grown = vault.count("records") - records_before
    if grown != created:
        problems.append(f"records table grew by {grown:,} for {created:,} created")
    expected = Counter({("record.put", "ok"): created, ("token.issued", "ok"): minted})
    problems += audit_problems(vault.audit_actions(first, last), +expected, last - first)
    return BulkResult(
        name=name,
        sent=citizens,
        created=created,
        requests=len(chunks),
        seconds=seconds,
        latencies=latencies,
        server_cpu=cpu,
        load_start=load_start,
        load_end=load_end,
        audit_growth=last - first,
        memories=vault.memories(),
        problems=problems,
    )


def print_bulk(result: BulkResult) -> None:
    lat = sorted(result.latencies)
    verdict = "VALID" if result.valid else "INVALID: " + "; ".join(result.problems)
    print(
        f"  {result.name}: {result.created:,} created in {result.seconds:,.1f} s = "
        f"{result.rate:,.0f} records/s; request p50 {fmt_ms(percentile(lat, 0.5))}, "
        f"p99 {fmt_ms(percentile(lat, 0.99))}; server CPU "
        f"{result.server_cpu * 1000 / max(result.created, 1):.2f} ms/record; audit "
        f"+{result.audit_growth:,}; RSS {fmt_memory(result.memories)} (peak "
        f"{fmt_peak(result.memories)}); load {result.load_start:.2f} -> "
        f"{result.load_end:.2f}; {verdict}",
        flush=True,
    )


def run_bulk(workdir: Path, args: argparse.Namespace) -> list[BulkResult]:
    vault = Vault(workdir / "bulk", args)
    results: list[BulkResult] = []
    spies: list[subprocess.Popen[bytes]] = []
    try:
        vault.init()
        vault.start()
        print(
            f"bulk issuance: {args.bulk_records:,} new citizens, then {args.bulk_updates:,}"
            f" new versions; {args.batch_size} records per request, "
            f"{args.bulk_concurrency} requests in flight",
            flush=True,
        )
        phases = [("new citizens", args.bulk_records, 1)]
        if args.bulk_updates:
            phases.append(("new versions", min(args.bulk_updates, args.bulk_records), 2))
        for number, (name, count, version) in enumerate(phases, 1):
            out = args.profile / f"bulk-{number}" if args.profile is not None else Path()
            if args.profile is not None:
                spies = start_profile(vault.worker_pids(), out, args)
            results.append(asyncio.run(bulk_phase(vault, name, count, version, args)))
            print_bulk(results[-1])
            if spies:
                finish_profile(spies, out)
                spies = []
    finally:
        for spy in spies:
            with contextlib.suppress(ProcessLookupError):
                spy.kill()
            spy.wait()
        vault.stop()
        if not args.keep:
            shutil.rmtree(vault.data_dir, ignore_errors=True)
    return results


# -- 2. seeding through the services -----------------------------------------------------


@dataclass
class SeedStage:
    target: int
    reached: int
    added: int
    seconds: float
    cpu: float
    load_end: float

    @property
    def rate(self) -> float:
        return self.added / self.seconds if self.seconds else 0.0


class Seeder:
    """The project's services in this process, on a data dir whose server is stopped."""

    def __init__(self, vault: Vault, *, synchronous: str, concurrency: int) -> None:
        self.vault = vault
        self.env = {**vault.env, "ONCEVAULT_SQLITE_SYNCHRONOUS": synchronous}
        self.concurrency = concurrency
        self.runtime: Runtime | None = None

    async def __aenter__(self) -> Seeder:
        settings = load_settings({}, self.env, data_dir_flag=str(self.vault.data_dir))
        self.runtime = await Runtime.open(settings)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runtime is not None:
            await self.runtime.close()
            self.runtime = None

    async def citizens(self, start: int, stop: int, deadline: float) -> int:
        """Issue one record to each citizen ``start..stop-1`` through
        ``RecordIntake.issue_many`` (the call behind ``records:batch``), ``SEED_BATCH``
        citizens a call; stop early at ``deadline`` (monotonic). Returns the first index
        not seeded."""
        assert self.runtime is not None and self.runtime.intake is not None
        intake = self.runtime.intake
        actor = Actor("client", "nts", None)
        next_index = start
        done = 0
        failed = False
        began = last_report = time.monotonic()

        def take() -> range | None:
            nonlocal next_index
            if failed or next_index >= stop or time.monotonic() >= deadline:
                return None
            chunk = range(next_index, min(next_index + SEED_BATCH, stop))
            next_index = chunk.stop
            return chunk

        async def worker() -> None:
            nonlocal done, last_report, failed
            while (chunk := take()) is not None:
                try:
                    results = await intake.issue_many(
                        client_id="nts",
                        records=[
                            IssueRequest({"nid": nid(i)}, RECORD_TYPE, income_record(i))
                            for i in chunk
                        ],
                        actor=actor,
                    )
                except BaseException:
                    failed = True  # the other workers stop taking citizens
                    raise
                for i, result in zip(chunk, results, strict=True):
                    if (
                        not isinstance(result, PutResult)
                        or not result.created
                        or result.version != 1
                    ):
                        failed = True
                        raise RuntimeError(f"citizen {i}: expected a new version 1, got {result}")
                done += len(chunk)
                now = time.monotonic()
                if now - last_report >= 30:
                    last_report = now
                    rate = done / (now - began)
                    print(
                        f"    seeded {start + done:,} / {stop:,}  {rate:,.0f} citizens/s  "
                        f"eta {(stop - start - done) / rate:,.0f} s  load {load1():.2f}",
                        flush=True,
                    )

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return start + done

    async def consents(self, indices: Sequence[int]) -> dict[int, str]:
        """A standing consent of ``kbank`` for each citizen, requested and approved."""
        assert self.runtime is not None
        vault, consents = self.runtime.vault, self.runtime.consents
        assert vault is not None and consents is not None

        async def one(i: int) -> tuple[int, str]:
            citizen_id = await vault.lookup(Subject.parse({"nid": nid(i)}))
            if citizen_id is None:
                raise RuntimeError(f"citizen {i} was not seeded")
            consent, _ = await consents.request(
                citizen_id=citizen_id,
                client_id="kbank",
                purpose=PURPOSE,
                items=[{"type": RECORD_TYPE, "fields": list(RELEASED)}],
                access="standing",
                valid_days=30,
                max_fetches=None,
                case_reference=None,
                actor=Actor("client", "kbank", None),
            )
            approved = await consents.approve(
                consent.consent_id, citizen_id=citizen_id, actor=Actor("citizen", citizen_id)
            )
            if approved.status != Status.ACTIVE:
                raise RuntimeError(f"consent of citizen {i} is {approved.status}")
            return i, consent.consent_id

        return dict(await gather_bounded(32, [one(i) for i in indices]))


# -- 2b. reads ----------------------------------------------------------------------------


@dataclass
class ReadResult:
    size: int
    target: int
    rounds: list[list[float]]
    server_cpu: float
    load_start: float
    load_end: float
    memories: list[Memory]
    file_mb: float
    wrk: WrkResult | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def reads(self) -> int:
        return sum(len(r) for r in self.rounds)

    def p(self, q: float) -> float:
        """The median over the rounds of each round's percentile ``q`` (seconds)."""
        return statistics.median(percentile(sorted(r), q) for r in self.rounds if r)

    def spread(self, q: float) -> str:
        values = [percentile(sorted(r), q) * 1000 for r in self.rounds if r]
        return f"{min(values):.1f}-{max(values):.1f}" if len(values) > 1 else ""


async def mint_read_tokens(vault: Vault, consent_ids: Sequence[str]) -> list[str]:
    async with httpx.AsyncClient(base_url=vault.url, timeout=60) as http:
        return await gather_bounded(
            8,
            [client_token(http, vault.url, vault.kbank, consent_id) for consent_id in consent_ids],
        )


def check_read(response: httpx.Response) -> str | None:
    """None for a good read; else what was wrong."""
    if response.status_code != 200:
        return f"{response.status_code} {response.text[:200]}"
    if "x-audit-seq" not in response.headers:
        return "no X-Audit-Seq"
    if set(response.json()["data"]) != set(RELEASED):
        return f"unexpected fields {sorted(response.json()['data'])}"
    return None


def measure_reads(
    vault: Vault, consent_ids: Sequence[str], size: int, target: int, args: argparse.Namespace
) -> ReadResult:
    path = f"/v1/data/{RECORD_TYPE}"
    problems: list[str] = []
    rounds: list[list[float]] = []
    cpu = 0.0
    bad = 0
    with httpx.Client(base_url=vault.url, timeout=30) as http:
        load_start = load1()
        for number in range(args.rounds):
            # Fresh consent-bound tokens for each round (they live 300 s), then a warm-up
            # pass before the first; minting is outside the measured window.
            tokens = asyncio.run(mint_read_tokens(vault, consent_ids))
            warmup = max(args.warmup_reads, len(tokens)) if number == 0 else 0
            for k in range(warmup):
                wrong = check_read(http.get(path, headers=bearer(tokens[k % len(tokens)])))
                if wrong:
                    raise RuntimeError(f"warm-up read: {wrong}")
            first = vault.audit_count()
            cpu_before = vault.server_cpu()
            deadline = time.monotonic() + args.read_seconds_max
            latencies: list[float] = []
            for k in range(args.reads):
                if time.monotonic() > deadline:
                    break
                t0 = time.perf_counter()
                response = http.get(path, headers=bearer(tokens[k % len(tokens)]))
                latencies.append(time.perf_counter() - t0)
                wrong = check_read(response)
                if wrong:
                    bad += 1
                    if bad <= 3:
                        problems.append(f"read answered {wrong}")
            cpu += vault.server_cpu() - cpu_before
            rounds.append(latencies)
            last = vault.audit_count()
            expected = Counter({("data.read", "ok"): len(latencies)})
            problems += audit_problems(vault.audit_actions(first, last), expected, last - first)
        load_end = load1()
    if bad:
        problems.append(f"{bad} bad reads in all")
    result = ReadResult(
        size=size,
        target=target,
        rounds=rounds,
        server_cpu=cpu,
        load_start=load_start,
        load_end=load_end,
        memories=[],
        file_mb=vault.file_mb(),
        problems=problems,
    )
    if args.wrk_seconds > 0:
        tokens = asyncio.run(mint_read_tokens(vault, consent_ids))  # fresh: 300 s lifetime
        requests = vault.workdir / "reads.requests"
        requests.write_text("".join(f"{path}\tAuthorization\tBearer {t}\n" for t in tokens))
        script = vault.workdir / "wrk.lua"
        script.write_text(LUA)
        first = vault.audit_count()
        wrk = run_wrk(
            vault.url,
            script,
            requests,
            threads=1,
            connections=args.wrk_connections,
            seconds=args.wrk_seconds,
        )
        last = settle(vault, quiet=0.4, readings=2, limit=15.0)
        growth = last - first
        if wrk.other or wrk.socket_errors:
            problems.append(f"wrk: {wrk.other} non-2xx, {wrk.socket_errors} socket errors")
        if not wrk.ok2xx <= growth <= wrk.ok2xx + args.wrk_connections:
            problems.append(f"wrk: audit grew by {growth:,} for {wrk.ok2xx:,} 2xx")
        found = vault.audit_actions(first, last)
        if set(found) != {("data.read", "ok")}:
            problems.append(f"wrk: audit entries {dict(found)}")
        result.wrk = wrk
    result.memories = vault.memories()
    return result


def print_read(result: ReadResult) -> None:
    verdict = "VALID" if result.valid else "INVALID: " + "; ".join(result.problems)
    wrk = ""
    if result.wrk is not None:
        w = result.wrk
        wrk = f"; wrk {w.rate:,.0f} req/s p50 {w.p50_ms:.1f} ms p99 {w.p99_ms:.1f} ms"
    spread = result.spread(0.5)
    rounds = f" (rounds {spread} ms)" if spread else ""
    print(
        f"  {result.size:,} citizens: {result.reads:,} sequential reads in "
        f"{len(result.rounds)} rounds: p50 {fmt_ms(result.p(0.5))}{rounds} "
        f"p99 {fmt_ms(result.p(0.99))}; server CPU "
        f"{result.server_cpu * 1000 / max(result.reads, 1):.2f} ms/read{wrk}; RSS "
        f"{fmt_memory(result.memories)} (peak {fmt_peak(result.memories)}); file "
        f"{result.file_mb:,.0f} MB; load {result.load_start:.2f} -> {result.load_end:.2f}; "
        f"{verdict}",
        flush=True,
    )


async def seed_stage(
    vault: Vault,
    args: argparse.Namespace,
    *,
    start: int,
    target: int,
    deadline: float,
    have: dict[int, str],
    profile: Path | None,
) -> tuple[int, dict[int, str]]:
    """Seed citizens ``start..target-1`` (until ``deadline``), then consent the probe
    citizens that have no consent yet. Returns the size reached and every consent."""
    spies: list[subprocess.Popen[bytes]] = []
    async with Seeder(
        vault, synchronous=args.seed_synchronous, concurrency=args.seed_concurrency
    ) as seeder:
        try:
            if profile is not None:
                spies = start_profile([os.getpid()], profile, args)
            reached = await seeder.citizens(start, target, deadline)
        finally:
            if spies:
                finish_profile(spies, profile or Path())
        wanted = [i for i in spread_indices(reached, args.probe_citizens) if i not in have]
        return reached, have | await seeder.consents(wanted)


@dataclass
class Alternated:
    """The smallest and the largest vault read in turns, after the growth: each pair is
    one restart of each server, a warm-up pass and ``--reads`` sequential reads."""

    smallest: int
    largest: int
    pairs: list[tuple[ReadResult, ReadResult]]

    @property
    def valid(self) -> bool:
        return bool(self.pairs) and all(a.valid and b.valid for a, b in self.pairs)

    @property
    def ratio(self) -> float:
        """The median over the pairs of the largest size's p50 over the smallest's."""
        return statistics.median(b.p(0.5) / a.p(0.5) for a, b in self.pairs)


def alternate_reads(
    sides: Sequence[tuple[Vault, list[str], int]], args: argparse.Namespace
) -> Alternated:
    """``args.alternate`` pairs of one read run on each side, in turns."""
    once = argparse.Namespace(**{**vars(args), "rounds": 1, "wrk_seconds": 0})
    pairs: list[tuple[ReadResult, ReadResult]] = []
    for number in range(1, args.alternate + 1):
        pair: list[ReadResult] = []
        for vault, probe, size in sides:
            vault.start()
            try:
                pair.append(measure_reads(vault, probe, size, size, once))
            finally:
                vault.stop()
            print(f"  alternated {number}:", end="")
            print_read(pair[-1])
        pairs.append((pair[0], pair[1]))
    return Alternated(sides[0][2], sides[1][2], pairs)


def run_growth(
    workdir: Path, args: argparse.Namespace
) -> tuple[list[SeedStage], list[ReadResult], str, Alternated | None]:
    vault = Vault(workdir / "growth", args)
    stages: list[SeedStage] = []
    reads: list[ReadResult] = []
    note = ""
    consent_ids: dict[int, str] = {}
    seeded = 0
    # The smallest size's vault, copied when it was measured, to read it again in turns
    # with the largest: machine drift over the growth's half hour then cancels out.
    first: tuple[Vault, list[str], int] | None = None
    last: tuple[Vault, list[str], int] | None = None
    alternated: Alternated | None = None
    try:
        vault.init()
        budget_end = time.monotonic() + args.seed_budget
        for number, target in enumerate(args.sizes):
            print(f"growing to {target:,} citizens (seeding in-process, server stopped)")
            last_stage = number == len(args.sizes) - 1
            profile_dir = args.profile / "seed" if args.profile is not None else None

            cpu_before = os.times()
            started = time.monotonic()
            reached, consent_ids = asyncio.run(
                seed_stage(
                    vault,
                    args,
                    start=seeded,
                    target=target,
                    deadline=budget_end,
                    have=consent_ids,
                    profile=profile_dir if last_stage else None,
                )
            )
            cpu_after = os.times()
            stages.append(
                SeedStage(
                    target=target,
                    reached=reached,
                    added=reached - seeded,
                    seconds=time.monotonic() - started,
                    cpu=(cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
                    load_end=load1(),
                )
            )
            seeded = reached
            stage = stages[-1]
            print(
                f"  seeded {stage.added:,} citizens in {stage.seconds:,.0f} s "
                f"({stage.rate:,.0f}/s, {stage.cpu * 1000 / max(stage.added, 1):.2f} ms CPU "
                f"each, seeding and probe consents); {vault.count('citizens'):,} citizens "
                f"in the vault",
                flush=True,
            )
            probe = [consent_ids[i] for i in spread_indices(reached, args.probe_citizens)]
            vault.start()
            try:
                reads.append(measure_reads(vault, probe, reached, target, args))
            finally:
                vault.stop()
            print_read(reads[-1])
            if first is None and args.alternate and len(args.sizes) > 1:
                copy = Vault(workdir / "first", args)
                copy.nts, copy.kbank = vault.nts, vault.kbank  # registered in the copy too
                shutil.copytree(vault.data_dir, copy.data_dir)
                first = (copy, probe, reached)
            else:
                last = (vault, probe, reached)
            if reached < target:
                note = (
                    f"Seeding stopped at the {args.seed_budget:,} s budget: {reached:,} of "
                    f"{target:,} citizens; larger sizes were not measured."
                )
                print("  " + note, flush=True)
                break
        if first is not None and last is not None:
            print(
                f"reading {first[2]:,} and {last[2]:,} citizens in turns, "
                f"{args.alternate} times each (servers restarted)",
                flush=True,
            )
            alternated = alternate_reads([first, last], args)
    finally:
        vault.stop()
        if first is not None:
            first[0].stop()
    return stages, reads, note, alternated


# -- profiles -----------------------------------------------------------------------------


def start_profile(
    pids: list[int], out_dir: Path, args: argparse.Namespace
) -> list[subprocess.Popen[bytes]]:
    print(f"  py-spy on {pids} for {args.profile_seconds} s -> {out_dir}", flush=True)
    return prof.start(pids, args.profile_seconds, out_dir)


def finish_profile(spies: list[subprocess.Popen[bytes]], out_dir: Path) -> None:
    prof.finish(spies, timeout=600)
    summary = prof.summarise(sorted(out_dir.glob("worker-*.txt")))
    (out_dir / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\n".join("    " + line for line in summary[:45]), flush=True)


# -- report --------------------------------------------------------------------------------


def command_line(args: argparse.Namespace) -> str:
    return " ".join([".venv/bin/python bench/scale.py", *args.argv])


def report(
    args: argparse.Namespace,
    machine: str,
    bulk: list[BulkResult],
    stages: list[SeedStage],
    reads: list[ReadResult],
    note: str,
    alternated: Alternated | None = None,
) -> list[str]:
    lines = block_head(command_line(args), machine)
    lines += [
        f"Server: `oncevault serve --workers {args.workers}`"
        f" (`ONCEVAULT_WORKER_AFFINITY={args.worker_affinity}`), SQLite "
        "(WAL, `ONCEVAULT_SQLITE_SYNCHRONOUS=FULL`), local KEK, DEK cache "
        f"{args.dek_cache:g} s, rate limit {args.rate_limit:,}/min (on, never hit); "
        f"load generators on the same cores. Load avg at end: {loads()}.",
        "",
    ]
    verdicts: list[str] = []
    if bulk:
        lines += [
            f"Bulk issuance (`POST /v1/records:batch`, {args.batch_size} records per request, "
            f"{args.bulk_concurrency} requests in flight, ~{RECORD_BYTES} B records):",
            "",
            "| phase | records created | records/s | request p50 | request p99 | server CPU/record"
            " | RSS per worker (peak) | load start → end | valid |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for b in bulk:
            lat = sorted(b.latencies)
            lines.append(
                f"| {b.name} | {b.created:,} | {b.rate:,.0f} | {fmt_ms(percentile(lat, 0.5))} "
                f"| {fmt_ms(percentile(lat, 0.99))} "
                f"| {b.server_cpu * 1000 / max(b.created, 1):.2f} ms "
                f"| {fmt_memory(b.memories)} ({fmt_peak(b.memories)}) "
                f"| {b.load_start:.2f} → {b.load_end:.2f} "
                f"| {'yes' if b.valid else 'NO: ' + '; '.join(b.problems)} |"
            )
        lines.append("")
        first = bulk[0]
        verdicts.append(
            f"bulk issuance ≥ {TARGET_BULK:,.0f} records/s: "
            + ("**met**" if first.rate >= TARGET_BULK and first.valid else "**not met**")
            + f" ({first.rate:,.0f} records/s for new citizens"
            + (f", {bulk[1].rate:,.0f} for new versions" if len(bulk) > 1 else "")
            + ")"
        )
    if reads:
        lines += [
            "Seeding through the services (in-process `RecordIntake.issue_many`, "
            f"{SEED_BATCH:,} citizens a call, {args.seed_concurrency} calls in flight, `ONCEVAULT_SQLITE_SYNCHRONOUS="
            f"{args.seed_synchronous}` while the server is stopped; includes the probe "
            "citizens' consents):",
            "",
            "| vault size | citizens added | seconds | citizens/s | CPU/citizen | load at end |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for s in stages:
            size = f"{s.reached:,}" + ("" if s.reached == s.target else f" (of {s.target:,})")
            lines.append(
                f"| {size} | {s.added:,} | {s.seconds:,.0f} | {s.rate:,.0f} "
                f"| {s.cpu * 1000 / max(s.added, 1):.2f} ms | {s.load_end:.2f} |"
            )
        wrk_head = (
            f" | wrk -c{args.wrk_connections} req/s | wrk p50 | wrk p99" if args.wrk_seconds else ""
        )
        lines += [
            "",
            f"Reads (`GET /v1/data/{RECORD_TYPE}`, consent-bound bearer tokens, "
            f"{args.probe_citizens} consented citizens spread over the vault; "
            f"after a warm-up pass, {args.rounds} rounds of {args.reads:,} sequential reads on one "
            "keep-alive connection; p50 and p99 are the medians of the rounds' values, "
            "with the rounds' p50 range"
            + (f"; then wrk -t1 -c{args.wrk_connections} -d{args.wrk_seconds}s" if wrk_head else "")
            + "):",
            "",
            "| vault size | database | reads | p50 | p50 rounds | p99 | server CPU/read"
            + wrk_head
            + " | RSS per worker (peak) | load start → end | valid |",
            "|---:|---:|---:|---:|---:|---:|---:|"
            + ("---:|---:|---:|" if wrk_head else "")
            + "---:|---:|---|",
        ]
        for r in reads:
            size = f"{r.size:,}" + ("" if r.size == r.target else f" (of {r.target:,})")
            wrk = ""
            if wrk_head:
                w = r.wrk
                wrk = (
                    f" | {w.rate:,.0f} | {w.p50_ms:.1f} ms | {w.p99_ms:.1f} ms"
                    if w
                    else " | - | - | -"
                )
            lines.append(
                f"| {size} | {r.file_mb:,.0f} MB | {r.reads:,} | {fmt_ms(r.p(0.5))} "
                f"| {r.spread(0.5) or '-'} ms | {fmt_ms(r.p(0.99))} | {r.server_cpu * 1000 / max(r.reads, 1):.2f} ms{wrk} "
                f"| {fmt_memory(r.memories)} ({fmt_peak(r.memories)}) "
                f"| {r.load_start:.2f} → {r.load_end:.2f} "
                f"| {'yes' if r.valid else 'NO: ' + '; '.join(r.problems)} |"
            )
        lines.append("")
        if note:
            lines += [note, ""]
        smallest, largest = reads[0], reads[-1]
        ratio = largest.p(0.5) / smallest.p(0.5)
        reached_top = largest.size >= 10**6
        growth_line = (
            f"p50 {fmt_ms(smallest.p(0.5))} at {smallest.size:,}, "
            f"{fmt_ms(largest.p(0.5))} at {largest.size:,} ({ratio:.2f}x); server CPU per read "
            f"{smallest.server_cpu * 1000 / max(smallest.reads, 1):.2f} ms and "
            f"{largest.server_cpu * 1000 / max(largest.reads, 1):.2f} ms"
        )
        if alternated is not None:
            lines += alternated_table(alternated, args)
            ratio = alternated.ratio
            judged = (
                f"in turns, median of {len(alternated.pairs)} pairs {ratio:.2f}x"
                + ("" if alternated.valid else ", an invalid run")
                + f"; during the growth {growth_line}"
            )
        else:
            judged = growth_line
        valid = alternated.valid if alternated is not None else smallest.valid and largest.valid
        verdict = (
            "**met**" if ratio <= TARGET_P50_GROWTH and reached_top and valid else "**not met**"
        )
        if not reached_top:
            verdict = "**not shown** (10⁶ citizens not reached)"
        verdicts.append(
            f"read p50 within {100 * (TARGET_P50_GROWTH - 1):.0f} % from 10³ to 10⁶ citizens: "
            f"{verdict}; {judged}"
        )
    memories = [m for b in bulk for m in b.memories] + [m for r in reads for m in r.memories]
    if memories:
        top = max(m.rss_mb for m in memories)
        peak = max(m.peak_mb for m in memories)
        verdicts.append(
            f"RSS < {TARGET_RSS_MB:.0f} MB per worker: "
            + ("**met**" if top < TARGET_RSS_MB else "**not met**")
            + f" (largest VmRSS {top:.0f} MB; largest peak VmHWM {peak:.0f} MB)"
        )
    lines += ["Targets:", ""] + [f"- {v}" for v in verdicts]
    return lines


def alternated_table(alternated: Alternated, args: argparse.Namespace) -> list[str]:
    lines = [
        f"The smallest and the largest vault read in turns after the growth (the "
        f"{alternated.smallest:,}-citizen vault copied when it was measured; each run a "
        f"fresh server, a warm-up pass and {args.reads:,} sequential reads):",
        "",
        f"| pair | p50 at {alternated.smallest:,} | p50 at {alternated.largest:,} | ratio "
        "| server CPU/read | valid |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for number, (a, b) in enumerate(alternated.pairs, 1):
        cpu = " / ".join(f"{r.server_cpu * 1000 / max(r.reads, 1):.2f}" for r in (a, b))
        ok = a.valid and b.valid
        problems = "; ".join(a.problems + b.problems)
        lines.append(
            f"| {number} | {fmt_ms(a.p(0.5))} | {fmt_ms(b.p(0.5))} "
            f"| {b.p(0.5) / a.p(0.5):.2f}x | {cpu} ms | {'yes' if ok else 'NO: ' + problems} |"
        )
    return [*lines, ""]


def write_doc(block: list[str], path: Path = DOC) -> None:
    """Rewrite the numbers block of our section; add the section at the end if missing.
    Nothing outside ``SECTION_BEGIN``..``SECTION_END`` is touched."""
    text = path.read_text()
    numbers = "\n".join([NUMBERS_BEGIN, *block, NUMBERS_END])
    if SECTION_BEGIN in text and SECTION_END in text:
        head, rest = text.split(SECTION_BEGIN, 1)
        section, tail = rest.split(SECTION_END, 1)
        if NUMBERS_BEGIN in section and NUMBERS_END in section:
            before, after = section.split(NUMBERS_BEGIN, 1)
            section = before + numbers + after.split(NUMBERS_END, 1)[1]
        else:
            section = section.rstrip("\n") + "\n\n" + numbers + "\n"
        text = head + SECTION_BEGIN + section + SECTION_END + tail
    else:
        text = (
            text.rstrip("\n")
            + f"\n\n{SECTION_BEGIN}\n{HEADING}\n\n`bench/scale.py` (`make bench-scale`).\n\n"
            + numbers
            + f"\n{SECTION_END}\n"
        )
    path.write_text(text)


def parse_sizes(text: str) -> list[int]:
    sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    if not sizes or sizes != sorted(set(sizes)) or sizes[0] < 1 or sizes[-1] >= 10**7:
        raise argparse.ArgumentTypeError("increasing sizes between 1 and 9,999,999")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few minutes: sizes 1,000 and 10,000, 5,000 bulk records, 2 x 300 reads",
    )
    parser.add_argument("--sizes", type=parse_sizes, default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--seed-budget", type=int, default=1500, help="seconds of seeding in all (25 min)"
    )
    parser.add_argument("--seed-concurrency", type=int, default=2)
    parser.add_argument("--seed-synchronous", choices=("NORMAL", "FULL"), default="NORMAL")
    parser.add_argument("--probe-citizens", type=int, default=100)
    parser.add_argument("--reads", type=int, default=1000, help="sequential reads per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of reads per size")
    parser.add_argument(
        "--alternate",
        type=int,
        default=3,
        help="after the growth, read the smallest and the largest size in turns N times"
        " each (0: judge the p50 target on the growth's own rounds)",
    )
    parser.add_argument("--read-seconds-max", type=float, default=60.0, help="per round")
    parser.add_argument("--warmup-reads", type=int, default=200)
    parser.add_argument("--wrk-seconds", type=int, default=10, help="0: no wrk run")
    parser.add_argument("--wrk-connections", type=int, default=8)
    parser.add_argument("--bulk-records", type=int, default=100_000)
    parser.add_argument("--bulk-updates", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--bulk-concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--worker-affinity",
        choices=("spread", "off"),
        default="spread",
        help="ONCEVAULT_WORKER_AFFINITY (spread: each worker pinned to a CPU of its own)",
    )
    parser.add_argument("--dek-cache", type=float, default=60.0)
    parser.add_argument("--rate-limit", type=int, default=10_000_000)
    parser.add_argument("--skip-bulk", action="store_true")
    parser.add_argument("--skip-growth", action="store_true")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy stacks and summaries")
    parser.add_argument("--profile-seconds", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--write-doc", action="store_true", help="update docs/performance.md")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        given = {a.split("=", 1)[0] for a in args.argv}
        quick = {
            "--sizes": [1_000, 10_000],
            "--bulk-records": 5_000,
            "--bulk-updates": 5_000,
            "--reads": 300,
            "--rounds": 2,
            "--wrk-seconds": 5,
            "--seed-budget": 300,
        }
        for option, value in quick.items():
            if option not in given:
                setattr(args, option[2:].replace("-", "_"), value)
    if not 1 <= args.batch_size <= 1000:
        parser.error("--batch-size: 1..1000 (DESIGN section 10)")
    if args.probe_citizens < 1 or args.reads < 1 or args.rounds < 1:
        parser.error("need at least one probe citizen, one read and one round")
    if args.wrk_seconds and shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk), or pass --wrk-seconds 0")
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    machine = machine_facts()
    print(machine, flush=True)
    bulk: list[BulkResult] = []
    stages: list[SeedStage] = []
    reads: list[ReadResult] = []
    note = ""
    alternated: Alternated | None = None
    with workspace(args.keep, "scale_") as workdir:
        if not args.skip_bulk:
            bulk = run_bulk(workdir, args)
        if not args.skip_growth:
            stages, reads, note, alternated = run_growth(workdir, args)
    block = report(args, machine, bulk, stages, reads, note, alternated)
    print()
    print("\n".join(block))
    if args.write_doc:
        write_doc(block)
        print(f"\nwrote {DOC}")
    everything = [b.valid for b in bulk] + [r.valid for r in reads]
    if alternated is not None:
        everything.append(alternated.valid)
    return 0 if all(everything) else 1


if __name__ == "__main__":
    raise SystemExit(main())
