"""How much of the time SQLite's write lock is held while a benchmark runs.

oncevault's writers queue on an ``flock`` of ``<database>.writelock`` (vault/storage.py)
from before ``BEGIN IMMEDIATE`` until their COMMIT returns, so the share of time that
lock is held is the share of time the database is writing, and whether the workers'
batches are bound by it. This script finds the lock file of the data dir a running
``bench/vs_openbao.py`` made (or the one given), waits until wrk runs, waits
``--settle`` seconds, then reads ``/proc/locks`` every ``--every`` seconds for
``SECONDS`` and prints the share of samples in which the lock was held and how many
writers waited for it on average. Reading ``/proc/locks`` costs little CPU at the
default period; it shares the cores with the benchmark all the same.

Usage, beside a running benchmark:
``.venv/bin/python bench/vs_openbao.py --only oncevault --rounds 1 &``
``.venv/bin/python bench/write_lock_share.py 8``
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import time
from pathlib import Path


def find_lock(explicit: str | None, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pattern = explicit or "/tmp/vs_openbao_*/oncevault/data/**/*.writelock"
        found = glob.glob(pattern, recursive=True)
        if found:
            return Path(max(found, key=os.path.getmtime))
        time.sleep(0.5)
    raise SystemExit("no .writelock file found")


def wait_for_wrk(timeout: float) -> None:
    pgrep = shutil.which("pgrep")
    if pgrep is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run([pgrep, "-x", "wrk"], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise SystemExit("wrk did not start")


def sample(lock: Path, seconds: float, every: float) -> tuple[int, float, float]:
    """(samples, share held, mean waiters) over ``seconds``."""
    key = f":{os.stat(lock).st_ino} "
    samples = held = waiting = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with open("/proc/locks", encoding="ascii") as handle:
            lines = [line for line in handle if key in line]
        held += any("->" not in line for line in lines)
        waiting += sum("->" in line for line in lines)
        samples += 1
        time.sleep(every)
    return samples, held / max(samples, 1), waiting / max(samples, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seconds", type=float)
    parser.add_argument("--lock", help="the .writelock file (default: the newest benchmark's)")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds after wrk starts")
    parser.add_argument("--every", type=float, default=0.0005)
    args = parser.parse_args()
    lock = find_lock(args.lock, timeout=300)
    wait_for_wrk(timeout=300)
    time.sleep(args.settle)
    samples, held, waiters = sample(lock, args.seconds, args.every)
    print(f"{lock}: {samples} samples, write lock held {held:.1%}, {waiters:.2f} writers waiting")


if __name__ == "__main__":
    main()
