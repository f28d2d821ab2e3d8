"""Hostile input over real HTTP (granian, `serve --workers 2`): bytes exactly as sent.

Complements `tests/e2e/test_product.py::test_hostile_bodies_on_real_routes` (in-process)
and `tests/unit/api/test_bodies.py`: here the request line and body go through a real
socket with `http.client` (no client-side normalisation of `..` or escapes), on every
body route and on every route with an id. Each case has the statuses it may get;
none may be 5xx, every refusal on `/v1` is problem+json, nothing is stored, nothing
unhandled is logged, and the server still answers afterwards.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.reliability.checks import access_statuses
from tests.reliability.stack import (
    Stack,
    bearer,
    build_stack,
    close_stack,
    run_blocking,
)

NID = "900101-1234567"
R400 = frozenset({400})
R404 = frozenset({400, 404})
R415 = frozenset({415})
R422 = frozenset({400, 422})
LONG = "c" * 10_000
#: The server closed the connection before its answer could be read: it refused an
#: oversized body from its Content-Length while the client was still sending it.
CLOSED = 0


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    target: str
    who: str  # issuer | consumer | citizen | auditor | none
    body: bytes | None
    allowed: frozenset[int]
    content_type: str | None = "application/json"


def _record(**data: object) -> dict[str, object]:
    return {"subject": {"nid": NID}, "type": "income_certificate", "data": data}


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


GOOD_RECORD = _json(_record(year=2025, total_income=1, tax_paid=1, employer="E"))
CONSENT = {
    "subject": {"nid": NID},
    "purpose": "mortgage_screening",
    "items": [{"type": "income_certificate", "fields": ["year"]}],
    "access": "once",
    "valid_days": 30,
}


def _body_cases() -> list[Case]:
    deep_array = b"[" * 10_000 + b"]" * 10_000
    deep_object = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    deep_in_data = GOOD_RECORD.replace(b'"E"', b"[" * 10_000 + b"]" * 10_000)
    bodies: list[tuple[str, bytes, frozenset[int]]] = [
        ("nesting 10,000 arrays", deep_array, R400),
        ("nesting 10,000 objects", deep_object, R400),
        ("nesting 10,000 inside data", deep_in_data, R400),
        ("duplicate top-level keys", b'{"type": "a", "type": "b"}', R400),
        (
            "duplicate nested keys",
            GOOD_RECORD.replace(b'"year": 2025', b'"year": 1, "year": 2'),
            R400,
        ),
        ("lone high surrogate", GOOD_RECORD.replace(b'"E"', b'"\\ud800"'), R400),
        ("lone low surrogate", GOOD_RECORD.replace(b'"E"', b'"x\\udc00y"'), R400),
        ("surrogate as raw bytes", GOOD_RECORD.replace(b'"E"', b'"\xed\xa0\x80"'), R400),
        ("invalid utf-8", GOOD_RECORD.replace(b'"E"', b'"\xff\xfe"'), R400),
        ("NaN", GOOD_RECORD.replace(b"2025", b"NaN"), R400),
        ("Infinity", GOOD_RECORD.replace(b"2025", b"Infinity"), R400),
        ("-Infinity", GOOD_RECORD.replace(b"2025", b"-Infinity"), R400),
        ("1e999", GOOD_RECORD.replace(b"2025", b"1e999"), R400),
        ("-1e999", GOOD_RECORD.replace(b"2025", b"-1e999"), R400),
        ("2^63", GOOD_RECORD.replace(b"2025", str(2**63).encode()), R422),
        ("2^64", GOOD_RECORD.replace(b"2025", str(2**64).encode()), R422),
        ("-2^63-1", GOOD_RECORD.replace(b"2025", str(-(2**63) - 1).encode()), R422),
        ("400 digits", GOOD_RECORD.replace(b"2025", b"9" * 400), R422),
        ("empty body", b"", R400),
        ("null", b"null", R422),
        ("array", b"[]", R422),
        ("number", b"1", R422),
        ("truncated", GOOD_RECORD[:-3], R400),
        ("BOM", b"\xef\xbb\xbf" + GOOD_RECORD, R400),
    ]
    cases = [Case(f"records: {n}", "POST", "/v1/records", "issuer", b, a) for n, b, a in bodies]
    batch = _json({"records": [json.loads(GOOD_RECORD)]})
    cases += [
        Case(f"batch: {n}", "POST", "/v1/records:batch", "issuer", b, a) for n, b, a in bodies[:14]
    ]
    cases.append(
        Case(
            "batch: 2^64",
            "POST",
            "/v1/records:batch",
            "issuer",
            batch.replace(b"2025", str(2**64).encode()),
            frozenset({200, 400, 422}),
        )
    )
    consent = _json(CONSENT)
    for name, value in (
        ("valid_days 2^63", str(2**63)),
        ("valid_days 2^64", str(2**64)),
        ("valid_days -2^63-1", str(-(2**63) - 1)),
        ("valid_days 1e999", "1e999"),
        ("valid_days NaN", "NaN"),
        ("valid_days 1.5", "1.5"),
    ):
        body = consent.replace(b'"valid_days": 30', f'"valid_days": {value}'.encode())
        allowed = R400 if value in ("1e999", "NaN") else R422
        cases.append(
            Case(f"consent: {name}", "POST", "/v1/consent-requests", "consumer", body, allowed)
        )
    cases.append(
        Case(
            "consent: max_fetches 2^70",
            "POST",
            "/v1/consent-requests",
            "consumer",
            consent.replace(
                b'"valid_days": 30', f'"valid_days": 30, "max_fetches": {2**70}'.encode()
            ),
            R422,
        )
    )
    cases.append(
        Case(
            "consent: 10,000-char purpose",
            "POST",
            "/v1/consent-requests",
            "consumer",
            consent.replace(b"mortgage_screening", LONG.encode()),
            frozenset({403, 422}),
        )
    )
    cases.append(
        Case(
            "consent: 10,000-char nid",
            "POST",
            "/v1/consent-requests",
            "consumer",
            consent.replace(NID.encode(), b"9" * 10_000),
            R422,
        )
    )
    self_asserted = _json({"data": {"road_address": "x", "detail": "y", "postal_code": "1"}})
    for name, body, allowed in bodies[:14]:
        del body
        cases.append(
            Case(
                f"me: {name}",
                "PUT",
                "/v1/me/records/address",
                "citizen",
                _swap(self_asserted, name),
                allowed,
            )
        )
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json-patch+json; charset=utf-8, text/plain",
        None,
    ):
        cases.append(
            Case(
                f"content type {content_type}",
                "POST",
                "/v1/records",
                "issuer",
                GOOD_RECORD,
                R415 | R400,
                content_type,
            )
        )
    cases.append(
        Case(
            "json in utf-16",
            "POST",
            "/v1/records",
            "issuer",
            GOOD_RECORD.decode().encode("utf-16"),
            R400 | R415,
            "application/json; charset=utf-16",
        )
    )
    return cases


def _swap(body: bytes, name: str) -> bytes:
    """The same hostile change, applied to a self-asserted address body."""
    if "nesting" in name and "data" not in name:
        return (
            b"[" * 10_000 + b"]" * 10_000
            if "arrays" in name
            else b'{"a":' * 10_000 + b"1" + b"}" * 10_000
        )
    replacement = {
        "nesting 10,000 inside data": b"[" * 10_000 + b"]" * 10_000,
        "duplicate top-level keys": b'"x", "detail": "z"',
        "duplicate nested keys": b'"x", "road_address": "z"',
        "lone high surrogate": b'"\\ud800"',
        "lone low surrogate": b'"x\\udc00y"',
        "surrogate as raw bytes": b'"\xed\xa0\x80"',
        "invalid utf-8": b'"\xff\xfe"',
        "NaN": b"NaN",
        "Infinity": b"Infinity",
        "-Infinity": b"-Infinity",
        "1e999": b"1e999",
        "-1e999": b"-1e999",
    }[name]
    return body.replace(b'"x"', replacement, 1)


def _id_cases() -> list[Case]:
    big = str(10**30)
    cases = [
        Case("10,000-char consent id", "GET", f"/v1/consents/{LONG}", "consumer", None, R404),
        Case("10,000-char data type", "GET", f"/v1/data/{LONG}", "consumer", None, R404),
        Case("10,000-char record type", "GET", f"/v1/me/records/{LONG}", "citizen", None, R404),
        Case(
            "10,000-char approve", "POST", f"/v1/me/consents/{LONG}/approve", "citizen", None, R404
        ),
        Case("10,000-char revoke", "POST", f"/v1/me/consents/{LONG}/revoke", "citizen", None, R404),
        Case(
            "10,000-char receipt", "GET", f"/v1/me/consents/{LONG}/receipt", "citizen", None, R404
        ),
        Case(
            "10,000-char suggestion",
            "POST",
            f"/v1/me/suggestions/{LONG}/accept",
            "citizen",
            None,
            R404,
        ),
        Case(
            "10,000-char audit citizen",
            "GET",
            f"/v1/audit/entries?citizen_id={LONG}",
            "auditor",
            None,
            R400,
        ),
        Case(
            "10,000-char audit action",
            "GET",
            f"/v1/audit/entries?action={LONG}",
            "auditor",
            None,
            R400,
        ),
        Case(
            "10,000-char PUT type",
            "PUT",
            f"/v1/me/records/{LONG}",
            "citizen",
            _json({"data": {}}),
            R404 | R422,
        ),
        Case("huge proof seq", "GET", f"/v1/me/access-log/{big}/proof", "citizen", None, R404),
        Case("negative proof seq", "GET", "/v1/me/access-log/-1/proof", "citizen", None, R404),
        Case(
            "huge receipt version",
            "GET",
            f"/v1/me/consents/cns_x/receipt?version={2**63}",
            "citizen",
            None,
            R404,
        ),
        Case(
            "huge inclusion seq",
            "GET",
            f"/v1/audit/proofs/inclusion?seq={2**64}&tree_size=1",
            "auditor",
            None,
            R400,
        ),
        Case(
            "huge consistency",
            "GET",
            f"/v1/audit/proofs/consistency?first={2**63}&second={2**64}",
            "auditor",
            None,
            R400,
        ),
        Case("huge after", "GET", f"/v1/audit/entries?after={2**63}", "auditor", None, R400),
        Case("huge events after", "GET", f"/v1/events?after={2**63}", "consumer", None, R400),
        Case("huge limit", "GET", f"/v1/events?limit={big}", "consumer", None, R400),
        Case(
            "access-log before", "GET", f"/v1/me/access-log?before={2**64}", "citizen", None, R400
        ),
        Case("float after", "GET", "/v1/events?after=1e999", "consumer", None, R400),
        Case("NaN after", "GET", "/v1/events?after=NaN", "consumer", None, R400),
    ]
    traversal = [
        "/v1/data/../../../etc/passwd",
        "/v1/data/..%2F..%2F..%2Fetc%2Fpasswd",
        "/v1/data/%2e%2e%2f%2e%2e%2fkeys%2fkek.1",
        "/v1/consents/..%2F..%2F..%2Fetc%2Fpasswd",
        "/v1/consents/../../../etc/passwd",
        "/v1/me/records/..%2f..%2fkeys%2fkek.1",
        "/v1/me/records/%252e%252e%252fkeys",
        "/v1/me/consents/..%2F..%2Fme/revoke",
        "/v1/consents/cns_x%00",
        "/v1/consents/cns_x%0d%0aX-Injected:%201",
        "/v1/data/income_certificate%00.json",
        "/schema/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/v1/me/records/....//....//etc/passwd",
    ]
    who = {"data": "consumer", "consents": "consumer", "me": "citizen"}
    for target in traversal:
        segment = target.split("/")[2] if target.startswith("/v1/") else ""
        cases.append(
            Case(
                f"traversal {target}",
                "GET" if "revoke" not in target else "POST",
                target,
                who.get(segment, "none"),
                None,
                R404 | frozenset({403}),
            )
        )
    return cases


def _token_cases() -> list[Case]:
    form = "application/x-www-form-urlencoded"
    return [
        Case(
            "token: json body",
            "POST",
            "/oauth/token",
            "none",
            b'{"grant_type": "client_credentials"}',
            frozenset({400, 401, 415}),
        ),
        Case(
            "token: 10,000-char assertion",
            "POST",
            "/oauth/token",
            "none",
            b"grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth"
            b"%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=" + b"a" * 10_000,
            frozenset({400, 401}),
            form,
        ),
        Case(
            "token: duplicate fields",
            "POST",
            "/oauth/token",
            "none",
            b"grant_type=client_credentials&grant_type=password",
            frozenset({400, 401}),
            form,
        ),
        Case(
            "token: NUL and bad escapes",
            "POST",
            "/oauth/token",
            "none",
            b"grant_type=client%00credentials&scope=%ZZ%",
            frozenset({400, 401}),
            form,
        ),
        Case(
            "token: invalid utf-8",
            "POST",
            "/oauth/token",
            "none",
            b"grant_type=\xff\xfe&client_assertion=\xed\xa0\x80",
            frozenset({400, 401}),
            form,
        ),
        Case(
            "token: 2 MiB",
            "POST",
            "/oauth/token",
            "none",
            b"grant_type=" + b"a" * (2 << 20),
            frozenset({400, 413, CLOSED}),
            form,
        ),
        Case(
            "revoke: hostile",
            "POST",
            "/oauth/revoke",
            "none",
            b"token=" + b"\xff" * 100,
            frozenset({200, 400, 401}),
            form,
        ),
    ]


CASES = _body_cases() + _id_cases() + _token_cases()


@dataclass
class Target:
    stack: Stack
    auth: dict[str, dict[str, str]]
    records_before: int


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    stack = build_stack(Path(tmp_path_factory.mktemp("hostile")), "sqlite")
    try:
        stack.serve(workers=2)
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:

            def token(client_id: str, scope: str | None = None) -> str:
                response = client.post(
                    "/oauth/token", data=stack.token_form(client_id, scope=scope)
                )
                assert response.status_code == 200, response.text
                return str(response.json()["access_token"])

            auth = {
                "issuer": bearer(token("nts", "issuer")),
                "consumer": bearer(token("kbank", "consumer")),
                "auditor": bearer(token("bai")),
                "citizen": stack.idp.headers(NID),
                "none": {},
            }
        count = run_blocking(stack.fetch("SELECT count(*) AS n FROM records"))
        yield Target(stack=stack, auth=auth, records_before=int(count[0]["n"]))
    finally:
        close_stack(stack)


def send(stack: Stack, case: Case, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One request with the exact request target and body bytes."""
    assert stack.server is not None
    connection = http.client.HTTPConnection("127.0.0.1", stack.server.port, timeout=30)
    try:
        connection.putrequest(case.method, case.target, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if case.content_type is not None and case.body is not None:
            connection.putheader("Content-Type", case.content_type)
        if case.body is not None:
            connection.putheader("Content-Length", str(len(case.body)))
        # A refusal from the headers may close the connection while the body is sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.endheaders(case.body)
        try:
            response = connection.getresponse()
        except (ConnectionResetError, http.client.RemoteDisconnected):
            return CLOSED, {}, b""
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name[:60])
def test_hostile_request(target: Target, case: Case) -> None:
    status, headers, body = send(target.stack, case, target.auth[case.who])
    assert status < 500, (status, body[:300])
    assert status in case.allowed, (status, body[:300])
    if case.target.startswith("/v1/") and status >= 400:
        assert headers.get("content-type", "").startswith("application/problem+json"), headers
        problem = json.loads(body)
        assert problem["status"] == status
        assert LONG[:64] not in problem["detail"]  # ids are never echoed


def test_afterwards_nothing_stored_nothing_unhandled_still_serving(target: Target) -> None:
    count = run_blocking(target.stack.fetch("SELECT count(*) AS n FROM records"))
    stored = int(count[0]["n"]) - target.records_before
    # Only the deliberately valid batch (if accepted) may have stored one record.
    assert stored <= 1
    assert target.stack.server is not None
    log = target.stack.server.log()
    assert "http.unhandled" not in log
    statuses = access_statuses(log)
    assert statuses, "the server logged its requests"
    assert 500 not in statuses
    assert httpx.get(target.stack.base_url + "/readyz").status_code == 200
    assert target.stack.server.process is not None
    assert target.stack.server.process.poll() is None
    assert log.count("Spawning worker-") == 2  # no worker crashed and was respawned
