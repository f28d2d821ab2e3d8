"""Per-client rate limits across two workers (`ONCEVAULT_RATE_LIMIT_PER_MINUTE=5`).

Every request goes to a worker chosen by the test: it opens connections until the
kernel (/proc) shows the wanted worker process accepted one, and alternates between
the two workers, so the limit can only be reached if both count together.

- token endpoint: a client's 6th token request in a minute gets 429 `rate_limited`
  with a Retry-After of 1..60 s; another client still gets tokens;
- consented reads (GET /v1/data, counted in their own bucket inside the read's unit
  since 9a3354c): the 6th read in a minute gets 429 `rate_limited` with Retry-After,
  and is audited like any refusal (X-Audit-Seq names a `denied` data.read entry);
  `ok` entries = responses 200; another client's requests still pass.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.reliability.checks import Read, read_violations
from tests.reliability.stack import Server, Stack, build_stack, close_stack, run_blocking

LIMIT = 5
NID = "900101-7654321"


@dataclass(frozen=True)
class Answer:
    status: int
    worker: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class TwoWorkers:
    """Requests sent to a chosen one of the server's two worker processes."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.turn = 0
        self.workers = sorted(self.seen_workers())

    def _connect_to(self, wanted: int | None) -> tuple[http.client.HTTPConnection, int]:
        for _ in range(200):
            connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
            connection.connect()
            assert connection.sock is not None
            worker = self.server.worker_of_connection(connection.sock.getsockname()[1])
            if worker is not None and wanted in (None, worker):
                return connection, worker
            connection.close()
        raise AssertionError(f"no connection reached worker {wanted}")

    def seen_workers(self) -> set[int]:
        """Open connections until both workers answered; their pids."""
        seen: set[int] = set()
        for _ in range(200):
            connection, worker = self._connect_to(None)
            connection.close()
            seen.add(worker)
            if len(seen) == 2:
                return seen
        raise AssertionError("could not reach two workers")

    def send(
        self, method: str, path: str, *, headers: dict[str, str], body: bytes | None = None
    ) -> Answer:
        """The next request, on the other worker than the previous one."""
        wanted = self.workers[self.turn % 2]
        self.turn += 1
        connection, worker = self._connect_to(wanted)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return Answer(
                response.status,
                worker,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    def token(self, stack: Stack, client_id: str, **kw: Any) -> Answer:
        form = urlencode(stack.token_form(client_id, **kw)).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return self.send("POST", "/oauth/token", headers=headers, body=form)

    def post_json(self, path: str, token: str, value: object) -> Answer:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return self.send("POST", path, headers=headers, body=json.dumps(value).encode())


def _wait_for_a_fresh_window(margin: float = 8.0) -> None:
    """The limiter counts whole clock minutes: start well inside one."""
    into = time.time() % 60
    if into > 60 - margin:
        time.sleep(60 - into + 0.2)


def refusal_violations(answers: list[Answer]) -> list[str]:
    violations = []
    for a in answers:
        if a.status != 429:
            violations.append(f"{a.status} instead of 429")
            continue
        retry_after = a.headers.get("retry-after", "")
        if not retry_after.isdigit() or not 1 <= int(retry_after) <= 60:
            violations.append(f"Retry-After {retry_after!r}")
        if a.json().get("code") != "rate_limited":
            violations.append(f"code {a.json().get('code')}")
    return violations


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, TwoWorkers]]:
    """One server for the module: the tests use different clients' buckets."""
    env = {"ONCEVAULT_RATE_LIMIT_PER_MINUTE": str(LIMIT)}
    stack = build_stack(Path(tmp_path_factory.mktemp("ratelimit")), "sqlite", env=env)
    try:
        yield stack, TwoWorkers(stack.serve(workers=2))
    finally:
        close_stack(stack)


def test_token_endpoint_limit_is_per_client_and_shared_by_the_workers(
    both: tuple[Stack, TwoWorkers],
) -> None:
    stack, pair = both
    _wait_for_a_fresh_window()
    answers = [pair.token(stack, "bai") for _ in range(LIMIT + 3)]
    assert [a.status for a in answers[:LIMIT]] == [200] * LIMIT, [a.status for a in answers]
    assert refusal_violations(answers[LIMIT:]) == []
    assert len({a.worker for a in answers[:LIMIT]}) == 2
    # Another client, on both workers, is not affected.
    assert [pair.token(stack, "court").status for _ in range(2)] == [200, 200]


def test_reads_are_limited_per_client_and_shared_by_the_workers(
    both: tuple[Stack, TwoWorkers],
) -> None:
    stack, pair = both
    _wait_for_a_fresh_window()
    nts = pair.token(stack, "nts", scope="issuer").json()["access_token"]
    bank = pair.token(stack, "kbank", scope="consumer").json()["access_token"]
    record = {
        "subject": {"nid": NID},
        "type": "income_certificate",
        "data": {"year": 2025, "total_income": 1, "tax_paid": 1, "employer": "E"},
    }
    assert pair.post_json("/v1/records", nts, record).status == 201
    request = {
        "subject": {"nid": NID},
        "purpose": "mortgage_screening",
        "items": [{"type": "income_certificate", "fields": ["year"]}],
        "access": "standing",
        "valid_days": 30,
    }
    asked = pair.post_json("/v1/consent-requests", bank, request)  # kbank's API hit 1 of 5
    assert asked.status == 201, asked.body
    consent_id = asked.json()["consent_id"]
    approved = pair.send(
        "POST", f"/v1/me/consents/{consent_id}/approve", headers=stack.idp.headers(NID)
    )
    assert approved.status == 200, approved.body
    bound = pair.token(stack, "kbank", consent_id=consent_id).json()["access_token"]

    answers = [
        pair.send("GET", "/v1/data", headers={"Authorization": f"Bearer {bound}"})
        for _ in range(LIMIT + 2)
    ]
    served = answers[:LIMIT]
    assert [a.status for a in served] == [200] * LIMIT, [a.body for a in answers]
    assert len({a.worker for a in served}) == 2
    refused = answers[LIMIT:]
    assert refusal_violations(refused) == [], [(a.status, a.body) for a in refused]
    # Another client's API requests still pass.
    assert pair.post_json("/v1/records", nts, record).status == 200

    reads = [
        Read(
            consent_id,
            a.status,
            int(a.headers["x-audit-seq"]) if "x-audit-seq" in a.headers else None,
            a.headers.get("x-request-id"),
            a.json().get("code") if a.status >= 400 else None,
        )
        for a in answers
    ]
    entries = run_blocking(stack.entries())
    assert read_violations(reads, entries, allowed=frozenset({200, 429})) == []
    denied = [e for e in entries.values() if e["action"] == "data.read" and e["outcome"] != "ok"]
    assert [e["reason_code"] for e in denied] == ["rate_limited"] * len(refused)
