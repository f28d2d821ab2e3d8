"""Seal+store and fetch+open per second through VaultService, per engine and key provider.

Usage: .venv/bin/python bench/vault_records.py [--duration 10] [--citizens 200]
       [--types 2] [--concurrency 32] [--count N] [--engines sqlite,postgres]
       [--providers local,transit] [--repeat 1] [--postgres DSN]

For each engine (SQLite file in a temporary directory; PostgreSQL in a fresh schema
``t_bench_xxxx`` reached through ``DSN?search_path=t_bench_xxxx``, dropped afterwards)
and each key provider (``local`` KEK files; ``transit`` on an OpenBao dev server this
script starts), it builds the runtime the way the tests and ``serve`` do
(``Runtime.open``, ``Keyring.create_missing``, ``load_services``), resolves
``--citizens`` citizens, and runs these phases from ``--concurrency`` asyncio tasks:

* ``put, new DEK``   the first record of each (citizen, type): wraps a fresh DEK
                     (one transit encrypt each with ``transit``) and stores version 1;
* ``put``            distinct ~1 KiB records (canonical JSON 1,024 bytes) over the same
                     (citizen, type) pairs, DEK cache 60 s: each creates version n+1;
* ``read``           VaultService.read of a random (citizen, type), DEK cache 60 s;
* ``read, cache 0``  the same with the DEK cache off: one unwrap per read (a transit
                     decrypt round trip with ``transit``);
* ``unwrap alone``   ``--unwraps`` single-item KeyProvider.unwrap calls from one task,
                     no database: what one DEK cache miss costs by itself.

Every put and read appends its audit entry through the group commit (AuditLog.run),
so reads are database writes too. Timed phases run ``--duration`` seconds each, or
``--count`` calls each when given; ``--repeat N`` runs each timed phase N times and
keeps the fastest (these cores are shared: the spread of the repeats is printed too).
Postgres rows need ``--postgres`` or
ONCEVAULT_TEST_POSTGRES_DSN. Prints a Markdown table and a machine line. ``CPU/op`` is
this process's CPU time (every thread: event loop, aiosqlite, hvac) per call; the
PostgreSQL and OpenBao servers' CPU is not in it. ``units/commit`` is the average
group-commit batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from benchlib import (
    PhaseResult,
    best_of,
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
from api.runtime import Runtime, prepare_provider
from api.settings import load_settings
from tests.fixtures.openbao import OpenBaoServer
from vault import crypto
from vault.clock import SystemClock
from vault.keyring import Keyring
from vault.keys import UnwrapRequest
from vault.models import Subject
from vault.service import Actor, DekCache, VaultService

RECORD_BYTES = 1024
ISSUER = Actor("client", "nts", "req_bench")


def make_record(serial: int) -> dict[str, Any]:
    """A distinct record whose compact JSON is exactly RECORD_BYTES bytes."""
    rng = random.Random(serial)
    data: dict[str, Any] = {
        "serial": serial,
        "tax_year": 2025,
        "issuer": "National Tax Service",
        "holder": {"name": "Hong Gildong", "born": "1990-01-01"},
        "address": {
            "line1": f"{rng.randrange(1, 999)} Sejong-daero",
            "city": "Seoul",
            "postcode": f"{rng.randrange(10000, 99999)}",
        },
        "employer": {"name": "Example Co., Ltd.", "registration": f"{rng.randrange(10**9):010d}"},
        "monthly_income_krw": [rng.randrange(2_000_000, 9_000_000) for _ in range(12)],
        "deductions_krw": {
            "insurance": rng.randrange(10**6),
            "medical": rng.randrange(10**6),
            "education": rng.randrange(10**6),
        },
        "memo": "",
    }
    size = len(json.dumps(data, separators=(",", ":")).encode())
    data["memo"] = secrets.token_hex(RECORD_BYTES)[: RECORD_BYTES - size]
    return data


def ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def nid(i: int) -> str:
    return f"900101{i:07d}"


@asynccontextmanager
async def open_vault(
    engine: str,
    provider: str,
    workdir: Path,
    *,
    postgres_dsn: str,
    bao: OpenBaoServer | None,
) -> AsyncIterator[tuple[Runtime, VaultService]]:
    flags: dict[str, str] = {
        "ONCEVAULT_KEK_DIR": str(workdir / "keys"),
        "ONCEVAULT_DEK_CACHE_SECONDS": "60",
    }
    schema = None
    if engine == "postgres":
        schema = await create_schema(postgres_dsn)
        flags["ONCEVAULT_DATABASE_URL"] = with_search_path(postgres_dsn, schema)
    if provider == "transit":
        assert bao is not None
        flags |= {
            "ONCEVAULT_KEY_PROVIDER": "transit",
            "VAULT_ADDR": bao.addr,
            "VAULT_TOKEN": bao.token,
            "ONCEVAULT_TRANSIT_KEY": "bench-" + secrets.token_hex(4),
        }
    settings = load_settings(flags, {}, data_dir_flag=str(workdir / "data"))
    clock = SystemClock()
    database = open_database(settings.database)
    runtime: Runtime | None = None
    try:
        await database.start(create=True)
        await migrate(database)
        runtime = await Runtime.open(
            settings, database=database, clock=clock, create=True, load_keys=False
        )
        await prepare_provider(settings, runtime.keys, runtime.ledger, create=True)
        await Keyring.create_missing(
            repo=runtime.repo,
            keys=runtime.keys,
            audit=runtime.audit,
            clock=clock,
        )
        await runtime.load_services()
        assert runtime.vault is not None
        yield runtime, runtime.vault
    finally:
        if runtime is not None:
            await runtime.close()
        else:
            await database.close()
        if schema is not None:
            await drop_schema(postgres_dsn, schema)


async def bench_one(
    engine: str, provider: str, args: argparse.Namespace, bao: OpenBaoServer | None
) -> list[tuple[PhaseResult, float]]:
    """Returns each phase with its average group-commit batch size."""
    count = args.count or None
    duration = None if count else float(args.duration)
    types = [f"bench_type_{t}" for t in range(args.types)]
    results: list[tuple[PhaseResult, float]] = []
    with tempfile.TemporaryDirectory(prefix="oncevault-bench-") as tmp:
        async with open_vault(engine, provider, Path(tmp), postgres_dsn=args.postgres, bao=bao) as (
            runtime,
            vault,
        ):
            audit = runtime.audit

            async def measured(
                name: str, phase: Callable[[], Awaitable[PhaseResult]], repeat: int = args.repeat
            ) -> None:
                batches, units = audit.batches, audit.committed_units
                result = await best_of(repeat, phase)
                result.name = name
                done = audit.batches - batches
                results.append((result, (audit.committed_units - units) / done if done else 0))
                print(
                    f"  {engine:<8} {provider:<8} {name:<16} {result.rate:>8,.0f}/s"
                    f"  p50 {result.p(0.5):7.2f} ms  p99 {result.p(0.99):7.2f} ms"
                    + (f"  (repeats {result.spread()}/s)" if result.spread() else ""),
                    flush=True,
                )

            citizens = list(
                await asyncio.gather(
                    *(vault.resolve(Subject("nid", nid(i))) for i in range(args.citizens))
                )
            )
            pairs = [(c, t) for c in citizens for t in types]
            serial = iter(range(10**9))

            async def put(i: int) -> None:
                citizen, record_type = pairs[i % len(pairs)]
                result = await vault.put(
                    citizen_id=citizen,
                    record_type=record_type,
                    data=make_record(next(serial)),
                    source="nts",
                    actor=ISSUER,
                )
                assert result.created

            rng = random.Random(7)

            async def read(_: int) -> None:
                citizen, record_type = rng.choice(pairs)
                await vault.read(citizen_id=citizen, record_type=record_type, actor=ISSUER)

            await measured(
                "put, new DEK",
                lambda: run_phase(
                    "put, new DEK", put, concurrency=args.concurrency, count=len(pairs)
                ),
                repeat=1,  # the DEKs exist after the first run
            )
            await measured(
                "put",
                lambda: run_phase(
                    "put", put, concurrency=args.concurrency, duration=duration, count=count
                ),
            )
            await measured(
                "read",
                lambda: run_phase(
                    "read", read, concurrency=args.concurrency, duration=duration, count=count
                ),
            )
            cache = vault.cache
            vault.cache = DekCache(clock=vault.clock, ttl_seconds=0)
            try:
                await measured(
                    "read, cache 0",
                    lambda: run_phase(
                        "read, cache 0",
                        read,
                        concurrency=args.concurrency,
                        duration=duration,
                        count=count,
                    ),
                )
            finally:
                vault.cache = cache

            # What one DEK cache miss costs by itself: a single-item unwrap, no database.
            deks = [await vault.repo.current_dek(c, t) for c, t in pairs[:50]]
            requests = [
                UnwrapRequest(
                    d.citizen_id,
                    d.wrapped,
                    crypto.wrap_aad(d.citizen_id, d.record_type, d.dek_version),
                )
                for d in deks
                if d is not None
            ]

            async def unwrap(i: int) -> None:
                await runtime.keys.unwrap([requests[i % len(requests)]])

            await measured(
                "unwrap alone",
                lambda: run_phase("unwrap alone", unwrap, concurrency=1, count=args.unwraps),
            )
    return results


async def main_async(args: argparse.Namespace) -> None:
    engines = [e for e in args.engines.split(",") if e]
    providers = [p for p in args.providers.split(",") if p]
    if "postgres" in engines and not args.postgres:
        print("no --postgres DSN (or ONCEVAULT_TEST_POSTGRES_DSN): skipping PostgreSQL")
        engines.remove("postgres")
    print(await machine_line(args.postgres if "postgres" in engines else "", bao=True))
    timing = f"{args.count} calls" if args.count else f"{args.duration} s"
    if args.repeat > 1:
        timing += f", best of {args.repeat} runs"
    print(
        f"{args.citizens} citizens x {args.types} types, {args.concurrency} concurrent tasks,"
        f" {RECORD_BYTES} B records, timed phases {timing} each"
    )
    bao = None
    rows: list[list[str]] = []
    try:
        if "transit" in providers:
            bao_dir = Path(tempfile.mkdtemp(prefix="oncevault-bench-bao-"))
            bao = OpenBaoServer(bao_dir, "dev", transit=True)
            bao.start()
        for engine in engines:
            for provider in providers:
                started = time.perf_counter()
                for result, batch in await bench_one(engine, provider, args, bao):
                    rows.append(
                        [
                            engine,
                            provider,
                            result.name,
                            fmt_rate(result.rate),
                            ms(result.p(0.5)),
                            ms(result.p(0.99)),
                            ms(result.cpu_ms_per_op),
                            f"{batch:.1f}" if batch else "-",
                            f"{result.ops:,}"
                            + (f" ({result.errors} failed)" if result.errors else ""),
                            result.spread() or "-",
                        ]
                    )
                print(f"  ({engine}/{provider} took {time.perf_counter() - started:.0f} s)")
    finally:
        if bao is not None:
            bao.stop()
            shutil.rmtree(bao.workdir, ignore_errors=True)
    print()
    print_table(
        [
            "engine",
            "provider",
            "operation",
            "ops/s",
            "p50",
            "p99",
            "CPU/op",
            "units/commit",
            "calls",
            "repeats ops/s",
        ],
        rows,
        left=3,
    )
    print(load_line())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10, help="seconds per timed phase")
    parser.add_argument("--count", type=int, default=0, help="calls per timed phase instead")
    parser.add_argument("--citizens", type=int, default=200)
    parser.add_argument("--types", type=int, default=2, help="record types per citizen")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each timed phase N times, keep the fastest"
    )
    parser.add_argument("--unwraps", type=int, default=300, help="calls of the unwrap phase")
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--providers", default="local,transit")
    parser.add_argument("--postgres", default=default_postgres_dsn(), help="PostgreSQL DSN")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
