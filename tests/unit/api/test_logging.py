"""The JSON log lines: what structlog's stock chain wrote, encoded by msgspec and
stamped once a second (api/logging.py)."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import api.logging
from api.logging import ATOMIC_LINE, UtcStamp, configure_logging, write_line

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@contextlib.contextmanager
def configured(level: str = "info") -> Iterator[io.StringIO]:
    """configure_logging writing into a buffer; structlog and the root logger as they
    were afterwards."""
    root = logging.getLogger()
    handlers, root_level, stderr = root.handlers[:], root.level, sys.stderr
    buffer = io.StringIO()
    sys.stderr = buffer
    try:
        configure_logging(level=level)
        yield buffer
    finally:
        sys.stderr = stderr
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        root.handlers[:], root.level = handlers, root_level


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    with configured() as buffer:
        yield buffer


def logged(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def test_the_access_line_keeps_its_keys_in_order(lines: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(request_id="req_01ABCDEFGHJKMNPQRSTVWXYZ01")
    before = datetime.datetime.now(datetime.UTC)
    structlog.get_logger("api.access").info(
        "http.request", method="GET", path="/v1/data/x", status=200, duration_ms=1.25
    )
    [line] = logged(lines)
    parsed = json.loads(line)
    assert list(parsed) == [
        "method",
        "path",
        "status",
        "duration_ms",
        "event",
        "request_id",
        "level",
        "timestamp",
    ]
    assert parsed["duration_ms"] == 1.25 and parsed["status"] == 200
    assert parsed["level"] == "info"
    assert STAMP.match(parsed["timestamp"])
    stamped = datetime.datetime.fromisoformat(parsed["timestamp"].replace("Z", "+00:00"))
    assert (
        before - datetime.timedelta(seconds=1) <= stamped <= before + datetime.timedelta(seconds=5)
    )


def test_any_value_stays_on_one_valid_line(lines: io.StringIO) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    structlog.get_logger().warning(
        "odd", path='/a\nb"\x00é', thing=Opaque(), day=datetime.date(2026, 1, 2), none=None
    )
    [line] = logged(lines)
    assert line.isascii()
    parsed = json.loads(line)
    assert parsed["path"] == '/a\nb"\x00é'
    assert parsed["thing"] == "<opaque>"
    assert parsed["day"] == "2026-01-02"
    assert parsed["none"] is None


def test_exceptions_and_stdlib_records_are_json_lines(lines: io.StringIO) -> None:
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        structlog.get_logger().exception("failed")
    logging.getLogger("granian").warning("worker %s", "up")
    failed, stdlib = (json.loads(line) for line in logged(lines))
    assert failed["event"] == "failed" and failed["level"] == "error"
    assert "ZeroDivisionError: boom" in failed["exception"]
    assert stdlib["event"] == "worker up" and stdlib["logger"] == "granian"
    assert STAMP.match(stdlib["timestamp"])


def test_below_the_level_nothing_is_written() -> None:
    with configured("warning") as buffer:
        structlog.get_logger("api.access").info("http.request", status=200)
        structlog.get_logger().warning("kept")
    assert [json.loads(line)["event"] for line in logged(buffer)] == ["kept"]


def test_the_stamp_follows_the_clock_across_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = UtcStamp()
    clock = iter([100.25, 100.999999, 101.0, 3600 * 24 * 365.25 * 56 + 0.5])
    monkeypatch.setattr(time, "time", lambda: next(clock))
    stamps = [stamp(None, "info", {})["timestamp"] for _ in range(4)]
    assert stamps[:3] == [
        "1970-01-01T00:01:40.250000Z",
        "1970-01-01T00:01:40.999999Z",
        "1970-01-01T00:01:41.000000Z",
    ]
    assert stamps[3] == "2026-01-01T00:00:00.500000Z"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/data/a\u2028b",  # LINE SEPARATOR: splitlines() breaks on it
        "/v1/data/a\x85b",  # NEXT LINE (C1)
        "/v1/data/a\x9b31mb",  # CSI (C1): a terminal's control sequence
        "/v1/data/\u202egnp.exe",  # RIGHT-TO-LEFT OVERRIDE
        "/v1/data/\ud800",  # a lone surrogate: not encodable as UTF-8
    ],
)
def test_characters_that_could_split_or_disguise_a_line_are_escaped(
    lines: io.StringIO, path: str
) -> None:
    structlog.get_logger("api.access").info("http.request", path=path, status=404)
    text = lines.getvalue()
    assert text.isascii()
    assert text.count("\n") == 1
    [line] = text.splitlines()
    assert json.loads(line)["path"] == path


WRITER = """
import sys
import structlog
from api.logging import configure_logging

