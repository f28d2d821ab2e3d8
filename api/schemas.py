"""Request bodies (msgspec Structs, unknown fields refused) documented in OpenAPI.

A bound given as ``Meta(extra_json_schema=...)`` is documentation only for msgspec;
a later layer enforces it (422 ``validation_error``): the policy decision for
``valid_days`` and ``max_fetches``, after authentication, so that the refusal is
audited and keeps its place among the other reasons (a purpose the client may not use
is ``purpose_not_allowed`` whatever ``valid_days`` says); the batch route for
``records``. Outside a bound a request is always refused. ``api/openapi.py`` puts
these bounds in the document; ``tests/e2e/test_openapi_contract.py`` sends each one.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from policies.decisions import MAX_FETCHES
from policies.loader import MAX_DAYS

#: Records in one ``POST /v1/records:batch`` (more: 422 ``validation_error``).
MAX_BATCH = 1000


def whole(body: str) -> str:
    r"""A parameter pattern that matches the whole value, and only it.

    ``^...$`` is not enough: msgspec checks patterns with ``re.search``, where ``$`` also
    matches before a final newline (``income_certificate\n`` passed). ``(?![\s\S])``
    ("nothing follows") is the end of the string in Python and in ECMA-262, the regex
    dialect of the OpenAPI document; ``\Z`` is Python only.
    """
    return rf"^(?:{body})(?![\s\S])"


class Strict(msgspec.Struct, forbid_unknown_fields=True):
    """Base: unknown fields are refused (422 validation_error)."""


class SubjectIn(Strict):
    """Exactly one of ``nid`` (resident registration number) or ``ci``."""

    nid: str | None = None
    ci: str | None = None

    def as_mapping(self) -> dict[str, str]:
        return {k: v for k, v in (("nid", self.nid), ("ci", self.ci)) if v is not None}


class RecordIn(Strict):
    subject: SubjectIn
    type: str
    data: dict[str, Any]
    attestation: Any | None = None


class BatchIn(Strict):
    records: Annotated[list[RecordIn], msgspec.Meta(extra_json_schema={"maxItems": MAX_BATCH})]


class ItemIn(Strict):
    type: str
    fields: list[str]


class ConsentRequestIn(Strict):
    subject: SubjectIn
    purpose: str
    items: list[ItemIn]
    access: str
    # 1..max_valid_days of the purpose, which the catalogue bounds by MAX_DAYS.
    valid_days: Annotated[int, msgspec.Meta(extra_json_schema={"minimum": 1, "maximum": MAX_DAYS})]
    max_fetches: Annotated[
        int | None, msgspec.Meta(extra_json_schema={"minimum": 1, "maximum": MAX_FETCHES})
    ] = None
    case_reference: str | None = None


class SelfAssertedIn(Strict):
    data: dict[str, Any]
