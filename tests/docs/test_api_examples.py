"""docs/api.md runs: every ```sh and ```python block, in order, against a live server.

The shell blocks run one after the other as if typed into one terminal: each is its
own ``bash -euo pipefail`` (so a failing command fails that block), and the variables
and functions it defines carry over to the next ones through a state file. The Python
blocks run in one interpreter, as in one session, each reported separately. Both get
the guide's placeholders from the environment: BASE and PORT of a fresh
``oncevault serve``, its ONCEVAULT_DATA_DIR, a WORK directory and NID; the guide
itself registers its clients with the CLI, as it tells readers to.

Each block must exit 0 and print something. Durations are printed, not asserted;
every block has a hang guard.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers.server import BIN, ServerProcess, clean_env, run_cli

DOC = REPO_ROOT / "docs" / "api.md"
NID = "900101-1234567"
BLOCK_TIMEOUT = 60.0
FENCE = re.compile(r"^```(sh|python)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
ASSIGNED = re.compile(r"^[ \t]*(?:export[ \t]+)?([A-Z][A-Z0-9_]*)=", re.MULTILINE)
FUNCTION = re.compile(r"^([a-z_][a-z0-9_]*)\(\)[ \t]*\{", re.MULTILINE)
DONE = "@@ docs-block-done "

# Runs the guide's Python blocks in one namespace, one block per line of JSON on stdin.
WORKER = f"""\
import json, sys, traceback
namespace = {{"__name__": "__main__"}}
for line in sys.stdin:
    block = json.loads(line)
    status = 0
    try:
        exec(compile(block["code"], block["name"], "exec"), namespace)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    print({DONE!r} + str(status), flush=True)
"""


@dataclass(frozen=True)
class Block:
    kind: str
    code: str
    line: int

    @property
    def name(self) -> str:
        return f"docs/api.md:{self.line}"


def blocks(text: str) -> list[Block]:
    return [
        Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
        for m in FENCE.finditer(text)
    ]


class Shell:
    """Shell blocks in order, with what each defines kept for the next."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = {**env, "DOCS_STATE": str(cwd / ".docs-shell-state")}
        self.cwd = cwd
        Path(self.env["DOCS_STATE"]).write_text("")

    def run(self, block: Block) -> tuple[int, str]:
        keep = [
            f'declare -p {name} >> "$DOCS_STATE"'
            for name in sorted(set(ASSIGNED.findall(block.code)))
        ]
        keep += [
            f'declare -f {name} >> "$DOCS_STATE"'
            for name in sorted(set(FUNCTION.findall(block.code)))
        ]
        script = "\n".join(['source "$DOCS_STATE"', f"# {block.name}", block.code, *keep])
        try:
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                check=False,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=BLOCK_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            return -1, f"hung for {BLOCK_TIMEOUT:.0f} s:\n{exc.output or ''}"
        return done.returncode, done.stdout


class Python:
    """One interpreter for every Python block, fed block by block."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-c", WORKER],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, block: Block) -> tuple[int, str]:
        assert self.process.stdin is not None
        # Padded so that a traceback names the line of docs/api.md itself.
        code = "\n" * block.line + block.code
        self.process.stdin.write(json.dumps({"code": code, "name": str(DOC)}) + "\n")
        self.process.stdin.flush()
        output: list[str] = []
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                return -1, f"hung for {BLOCK_TIMEOUT:.0f} s:\n" + "".join(output)
            if line is None:
                return -1, "the interpreter exited:\n" + "".join(output)
            if line.startswith(DONE):
                return int(line[len(DONE) :]), "".join(output)
            output.append(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.pump.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    data_dir = tmp_path / "data"
    initialised = run_cli("init", "--data-dir", str(data_dir))
    assert initialised.returncode == 0, initialised.stderr
    with ServerProcess(data_dir) as server:
        yield server


def test_the_guide_has_blocks_for_every_party() -> None:
    found = blocks(DOC.read_text(encoding="utf-8"))
    kinds = {b.kind for b in found}
    assert kinds == {"sh", "python"}
    text = "\n".join(b.code for b in found)
    for needle in (
        "oncevault clients add",
        "oncevault assertion",
        "oncevault dev-token",
        "/oauth/token",
        "/v1/records",
        "/v1/consent-requests",
        "/approve",
        "/v1/data",
        "/v1/events",
        "/v1/me/access-log",
        "/v1/audit/entries",
        "/v1/audit/proofs/inclusion",
        "/v1/audit/checkpoint",
        "Idempotency-Key",
        "PrivateKeyJWT",
        "OKPKey.import_key",
    ):
        assert needle in text, needle


@pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("bash", "curl", "jq", "openssl")),
    reason="the guide's shell examples need bash, curl, jq and openssl",
)
def test_every_example_in_the_api_guide_runs(server: ServerProcess, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PORT=str(server.port),
        BASE=server.base_url,
        ONCEVAULT_DATA_DIR=str(server.data_dir),
        WORK=str(work),
        NID=NID,
        PYTHONUNBUFFERED="1",
    )
    found = blocks(DOC.read_text(encoding="utf-8"))
    assert len(found) >= 20
    shell, python = Shell(env, work), Python(env, work)
    started = time.monotonic()
    try:
        for block in found:
            began = time.monotonic()
            status, output = (shell if block.kind == "sh" else python).run(block)
            print(f"{block.name} ({block.kind}): exit {status} in {time.monotonic() - began:.1f} s")
            if os.environ.get("DOCS_SHOW_OUTPUT"):
                print(output)
            assert status == 0, (
                f"{block.name} ({block.kind}) exited {status}:\n{output}\n--- server log:\n{server.log()[-3000:]}"
            )
            assert output.strip(), f"{block.name} printed nothing"
    finally:
        python.close()
    print(f"{len(found)} blocks of docs/api.md in {time.monotonic() - started:.1f} s")
