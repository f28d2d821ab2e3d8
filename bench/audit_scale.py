"""Proof generation on a 1,000,000-entry audit log (``make bench-scale``; not part of make test).

Usage: .venv/bin/python bench/audit_scale.py [--entries 1000000] [--batch 10000]
       [--proofs 1000] [--verify 100] [--full-check] [--postgres DSN [--keep-postgres]]

Build (once): a SQLite file ``bench/results/audit_<entries>.sqlite`` (gitignored) is
filled through the real append path, AuditLog.append inside ``db.transaction()``, with
``--batch`` drafts per append (one transaction each), so leaves, stored subtree hashes
and the tree state are exactly what the service writes. An existing file is reused
and, if a previous build was interrupted, completed. After a build (or with
``--full-check``) every leaf is read back and the root recomputed with
``tests/independent_verifier.py`` and compared with ``audit_state``.

Measure: ``--proofs`` inclusion proofs (AuditLog.inclusion_proof) for random seqs at
tree size ``--entries`` and as many consistency proofs (AuditLog.consistency_proof)
from a random size to ``--entries``, one at a time, each timed alone; the same
inclusion proofs again inside one open read transaction (no connection per query on
SQLite); ``--verify`` of each kind are checked with the independent verifier.

``--postgres DSN`` repeats build and measurements in schema ``bench_audit_<entries>``
of that database (dropped at the end unless ``--keep-postgres``; reused when kept).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from benchlib import (
    ROOT,
    drop_schema,
    load_line,
    machine_line,
    percentile,
    print_table,
    with_search_path,
)

from api.db import migrate, open_database
from api.settings import DatabaseURL
from audit.log import AuditLog
from audit.models import EntryDraft, Item
from tests import independent_verifier as ref
from vault.clock import SystemClock
from vault.storage import Database

RESULTS = ROOT / "bench" / "results"
ACTIONS = ("data.read", "record.put", "consent.approved", "token.issued")


def draft(i: int) -> EntryDraft:
    """A varied but realistic entry; ``data.read`` (with items) is every other one."""
    action = ACTIONS[0] if i % 2 == 0 else ACTIONS[1 + i % 3]
    reader = action in ("data.read", "token.issued")
    return EntryDraft(
        action=action,
        actor_type="client",
        actor_id=f"client_{i % 37}",
        citizen_id=f"cit_{(i * 7919) % 200_000:026d}",
        client_id=f"client_{i % 37}" if reader else None,
        consent_id=f"con_{i % 150_000:026d}" if reader else None,
        purpose="loan_screening" if reader else None,
        record_type="income_certificate",
        record_version=1 + i % 5,
        items=(
            (Item("income_certificate", 1 + i % 5, ("annual_income", "tax_year")),)
            if action == "data.read"
            else None
        ),
        request_id=f"req_{i:026d}",
    )


@asynccontextmanager
async def sqlite_database(path: Path) -> AsyncIterator[Database]:
    url = DatabaseURL(dialect="sqlite", url=f"sqlite:///{path}", sqlite_path=path)
    database = open_database(url)
    try:
        await database.start(create=True)
        await migrate(database)
        yield database
    finally:
        await database.close()


@asynccontextmanager
async def postgres_database(dsn: str, schema: str, *, keep: bool) -> AsyncIterator[Database]:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    finally:
        await connection.close()
    url = DatabaseURL(dialect="postgres", url=with_search_path(dsn, schema))
    database = open_database(url)
    try:
        await database.start()
        await migrate(database)
        yield database
    finally:
        await database.close()
        if not keep:
            await drop_schema(dsn, schema)


async def build(database: Database, audit: AuditLog, entries: int, batch: int) -> bool:
    """Append until the log holds ``entries``; True when anything was appended."""
    size = (await audit.state()).size
    if size > entries:
        raise SystemExit(f"the log already holds {size:,} entries, more than {entries:,}")
    if size == entries:
        print(f"  reusing a log of {size:,} entries")
        return False
    print(f"  building: {size:,} -> {entries:,} entries, {batch:,} per append", flush=True)
    started = time.perf_counter()
    first = size
    last_report = started
    while size < entries:
        drafts = [draft(i) for i in range(size, min(size + batch, entries))]
        async with database.transaction():
            stored = await audit.append(drafts)
        size = stored[-1].seq + 1
        now = time.perf_counter()
        if now - last_report > 15 or size == entries:
            rate = (size - first) / (now - started)
            print(f"    {size:>10,} entries  {rate:,.0f}/s  {now - started:,.0f} s", flush=True)
            last_report = now
    elapsed = time.perf_counter() - started
    print(f"  built {entries - first:,} entries in {elapsed:,.0f} s", flush=True)
    return True


async def full_check(database: Database, audit: AuditLog) -> float:
    """Recompute the root from every stored leaf with the independent verifier."""
    started = time.perf_counter()
    state = await audit.state()
    hashes: list[bytes] = []
    after = -1
    async with database.transaction(write=False):
        while True:
            rows = await database.fetch(
                "SELECT seq, leaf, leaf_hash FROM audit_entries WHERE seq > $1"
                " ORDER BY seq LIMIT 50000",
                after,
            )
            if not rows:
                break
            for row in rows:
                digest = ref.leaf_hash(bytes(row["leaf"]))
                if digest != bytes(row["leaf_hash"]) or int(row["seq"]) != len(hashes):
                    raise SystemExit(f"full check: bad leaf at seq {row['seq']}")
                hashes.append(digest)
            after = int(rows[-1]["seq"])
    if len(hashes) != state.size:
        raise SystemExit(f"full check: {len(hashes):,} leaves for tree size {state.size:,}")
    if ref.root_from_leaf_hashes(hashes) != state.root_hash:
        raise SystemExit("full check: the independent root differs from audit_state")
    return time.perf_counter() - started


async def timed(
    n: int, call: Callable[[int], Awaitable[object]]
) -> tuple[list[float], list[object]]:
    latencies: list[float] = []
    results: list[object] = []
    for i in range(n):
        t0 = time.perf_counter()
        results.append(await call(i))
        latencies.append(time.perf_counter() - t0)
    return latencies, results


def row(engine: str, name: str, latencies: list[float]) -> list[str]:
    ms = sorted(x * 1000 for x in latencies)
    return [
        engine,
        name,
        f"{len(ms):,}",
        f"{sum(ms) / len(ms):.2f} ms",
        f"{percentile(ms, 0.5):.2f} ms",
        f"{percentile(ms, 0.99):.2f} ms",
        f"{ms[-1]:.2f} ms",
    ]


async def measure(
    engine: str, database: Database, audit: AuditLog, args: argparse.Namespace
) -> list[list[str]]:
    state = await audit.state()
    size = state.size
    root = state.root_hash
    rng = random.Random(20261126)
    seqs = [rng.randrange(size) for _ in range(args.proofs)]
    firsts = [rng.randrange(1, size) for _ in range(args.proofs)]
    rows: list[list[str]] = []

    # Warm the page cache / shared buffers the same way for every kind.
    for seq in seqs[:20]:
        await audit.inclusion_proof(seq, size)

    latencies, proofs = await timed(args.proofs, lambda i: audit.inclusion_proof(seqs[i], size))
    rows.append(row(engine, f"inclusion proof at size {size:,}", latencies))
    async with database.transaction(write=False):
        latencies, _ = await timed(args.proofs, lambda i: audit.inclusion_proof(seqs[i], size))
    rows.append(row(engine, "inclusion proof, one open read transaction", latencies))
    latencies, cproofs = await timed(
        args.proofs, lambda i: audit.consistency_proof(firsts[i], size)
    )
    rows.append(row(engine, f"consistency proof, random size to {size:,}", latencies))

    verified = 0
    for i in range(min(args.verify, args.proofs)):
        entry = await audit.repo.entry(seqs[i])
        assert entry is not None
        proof = proofs[i]
        assert isinstance(proof, list)
        ref.verify_inclusion(ref.leaf_hash(entry.leaf), seqs[i], size, proof, root)
        cproof = cproofs[i]
        assert isinstance(cproof, list)
        ref.verify_consistency(firsts[i], size, cproof, await audit.root_at(firsts[i]), root)
        verified += 1
    # The stored subtrees give the stored root.
    if await audit.root_at(size) != root:
        raise SystemExit("root_at(size) differs from audit_state")
    sample = [len(p) for p in proofs if isinstance(p, list)]
    print(
        f"  {engine}: {verified} inclusion and {verified} consistency proofs verified"
        f" independently; inclusion proof length {min(sample)}-{max(sample)} hashes",
        flush=True,
    )
    return rows


async def run_engine(engine: str, database: Database, args: argparse.Namespace) -> list[list[str]]:
    audit = AuditLog(database=database, clock=SystemClock())
    built = await build(database, audit, args.entries, args.batch)
    if built or args.full_check:
        seconds = await full_check(database, audit)
        print(f"  full check: independent root over every leaf matches ({seconds:.0f} s)")
    return await measure(engine, database, audit, args)


async def main_async(args: argparse.Namespace) -> None:
    print(await machine_line(args.postgres))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = args.sqlite or RESULTS / f"audit_{args.entries}.sqlite"
    rows: list[list[str]] = []
    print(f"sqlite: {path}")
    async with sqlite_database(path) as database:
        rows += await run_engine("sqlite", database, args)
    size_mb = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
    print(f"  file size {size_mb:,.0f} MiB (with -wal/-shm)")
    if args.postgres:
        schema = f"bench_audit_{args.entries}"
        print(f"postgres: schema {schema}")
        async with postgres_database(args.postgres, schema, keep=args.keep_postgres) as database:
            rows += await run_engine("postgres", database, args)
            got = await database.fetchrow(
                "SELECT pg_total_relation_size('audit_entries') + pg_total_relation_size("
                "'audit_nodes') AS b"
            )
            if got:
                print(f"  audit tables {int(got['b']) / 2**20:,.0f} MiB")
    print()
    print_table(["engine", "operation", "proofs", "mean", "p50", "p99", "max"], rows, left=2)
    print("target: inclusion proof p99 < 5 ms")
    print(load_line())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000, help="drafts per append")
    parser.add_argument("--proofs", type=int, default=1000, help="proofs of each kind")
    parser.add_argument("--verify", type=int, default=100, help="proofs verified independently")
    parser.add_argument("--sqlite", type=Path, default=None, help="log file to build or reuse")
    parser.add_argument("--full-check", action="store_true", help="recheck every leaf on reuse")
    parser.add_argument("--postgres", default="", help="also build and measure on PostgreSQL")
    parser.add_argument("--keep-postgres", action="store_true", help="keep (and reuse) the schema")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
