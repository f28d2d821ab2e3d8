"""api/fastread.py answers the consented reads in front of Litestar's per-route
layers. Every answer must be the one the route handlers give: each request below is
sent twice, through the fast path and with it switched off, and the two answers (and
the audit entries they append) must be equal but for the request id and the sequence
numbers."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

import api.fastread as fastread
from api.app import create_app
from api.ratelimit import RateDecision
from tests.helpers.runtime import local_settings
from tests.reliability.inprocess import Local, local_platform
from tests.reliability.scenario import Home, setup_home, token
from vault.clock import ManualClock
from vault.errors import KeyProviderUnavailable
from vault.keys import UnwrapRequest
from vault.service import Actor

#: Differ between two equal answers.
VOLATILE_HEADERS = {"x-request-id", "x-audit-seq", "date"}


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    async with local_platform(tmp_path) as platform:
        yield platform


def answer(response: httpx.Response) -> dict[str, Any]:
    headers = sorted(
        (name, value) for name, value in response.headers.items() if name not in VOLATILE_HEADERS
    )
    return {
        "status": response.status_code,
        "headers": headers,
        "body": response.content,
        "audit_seq": "x-audit-seq" in response.headers,
        "request_id": response.headers.get("x-request-id", "").startswith("req_"),
    }


def stable(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in ("seq", "request_id", "ts", "prev")}


class Twice:
    """Send a request through the fast path, then through the route handlers."""

    def __init__(self, local: Local, monkeypatch: pytest.MonkeyPatch) -> None:
        self.local = local
        self.monkeypatch = monkeypatch
        self.fast_answers = 0
        real = fastread.answer

        async def counted(*args: Any, **kwargs: Any) -> None:
            self.fast_answers += 1
            await real(*args, **kwargs)

        monkeypatch.setattr(fastread, "answer", counted)

    async def both(
        self,
        path: str,
        headers: dict[str, str] | Callable[[], Awaitable[dict[str, str]]],
        *,
        fast: bool = True,
        method: str = "GET",
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``headers``: the same for both requests, or made afresh before each (a
        single-use DPoP proof, say)."""
        results = []
        for through_fast_path in (True, False):
            sent = headers if isinstance(headers, dict) else await headers()
            before = len(await self.local.entries())
            counted = self.fast_answers
            with self.monkeypatch.context() as patch:
                if not through_fast_path:
                    passthrough = fastread.ConsentedReads.__call__

                    async def off(self: Any, scope: Any, receive: Any, send: Any) -> None:
                        await self.app(scope, receive, send)

                    patch.setattr(fastread.ConsentedReads, "__call__", off)
                    assert fastread.ConsentedReads.__call__ is not passthrough
                response = await self.local.http.request(method, path, headers=sent)
            entries = await self.local.entries()
            appended = [stable(entries[seq]) for seq in sorted(entries)[before:]]
            took_fast_path = self.fast_answers - counted
            assert took_fast_path == (1 if fast and through_fast_path else 0), path
            if "x-audit-seq" in response.headers:
                assert int(response.headers["x-audit-seq"]) in entries
            results.append({**answer(response), "appended": appended})
        return results[0], results[1]


@pytest.fixture
async def home(local: Local) -> Home:
    return await setup_home(local.http, local, citizens=1)


@pytest.fixture
def twice(local: Local, monkeypatch: pytest.MonkeyPatch) -> Twice:
    return Twice(local, monkeypatch)


@pytest.fixture
def bound(home: Home) -> str:
    """The home's one consent-bound bearer token."""
    ((_, value),) = home.tokens.items()
    return value


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def test_granted_reads_are_the_handlers_answers(twice: Twice, bound: str) -> None:
    for path in ("/v1/data/income_certificate", "/v1/data", "/v1/data/income_certificate?x=1"):
        fast, slow = await twice.both(path, bearer(bound))
        assert fast["status"] == 200, fast
        assert fast == slow
        assert fast["appended"] and fast["appended"][0]["outcome"] == "ok"
        assert ("content-type", "application/json") in fast["headers"]


