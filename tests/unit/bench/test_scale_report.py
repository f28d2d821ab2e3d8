"""bench/scale.py's judgement of issue #11's read-p50 target: the smallest and the
largest vault read in turns decide it (the median of the pairs' ratios, every run
valid, 10⁶ citizens reached, else "not shown"); the growth's own rounds are only
reported beside it."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def scale(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import their siblings
    import scale  # noqa: PLC0415

    return scale


def read(scale: ModuleType, size: int, p50_ms: float, *, valid: bool = True) -> Any:
    return scale.ReadResult(
        size=size,
        target=size,
        rounds=[[p50_ms / 1000] * 11],
        server_cpu=0.001 * 11,
        load_start=0.5,
        load_end=0.5,
        memories=[],
        file_mb=1.0,
        problems=[] if valid else ["read answered 500"],
    )


def verdict(
    scale: ModuleType, alternated: Any, growth: tuple[float, float], *, largest: int = 1_000_000
) -> str:
    args = argparse.Namespace(
        argv=[],
        workers=2,
        worker_affinity="spread",
        dek_cache=60.0,
        rate_limit=10_000_000,
        seed_concurrency=2,
        seed_synchronous="NORMAL",
        probe_citizens=100,
        rounds=3,
        reads=1000,
        wrk_seconds=0,
        wrk_connections=8,
    )
    reads = [read(scale, 1_000, growth[0]), read(scale, largest, growth[1])]
    lines = scale.report(args, "machine", [], [], reads, "", alternated)
    (line,) = [x for x in lines if x.startswith("- read p50 within")]
    return str(line)


def pairs(scale: ModuleType, *ratios: float, valid: bool = True) -> Any:
    return scale.Alternated(
        1_000,
        1_000_000,
        [(read(scale, 1_000, 2.0), read(scale, 1_000_000, 2.0 * r, valid=valid)) for r in ratios],
    )


def test_the_pairs_decide_not_the_growth_rounds(scale: ModuleType) -> None:
    line = verdict(scale, pairs(scale, 1.1, 1.5, 1.0), growth=(1.5, 2.0))
    assert "**met**" in line and "median of 3 pairs 1.10x" in line
    assert "during the growth p50 1.5 ms at 1,000, 2.0 ms at 1,000,000 (1.33x)" in line
    assert "**not met**" in verdict(scale, pairs(scale, 1.3, 1.25, 1.0), growth=(2.0, 2.0))


def test_an_invalid_alternated_run_fails_the_target(scale: ModuleType) -> None:
    line = verdict(scale, pairs(scale, 1.0, 1.0, 1.0, valid=False), growth=(2.0, 2.0))
    assert "**not met**" in line and "an invalid run" in line


def test_without_alternation_the_growth_rounds_decide(scale: ModuleType) -> None:
    assert "**met**" in verdict(scale, None, growth=(2.0, 2.2))
    assert "**not met**" in verdict(scale, None, growth=(2.0, 2.6))


def test_a_vault_that_never_reached_a_million_does_not_meet_the_target(
    scale: ModuleType,
) -> None:
    # Seeding stopped at its budget: equal p50s at 10^3 and 10^5 say nothing of 10^6.
    line = verdict(scale, None, growth=(2.0, 2.0), largest=100_000)
    assert "**not shown** (10⁶ citizens not reached)" in line
    assert "**met**" not in line
    assert "**met**" in verdict(scale, None, growth=(2.0, 2.0))
