"""Helpers shared by the benchmarks: machine line, percentiles, databases, phases, and
the pieces of the HTTP benchmarks (vs_openbao, dpop_reads, scale): their records, data
dirs, tokens, server processes and workspace.

Not a benchmark itself. Importing it puts the repository root on ``sys.path`` (so
``tests.fixtures.openbao`` and ``tests.independent_verifier`` import when a script
runs as ``.venv/bin/python bench/NAME.py``) and quiets structlog below warnings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from api.logging import configure_logging  # noqa: E402
from tests.helpers.server import run_cli  # noqa: E402

if TYPE_CHECKING:
    import httpx

    from tests.helpers.clients import TestClient

if "pytest" not in sys.modules:
    # Quiet for the benchmark scripts; under pytest (tests/unit/bench imports this
    # module while collecting) the test session's logging is left as it is, or
    # every later test capturing info logs would capture nothing.
    configure_logging(level="warning", json=True)

#: Where the benchmarks' results are kept (``--write-doc``).
DOC = ROOT / "docs" / "performance.md"

#: Postgres DSN for the Postgres rows: the same variable the test suite reads.
POSTGRES_ENV = "ONCEVAULT_TEST_POSTGRES_DSN"


def default_postgres_dsn() -> str:
    return os.environ.get(POSTGRES_ENV, "")


# -- machine -------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def postgres_version(dsn: str) -> str:
    if not dsn:
        return "not used"
    try:
        connection = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"unreachable ({exc.__class__.__name__})"
    try:
        version = await connection.fetchval("SHOW server_version")
        sync = await connection.fetchval("SHOW synchronous_commit")
        return f"{version} (synchronous_commit={sync})"
    finally:
        await connection.close()


def bao_version() -> str:
    binary = Path(sys.executable).parent / "bao"
    try:
        out = subprocess.run(
            [str(binary), "version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "not installed"
    return out.split("(")[0].strip()


def code_version(paths: Sequence[str] = ("api", "audit", "vault")) -> str:
    """The commit measured, flagged when the code under test (``paths``) has uncommitted
    changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "-uno", "--", *paths],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (f" + uncommitted changes in {'/'.join(paths)}" if dirty else "")


async def machine_line(postgres_dsn: str, *, bao: bool = False) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    parts = [
        f"code {code_version()}",
        f"CPU {cpu_model()}",
        f"{os.cpu_count()} cores",
        f"Python {platform.python_version()}",
        f"SQLite {sqlite3.sqlite_version}",
        f"PostgreSQL {await postgres_version(postgres_dsn)}",
    ]
    if bao:
        parts.append(bao_version())
    parts.append(f"load avg {load} at start")
    return "machine: " + "; ".join(parts)