async def test_refusals_are_the_handlers_answers(local: Local, twice: Twice, bound: str) -> None:
    unbound = await token(local.http, local, "kbank", scope="consumer")
    issuer_only = await token(local.http, local, "court")
    forged = bound[:-4] + ("AAAA" if not bound.endswith("AAAA") else "BBBB")
    cases: list[tuple[str, dict[str, str], int, str]] = [
        ("/v1/data/income_certificate", {}, 401, "invalid_token"),
        ("/v1/data/income_certificate", bearer(forged), 401, "invalid_token"),
        ("/v1/data", {"Authorization": "Basic eDp5"}, 401, "invalid_token"),
        ("/v1/data/income_certificate", bearer(issuer_only), 403, "forbidden"),
        ("/v1/data/income_certificate", bearer(unbound), 403, "scope_not_consented"),
        ("/v1/data/vehicle_registration", bearer(bound), 403, "scope_not_consented"),
        ("/v1/data/unknown_type", bearer(bound), 403, "scope_not_consented"),
    ]
    for path, headers, status, code in cases:
        fast, slow = await twice.both(path, headers)
        assert (fast["status"], code) == (status, code), (path, fast)
        assert fast == slow, path
        assert f'"code":"{code}"'.encode() in fast["body"]
        assert ("content-type", "application/problem+json") in fast["headers"]


async def test_a_bound_token_of_a_client_that_lost_its_role_is_refused_and_audited(
    local: Local, twice: Twice, bound: str
) -> None:
    """A consent-bound token stays signed and unexpired after its client's consumer
    role is taken away; the read checks the live registration in its unit: 403
    ``forbidden`` with its ``denied`` entry (no consent or citizen named, nothing
    released), on both paths."""
    clients = local.runtime.clients
    assert clients is not None
    await clients.change(
        "kbank", actor=Actor("operator", "ops", None), reason="roles", roles="issuer"
    )
    fast, slow = await twice.both("/v1/data/income_certificate", bearer(bound))
    assert fast == slow
    assert (fast["status"], fast["audit_seq"]) == (403, True)
    assert b'"code":"forbidden"' in fast["body"]
    [entry] = fast["appended"]
    assert entry["action"] == "data.read"
    assert (entry["outcome"], entry["reason_code"]) == ("denied", "forbidden")
    assert entry["actor"] == {"type": "client", "id": "kbank"}
    assert entry["consent_id"] is None and entry["citizen_id"] is None
    assert entry.get("items", []) == []


async def test_types_off_the_pattern_go_to_litestars_validation(twice: Twice, bound: str) -> None:
    for path in (
        "/v1/data/Income",
        "/v1/data/" + "a" * 65,
        "/v1/data/a-b",
        "/v1/data/income_certificate%0A",  # `$` would have let the newline through
    ):
        fast, slow = await twice.both(path, bearer(bound), fast=False)
        assert fast == slow
        assert fast["status"] == 400, fast
        assert b'"code":"malformed_request"' in fast["body"]
        assert fast["appended"] == []
    # other methods on the read paths pass through too
    fast, slow = await twice.both("/v1/data", bearer(bound), fast=False, method="POST")
    assert fast == slow
    assert fast["status"] == 405


