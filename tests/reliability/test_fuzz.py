"""schemathesis against a live `oncevault serve --workers 2`, every operation of
`/schema/openapi.json`, with the credentials each one needs.

One `schemathesis run` (fixed seed, at most 10 examples per operation, phases examples
and fuzzing; `make soak`: 200 examples plus the coverage phase, one run per credential
with fresh tokens) with a config file that gives every tag its own `Authorization`:
issuer (nts), consumer (kbank's consent-bound token), auditor (bai), citizen A (who
holds the records and the bank's consent) and citizen B (approve / reject / revoke /
accept / DELETE /v1/me, so the fuzzer cannot erase the data the others read). Path
parameters draw half the time from real ids (consents, record types, an audit seq).

Enforced: `not_a_server_error` and `response_schema_conformance` on every operation,
all 31 operations selected and tested. Every success body is declared (api/responses.py)
and closed (`additionalProperties: false`), so conformance covers 2xx bodies too: a
wrong type, a missing or an undocumented key fails the run. schemathesis writes
`.hypothesis/` and `schemathesis-report/` into its working directory: it runs in a
temporary one.

The tests at the end pin what the wider checks (`--checks all`) found: success bodies
documented as free-form objects, and OPTIONS naming only one handler's methods.
tests/e2e/test_openapi_contract.py checks every declared success status in-process.
The twin (tests/reliability/test_twins.py) runs the same command (tests/reliability/
fuzzing.py) against the app served in-process with a guard removed, and sees it fail.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.reliability.checks import access_statuses
from tests.reliability.fuzzing import Credentials, command, config_file, failures
from tests.reliability.scenario import consent_for, nid_for, setup_home, token
from tests.reliability.stack import (
    SOAK,
    Stack,
    bearer,
    build_stack,
    close_stack,
    run_blocking,
)

schemathesis = pytest.importorskip("schemathesis")


@dataclass
class Live:
    stack: Stack
    credentials: Credentials
    citizens: tuple[str, str]


async def _tokens(stack: Stack, live: Live) -> None:
    """Fresh credentials (access tokens live at most 300 s; a soak run is longer)."""
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        live.credentials.headers = {
            "issuer": "Bearer " + await token(http, stack, "nts", scope="issuer"),
            "consumer": "Bearer "
            + await token(http, stack, "kbank", consent_id=live.credentials.consent_ids[0]),
            "auditor": "Bearer " + await token(http, stack, "bai"),
            "citizen": "Bearer " + stack.idp.token(live.citizens[0]),
            "citizen_b": "Bearer " + stack.idp.token(live.citizens[1]),
        }


async def _prepare(stack: Stack) -> Live:
    """Citizen A with records, an active consent for the bank and one read; citizen B
    with an active and a pending consent for the fuzzer's approve/reject/revoke."""
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        home = await setup_home(http, stack, citizens=1, salt=7)
        ((consent_a, bound),) = home.tokens.items()
        read = await http.get("/v1/data", headers=bearer(bound))
        assert read.status_code == 200
        citizen_b = nid_for(2, 7)
        bank = await token(http, stack, "kbank", scope="consumer")
        active_b = await consent_for(http, stack, bank, citizen_b)
        pending_b = await consent_for(http, stack, bank, citizen_b, approve=False)
        assert pending_b != active_b
    live = Live(
        stack=stack,
        credentials=Credentials(
            headers={},
            consent_ids=[consent_a, pending_b, active_b],
            seqs=[int(read.headers["x-audit-seq"])],
        ),
        citizens=(home.nids[0], citizen_b),
    )
    await _tokens(stack, live)
    return live


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    stack = build_stack(Path(tmp_path_factory.mktemp("fuzz")), "sqlite")
    try:
        stack.serve(workers=2)
        yield run_blocking(_prepare(stack))
    finally:
        close_stack(stack)


#: make test: one run over everything. make soak: one run per credential, each with
#: fresh tokens, so none expires during a long run.
GROUPS: list[tuple[str, ...]] = (
    [("issuer",), ("consumer",), ("auditor",), ("citizen",), ("public", "oauth", "operations")]
    if SOAK
    else [()]
)


def run_schemathesis(live: Live, where: Path, tags: tuple[str, ...] = ()) -> tuple[int, str, Path]:
    run_blocking(_tokens(live.stack, live))
    junit = where / "junit.xml"
    argv = command(live.stack.base_url, config_file(live.credentials, where), junit, tags=tags)
    done = subprocess.run(
        argv, cwd=where, capture_output=True, text=True, timeout=3600, check=False
    )
    return done.returncode, done.stdout + done.stderr, junit


def test_every_operation_without_a_server_error_and_matching_its_schema(
    live: Live, tmp_path: Path
) -> None:
    selected_total = 0
    for index, tags in enumerate(GROUPS):
        where = tmp_path / f"run{index}"
        where.mkdir()
        code, output, junit = run_schemathesis(live, where, tags)
        assert junit.exists(), output[-3000:]
        assert failures(junit) == {}, output[-6000:]
        assert code == 0, output[-3000:]
        selected = re.search(r"Selected: (\d+)/(\d+)", output)
        tested = re.search(r"Tested: (\d+)", output)
        assert selected is not None and tested is not None, output[-2000:]
        assert selected.group(1) == tested.group(1), output[-2000:]
        selected_total += int(selected.group(1))
        operations = int(selected.group(2))
    assert selected_total == operations >= 31  # every operation, once
    assert live.stack.server is not None
    log = live.stack.server.log()
    assert "http.unhandled" not in log
    statuses = access_statuses(log)
    assert len(statuses) >= operations
    assert [status for status in statuses if status >= 500] == []


def _openapi(live: Live) -> dict[str, object]:
    document: dict[str, object] = httpx.get(live.stack.base_url + "/schema/openapi.json").json()
    return document


def test_openapi_declares_the_shape_of_success_bodies(live: Live) -> None:
    free_form = []
    paths = _openapi(live)["paths"]
    assert isinstance(paths, dict)
    for path, operations in paths.items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                if not status.startswith("2"):
                    continue
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema is None or schema == {"type": "null"}:  # no body, or null (revoke)
                    continue
                if "properties" not in schema and "$ref" not in schema:
                    free_form.append(f"{method.upper()} {path} {status}")
    assert free_form == []


def test_openapi_declares_every_success_status(live: Live) -> None:
    paths = _openapi(live)["paths"]
    assert isinstance(paths, dict)
    wanted = {
        ("/v1/records", "post"): {"200", "201"},
        ("/v1/consent-requests", "post"): {"200", "201"},
        ("/v1/me/records/{record_type}", "put"): {"200", "201"},
    }
    missing = {
        f"{method.upper()} {path}": sorted(statuses - set(paths[path][method]["responses"]))
        for (path, method), statuses in wanted.items()
        if statuses - set(paths[path][method]["responses"])
    }
    assert missing == {}


def test_method_refusals_name_the_allowed_methods(live: Live) -> None:
    base = live.stack.base_url
    auth = {"Authorization": live.credentials.headers["citizen"]}
    refused = httpx.request("TRACE", base + "/v1/me/records", headers=auth)
    assert refused.status_code == 405
    assert "GET" in refused.headers.get("allow", "")
    for path, methods in (
        ("/v1/me", {"GET", "DELETE"}),
        ("/v1/me/records/address", {"GET", "PUT"}),
    ):
        options = httpx.request("OPTIONS", base + path, headers=auth)
        allow = {m.strip() for m in options.headers.get("allow", "").split(",")}
        assert options.status_code == 204, path
        assert allow == {*methods, "OPTIONS"}, path
