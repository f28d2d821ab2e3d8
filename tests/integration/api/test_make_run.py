"""The README's first command: ``make run`` serves ``/healthz`` within 60 s once .venv exists."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.server import clean_env, free_port

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_serves_healthz_within_60s(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    log_path = tmp_path / "make-run.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"DATA_DIR={data_dir}", f"PORT={port}"],
            cwd=REPO,
            env=clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        healthy = False
        while time.monotonic() - started < 60:
            assert process.poll() is None, log_path.read_text(errors="replace")
            try:
                healthy = (
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
                )
            except httpx.HTTPError:
                healthy = False
            if healthy:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        assert healthy, f"not healthy after {elapsed:.1f}s:\n{log_path.read_text(errors='replace')}"
        print(f"make run healthy after {elapsed:.1f}s")
        output = log_path.read_text(errors="replace")
        assert f"http://127.0.0.1:{port}/healthz" in output  # it prints the URLs
        assert (data_dir / ".env").read_text().count("ONCEVAULT_DEV_IDP=1") == 1
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