async def test_revoked_rate_limited_and_failing_reads_are_the_handlers_answers(
    local: Local, home: Home, monkeypatch: pytest.MonkeyPatch, twice: Twice, bound: str
) -> None:
    consent_id = next(iter(home.tokens))
    limiter = local.runtime.rate_limiter
    assert limiter is not None

    async def refused(client_id: str, scope: str) -> RateDecision:
        return RateDecision(allowed=False, retry_after=17)

    with monkeypatch.context() as patch:
        patch.setattr(limiter, "per_minute", 5)
        patch.setattr(limiter, "hit_here", refused)
        fast, slow = await twice.both("/v1/data/income_certificate", bearer(bound))
    assert fast == slow
    assert fast["status"] == 429
    assert ("retry-after", "17") in fast["headers"]

    reader = local.runtime.reader
    assert reader is not None
    for failure, status, code in (
        (sqlite3.OperationalError("disk I/O error"), 503, "unavailable"),
        (RuntimeError("boom"), 500, "internal_error"),
    ):

        async def failing(*args: Any, _failure: Exception = failure, **kwargs: Any) -> Any:
            raise _failure

        with monkeypatch.context() as patch:
            patch.setattr(reader, "read", failing)
            fast, slow = await twice.both("/v1/data", bearer(bound))
        assert fast == slow
        assert (fast["status"], f'"code":"{code}"'.encode() in fast["body"]) == (status, True)
        assert b"boom" not in fast["body"] and b"disk" not in fast["body"]

    citizen = home.nids[0]
    revoke = await local.http.post(
        f"/v1/me/consents/{consent_id}/revoke",
        headers=bearer(local.idp.token(citizen)),
    )
    assert revoke.status_code == 200, revoke.text
    fast, slow = await twice.both("/v1/data/income_certificate", bearer(bound))
    assert fast == slow
    assert fast["status"] == 403
    assert b'"code":"consent_revoked"' in fast["body"]
    assert fast["appended"] and fast["appended"][0]["outcome"] == "denied"


async def test_dpop_bound_reads_are_the_handlers_answers(
    local: Local, home: Home, twice: Twice
) -> None:
    kbank = local.clients["kbank"]
    bound = await token(local.http, local, "kbank", dpop=True, consent_id=next(iter(home.tokens)))
    path = "/v1/data/income_certificate"
    url = local.base_url + path

    async def fresh() -> dict[str, str]:
        return {"Authorization": f"DPoP {bound}", "DPoP": kbank.dpop("GET", url, token=bound)}

    async def replayed() -> dict[str, str]:
        headers = await fresh()
        first = await local.http.get(path, headers=headers)
        assert first.status_code == 200
        return headers

    async def wrong_method() -> dict[str, str]:
        return {"Authorization": f"DPoP {bound}", "DPoP": kbank.dpop("POST", url, token=bound)}

    cases: list[tuple[Callable[[], Awaitable[dict[str, str]]], int, str | None]] = [
        (fresh, 200, None),
        (replayed, 401, "invalid_dpop_proof"),
        (wrong_method, 401, "invalid_dpop_proof"),
    ]
    for make, status, code in cases:
        fast, slow = await twice.both(path, make)
        assert fast == slow, make.__name__
        assert fast["status"] == status, (make.__name__, fast)
        if code is not None:
            assert f'"code":"{code}"'.encode() in fast["body"]
            assert any(
                name == "www-authenticate" and "DPoP" in value for name, value in fast["headers"]
            )
    missing = await twice.both(path, {"Authorization": f"DPoP {bound}"})
    assert missing[0] == missing[1]
    assert missing[0]["status"] == 401
    assert b'"code":"invalid_dpop_proof"' in missing[0]["body"]