def load_line() -> str:
    """The load average now: other processes on these 2 cores skew every number."""
    return "load avg at end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def load1() -> float:
    """The 1-minute load average now."""
    return os.getloadavg()[0]


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (``/proc/stat``: user, nice,
    system, irq, softirq, steal): the servers, the database, the load generator, the
    kernel's network work and anything else running."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(x) for x in handle.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in process group ``pgid``."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as handle:
                rest = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[2]) == pgid:
            ticks += int(rest[11]) + int(rest[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# -- numbers -------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (``q`` in 0..1)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class PhaseResult:
    name: str
    ops: int
    seconds: float
    latencies: list[float] = field(repr=False)
    errors: int = 0
    #: CPU seconds (user + system, every thread) this process spent in the phase.
    cpu: float = 0.0
    #: ops/s of every repeat when the phase ran several times (see :func:`best_of`).
    rates: list[float] = field(default_factory=list)

    def spread(self) -> str:
        """``min-max`` ops/s over the repeats, or empty for a single run."""
        if len(self.rates) < 2:
            return ""
        return f"{min(self.rates):,.0f}-{max(self.rates):,.0f}"

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_op(self) -> float:
        """This process's CPU time per call: unlike ops/s, barely moved by other load."""
        return self.cpu * 1000 / self.ops if self.ops else 0.0

    def p(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        return percentile(sorted(self.latencies), q) * 1000


async def run_phase(
    name: str,
    op: Callable[[int], Awaitable[object]],
    *,
    concurrency: int,
    duration: float | None = None,
    count: int | None = None,
) -> PhaseResult:
    """Run ``op(i)`` from ``concurrency`` tasks, for ``count`` calls or ``duration`` seconds.

    ``i`` is a global call number (0, 1, 2, ...). Each call's latency is measured around
    its own await, so it includes waiting for a group commit. Failures are counted,
    not timed; the first one is re-raised after the phase if every call failed.
    """
    if (duration is None) == (count is None):
        raise ValueError("give exactly one of duration and count")
    latencies: list[float] = []
    errors: list[BaseException] = []
    next_index = 0
    cpu_start = os.times()
    start = time.perf_counter()
    deadline = start + duration if duration is not None else math.inf

    def take() -> int | None:
        nonlocal next_index
        if count is not None and next_index >= count:
            return None
        if time.perf_counter() >= deadline:
            return None
        index = next_index
        next_index += 1
        return index

    async def worker() -> None:
        while (index := take()) is not None:
            t0 = time.perf_counter()
            try:
                await op(index)
            except Exception as exc:
                errors.append(exc)
                continue
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu_end = os.times()
    cpu = (cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system)
    if errors and not latencies:
        raise errors[0]
    if errors:
        first = errors[0]
        print(f"  ! {name}: {len(errors)} failed calls, first: {type(first).__name__}: {first}")
    return PhaseResult(name, len(latencies), elapsed, latencies, errors=len(errors), cpu=cpu)


async def best_of(repeat: int, phase: Callable[[], Awaitable[PhaseResult]]) -> PhaseResult:
    """Run ``phase`` ``repeat`` times; keep the fastest run, remember every rate.

    These cores are shared with other work: the fastest repeat is the least disturbed
    one, and the spread shows how much the others were disturbed.
    """
    results = [await phase() for _ in range(max(1, repeat))]
    best = max(results, key=lambda r: r.rate)
    best.rates = [r.rate for r in results]
    return best


# -- databases -----------------------------------------------------------------------


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` with ``search_path=schema`` in its query (asyncpg passes it as a setting)."""
    parts = urlsplit(dsn)
    query = f"{parts.query}&search_path={schema}" if parts.query else f"search_path={schema}"
    return urlunsplit(parts._replace(query=query))


async def create_schema(dsn: str, prefix: str = "t_bench_") -> str:
    schema = prefix + secrets.token_hex(4)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await connection.close()
    return schema


async def drop_schema(dsn: str, schema: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


# -- reports -------------------------------------------------------------------------


def block_head(command: str, *facts: str) -> list[str]:
    """The first lines of a results block: the command run and today's date, then each
    of ``facts`` (the machine, the configuration) as a paragraph."""
    lines = [f"`{command}` ({time.strftime('%Y-%m-%d')})", ""]
    for fact in facts:
        lines += [fact, ""]
    return lines


def publish(
    block: Sequence[str], *, write: bool, begin: str, end: str, heading: str | None = None
) -> None:
    """Print ``block``; with ``write``, also put it in docs/performance.md between the
    markers ``begin`` and ``end`` (replacing what they held). Without the markers it is
    appended at the end of the file, under ``heading`` when given and not in the file
    yet. Nothing else is touched."""
    print()
    print("\n".join(block))
    if not write:
        return
    text = DOC.read_text()
    body = "\n".join([begin, *block, end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + body + rest.split(end, 1)[1]
    elif heading is None or heading in text:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n" + body + "\n"
    DOC.write_text(text)
    print(f"\nwrote {DOC}")


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def ms(value: float) -> str:
    """Milliseconds with one decimal."""
    return f"{value:.1f} ms"


def med(values: Sequence[float]) -> float:
    """The median, NaN when there are no values."""
    return statistics.median(values) if values else float("nan")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> None:
    """A Markdown table (pastes straight into docs/performance.md); ``left`` text columns."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" if i < left else "---:" for i in range(len(headers))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


# -- the HTTP benchmarks' data, clients and server ------------------------------------

#: nts issues one such record per citizen; kbank reads it under a standing consent.
RECORD_TYPE = "income_certificate"
PURPOSE = "mortgage_screening"
RELEASED = ("year", "total_income", "employer")
RECORD_BYTES = 1024


@contextlib.contextmanager
def workspace(keep: bool, prefix: str) -> Iterator[Path]:
    """A temporary directory, removed on the way out unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def nid(i: int) -> str:
    """The resident registration number of citizen ``i`` (13 digits, up to 10**7)."""
    return f"900101{i:07d}"


def income_record(i: int, version: int = 1) -> dict[str, Any]:
    """A valid income certificate of citizen ``i`` whose compact JSON is RECORD_BYTES
    bytes (ASCII); each ``version`` has other content, so a later one is a new record."""
    data: dict[str, Any] = {
        "year": 2024 + version,
        "total_income": 30_000_000 + 1_000 * i + version - 1,
        "tax_paid": 1_000_000 + i,
        "employer": "",
    }
    size = len(json.dumps(data, separators=(",", ":")))
    data["employer"] = ("Example Electronics Co., Ltd. " * 64)[: RECORD_BYTES - size]
    return data


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def spread_indices(size: int, count: int | None) -> list[int]:
    """``count`` of the indices ``0..size-1`` spread evenly, the first (oldest) included;
    all of them when ``count`` is None or at least ``size``."""
    if count is None or count >= size:
        return list(range(size))
    return sorted({(k * size) // count for k in range(count)})


async def gather_bounded(limit: int, coros: Sequence[Any]) -> list[Any]:
    """``asyncio.gather`` with at most ``limit`` of ``coros`` running at once."""
    gate = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


def init_data_dir(
    data_dir: Path, env: dict[str, str], clients: Sequence[TestClient], jwks_dir: Path
) -> None:
    """``oncevault init`` on ``data_dir``, then ``oncevault clients add`` for each of
    ``clients`` (their JWKS files written to ``jwks_dir``)."""
    done = run_cli("init", "--data-dir", str(data_dir), env=env, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"oncevault init failed: {done.stderr}")
    for client in clients:
        jwks = jwks_dir / f"{client.client_id}.jwks.json"
        jwks.write_text(json.dumps(client.jwks))
        args = ["clients", "add", "--data-dir", str(data_dir), "--id", client.client_id]
        args += ["--name", client.client_id.upper(), "--kind", client.kind, "--jwks", str(jwks)]
        for role in client.roles:
            args += ["--role", role]
        done = run_cli(*args, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"clients add {client.client_id} failed: {done.stderr}")


async def client_token(
    http: httpx.AsyncClient,
    url: str,
    client: TestClient,
    consent_id: str | None = None,
    *,
    dpop: Callable[[], str] | None = None,
) -> str:
    """An access token for ``client`` from the server at ``url`` (``http``'s base URL),
    tried again on 503; ``dpop`` makes a fresh DPoP proof for each attempt (a
    DPoP-bound token, bench/dpop_reads.py)."""
    for attempt in range(5):
        form = client.token_form(url, consent_id=consent_id)
        headers = {"DPoP": dpop()} if dpop is not None else None
        response = await http.post("/oauth/token", data=form, headers=headers)
        if response.status_code == 200:
            return str(response.json()["access_token"])
        if response.status_code != 503 or attempt == 4:
            raise RuntimeError(f"token for {client.client_id}: {response.text}")
        await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


class Audited(Protocol):
    def audit_count(self) -> int: ...


def settle(system: Audited, *, quiet: float = 0.5, readings: int = 3, limit: float = 30.0) -> int:
    """The audit count once load has stopped: ``readings`` equal readings ``quiet`` s
    apart. Requests a stopped wrk left in flight still finish on the server; with cold
    keys (10⁵ citizens) some take most of a second, and an entry of the warm-up
    landing after the start snapshot would be counted against the measured run."""
    deadline = time.monotonic() + limit
    last, same = system.audit_count(), 1
    while time.monotonic() < deadline and same < readings:
        time.sleep(quiet)
        now = system.audit_count()
        same = same + 1 if now == last else 1
        last = now
    return last
