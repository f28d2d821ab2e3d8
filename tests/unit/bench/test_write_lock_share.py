"""bench/write_lock_share.py reads who holds the writers' flock from /proc/locks."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def share(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    import write_lock_share  # noqa: PLC0415

    return write_lock_share


def test_a_held_lock_is_seen_held_with_its_waiter_and_a_free_one_free(
    share: ModuleType, tmp_path: Path
) -> None:
    lock = tmp_path / "x.sqlite.writelock"
    lock.touch()
    samples, held, waiters = share.sample(lock, 0.2, 0.001)
    assert samples > 5
    assert (held, waiters) == (0.0, 0.0)
    with lock.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        waiting = threading.Thread(target=wait_for, args=(lock,))
        waiting.start()
        time.sleep(0.1)  # the other writer is queued on the lock
        samples, held, waiters = share.sample(lock, 0.2, 0.001)
        fcntl.flock(handle, fcntl.LOCK_UN)
        waiting.join(5)
    assert samples > 5
    assert held == 1.0
    assert waiters == 1.0


def wait_for(lock: Path) -> None:
    with lock.open("a+") as handle:  # another open file description: it queues
        fcntl.flock(handle, fcntl.LOCK_EX)
        fcntl.flock(handle, fcntl.LOCK_UN)


def test_the_newest_lock_is_found_anywhere_below(share: ModuleType, tmp_path: Path) -> None:
    older = tmp_path / "a" / "data" / "old.sqlite.writelock"
    newer = tmp_path / "b" / "data" / "new.sqlite.writelock"
    for path in (older, newer):
        path.parent.mkdir(parents=True)
        path.touch()
    os.utime(older, (1_000_000, 1_000_000))
    assert share.find_lock(str(tmp_path / "**" / "*.writelock"), timeout=1) == newer
    os.utime(newer, (900_000, 900_000))
    assert share.find_lock(str(tmp_path / "**" / "*.writelock"), timeout=1) == older
    with pytest.raises(SystemExit):
        share.find_lock(str(tmp_path / "none" / "*.writelock"), timeout=0.2)
