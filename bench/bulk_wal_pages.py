"""Which B-trees one bulk-issuance batch writes to SQLite's WAL, page by page.

The COMMIT of a 1,000-record ``RecordIntake.issue_many`` call (the call behind
``POST /v1/records:batch``) appends every page the batch dirtied to the WAL; the
lock is held while it does. This script grows a vault in-process (local KEK, SQLite
``synchronous=FULL``, the system clock) to ``--size`` records, one citizen each,
then for one batch of new citizens and one batch of new versions for citizens drawn
at random: truncates the WAL (no reader is open), runs the batch, reads the page
number of every WAL frame, and names each page's B-tree with SQLite's ``dbstat``
(table or index). Prints the
frames a batch wrote, for each B-tree its frames against the pages it has, and what
writing that many frames costs this disk alone: SQLite writes a frame's 24-byte
header and its page with two ``pwrite`` calls, then fsyncs the WAL once
(``synchronous=FULL``); the same calls on a scratch file beside the database.

Usage: ``.venv/bin/python bench/bulk_wal_pages.py [--size 100000]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import sqlite3
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bulk_batch import BATCH, issue_income, issuer_intake
from vault.clock import SystemClock

WAL_HEADER = 32
FRAME_HEADER = 24


def wal_pages(database: Path) -> tuple[int, list[int]]:
    """``database``'s page size and the page number of every frame of its WAL's current
    generation, in order. A frame carries the salts of the WAL header it was written
    under; frames left from before the last reset carry older salts, and reading stops
    at the first of them (or at a partial frame)."""
    path = database.parent / (database.name + "-wal")
    data = path.read_bytes() if path.exists() else b""
    if len(data) < WAL_HEADER:
        return 0, []
    (page_size,) = struct.unpack(">I", data[8:12])
    salts = data[16:24]
    pages = []
    offset = WAL_HEADER
    while offset + FRAME_HEADER + page_size <= len(data):
        if data[offset + 8 : offset + 16] != salts:
            break
        pages.append(struct.unpack(">I", data[offset : offset + 4])[0])
        offset += FRAME_HEADER + page_size
    return page_size, pages


def disk_cost(directory: Path, frames: int, page_size: int) -> tuple[float, float]:
    """Seconds to write ``frames`` WAL frames the way SQLite does, and to fsync them."""
    header, page = bytes(FRAME_HEADER), os.urandom(page_size)
    path = directory / "frames.scratch"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        start = time.perf_counter()
        offset = WAL_HEADER
        for _ in range(frames):
            os.pwrite(fd, header, offset)
            os.pwrite(fd, page, offset + FRAME_HEADER)
            offset += FRAME_HEADER + page_size
        written = time.perf_counter()
        os.fsync(fd)
        return written - start, time.perf_counter() - written
    finally:
        os.close(fd)
        path.unlink()


def report(label: str, seconds: float, database: Path) -> None:
    page_size, pages = wal_pages(database)
    with contextlib.closing(sqlite3.connect(database)) as connection:
        owner = dict(connection.execute("SELECT pageno, name FROM dbstat").fetchall())
    frames = collections.Counter(owner.get(page, "?") for page in pages)
    size = collections.Counter(owner.values())
    print(
        f"{label}: {seconds * 1000:,.0f} ms in-process, {len(pages):,} WAL frames"
        f" ({len(pages) * page_size / BATCH / 1024:.1f} KiB a record)"
    )
    for name, count in frames.most_common():
        print(f"  {name:36s} {count:6,} frames  of {size[name]:7,} pages")
    written, synced = disk_cost(database.parent, len(pages), page_size)
    print(
        f"  the same frames on this disk alone: {written * 1000:.1f} ms of pwrite calls,"
        f" {synced * 1000:.1f} ms of fsync"
    )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        path = tmp_path / "oncevault.sqlite"
        store = argparse.Namespace(postgres=None, synchronous="FULL")
        async with issuer_intake(store, tmp_path, SystemClock()) as intake:

            async def batch(citizens: Sequence[int], content: int, version: int) -> float:
                start = time.perf_counter()
                await issue_income(intake, citizens, content, version=version)
                return time.perf_counter() - start

            for first in range(0, args.size, BATCH):
                await batch(range(first, first + BATCH), 0, 1)
            # The new versions go to citizens drawn at random: an issuer's update does
            # not arrive in the order the vault stored its citizens.
            updated = random.Random(args.seed).sample(range(args.size), BATCH)
            for label, citizens, content, version in (
                ("new citizens", range(args.size, args.size + BATCH), 0, 1),
                ("new versions", updated, 7, 2),
            ):
                with contextlib.closing(sqlite3.connect(path)) as connection:
                    busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if busy:
                    raise RuntimeError("the WAL could not be truncated")
                report(label, await batch(citizens, content, version), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="records before the batches")
    parser.add_argument("--seed", type=int, default=11, help="of the updated citizens' draw")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
