"""Merkle test vectors: /work/shared/vectors/merkle_probes.json (or $ONCEVAULT_SHARED_DIR/vectors).

A test that takes a ``merkle_probe`` argument runs once per vector; one that
takes ``merkle_probes`` gets the whole list.
"""

import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

PROBES_FILE = "merkle_probes.json"


def vectors_dir() -> Path:
    """The shared vectors directory: a sibling of the repository root unless overridden."""
    shared = os.environ.get("ONCEVAULT_SHARED_DIR")
    if shared:
        return Path(shared) / "vectors"
    repo_root = Path(__file__).resolve().parents[3]
    return (repo_root / ".." / "shared" / "vectors").resolve()


@cache
def load_probes() -> list[dict[str, Any]]:
    probes: list[dict[str, Any]] = json.loads((vectors_dir() / PROBES_FILE).read_text())
    return probes


def probe_id(index: int, probe: dict[str, Any]) -> str:
    desc = re.sub(r"[^A-Za-z0-9@]+", "-", probe["desc"]).strip("-")
    return f"{index:03d}-{probe['kind']}-{desc}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "merkle_probe" in metafunc.fixturenames:
        probes = load_probes()
        metafunc.parametrize(
            "merkle_probe", probes, ids=[probe_id(i, p) for i, p in enumerate(probes)]
        )


@pytest.fixture
def merkle_probes() -> list[dict[str, Any]]:
    return load_probes()
