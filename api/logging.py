"""structlog configuration: one JSON object per line on stderr.

Every line carries the server-made ``request_id`` while a request is being served
(bound by :class:`api.middleware.RequestIdMiddleware`). Nothing here logs bodies,
tokens or subject identifiers; callers log ids and codes only.

Every request writes one line (the access line), so the line's cost is per request:
structlog's stock chain took ~35 µs a line here, a tenth of a served read's CPU.
Lines are therefore encoded by msgspec (compact JSON: no space after ``:`` and
``,``) and stamped by :class:`UtcStamp`, which formats the date and time once a
second; ~18 µs a line (docs/performance.md, "Ninth session"). msgspec writes the
types it knows its own way (bytes as base64, datetimes as ISO 8601, sets as arrays)
and anything else as its ``repr``.

Lines are ASCII, as ``json.dumps`` made them: a line with any other character is
written again with ``\\uXXXX`` escapes, so a request path cannot put a line
separator (U+2028, U+0085), a C1 control or a bidirectional override into a log
file, and a lone surrogate cannot make logging raise.

Each line goes out in one ``write`` with its newline, so the workers of
``serve --workers N``, which share one stderr, never splice their lines together: a
write of up to ``PIPE_BUF`` bytes (4096 on Linux) to a pipe is atomic, and an access
line is a few hundred. A longer line (an exception's traceback) is not atomic on a
pipe, so it is written under an exclusive POSIX record lock on the stream
(:func:`write_line`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import select
import sys
import threading
import time
from typing import Any, TextIO

import msgspec
import structlog
from structlog.typing import EventDict, WrappedLogger

#: Longer lines are written under a lock: a pipe writes at most this many bytes at once.
ATOMIC_LINE = select.PIPE_BUF

_WRITING = threading.Lock()


def write_line(stream: TextIO, line: str) -> None:
    """Write ``line`` (ending in a newline) to ``stream`` in one write, and flush.

    A line over :data:`ATOMIC_LINE` bytes is written under an exclusive POSIX record
    lock (``lockf``) on the stream's file: another worker's long line waits instead of
    landing in the middle of this one. Not ``flock``: an flock belongs to the open file
    description, and the workers inherited one stderr, so theirs would never exclude
    each other; a record lock belongs to the process. The lock is waited for at most
    :data:`LOCK_WAIT` seconds (a file some other program keeps locked must not stop
    logging), on the calling thread (the event loop, for a request's line: only a long
    line meeting another worker's long line waits at all); a stream without a file
    descriptor (a test's buffer) is written as is."""
    size = len(line) if line.isascii() else len(line.encode("utf-8", "surrogateescape"))
    with _WRITING:  # the threads of this process (granian's, the loop)
        locked = size > ATOMIC_LINE and _lock(stream)
        try:
            stream.write(line)
            stream.flush()
        finally:
            if locked:
                with contextlib.suppress(OSError, ValueError):
                    fcntl.lockf(stream.fileno(), fcntl.LOCK_UN)


#: How long a long line waits for another worker's long line before it is written
#: without the lock.
LOCK_WAIT = 1.0


def _lock(stream: TextIO) -> bool:
    """Take an exclusive record lock on all of ``stream``'s file; False when it has
    none, refuses locks, or stays locked for :data:`LOCK_WAIT` seconds."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.0005)
        except OSError:
            return False


class LineLogger:
    """structlog's logger: each event is one line (:func:`write_line`)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        write_line(self._stream, message + "\n")

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class LineLoggerFactory:
    """structlog's logger factory: a :class:`LineLogger` on ``stream``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, *args: Any) -> LineLogger:
        return LineLogger(self._stream)


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stdlib records (granian, asyncio) as lines, like structlog's events."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_line(self.stream, self.format(record) + self.terminator)
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


class UtcStamp:
    """``timestamp``: UTC ISO 8601 with microseconds and ``Z`` (what structlog's
    ``TimeStamper(fmt="iso", utc=True)`` writes, but always with six digits of
    microseconds); the text up to the second is formatted once per second."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        now = time.time()
        whole = int(now)
        second, text = self._second  # one tuple: a thread never sees half an update
        if whole != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            self._second = (whole, text)
        micros = min(int((now - whole) * 1_000_000), 999_999)
        event_dict["timestamp"] = f"{text}.{micros:06d}Z"
        return event_dict


_ENCODER = msgspec.json.Encoder(enc_hook=repr)


def encode_line(event_dict: EventDict, **_: Any) -> str:
    """One event as compact, ASCII-only JSON (``JSONRenderer``'s serializer)."""
    try:
        encoded = _ENCODER.encode(event_dict)
    except UnicodeEncodeError:  # a lone surrogate: json escapes it
        return json.dumps(event_dict, default=repr, separators=(",", ":"))
    if encoded.isascii():
        return encoded.decode("ascii")
    return json.dumps(json.loads(encoded), separators=(",", ":"))


def configure_logging(*, level: str = "info", json: bool = True) -> None:
    """Configure structlog and route stdlib logging (granian, asyncio) through it."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        UtcStamp(),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=encode_line)
        if json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line: structlog's PrintLogger (print()) writes the line and its
        # newline separately, and with an unbuffered stderr (PYTHONUNBUFFERED, usual in
        # containers) two workers sharing the pipe spliced their lines together.
        logger_factory=LineLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = LineHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
