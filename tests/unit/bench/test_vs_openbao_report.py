"""bench/vs_openbao.py's judgement (issue #11): a run is valid only if the audit tree
grew by the 2xx count plus at most the connections in flight, and the target line
applies each engine's ratio (2.0x SQLite, 1.5x PostgreSQL) with p99 at most OpenBao's,
over valid runs only."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import their siblings
    import vs_openbao  # noqa: PLC0415

    return vs_openbao


def test_audit_growth_must_cover_every_2xx_and_at_most_the_connections(
    bench: ModuleType,
) -> None:
    assert bench.growth_problems(1000, 1000, 64) == []
    assert bench.growth_problems(1064, 1000, 64) == []
    assert bench.growth_problems(999, 1000, 64) == [
        "audit grew by 999 for 1000 2xx (allowed 1000..1064)"
    ]
    assert bench.growth_problems(1065, 1000, 64) != []


def runs(bench: ModuleType, system: str, rate: float, p99: float, *, valid: bool = True) -> list:
    wrk = bench.WrkResult(
        requests=int(rate * 20),
        seconds=20.0,
        ok2xx=int(rate * 20),
        other=0,
        socket_errors=0,
        p50_ms=p99 / 4,
        p90_ms=p99 / 2,
        p99_ms=p99,
        max_ms=p99 * 2,
        samples=[],
        wrk_cpu=1.0,
    )
    problems = [] if valid else ["audit grew by 0 for 1 2xx (allowed 1..65)"]
    return [bench.Run(system, n, 1.0, wrk, wrk.ok2xx, 10.0, list(problems)) for n in (1, 2, 3)]


def verdict(
    bench: ModuleType, engine: str, *, ours: float, ours_p99: float = 90.0, valid: bool = True
) -> str:
    """The target line for oncevault at ``ours`` req/s against OpenBao's 1,000 (p99 200 ms)."""
    mine = runs(bench, "oncevault", ours, ours_p99)
    theirs = runs(bench, "openbao", 1000.0, 200.0, valid=valid)
    args = argparse.Namespace(engine=engine, argv=[])
    lines = bench.report(args, "machine", "config", {"oncevault": mine, "openbao": theirs})
    (line,) = [x for x in lines if x.startswith("Ratio oncevault/OpenBao")]
    return str(line)


@pytest.mark.parametrize(
    ("engine", "ours", "met"),
    [
        ("postgres", 1600.0, True),  # 1.6x >= 1.5x
        ("postgres", 1400.0, False),
        ("sqlite", 1600.0, False),  # 1.6x < 2.0x
        ("sqlite", 2000.0, True),
    ],
)
def test_the_target_is_each_engines(bench: ModuleType, engine: str, ours: float, met: bool) -> None:
    line = verdict(bench, engine, ours=ours)
    assert f"Target on {engine} (≥ {bench.TARGET_RATIO[engine]}x" in line
    assert line.endswith("**met**.") == met, line


def test_a_p99_above_openbaos_or_an_invalid_run_is_not_met(bench: ModuleType) -> None:
    assert verdict(bench, "sqlite", ours=3000.0, ours_p99=250.0).endswith("**not met**.")
    invalid = verdict(bench, "sqlite", ours=3000.0, valid=False)
    assert "**not met**. (not every run was valid)" in invalid


def test_the_machine_ceiling_line_says_what_the_cost_per_request_allows(
    bench: ModuleType,
) -> None:
    ours = bench.Summary("oncevault", 3000.0, 10.0, 90.0, 0, 0.5, 3, 3, machine_ms=0.62)
    theirs = bench.Summary("openbao", 2000.0, 20.0, 300.0, 0, 0.8, 3, 3, machine_ms=0.95)
    (_, line) = bench.ceiling(ours, theirs, 2.0, 2)
    assert "oncevault 0.62 ms, OpenBao 0.95 ms" in line
    assert "at most 3,226 req/s (1.61x OpenBao's measured rate)" in line
    assert "2.0x would need at most 0.50 ms a request" in line
    unknown = bench.Summary("oncevault", 3000.0, 10.0, 90.0, 0, 0.5, 3, 3)
    assert bench.ceiling(unknown, theirs, 2.0, 2) == []
