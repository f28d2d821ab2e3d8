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
line is a few hundred.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import msgspec
import structlog
from structlog.typing import EventDict, WrappedLogger


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
        # One write per line: PrintLogger's print() writes the line and its newline
        # separately, and with an unbuffered stderr (PYTHONUNBUFFERED, usual in
        # containers) two workers sharing the pipe spliced their lines together.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
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
