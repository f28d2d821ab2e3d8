"""Memory and time of the DEK cache (vault.service.DekCache) when full.

Usage: .venv/bin/python bench/dek_cache.py [--entries 100000]

Fills a cache with ``--entries`` keys under fresh ``dek_`` ids (as the rows carry them)
and reports what tracemalloc sees the cache hold, ids included, in all and per entry;
then the time of a hit, a miss and a put (best of 5 runs of timeit). ``--entries`` is
the cache's ceiling per worker (``max_entries``).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import timeit
import tracemalloc

from vault.clock import ManualClock
from vault.models import new_id
from vault.service import DekCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    clock = ManualClock()
    keys = [os.urandom(32) for _ in range(args.entries)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = DekCache(clock=clock, ttl_seconds=60, max_entries=args.entries)
    ids = [new_id("dek") for _ in range(args.entries)]
    for dek_id, key in zip(ids, keys, strict=True):
        cache.put(dek_id, 1, key)
    del keys  # the cache's own copies are what a worker keeps
    gc.collect()
    # The list holding the ids is the script's; the ids are counted (the cache keeps them).
    held = tracemalloc.get_traced_memory()[0] - before - sys.getsizeof(ids)
    tracemalloc.stop()
    print(
        f"{args.entries:,} entries: {held / 1e6:.1f} MB with their ids, "
        f"{held / args.entries:.0f} bytes an entry"
    )
    some = ids[len(ids) // 2]

    def best(stmt: str) -> float:
        scope = {"cache": cache, "some": some}
        return min(timeit.repeat(stmt, globals=scope, number=100_000, repeat=5)) / 100_000

    print(f"hit  {best('cache.get(some, 1)') * 1e6:.2f} µs")
    print(f"miss {best('cache.get(some, 2)') * 1e6:.2f} µs")
    print(f"put  {best('cache.put(some, 1, bytes(32))') * 1e6:.2f} µs")


if __name__ == "__main__":
    main()
