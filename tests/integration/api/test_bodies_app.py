"""api/bodies.py behind the real server (granian, ASGI, as ``oncevault serve`` runs it).

The unit tests drive the middleware through Litestar's TestClient and raw ASGI
calls; here real sockets show what a client sees: early 413 without sending the
body (``Expect: 100-continue``), chunked uploads counted, and bodies relayed intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.server import free_port

REPO = Path(__file__).resolve().parents[3]
CANARY = "CANARY-7f3a9c"
MIB = 1 << 20


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("granian") / "granian.log"
    args = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "tests.unit.api.test_bodies:make_app",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"granian exited {process.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(url + "/v1/things", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    pytest.fail(f"granian did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    assert CANARY not in log_path.read_text(errors="replace")


def problem_of(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert CANARY not in response.text
    body: dict[str, object] = response.json()
    assert body["code"] == code
    return body


def test_valid_body_relayed_byte_for_byte(base_url: str) -> None:
    raw = json.dumps(
        {"name": CANARY, "count": 3, "tags": ["a"], "nested": {"x": [1, 2.5]}}
    ).encode()
    response = httpx.post(
        base_url + "/v1/things", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"sha256": hashlib.sha256(raw).hexdigest(), "count": 3}


def test_refusals_over_the_wire(base_url: str) -> None:
    json_type = {"content-type": "application/json"}
    deep = b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    problem_of(
        httpx.post(base_url + "/v1/echo", content=deep, headers=json_type), 400, "malformed_request"
    )
    dup = b'{"a":1,"a":"' + CANARY.encode() + b'"}'
    problem_of(
        httpx.post(base_url + "/v1/echo", content=dup, headers=json_type), 400, "malformed_request"
    )
    text = {"content-type": "text/plain"}
    problem_of(
        httpx.post(base_url + "/v1/echo", content=b"{}", headers=text),
        415,
        "unsupported_media_type",
    )
    unknown = {"name": "n", "count": 1, "tags": [], "nested": {}, "foo": CANARY}
    problem_of(httpx.post(base_url + "/v1/things", json=unknown), 422, "validation_error")
    problem_of(httpx.get(base_url + f"/v1/things?limit={CANARY}"), 400, "malformed_request")


def test_chunked_upload_over_the_limit_is_413(base_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"pad":"'
        for _ in range(40):
            yield b"x" * 65_536
        yield b'"}'

    response = httpx.post(
        base_url + "/v1/echo", content=chunks(), headers={"content-type": "application/json"}
    )
    problem_of(response, 413, "payload_too_large")


def test_chunked_upload_under_the_limit_passes(base_url: str) -> None:
    parts = [b'{"pad":"', b"y" * 500_000, b'"}']
    response = httpx.post(
        base_url + "/v1/echo", content=iter(parts), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()


def test_batch_route_takes_12_mib(base_url: str) -> None:
    raw = b'{"pad":"' + b"z" * (12 * MIB) + b'"}'
    response = httpx.post(
        base_url + "/v1/records:batch",
        content=raw,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == hashlib.sha256(raw).hexdigest()


def test_content_length_over_the_limit_is_refused_before_the_body_is_sent(base_url: str) -> None:
    port = int(base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/records:batch HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(17 * MIB).encode() + b"\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65_536)
            if not chunk:
                break
            received += chunk
    status_line = received.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413"), received[:200]
    assert b"application/problem+json" in received.lower()
