"""``GET /metrics``: Prometheus text, loopback peers only, never labelled by citizen
(DESIGN section 10).

What is counted, per process:

- every request the app's middleware answers, by method, route *template* (never the
  path: a path can carry a consent id or a record type, a template cannot) and status,
  with a latency histogram by method and route;
- every problem+json answer by its stable ``code``: unauthenticated failures
  (``invalid_token``, ``invalid_dpop_proof``), which DESIGN section 7 sends "to logs and
  metrics only", are counted here and never audited;
- every RFC 6749 error of the token and revocation endpoints (``invalid_client``, ...).

``serve --workers N`` runs N processes, and a scrape reaches one of them. So each
worker publishes its counters to ``<data dir>/metrics/<pid>.json`` (a whole file
replaced at once, every :data:`PUBLISH_SECONDS` and before it answers a scrape), and the
worker that answers adds up every file in that directory: the platform's totals, at
most :data:`PUBLISH_SECONDS` behind for the other workers. The file of a worker that
died stays, so a respawned worker does not make a counter go backwards; ``serve``
empties the directory when it starts (the counters start at zero with the server, as
Prometheus expects of a restart).

The label values are the server's own: methods Litestar routed, route templates
declared in ``api/routes``, status integers and codes from ``api.errors.STATUS``; they
are escaped all the same.
"""

from __future__ import annotations

import bisect
import contextlib
import ipaddress
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

#: Upper bounds (seconds) of the request-latency histogram's buckets.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: How often a worker publishes its counters for the others' scrapes.
PUBLISH_SECONDS: Final = 2.0
#: The directory, under the data dir, of the workers' published counters.
METRICS_DIR: Final = "metrics"
#: Litestar adds ``; charset=utf-8`` to a ``text/`` media type.
MEDIA_TYPE: Final = "text/plain; version=0.0.4"


class Metrics:
    """The counters of one process (or the sum of several)."""

    def __init__(self) -> None:
        #: (method, route, status) -> requests
        self.requests: dict[tuple[str, str, int], int] = {}
        #: (method, route) -> [count in each bucket of DURATION_BUCKETS, then over the last]
        self.buckets: dict[tuple[str, str], list[int]] = {}
        #: (method, route) -> seconds in all
        self.seconds: dict[tuple[str, str], float] = {}
        #: problem code -> answers
        self.problems: dict[str, int] = {}
        #: RFC 6749 error -> answers
        self.oauth_errors: dict[str, int] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        timing = (method, route)
        buckets = self.buckets.get(timing)
        if buckets is None:
            buckets = self.buckets[timing] = [0] * (len(DURATION_BUCKETS) + 1)
            self.seconds[timing] = 0.0
        buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.seconds[timing] += seconds

    def count_problem(self, code: str) -> None:
        self.problems[code] = self.problems.get(code, 0) + 1

    def count_oauth_error(self, error: str) -> None:
        self.oauth_errors[error] = self.oauth_errors.get(error, 0) + 1

    # -- between workers ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON values (what a worker publishes)."""
        return {
            "requests": [[m, r, s, n] for (m, r, s), n in self.requests.items()],
            "durations": [
                [m, r, list(b), self.seconds[(m, r)]] for (m, r), b in self.buckets.items()
            ],
            "problems": dict(self.problems),
            "oauth_errors": dict(self.oauth_errors),
        }

    def add(self, snapshot: Mapping[str, Any]) -> None:
        """Add another worker's :meth:`snapshot` to these counters.

        Raises:
            ValueError, TypeError, KeyError: ``snapshot`` is not one (a damaged file).
        """
        requests = [(str(m), str(r), int(s), int(n)) for m, r, s, n in snapshot["requests"]]
        durations = [
            (str(m), str(r), [int(c) for c in b], float(t)) for m, r, b, t in snapshot["durations"]
        ]
        if any(len(b) != len(DURATION_BUCKETS) + 1 for _, _, b, _ in durations):
            raise ValueError("histogram of another shape")
        problems = {str(k): int(v) for k, v in snapshot["problems"].items()}
        oauth_errors = {str(k): int(v) for k, v in snapshot["oauth_errors"].items()}
        for m, r, s, n in requests:
            self.requests[(m, r, s)] = self.requests.get((m, r, s), 0) + n
        for m, r, b, t in durations:
            mine = self.buckets.setdefault((m, r), [0] * (len(DURATION_BUCKETS) + 1))
            for i, c in enumerate(b):
                mine[i] += c
            self.seconds[(m, r)] = self.seconds.get((m, r), 0.0) + t
        for code, n in problems.items():
            self.problems[code] = self.problems.get(code, 0) + n
        for error, n in oauth_errors.items():
            self.oauth_errors[error] = self.oauth_errors.get(error, 0) + n


