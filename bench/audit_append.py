"""Audit appends per second: group commit (AuditLog.run) against one transaction per append.

Usage: .venv/bin/python bench/audit_append.py [--duration 5] [--producers 1,8,32,128]
       [--repeat 1] [--engines sqlite,postgres] [--postgres DSN]

On each engine (SQLite file in a temporary directory; PostgreSQL in a fresh schema
``t_bench_xxxx`` via ``DSN?search_path=``, dropped afterwards), against a freshly
migrated database:

* ``group commit, N producers``: N asyncio tasks each submit, in a loop, a unit of
  work that does nothing but return one ``data.read`` entry; AuditLog.run commits
  whatever units queued up together (max_batch 256), savepoint per unit;
* ``transaction per append, 1 task``: ``async with db.transaction(): await
  audit.append([draft])`` in a sequential loop (what a caller without group commit
  gets: one COMMIT, hence one fsync on SQLite, per entry);
* ``transaction per append, N tasks`` (``--concurrent-direct N``, default 16): the
  same from N tasks at once, contending for the SQLite write lock (busy handler) or
  the ``audit_state`` row lock (PostgreSQL).

Each mode runs ``--duration`` seconds on its own fresh database. ``CPU/append`` is this
process's CPU time per append (not the PostgreSQL server's). ``--repeat N`` runs each
row N times (a fresh database each time) and keeps the fastest; the spread is printed. Afterwards the whole
log is checked: ``audit_state`` size equals the entry count, and its root equals the
root that ``tests/independent_verifier.py`` computes from every stored leaf.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from benchlib import (
    PhaseResult,
    create_schema,
    default_postgres_dsn,
    drop_schema,
    fmt_rate,
    load_line,
    machine_line,
    print_table,
    run_phase,
    with_search_path,
)

from api.db import migrate, open_database
from api.settings import DatabaseURL
from audit.log import AuditLog
from audit.models import EntryDraft, Item
from tests import independent_verifier as ref
from vault.clock import SystemClock
from vault.storage import Database


def draft(i: int) -> EntryDraft:
    """A realistic consumer read entry (the most frequent action in production)."""
    return EntryDraft(
        action="data.read",
        actor_type="client",
        actor_id=f"bank_{i % 17}",
        citizen_id=f"cit_{i % 5000:026d}",
        client_id=f"bank_{i % 17}",
        consent_id=f"con_{i % 9000:026d}",
        purpose="loan_screening",
        record_type="income_certificate",
        record_version=1 + i % 4,
        items=(Item("income_certificate", 1 + i % 4, ("annual_income", "tax_year")),),
        request_id=f"req_{i:026d}",
    )


@asynccontextmanager
async def fresh_database(engine: str, workdir: Path, postgres_dsn: str) -> AsyncIterator[Database]:
    schema = None
    if engine == "sqlite":
        path = workdir / "audit.sqlite"
        url = DatabaseURL(dialect="sqlite", url=f"sqlite:///{path}", sqlite_path=path)
    else:
        schema = await create_schema(postgres_dsn)
        url = DatabaseURL(dialect="postgres", url=with_search_path(postgres_dsn, schema))
    database = open_database(url)
    try:
        await database.start(create=True)
        await migrate(database)
        yield database
    finally:
        await database.close()
        if schema is not None:
            await drop_schema(postgres_dsn, schema)


async def check_log(database: Database, audit: AuditLog) -> None:
    """The appended log is whole: contiguous seqs and the independently computed root."""
    state = await audit.state()
    rows = await database.fetch("SELECT seq, leaf FROM audit_entries ORDER BY seq")
    seqs = [int(r["seq"]) for r in rows]
    if seqs != list(range(state.size)):
        raise SystemExit(f"audit log broken: {len(seqs)} entries for size {state.size}")
    if ref.root_from_leaves([bytes(r["leaf"]) for r in rows]) != state.root_hash:
        raise SystemExit("audit log broken: root differs from the independent verifier")


async def bench_mode(
    engine: str, mode: str, producers: int, args: argparse.Namespace
) -> tuple[PhaseResult, int]:
    """One mode on a fresh database; returns the phase and the number of commits."""
    with tempfile.TemporaryDirectory(prefix="oncevault-bench-audit-") as tmp:
        async with fresh_database(engine, Path(tmp), args.postgres) as database:
            audit = AuditLog(database=database, clock=SystemClock())

            async def via_group_commit(i: int) -> None:
                async def work() -> tuple[None, Sequence[EntryDraft]]:
                    return None, [draft(i)]

                await audit.run(work)

            commits = 0

            async def direct(i: int) -> None:
                nonlocal commits
                async with database.transaction():
                    await audit.append([draft(i)])
                commits += 1

            op = via_group_commit if mode == "group" else direct
            result = await run_phase(mode, op, concurrency=producers, duration=float(args.duration))
            await audit.close()
            await check_log(database, audit)
            return result, audit.batches if mode == "group" else commits


async def main_async(args: argparse.Namespace) -> None:
    engines = [e for e in args.engines.split(",") if e]
    if "postgres" in engines and not args.postgres:
        print("no --postgres DSN (or ONCEVAULT_TEST_POSTGRES_DSN): skipping PostgreSQL")
        engines.remove("postgres")
    print(await machine_line(args.postgres if "postgres" in engines else ""))
    best = f", best of {args.repeat}" if args.repeat > 1 else ""
    print(
        f"one data.read entry per append, {args.duration} s per run{best}, fresh database per run"
    )
    producer_counts = [int(n) for n in args.producers.split(",") if n]
    plan: list[tuple[str, int]] = [("group", n) for n in producer_counts]
    plan.append(("direct", 1))
    if args.concurrent_direct > 1:
        plan.append(("direct", args.concurrent_direct))
    rows: list[list[str]] = []
    for engine in engines:
        for mode, producers in plan:
            runs = [await bench_mode(engine, mode, producers, args) for _ in range(args.repeat)]
            result, commits = max(runs, key=lambda run: run[0].rate)
            result.rates = [run[0].rate for run in runs]
            label = (
                f"group commit, {producers} producers"
                if mode == "group"
                else f"transaction per append, {producers} task{'s' if producers > 1 else ''}"
            )
            print(
                f"  {engine:<8} {label:<36} {result.rate:>8,.0f}/s"
                f"  p50 {result.p(0.5):7.2f} ms  p99 {result.p(0.99):7.2f} ms"
                f"  commits {commits:,}"
                + (f"  (repeats {result.spread()}/s)" if result.spread() else ""),
                flush=True,
            )
            rows.append(
                [
                    engine,
                    label,
                    fmt_rate(result.rate),
                    f"{result.p(0.5):.2f} ms",
                    f"{result.p(0.99):.2f} ms",
                    f"{result.cpu_ms_per_op:.2f} ms",
                    f"{commits:,}",
                    f"{result.ops / commits:.1f}" if commits else "-",
                    result.spread() or "-",
                ]
            )
    print()
    print_table(
        [
            "engine",
            "mode",
            "appends/s",
            "p50",
            "p99",
            "CPU/append",
            "commits",
            "entries/commit",
            "repeats",
        ],
        rows,
        left=2,
    )
    print(load_line())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5, help="seconds per row")
    parser.add_argument("--producers", default="1,8,32,128", help="group-commit producer counts")
    parser.add_argument(
        "--concurrent-direct", type=int, default=16, help="tasks for the concurrent direct row"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per row, keep the fastest")
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--postgres", default=default_postgres_dsn(), help="PostgreSQL DSN")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
