"""What a batch of consented reads costs while it holds the write lock, in-process.

Under the served headline load (``bench/vs_openbao.py``) SQLite's write lock is held
~85 % of the time and the two workers' batches take turns on it, so the reads/s are
bounded by how long a batch holds it: the event loop's work inside the transaction
(loads, each unit's decision, the deferred writes, the append) and the COMMIT. This
script measures exactly that work on an otherwise idle event loop, with the
services ``oncevault serve`` builds (local KEK, SQLite WAL), far from the machine's
noise that moves the served numbers by ±25 %:

* ``CONCURRENCY`` reads (``DataReader.read``, the call behind ``GET /v1/data/{type}``,
  with the rate-limit gate the route passes) are started together, so they meet in
  one batch, ``--batches`` times, over ``--citizens`` consented citizens;
* the event loop's CPU (``time.thread_time``) inside the batch's transaction, from
  its first statement to the COMMIT, is reported per batch and per read, with the
  whole read's loop CPU and the COMMIT's wall time.

Usage: ``.venv/bin/python bench/read_batch.py [--batches 400] [--concurrency 24]
[--vary] [--synchronous FULL] [--postgres DSN] [--profile out.pstats]``. On
PostgreSQL the machine's CPU per read (its backends included) is the figure to watch:
the loop waits for round trips inside the transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import random
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from api.db import migrate, open_database
from api.runtime import Runtime
from api.settings import DatabaseURL
from bench.benchlib import RECORD_TYPE, RELEASED, income_record, machine_busy_seconds
from consent.tokens import SignedToken
from tests.helpers.clients import TestClient, register
from tests.helpers.reads import citizen_with_consent
from tests.helpers.runtime import local_settings, open_runtime
from vault import storage
from vault.clock import ManualClock

TYPE = RECORD_TYPE


class InLock:
    """Times each transaction of the database: the loop's CPU from its first statement
    to its end, and the wall time of its end (the COMMIT, wherever it runs); wraps
    ``Database.transaction`` of this one object."""

    def __init__(self, database: storage.Database) -> None:
        self.cpu: list[float] = []
        self.commit: list[float] = []
        #: Wall time from BEGIN done to COMMIT done: on PostgreSQL, how long the batch
        #: holds the tree lock (its round trips included).
        self.wall: list[float] = []
        original = database.transaction
        timer = self

        @asynccontextmanager
        async def timed(*, write: bool = True) -> Any:
            async with original(write=write):
                started, begun = time.thread_time(), time.perf_counter()
                yield
                timer.cpu.append(time.thread_time() - started)
                ending = time.perf_counter()
            timer.commit.append(time.perf_counter() - ending)
            timer.wall.append(time.perf_counter() - begun)

        database.transaction = timed  # type: ignore[method-assign]

    def reset(self) -> None:
        self.cpu.clear()
        self.commit.clear()
        self.wall.clear()


async def seed(runtime: Runtime, citizens: int) -> list[str]:
    """``kbank`` registered; each citizen with a ~1 KiB record and an approved consent."""
    await register(runtime, TestClient("kbank"))
    return [
        await citizen_with_consent(runtime, n, data=income_record(n), fields=RELEASED)
        for n in range(citizens)
    ]


def token(consent_id: str) -> SignedToken:
    return SignedToken(
        client_id="kbank",
        jti=secrets.token_urlsafe(12),
        scope=frozenset({"consumer"}),
        consent_id=consent_id,
        expires_at=2**40,
        proof_use=None,
    )


async def open_store(args: argparse.Namespace, tmp_path: Path) -> tuple[storage.Database, str]:
    """A migrated database: a SQLite file in ``tmp_path``, or a new schema on
    ``--postgres`` (returned, to drop)."""
    if args.postgres is None:
        path = tmp_path / "oncevault.sqlite"
        database = open_database(
            DatabaseURL(dialect="sqlite", url=f"sqlite:///{path}", sqlite_path=path),
            sqlite_synchronous=args.synchronous,
        )
        await database.start(create=True)
    else:
        schema = "read_batch_" + secrets.token_hex(4)
        connection = await asyncpg.connect(args.postgres)
        try:
            await connection.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await connection.close()
        database = open_database(
            DatabaseURL(dialect="postgres", url=args.postgres), schema=schema, pool_size=10
        )
        await database.start()
    await migrate(database)
    return database, "" if args.postgres is None else schema


async def drop_store(args: argparse.Namespace, schema: str) -> None:
    if schema:
        connection = await asyncpg.connect(args.postgres)
        try:
            await connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await connection.close()


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        database, schema = await open_store(args, tmp_path)
        settings = local_settings(tmp_path, ONCEVAULT_RATE_LIMIT_PER_MINUTE="10000000")
        runtime = await open_runtime(settings, database, ManualClock())
        try:
            consent_ids = await seed(runtime, args.citizens)
            reader = runtime.reader
            limiter = runtime.rate_limiter
            assert reader is not None and limiter is not None
            tokens = [token(c) for c in consent_ids]  # one per citizen, reused
            timer = InLock(database)

            async def gate() -> Any:
                decision = await limiter.hit_here("kbank", "read")
                return None if decision.allowed else RuntimeError("rate limited")

            async def one(i: int) -> None:
                t = tokens[i % len(tokens)]
                result = await reader.read(
                    consent_id=t.consent_id or "",
                    token=t,
                    role="consumer",
                    types=[TYPE],
                    request_id="req_" + str(i),
                    gate=gate,
                )
                assert result.items, "a read released nothing"

            sizes = random.Random(7)

            def size() -> int:
                # --vary: batch sizes spread around the concurrency, as the server's
                # are (each size is another statement text for the IN lists).
                if not args.vary:
                    return int(args.concurrency)
                return sizes.randint(1, 2 * args.concurrency - 1)

            async def batches(count: int, offset: int) -> tuple[float, int]:
                start, reads = time.thread_time(), 0
                for _ in range(count):
                    n = size()
                    await asyncio.gather(*(one(offset + reads + k) for k in range(n)))
                    reads += n
                return time.thread_time() - start, reads

            await batches(20, 0)  # warm-up: DEKs unwrapped, signatures and statements cached
            timer.reset()
            profiler = cProfile.Profile() if args.profile else None
            if profiler is not None:
                profiler.enable()
            wall, machine = time.perf_counter(), machine_busy_seconds()
            loop_cpu, reads = await batches(args.batches, 10_000)
            wall, machine = time.perf_counter() - wall, machine_busy_seconds() - machine
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
            in_tx = list(timer.cpu)
            print(
                f"{reads} reads in {len(in_tx)} transactions ({reads / len(in_tx):.1f} reads each),"
                f" {reads / wall:,.0f} reads/s on one idle loop"
            )
            print(
                f"in the transaction (loop CPU): median {statistics.median(in_tx) * 1e3:.3f} ms"
                f" a batch, {sum(in_tx) / reads * 1e6:.1f} µs a read"
            )
            print(
                f"in the transaction (wall, BEGIN done to COMMIT done): median"
                f" {statistics.median(timer.wall) * 1e3:.3f} ms a batch,"
                f" {sum(timer.wall) / reads * 1e6:.1f} µs a read"
            )
            commits = sorted(timer.commit)
            print(
                f"COMMIT wall: median {statistics.median(commits) * 1e3:.3f} ms,"
                f" p90 {commits[int(len(commits) * 0.9)] * 1e3:.3f} ms,"
                f" max {commits[-1] * 1e3:.3f} ms, total {sum(commits):.3f} s;"
                f" whole read, loop CPU: {loop_cpu / reads * 1e6:.1f} µs"
            )
            print(
                f"machine CPU (this process, the database's and anything else running):"
                f" {machine / reads * 1e6:.1f} µs a read"
            )
        finally:
            await runtime.close(database=True)
            await drop_store(args, schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--citizens", type=int, default=100)
    parser.add_argument(
        "--vary", action="store_true", help="batch sizes from 1 to 2 x concurrency - 1"
    )
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--postgres", help="a DSN: run on a new schema there instead of SQLite")
    parser.add_argument("--profile", help="write cProfile stats of the measured batches here")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
