"""`oncevault demo [--serve]`: the home purchase in one command (issue 10).

The demo prints one machine-checkable line per recipient and record type, for what
its consent grants and for what it received:

    recipient kbank consented income_certificate: employer, total_income, year
    recipient kbank received income_certificate: employer, total_income, year

Each run has a hang guard: past it the demo gets SIGTERM (it then stops its server and
removes its data dir), then SIGKILL. Durations are printed, not asserted.
"""

from __future__ import annotations

import io
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from api.demo import BUYER_NID, Console
from tests.conftest import REPO_ROOT
from tests.helpers.server import ONCEVAULT, clean_env

HANG_GUARD = 120.0
LINE = re.compile(r"^recipient (\S+) (consented|received) ([a-z0-9_]+): (.+)$")
RECIPIENTS = {
    "kbank": "mortgage_screening",
    "wetax": "acquisition_tax",
    "registry": "property_registration",
}


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM (the demo stops its server and cleans up), then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _run_demo(*args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    process = subprocess.Popen(
        [ONCEVAULT, "demo", *args],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        _stop(process)
        output, _ = process.communicate()
        pytest.fail(f"oncevault demo still running after {HANG_GUARD:.0f} s:\n{output}")
    return process.returncode, output, time.monotonic() - started


def _allowed_fields() -> dict[str, dict[str, set[str]]]:
    """purpose -> record type -> fields the shipped catalogue allows ("*" expanded)."""
    catalogue = REPO_ROOT / "policies" / "catalogue"
    types = tomllib.loads((catalogue / "record_types.toml").read_text())["record_types"]
    purposes = tomllib.loads((catalogue / "purposes.toml").read_text())["purposes"]
    return {
        name: {
            record_type: set(types[record_type]["fields"]) if fields == ["*"] else set(fields)
            for record_type, fields in purpose["items"].items()
        }
        for name, purpose in purposes.items()
    }


def test_demo_each_recipient_receives_only_its_consented_fields() -> None:
    code, output, seconds = _run_demo()
    print(f"oncevault demo: exit {code} after {seconds:.1f} s")
    assert code == 0, output

    seen: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {"consented": {}, "received": {}}
    for line in output.splitlines():
        if match := LINE.match(line):
            who, what, record_type, fields = match.groups()
            assert record_type not in seen[what].setdefault(who, {}), line
            seen[what][who][record_type] = tuple(fields.split(", "))
    assert set(seen["consented"]) == set(seen["received"]) == set(RECIPIENTS)
    allowed = _allowed_fields()
    for who, purpose in RECIPIENTS.items():
        consented, received = seen["consented"][who], seen["received"][who]
        # exactly the consented fields, record type by record type
        assert received == consented, who
        # and the consent itself stays within what the catalogue lets the purpose have
        for record_type, fields in consented.items():
            assert set(fields) <= allowed[purpose][record_type], (who, record_type)
    # Fields that are in the vault but that nobody asked for never travel.
    assert "tax_paid" not in seen["received"]["kbank"]["income_certificate"]
    assert "seller_name" not in seen["received"]["kbank"]["sale_contract"]
    assert "moved_in_on" not in {
        f for r in seen["received"].values() for f in r.get("resident_registration", ())
    }
    assert "income_certificate" not in seen["received"]["wetax"]
    assert "income_certificate" not in seen["received"]["registry"]

    # The demo's own verifications ran and said so.
    assert "checkpoint: " in output and "signature verified" in output
    assert "inclusion: kbank's read" in output
    assert "access log: all 3 reads" in output
    # Today's re-entered fields are counted from what the three recipients needed.
    entries = sum(len(f) for r in seen["consented"].values() for f in r.values())
    facts = len({(t, f) for r in seen["consented"].values() for t, fs in r.items() for f in fs})
    assert re.search(
        rf"\| fields re-entered +\| {entries} \(of {facts} distinct facts\) +\| 0 +\|", output
    ), output
    assert "demo passed" in output
    # Plain output when not on a terminal, and the throwaway directory is gone.
    assert "\x1b[" not in output
    where = re.search(r"in (\S+) \(a throwaway directory\)", output)
    assert where is not None
    assert not Path(where.group(1)).exists()


def _lines(process: subprocess.Popen[str]) -> tuple[queue.Queue[str | None], threading.Thread]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return lines, thread


def test_demo_serve_keeps_the_server_until_ctrl_c() -> None:
    started = time.monotonic()
    process = subprocess.Popen(
        [ONCEVAULT, "demo", "--serve"],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, pump = _lines(process)
    output: list[str] = []
    root: Path | None = None
    try:
        deadline = started + HANG_GUARD
        while not any("Press Ctrl-C" in line for line in output):
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail("no 'Press Ctrl-C' within the hang guard:\n" + "\n".join(output))
            if line is None:
                pytest.fail("the demo ended instead of serving:\n" + "\n".join(output))
            output.append(line)
        text = "\n".join(output)
        print(f"oncevault demo --serve: serving after {time.monotonic() - started:.1f} s")
        assert "demo passed" in text
        page = re.search(r"citizen page\s+(http://127\.0\.0\.1:\d+)/my", text)
        assert page is not None, text
        base = page.group(1)
        assert re.search(rf"sign in .*{re.escape(BUYER_NID)}", text), text
        kept = re.search(r"data dir\s+(\S+)/data\s+\(kept", text)
        assert kept is not None, text
        root = Path(kept.group(1))
        assert (root / "data" / "oncevault.sqlite").exists()
        assert httpx.get(base + "/healthz", timeout=5).status_code == 200
        # The request left for the page is there, pending, for the buyer to answer.
        assert "waiting there" in text

        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=30) == 0, "\n".join(output)
        with pytest.raises(httpx.ConnectError):
            httpx.get(base + "/healthz", timeout=2)
    finally:
        _stop(process)
        pump.join(timeout=5)
        assert process.stdout is not None
        process.stdout.close()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def test_console_draws_boxes_and_colour_on_a_terminal_and_ascii_otherwise() -> None:
    rows = [("fields re-entered", "43", "0"), ("주소", "서울", "-")]
    plain, rich = io.StringIO(), io.StringIO()
    Console(plain).table(("", "today", "with oncevault"), rows)  # a StringIO is no terminal
    Console(rich, rich=True).table(("", "today", "with oncevault"), rows)
    assert "\x1b[" not in plain.getvalue()
    assert "+---" in plain.getvalue() and "┌" not in plain.getvalue()
    assert "┌" in rich.getvalue() and "\x1b[1m" in rich.getvalue()
    # Hangul takes two columns: every row of the table ends in the same column.
    widths = {
        sum(2 if "가" <= ch <= "힣" else 1 for ch in line) for line in plain.getvalue().splitlines()
    }
    assert len(widths) == 1
