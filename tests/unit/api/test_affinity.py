"""``ONCEVAULT_WORKER_AFFINITY=spread``: each worker process pins every one of its
threads to a CPU no other live worker holds, and a dead worker's CPU is taken again.

Each worker is a real process (the slots are ``flock``s, which only exclude other
open file descriptions) started with a thread already running, and reports the
affinity of every thread, including one started after pinning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from api import affinity
from api.settings import SettingsError, load_settings

pytestmark = pytest.mark.skipif(not affinity.supported(), reason="Linux only")

CPUS = sorted(os.sched_getaffinity(0))

WORKER = textwrap.dedent(
    """
    import json, os, sys, threading
    from pathlib import Path
    from api.affinity import pin_worker

    hold = threading.Event()
    before = threading.Thread(target=hold.wait)  # running before the pin
    before.start()
    cpu = pin_worker(Path(sys.argv[1]))
    again = pin_worker(Path(sys.argv[1]))
    after = threading.Thread(target=hold.wait)  # started after it
    after.start()
    masks = {
        task.name: sorted(os.sched_getaffinity(int(task.name)))
        for task in Path("/proc/self/task").iterdir()
    }
    print(json.dumps({"cpu": cpu, "again": again, "masks": masks}), flush=True)
    sys.stdin.readline()  # hold the slot until the test is done
    hold.set()
    """
)


@contextmanager
def worker(data_dir: Path) -> Iterator[dict[str, object]]:
    """A process that pins itself and holds its slot until the block ends."""
    with subprocess.Popen(
        [sys.executable, "-c", WORKER, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        try:
            report: dict[str, object] = json.loads(process.stdout.readline())
            yield report
        finally:
            process.stdin.close()  # the worker exits, and its slot is free
            process.wait(timeout=10)


def test_each_worker_takes_a_cpu_of_its_own_with_every_thread(tmp_path: Path) -> None:
    with worker(tmp_path) as first, worker(tmp_path) as second:
        pinned = [first, second] if len(CPUS) >= 2 else [first]
        for report in pinned:
            cpu = report["cpu"]
            assert cpu in CPUS
            assert report["again"] == cpu  # a second call keeps the slot
            masks = report["masks"]
            assert isinstance(masks, dict)
            assert len(masks) >= 3  # the main thread, one started before, one after
            assert all(mask == [cpu] for mask in masks.values()), masks
        if len(CPUS) >= 2:
            assert first["cpu"] != second["cpu"]
        else:  # one CPU: the second worker finds no slot and stays unpinned
            assert second["cpu"] is None
            masks = second["masks"]
            assert isinstance(masks, dict)
            assert all(mask == CPUS for mask in masks.values())


def test_more_workers_than_cpus_leaves_the_rest_unpinned(tmp_path: Path) -> None:
    with _workers(tmp_path, len(CPUS)) as reports:
        assert sorted(report["cpu"] for report in reports) == CPUS  # type: ignore[type-var]
        with worker(tmp_path) as extra:
            assert extra["cpu"] is None
            masks = extra["masks"]
            assert isinstance(masks, dict)
            assert all(mask == CPUS for mask in masks.values())


def test_a_dead_workers_cpu_is_taken_again(tmp_path: Path) -> None:
    with worker(tmp_path) as first:
        taken = first["cpu"]
    deadline = time.monotonic() + 5
    with worker(tmp_path) as second:
        assert second["cpu"] == taken
        assert time.monotonic() < deadline


@contextmanager
def _workers(data_dir: Path, count: int) -> Iterator[list[dict[str, object]]]:
    if count == 0:
        yield []
        return
    with worker(data_dir) as report, _workers(data_dir, count - 1) as rest:
        yield [report, *rest]


def test_a_data_dir_without_slots_refuses_before_pinning(tmp_path: Path) -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(affinity.PinFailed, match=r"^slot file not writable \(FileNotFoundError\)$"):
        affinity.pin_worker(tmp_path / "missing")
    assert "slot" not in affinity._HELD
    assert os.sched_getaffinity(0) == before  # this process was not touched


def test_a_refused_pin_frees_its_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(cpu: int) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(affinity, "_pin_threads", refuse)
    with pytest.raises(affinity.PinFailed, match=r"^CPU \d+ refused \(OSError\)$"):
        affinity.pin_worker(tmp_path)
    assert "slot" not in affinity._HELD
    with worker(tmp_path) as report:  # the first CPU's slot is free again
        assert report["cpu"] == CPUS[0]


def test_the_setting(tmp_path: Path) -> None:
    def load(value: str | None) -> str:
        environ = {} if value is None else {"ONCEVAULT_WORKER_AFFINITY": value}
        return load_settings({}, environ, data_dir_flag=str(tmp_path)).worker_affinity

    assert load(None) == "off"
    assert load("Spread") == "spread"
    assert load(" off ") == "off"
    with pytest.raises(SettingsError, match=r"^ONCEVAULT_WORKER_AFFINITY: use off or spread$"):
        load("auto")
    settings = load_settings(
        {}, {"ONCEVAULT_WORKER_AFFINITY": "spread"}, data_dir_flag=str(tmp_path)
    )
    assert settings.as_environment()["ONCEVAULT_WORKER_AFFINITY"] == "spread"