async def test_a_key_provider_down_and_a_real_rate_limit_are_the_handlers_answers(
    local: Local, monkeypatch: pytest.MonkeyPatch, twice: Twice, bound: str
) -> None:
    vault = local.runtime.vault
    assert vault is not None

    async def down(items: Sequence[UnwrapRequest]) -> list[bytes]:
        raise KeyProviderUnavailable("down")

    with monkeypatch.context() as patch:
        patch.setattr(vault.cache, "ttl_ms", 0)
        patch.setattr(local.runtime.keys, "unwrap", down)
        fast, slow = await twice.both("/v1/data/income_certificate", bearer(bound))
    assert fast == slow
    assert fast["status"] == 503
    assert ("retry-after", "2") in fast["headers"]
    assert not fast["audit_seq"] and fast["appended"] == []  # nothing recorded

    limiter = local.runtime.rate_limiter
    assert limiter is not None
    with monkeypatch.context() as patch:
        patch.setattr(limiter, "clock", ManualClock(1_780_000_010_000))  # 10 s left
        patch.setattr(limiter, "per_minute", 1)
        first = await local.http.get("/v1/data/income_certificate", headers=bearer(bound))
        assert first.status_code == 200  # the window's one allowed read
        fast, slow = await twice.both("/v1/data/income_certificate", bearer(bound))
    assert fast == slow
    assert fast["status"] == 429
    assert ("retry-after", "10") in fast["headers"]
    assert fast["appended"][0]["reason_code"] == "rate_limited"
    rows = await local.database.fetch(
        "SELECT count FROM rate_buckets WHERE client_id = 'kbank' AND scope = 'read'"
        " AND window_start = 1779999960000"
    )
    assert [int(r["count"]) for r in rows] == [3]  # the refusals counted too


def test_a_layer_the_fast_path_would_skip_stops_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from litestar.handlers import HTTPRouteHandler  # noqa: PLC0415

    def guard(*_: Any) -> None:
        return None

    create_app(local_settings(tmp_path))  # as shipped: starts
    monkeypatch.setattr(HTTPRouteHandler, "resolve_guards", lambda self: [guard])
    with pytest.raises(RuntimeError, match="skips guards"):
        create_app(local_settings(tmp_path))


async def test_a_refused_caller_spends_no_proof_and_leaves_no_entry(
    local: Local, home: Home
) -> None:
    """The caller is checked inside the read's unit, before the proof's single use is
    recorded: a disabled client's read is 401 ``invalid_token`` with nothing written,
    and the same proof is still good once the client is enabled again."""
    bound = await token(local.http, local, "kbank", dpop=True, consent_id=next(iter(home.tokens)))
    path = "/v1/data/income_certificate"
    kbank = local.clients["kbank"]
    headers = {
        "Authorization": f"DPoP {bound}",
        "DPoP": kbank.dpop("GET", local.base_url + path, token=bound),
    }
    assert local.runtime.clients is not None
    operator = Actor("operator", "test")
    await local.runtime.clients.disable("kbank", actor=operator)
    before = (await local.runtime.audit.state()).size
    refused = await local.http.get(path, headers=headers)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_token"
    assert "www-authenticate" in refused.headers
    assert (await local.runtime.audit.state()).size == before
    await local.runtime.clients.enable("kbank", actor=operator)
    assert (await local.http.get(path, headers=headers)).status_code == 200
    replayed = await local.http.get(path, headers=headers)
    assert replayed.status_code == 401
    assert replayed.json()["code"] == "invalid_dpop_proof"


async def test_a_revoked_token_with_a_bad_proof_is_refused_for_the_proof(
    local: Local, home: Home, twice: Twice
) -> None:
    """The order of refusals (docs/decisions.md): the checks that need no database, the
    DPoP proof's among them, come before the live ones (revocation, the client's
    registration). Both answers are 401; this pins which one."""
    bound = await token(local.http, local, "kbank", dpop=True, consent_id=next(iter(home.tokens)))
    kbank = local.clients["kbank"]
    form = kbank.token_form(local.base_url)
    form.pop("grant_type")
    form["token"] = bound
    assert (await local.http.post("/oauth/revoke", data=form)).status_code == 200
    path = "/v1/data/income_certificate"
    url = local.base_url + path
    cases = {
        "invalid_dpop_proof": kbank.dpop("POST", url, token=bound),  # wrong method
        "invalid_token": kbank.dpop("GET", url, token=bound),  # a good proof: revoked
    }
    for code, proof in cases.items():
        fast, slow = await twice.both(path, {"Authorization": f"DPoP {bound}", "DPoP": proof})
        assert fast == slow, code
        assert fast["status"] == 401
        assert f'"code":"{code}"'.encode() in fast["body"]
        assert fast["appended"] == []
