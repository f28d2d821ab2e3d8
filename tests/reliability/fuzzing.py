"""One schemathesis run, shared by the fuzz test against a live server
(tests/reliability/test_fuzz.py) and its twin against the app in-process
(tests/reliability/test_twins.py): the config file that gives every tag its
credentials, the command line, and the failures read back from the JUnit report.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from tests.reliability.stack import SOAK, scaled

#: The checks the fuzz test enforces on every operation.
CHECKS = "not_a_server_error,response_schema_conformance"
MAX_EXAMPLES = scaled(10, 200)
#: The coverage phase (boundary and negative values of every parameter, ~800 cases)
#: doubles the run time; `make soak` adds it, `make test` fuzzes only.
PHASES = "examples,coverage,fuzzing" if SOAK else "examples,fuzzing"
SEED = 20261126
CITIZEN_B_OPERATIONS = (
    "POST /v1/me/consents/{consent_id}/approve",
    "POST /v1/me/consents/{consent_id}/reject",
    "POST /v1/me/consents/{consent_id}/revoke",
    "POST /v1/me/suggestions/{suggestion_id}/accept",
    "DELETE /v1/me",
)


@dataclass
class Credentials:
    """An ``Authorization`` value per role, and real ids for path parameters."""

    headers: dict[str, str]  # issuer, consumer, auditor, citizen, citizen_b
    consent_ids: list[str]
    seqs: list[int]


def _toml_list(values: Sequence[str] | Sequence[int]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def config_file(credentials: Credentials, where: Path) -> Path:
    """schemathesis.toml: one [[operations]] block per credential, disjoint filters."""
    h = credentials.headers
    ids = {
        '"path.consent_id"': "consent_ids",
        '"path.record_type"': "record_types",
        '"path.seq"': "seqs",
    }
    parameters = (
        "{ "
        + ", ".join(f'{k} = {{ dictionary = "{v}", probability = 0.5 }}' for k, v in ids.items())
        + " }"
    )
    text = f"""
[dictionaries.consent_ids]
values = {_toml_list(credentials.consent_ids)}

[dictionaries.record_types]
values = ["income_certificate", "real_estate_title", "address"]

[dictionaries.seqs]
values = {_toml_list(credentials.seqs)}

[[operations]]
include-tag = "issuer"
headers = {{ Authorization = {json.dumps(h["issuer"])} }}

[[operations]]
include-tag = "consumer"
headers = {{ Authorization = {json.dumps(h["consumer"])} }}
parameters = {parameters}

[[operations]]
include-tag = "auditor"
headers = {{ Authorization = {json.dumps(h["auditor"])} }}

[[operations]]
include-tag = "citizen"
exclude-name = {_toml_list(CITIZEN_B_OPERATIONS)}
headers = {{ Authorization = {json.dumps(h["citizen"])} }}
parameters = {parameters}

[[operations]]
include-name = {_toml_list(CITIZEN_B_OPERATIONS)}
headers = {{ Authorization = {json.dumps(h["citizen_b"])} }}
parameters = {parameters}
"""
    path = where / "schemathesis.toml"
    path.write_text(text)
    return path


def command(
    base_url: str,
    config: Path,
    junit: Path,
    *,
    checks: str = CHECKS,
    tags: Sequence[str] = (),
    names: Sequence[str] = (),
) -> list[str]:
    """``schemathesis run`` over the served OpenAPI document, fixed seed, JUnit report."""
    argv = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        base_url + "/schema/openapi.json",
        "--checks",
        checks,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # One thread: with two, the coverage phase (make soak) dies in hypothesis' lambda
        # descriptions with "SystemError: AST constructor recursion depth mismatch", a
        # CPython 3.11 race in ast construction across threads (python/cpython#106905).
        "--workers",
        "1",
        "--phases",
        PHASES,
        "--continue-on-failure",
        "--report",
        "junit",
        "--report-junit-path",
        str(junit),
        "--request-timeout",
        "30",
    ]
    for tag in tags:
        argv += ["--include-tag", tag]
    for name in names:
        argv += ["--include-name", name]
    return argv


def _headline(text: str) -> str:
    """The check's code, title and reason, without the response body or the curl line
    that follow them (they may carry data and the Authorization header)."""
    kept = []
    for line in text.splitlines():
        if line.startswith(("[", "Reproduce with")):
            break
        if line.strip():
            kept.append(line.strip())
    return " ".join(kept)[:400]


def failures(junit: Path) -> dict[str, list[str]]:
    """operation -> failure messages ("ST108 Response violates schema ..."), from the
    JUnit report."""
    found: dict[str, list[str]] = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        for failure in [*case.iter("failure"), *case.iter("error")]:
            text = _headline(failure.text or "") or failure.get("message") or "?"
            found.setdefault(case.get("name", "?"), []).append(text)
    return found
