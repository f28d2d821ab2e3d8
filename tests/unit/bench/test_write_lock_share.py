"""bench/write_lock_share.py reads who holds the writers' flock from /proc/locks."""

from __future__ import annotations

import fcntl
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def share(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    import write_lock_share  # noqa: PLC0415

    return write_lock_share


def test_a_held_lock_is_seen_held_and_a_free_one_free(share: ModuleType, tmp_path: Path) -> None:
    lock = tmp_path / "x.sqlite.writelock"
    lock.touch()
    samples, held, waiters = share.sample(lock, 0.05, 0.001)
    assert samples > 5
    assert (held, waiters) == (0.0, 0.0)
    with lock.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        samples, held, waiters = share.sample(lock, 0.05, 0.001)
        fcntl.flock(handle, fcntl.LOCK_UN)
    assert samples > 5
    assert held == 1.0
    assert waiters == 0.0


def test_the_newest_benchmark_lock_is_found(share: ModuleType, tmp_path: Path) -> None:
    lock = tmp_path / "a" / "b.writelock"
    lock.parent.mkdir()
    lock.touch()
    assert share.find_lock(str(tmp_path / "**" / "*.writelock"), timeout=1) == lock
    with pytest.raises(SystemExit):
        share.find_lock(str(tmp_path / "none" / "*.writelock"), timeout=0.2)
