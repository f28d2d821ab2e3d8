"""Granian vs uvicorn on a Litestar hello route (the choice behind ``oncevault serve``).

Usage: .venv/bin/python bench/asgi_servers.py [--duration 10] [--connections 64]
Needs wrk (Debian package ``wrk``; ``make bench`` installs it). Each server runs one
worker; wrk uses 1 thread so both share the machine's 2 cores the same way.
Runs alternate, three each, medians reported.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(kind: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    if kind == "granian":
        cmd = [
            str(BIN / "granian"),
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--no-ws",
            "hello_app:app",
        ]
    else:
        cmd = [
            str(BIN / "uvicorn"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "httptools" if _has("httptools") else "h11",
            "--no-access-log",
            "--log-level",
            "warning",
            "hello_app:app",
        ]
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=HERE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/hello", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"{kind} did not start")


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def wrk(port: int, duration: int, connections: int) -> tuple[float, float, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            f"http://127.0.0.1:{port}/hello",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return rps, pct("50"), pct("99")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {"granian": [], "uvicorn": []}
    for _ in range(args.rounds):
        for kind, rows in results.items():
            port = free_port()
            proc = start(kind, port)
            try:
                wrk(port, 2, args.connections)  # warm-up
                rows.append(wrk(port, args.duration, args.connections))
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
    print(f"{'server':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}   (median of {args.rounds})")
    for kind, rows in results.items():
        rps = statistics.median(r[0] for r in rows)
        p50 = statistics.median(r[1] for r in rows)
        p99 = statistics.median(r[2] for r in rows)
        print(f"{kind:<10}{rps:>10.0f}{p50:>10.2f}{p99:>10.2f}")


if __name__ == "__main__":
    main()
