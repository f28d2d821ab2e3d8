"""api/metrics.py: counting, adding up the workers' published counters, the text format."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from api.metrics import (
    DURATION_BUCKETS,
    Metrics,
    clear,
    collect,
    is_loopback,
    publish,
    render,
)


def lines_of(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


@given(st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), min_size=1, max_size=60))
def test_the_histogram_is_cumulative_and_ends_at_its_count(seconds: list[float]) -> None:
    metrics = Metrics()
    for value in seconds:
        metrics.observe_request("GET", "/healthz", 200, value)
    text = render(metrics, workers=1, audit_tree_size=None)
    buckets = lines_of(text, "oncevault_http_request_duration_seconds_bucket")
    assert len(buckets) == len(DURATION_BUCKETS) + 1
    counts = [int(line.rsplit(" ", 1)[1]) for line in buckets]
    # Each bucket counts the values at or under its bound (le), cumulatively.
    expected = [sum(1 for v in seconds if v <= bound) for bound in DURATION_BUCKETS]
    assert counts == [*expected, len(seconds)]
    assert buckets[-1].split("le=")[1].startswith('"+Inf"')
    (count,) = lines_of(text, "oncevault_http_request_duration_seconds_count")
    assert count.endswith(f" {len(seconds)}")
    (total,) = lines_of(text, "oncevault_http_request_duration_seconds_sum")
    assert abs(float(total.rsplit(" ", 1)[1]) - sum(seconds)) < 1e-9


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    metrics.observe_request('GE"T', "/a\\b\nc", 200, 0.001)
    text = render(metrics, workers=1, audit_tree_size=None)
    (line,) = lines_of(text, "oncevault_http_requests_total{")
    assert line == (
        'oncevault_http_requests_total{method="GE\\"T",route="/a\\\\b\\nc",status="200"} 1'
    )


def test_every_family_has_help_and_type_and_the_optional_gauge_is_left_out() -> None:
    text = render(Metrics(), workers=3, audit_tree_size=None)
    assert "# TYPE oncevault_http_requests_total counter" in text
    assert "# TYPE oncevault_http_request_duration_seconds histogram" in text
    assert "# TYPE oncevault_problems_total counter" in text
    assert "# TYPE oncevault_oauth_errors_total counter" in text
    assert "oncevault_workers 3\n" in text
    assert "oncevault_audit_tree_size" not in text
    assert "oncevault_audit_tree_size 42\n" in render(Metrics(), workers=1, audit_tree_size=42)


def _worker(requests: int, problem: str) -> Metrics:
    metrics = Metrics()
    for _ in range(requests):
        metrics.observe_request("GET", "/v1/data", 200, 0.02)
    metrics.count_problem(problem)
    metrics.count_oauth_error("invalid_client")
    return metrics


def test_a_scrape_adds_up_every_worker_and_skips_a_damaged_file(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    publish(directory, _worker(5, "invalid_token"))  # this process, as last published
    other = directory / "999999991.json"
    other.write_text(json.dumps(_worker(7, "forbidden").snapshot()), encoding="ascii")
    (directory / "999999992.json").write_text("{not json", encoding="ascii")
    (directory / "999999993.json").write_text('{"requests": 1}', encoding="ascii")
    mine = _worker(2, "invalid_token")  # this process's live counters win over its file
    total, workers = collect(directory, mine)
    assert workers == 2
    assert total.requests == {("GET", "/v1/data", 200): 9}
    assert total.buckets[("GET", "/v1/data")][DURATION_BUCKETS.index(0.025)] == 9
    assert abs(total.seconds[("GET", "/v1/data")] - 0.18) < 1e-9
    assert total.problems == {"invalid_token": 1, "forbidden": 1}
    assert total.oauth_errors == {"invalid_client": 2}


def test_publish_replaces_the_file_whole_and_keeps_it_private(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    publish(directory, _worker(1, "forbidden"))
    publish(directory, _worker(3, "forbidden"))
    (path,) = directory.glob("*.json")
    assert path.name == f"{os.getpid()}.json"
    assert json.loads(path.read_text())["requests"] == [["GET", "/v1/data", 200, 3]]
    assert path.stat().st_mode & 0o777 == 0o600
    assert directory.stat().st_mode & 0o777 == 0o700
    assert not list(directory.glob(".*.tmp"))


def test_a_dead_workers_counters_stay_until_serve_starts_again(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    (directory).mkdir()
    (directory / "999999991.json").write_text(json.dumps(_worker(4, "forbidden").snapshot()))
    total, workers = collect(directory, Metrics())
    assert (total.requests, workers) == ({("GET", "/v1/data", 200): 4}, 2)
    clear(directory)
    assert list(directory.iterdir()) == []
    clear(tmp_path / "absent")  # nothing to clear is fine
    assert collect(tmp_path / "absent", Metrics())[1] == 1


def test_loopback_peers() -> None:
    for host in ("127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in (None, "", "testclient", "10.0.0.1", "192.0.2.1", "::ffff:10.0.0.1", "fe80::1"):
        assert not is_loopback(host), host
