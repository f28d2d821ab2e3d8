"""Run the real ``oncevault`` CLI and server as subprocesses, and clean up after."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
ONCEVAULT = str(BIN / "oncevault")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus any oncevault/Vault setting of the caller."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ONCEVAULT_", "VAULT_")) or k == "ONCEVAULT_TEST_POSTGRES_DSN"
    }
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ONCEVAULT, *args],
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class ServerProcess:
    """``oncevault serve`` on a free loopback port, in its own process group."""

    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"serve-{self.port}.log"
        self._env = env or clean_env()
        self._args = [
            ONCEVAULT,
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            *extra_args,
        ]
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    def started_workers(self) -> int:
        """Workers whose lifespan has started (each logs ``app.started`` once)."""
        return self.log().count('"app.started"')

    def start(self, *, timeout: float = 30) -> ServerProcess:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self._args,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}:\n{self.log()}")
            try:
                healthy = httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                healthy = False
            # One worker answers /healthz before the others have opened the database:
            # a test that then removes or breaks it would fail their start instead.
            if healthy and self.started_workers() >= self.workers:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not healthy within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout=5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
