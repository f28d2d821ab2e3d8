"""``GET /metrics`` (DESIGN section 10): Prometheus text, loopback peers only, never
labelled by citizen; unauthenticated failures are counted there (section 7)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.inprocess import Local, local_platform
from tests.reliability.scenario import setup_home

#: One sample line of the text format: a name, optional labels, a number.
SAMPLE = re.compile(r'^([a-z_]+)(\{(?:[a-z_]+="(?:[^"\\\n]|\\.)*",?)*\})? (-?[0-9.e+]+|\+Inf)$')


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    async with local_platform(tmp_path) as platform:
        yield platform


def samples(text: str) -> dict[str, float]:
    """Each sample line's ``name{labels}`` -> value; every line must be well formed."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, line
        out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return out


async def scrape(http: httpx.AsyncClient) -> dict[str, float]:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return samples(response.text)


def delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0) - before.get(key, 0)


async def test_requests_are_counted_by_route_template_and_failures_by_code(
    local: Local,
) -> None:
    home = await setup_home(local.http, local, citizens=2)
    before = await scrape(local.http)
    for nid in home.nids:
        bound = home.tokens[home.consent_of[nid]]
        read = await local.http.get(
            "/v1/data/income_certificate", headers={"Authorization": f"Bearer {bound}"}
        )
        assert read.status_code == 200
    forged = await local.http.get(
        "/v1/data/income_certificate", headers={"Authorization": "Bearer not.a.token"}
    )
    assert forged.status_code == 401
    refused = await local.http.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": "nobody"}
    )
    assert refused.status_code in (400, 401)
    after = await scrape(local.http)

    read_route = 'method="GET",route="/v1/data/{record_type}"'
    assert delta(after, before, f'oncevault_http_requests_total{{{read_route},status="200"}}') == 2
    assert delta(after, before, f'oncevault_http_requests_total{{{read_route},status="401"}}') == 1
    # A histogram: cumulative buckets, +Inf equal to the count, a sum.
    buckets = [
        after[key]
        for key in after
        if key.startswith(f"oncevault_http_request_duration_seconds_bucket{{{read_route}")
    ]
    assert buckets == sorted(buckets) and len(buckets) == 12
    count = after[f"oncevault_http_request_duration_seconds_count{{{read_route}}}"]
    assert buckets[-1] == count >= 3
    assert after[f"oncevault_http_request_duration_seconds_sum{{{read_route}}}"] > 0
    # The unauthenticated failures: counted here (and logged), never audited.
    assert delta(after, before, 'oncevault_problems_total{code="invalid_token"}') == 1
    oauth = {k: v for k, v in after.items() if k.startswith("oncevault_oauth_errors_total")}
    assert (
        sum(oauth.values())
        - sum(v for k, v in before.items() if k.startswith("oncevault_oauth_errors_total"))
        == 1
    )
    assert after["oncevault_workers"] == 1
    size = (await local.runtime.audit.state()).size
    assert after["oncevault_audit_tree_size"] == size > 0


async def test_no_series_names_a_citizen_a_consent_or_a_path(local: Local) -> None:
    home = await setup_home(local.http, local, citizens=2)
    for nid in home.nids:
        bound = home.tokens[home.consent_of[nid]]
        await local.http.get("/v1/data", headers={"Authorization": f"Bearer {bound}"})
        await local.http.get(f"/v1/consents/{home.consent_of[nid]}")
    text = (await local.http.get("/metrics")).text
    citizens = await local.database.fetch_values("SELECT citizen_id FROM citizens")
    secrets = [*home.nids, *home.consent_of.values(), *(row[0] for row in citizens)]
    assert len(secrets) == 6
    for value in secrets:
        assert value not in text
    assert "income_certificate" not in text  # a path's record type, not a template
    assert 'route="/v1/consents/{consent_id}"' in text


@pytest.mark.parametrize("peer", ["203.0.113.7", "10.0.0.2", "::ffff:192.0.2.1", "testclient"])
async def test_a_peer_off_loopback_is_refused(local: Local, peer: str) -> None:
    transport = httpx.ASGITransport(app=local.app, client=(peer, 40_000))
    async with httpx.AsyncClient(transport=transport, base_url=local.base_url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "forbidden"
    assert "oncevault_" not in response.text


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
async def test_loopback_peers_are_answered(local: Local, peer: str) -> None:
    transport = httpx.ASGITransport(app=local.app, client=(peer, 40_000))
    async with httpx.AsyncClient(transport=transport, base_url=local.base_url) as http:
        assert "oncevault_workers" in await scrape(http)


async def test_the_openapi_document_declares_metrics(local: Local) -> None:
    spec = (await local.http.get("/schema/openapi.json")).json()
    answers = spec["paths"]["/metrics"]["get"]["responses"]
    assert answers["200"]["content"]["text/plain; version=0.0.4"]["schema"]["type"] == "string"
    assert "application/problem+json" in answers["403"]["content"]
