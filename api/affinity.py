"""Pin each server worker to a CPU of its own (``ONCEVAULT_WORKER_AFFINITY=spread``).

``serve --workers N`` runs N processes. Left to the scheduler, a worker that holds
the database's write lock is preempted by the other workers' event loops and moved
between cores, and every other writer waits while it is off a core. Pinned, each
worker (every thread of the process: the event loop, granian's I/O threads, the
SQLite writer thread) runs on one CPU, and the other workers' loops no longer compete
for it (docs/performance.md, "Twelfth session": ~+6 % audited reads/s on two cores).

A worker takes the first CPU of the ones the process may run on
(``os.sched_getaffinity``) whose slot is free. A slot is an exclusive ``flock`` on
``<data dir>/worker-cpu-<n>.lock``, held for the life of the worker process, so a
worker that died frees its CPU for the one granian starts instead, and two servers
on one data directory never share a CPU. A worker that finds no free slot (more
workers than CPUs) stays unpinned.

The hidden cost, and why it is off by default: a pinned worker cannot move to an
idle core while its own is busy with something else. Turn it on only where the
workers have their CPUs (a machine, or a cpuset) to themselves; in a container
limited by a CPU quota rather than a cpuset, the CPUs it sees are shared with every
other container of the node.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

#: The slot this process holds, as (CPU, open locked file): kept for the process's life.
_HELD: dict[str, tuple[int, int]] = {}


def supported() -> bool:
    """True where a process can pin its threads (Linux)."""
    return hasattr(os, "sched_setaffinity") and Path("/proc/self/task").is_dir()


class PinFailed(Exception):
    """No slot could be taken or the threads could not be pinned (the worker runs
    unpinned; the message says why, without paths)."""


def pin_worker(data_dir: Path) -> int | None:
    """Pin every thread of this process to the first free CPU; returns that CPU, or
    None when every CPU the process may use already has its worker. Idempotent: a
    process that holds a slot keeps it.

    Raises PinFailed when a slot file cannot be opened or locked (a missing or
    read-only data directory) or the kernel refuses the pin; the caller logs it and
    serves unpinned rather than failing every worker's start."""
    held = _HELD.get("slot")
    if held is not None:
        return held[0]
    for cpu in sorted(os.sched_getaffinity(0)):
        try:
            fd = os.open(data_dir / f"worker-cpu-{cpu}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PinFailed(f"slot file not writable ({exc.__class__.__name__})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        except OSError as exc:
            os.close(fd)
            raise PinFailed(f"slot not lockable ({exc.__class__.__name__})") from None
        try:
            _pin_threads(cpu)
        except OSError as exc:
            os.close(fd)  # the slot is free again
            raise PinFailed(f"CPU {cpu} refused ({exc.__class__.__name__})") from None
        _HELD["slot"] = (cpu, fd)
        return cpu
    return None


def _pin_threads(cpu: int) -> None:
    """Every thread of this process on ``cpu``. A thread created while this runs
    inherits its creator's mask, so the threads are listed again until no new one
    appears."""
    done: set[int] = set()
    while True:
        threads = {int(task.name) for task in Path("/proc/self/task").iterdir()} - done
        if not threads:
            return
        for tid in threads:
            with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
                os.sched_setaffinity(tid, {cpu})
        done |= threads
