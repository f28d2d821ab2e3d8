"""What bulk issuance costs in-process: ``RecordIntake.issue_many`` (the call behind
``POST /v1/records:batch``) on an otherwise idle event loop.

The served figure (``bench/scale.py``, ``make bench-scale``) moves with whatever else
shares the two cores; this one measures the intake, vault and audit path alone, with
the services ``oncevault serve`` builds (local KEK, SQLite WAL ``synchronous=FULL``):
``--batches`` calls of 1,000 records each to new citizens (a new DEK each), then the
same citizens again with other content (a new version under the cached DEK). Prints
records/s and this process's CPU per record for each phase.

Usage: ``.venv/bin/python bench/bulk_batch.py [--batches 20] [--profile out.pstats]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import RECORD_TYPE, income_record, nid
from bench.read_batch import open_store
from consent.intake import IssueRequest, RecordIntake
from tests.helpers.clients import TestClient, register
from tests.helpers.runtime import local_settings, open_runtime
from vault.clock import Clock, ManualClock
from vault.service import Actor, PutResult

BATCH = 1_000
#: The issuer every in-process bulk tool issues as.
ISSUER_ID = "nts"
ISSUER = Actor("client", ISSUER_ID, None)


@contextlib.asynccontextmanager
async def issuer_intake(
    args: argparse.Namespace, tmp_path: Path, clock: Clock
) -> AsyncIterator[RecordIntake]:
    """The services ``oncevault serve`` builds, on a migrated store in ``tmp_path``
    (``args.postgres``, ``args.synchronous``: :func:`bench.read_batch.open_store`), with
    the issuer ``nts`` registered: its record intake, closed (database too) on exit."""
    database, _ = await open_store(args, tmp_path)
    runtime = await open_runtime(local_settings(tmp_path), database, clock)
    try:
        await register(runtime, TestClient(ISSUER_ID, roles=("issuer",)))
        assert runtime.intake is not None
        yield runtime.intake
    finally:
        await runtime.close(database=True)


async def issue_income(
    intake: RecordIntake, citizens: Iterable[int], content: int, *, version: int
) -> None:
    """One ``issue_many`` call as ``nts``: an income record (content ``i + content``) to
    each citizen ``i`` of ``citizens``; raises unless each became version ``version``."""
    results = await intake.issue_many(
        client_id=ISSUER_ID,
        records=[
            IssueRequest({"nid": nid(i)}, RECORD_TYPE, income_record(i + content)) for i in citizens
        ],
        actor=ISSUER,
    )
    for result in results:
        if not isinstance(result, PutResult) or result.version != version:
            raise RuntimeError(f"expected version {version}, got {result}")


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with issuer_intake(args, Path(tmp), ManualClock()) as intake:

            async def batch(first: int, content: int, *, version: int) -> None:
                await issue_income(intake, range(first, first + BATCH), content, version=version)

            await batch(0, 0, version=1)  # warm-up: statements prepared, code paths hot
            profiler = cProfile.Profile() if args.profile else None
            for phase, content, version in (("new citizens", 0, 1), ("new versions", 7, 2)):
                if profiler is not None and version == 1:
                    profiler.enable()
                wall, cpu = time.perf_counter(), time.process_time()
                for b in range(1, args.batches + 1):
                    await batch(b * BATCH, content, version=version)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if profiler is not None and version == 1:
                    profiler.disable()
                    profiler.dump_stats(args.profile)
                records = args.batches * BATCH
                print(
                    f"{phase}: {records:,} records, {records / wall:,.0f} records/s,"
                    f" {cpu / records * 1e6:.1f} µs of CPU a record"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--profile", help="write cProfile stats of the new-citizens phase here")
    args = parser.parse_args()
    args.postgres = None
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
