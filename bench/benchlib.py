"""Helpers shared by the benchmarks: machine line, percentiles, databases, phases.

Not a benchmark itself. Importing it puts the repository root on ``sys.path`` (so
``tests.fixtures.openbao`` and ``tests.independent_verifier`` import when a script
runs as ``.venv/bin/python bench/NAME.py``) and quiets structlog below warnings.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from api.logging import configure_logging  # noqa: E402

configure_logging(level="warning", json=True)

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


def code_version() -> str:
    """The commit measured, flagged when the code under test has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "status",
                "--porcelain",
                "-uno",
                "--",
                "api",
                "audit",
                "vault",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + uncommitted changes in api/audit/vault" if dirty else "")


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


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> None:
    """A Markdown table (pastes straight into docs/performance.md); ``left`` text columns."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" if i < left else "---:" for i in range(len(headers))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