#: This process's counters.
METRICS: Final = Metrics()


def publish(directory: Path, metrics: Metrics = METRICS) -> None:
    """Write ``metrics`` to ``directory/<pid>.json``, replacing the file whole."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / f"{os.getpid()}.json"
    tmp = directory / f".{os.getpid()}.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        json.dump(metrics.snapshot(), out, separators=(",", ":"))
    tmp.replace(target)


def collect(directory: Path, metrics: Metrics = METRICS) -> tuple[Metrics, int]:
    """Every worker's counters added up (this one's live, the others' as they last
    published them), and how many workers' files there were. A file that does not
    parse is skipped: one damaged file must not take the platform's metrics down."""
    total = Metrics()
    total.add(metrics.snapshot())
    mine = f"{os.getpid()}.json"
    workers = 1
    with contextlib.suppress(FileNotFoundError):
        for path in sorted(directory.glob("*.json")):
            if path.name == mine:
                continue
            try:
                total.add(json.loads(path.read_text(encoding="ascii")))
            except (OSError, ValueError, TypeError, KeyError):
                continue
            workers += 1
    return total, workers


def clear(directory: Path) -> None:
    """Remove every published file (``serve`` at start: the counters start at zero)."""
    with contextlib.suppress(FileNotFoundError):
        for path in directory.iterdir():
            if path.suffix in (".json", ".tmp"):
                path.unlink(missing_ok=True)


def is_loopback(host: str | None) -> bool:
    """Whether a peer address is loopback (127.0.0.0/8, ``::1``, an IPv4-mapped one)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


# -- exposition ---------------------------------------------------------------------------


def _label(value: object) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, object]]) -> str:
    return "{" + ",".join(f'{name}="{_label(value)}"' for name, value in pairs) + "}"


def render(metrics: Metrics, *, workers: int, audit_tree_size: int | None) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``metrics``."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family(
        "oncevault_http_requests_total",
        "counter",
        "HTTP requests answered, by method, route template and status.",
    )
    for (method, route, status), n in sorted(metrics.requests.items()):
        labels = _labels((("method", method), ("route", route), ("status", status)))
        lines.append(f"oncevault_http_requests_total{labels} {n}")
    family(
        "oncevault_http_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its answer, by method and route template.",
    )
    for (method, route), buckets in sorted(metrics.buckets.items()):
        base = (("method", method), ("route", route))
        running = 0
        bounds = [repr(bound) for bound in DURATION_BUCKETS] + ["+Inf"]
        for le, count in zip(bounds, buckets, strict=True):
            running += count
            labels = _labels((*base, ("le", le)))
            lines.append(f"oncevault_http_request_duration_seconds_bucket{labels} {running}")
        seconds = metrics.seconds[(method, route)]
        lines.append(f"oncevault_http_request_duration_seconds_sum{_labels(base)} {seconds!r}")
        lines.append(f"oncevault_http_request_duration_seconds_count{_labels(base)} {running}")
    family(
        "oncevault_problems_total",
        "counter",
        "problem+json answers by stable code (unauthenticated failures are counted here "
        "and in the logs, never in the audit log).",
    )
    for code, n in sorted(metrics.problems.items()):
        lines.append(f"oncevault_problems_total{_labels((('code', code),))} {n}")
    family(
        "oncevault_oauth_errors_total",
        "counter",
        "RFC 6749 error answers of /oauth/token and /oauth/revoke, by error.",
    )
    for error, n in sorted(metrics.oauth_errors.items()):
        lines.append(f"oncevault_oauth_errors_total{_labels((('error', error),))} {n}")
    family("oncevault_workers", "gauge", "Worker processes whose counters are summed here.")
    lines.append(f"oncevault_workers {workers}")
    if audit_tree_size is not None:
        family("oncevault_audit_tree_size", "gauge", "Entries in the audit log's Merkle tree.")
        lines.append(f"oncevault_audit_tree_size {audit_tree_size}")
    return "\n".join(lines) + "\n"