configure_logging()
log = structlog.get_logger("api.access")
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.readline()
for n in range({lines}):
    log.info("http.request", worker={worker}, n=n, path="/v1/data/" + "x" * {size})
"""


def run_workers(*, per_worker: int, size: int) -> list[dict[str, Any]]:
    """Two processes (as granian's workers) configured, then logging ``per_worker``
    lines each at once into one pipe with an unbuffered stderr (PYTHONUNBUFFERED=1, as
    in CI and most containers); every line read back, parsed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    read_end, write_end = os.pipe()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER.format(lines=per_worker, worker=worker, size=size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=write_end,
            env=env,
            text=True,
        )
        for worker in (1, 2)
    ]
    os.close(write_end)
    for worker in workers:  # both configured before either writes
        assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.close()
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read().decode("ascii")
    for worker in workers:
        assert worker.wait(timeout=60) == 0
        assert worker.stdout is not None
        worker.stdout.close()
    return [json.loads(line) for line in output.splitlines()]


@pytest.mark.parametrize(
    ("per_worker", "size"),
    [(3000, 200), (400, 20_000)],
    ids=["access lines", "lines longer than PIPE_BUF"],
)
def test_workers_sharing_an_unbuffered_stderr_never_splice_lines(
    per_worker: int, size: int
) -> None:
    """Every line read back is one whole JSON object, short or long. structlog's
    PrintLogger wrote the newline in a second write and spliced two short lines
    together (a CI run's shutdown lines); a line over PIPE_BUF is not atomic on a pipe
    at all, and without the record lock 2 runs in 3 here had ~20-230 broken lines."""
    written = run_workers(per_worker=per_worker, size=size)
    assert len(written) == 2 * per_worker
    assert sorted((line["worker"], line["n"]) for line in written) == [
        (worker, n) for worker in (1, 2) for n in range(per_worker)
    ]
    assert all(len(line["path"]) == len("/v1/data/") + size for line in written)


def test_a_long_line_to_a_stream_without_a_file_is_written_whole() -> None:
    buffer = io.StringIO()
    line = "y" * (ATOMIC_LINE * 3) + "\n"
    write_line(buffer, line)
    write_line(buffer, "short\n")
    assert buffer.getvalue() == line + "short\n"


def test_a_long_line_waits_for_another_process_lock_then_is_written_anyway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holding the file's record lock delays a long line by at most
    LOCK_WAIT, then it is written without the lock (logging never stops); a short line
    never waits."""
    monkeypatch.setattr(api.logging, "LOCK_WAIT", 0.2)
    path = tmp_path / "log"
    path.write_text("")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"f = open({str(path)!r}, 'a')\n"
            "fcntl.lockf(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with path.open("a") as stream:
            started = time.monotonic()
            write_line(stream, "short\n")
            short = time.monotonic() - started
            write_line(stream, "z" * (ATOMIC_LINE + 1) + "\n")
            waited = time.monotonic() - started
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        assert holder.stdout is not None
        holder.stdout.close()
    assert short < 0.2 <= waited
    assert path.read_text() == "short\n" + "z" * (ATOMIC_LINE + 1) + "\n"
