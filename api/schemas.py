"""Request bodies (msgspec Structs, unknown fields refused) documented in OpenAPI."""

from __future__ import annotations

from typing import Any

import msgspec


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
    records: list[RecordIn]


class ItemIn(Strict):
    type: str
    fields: list[str]


class ConsentRequestIn(Strict):
    subject: SubjectIn
    purpose: str
    items: list[ItemIn]
    access: str
    valid_days: int
    max_fetches: int | None = None
    case_reference: str | None = None


class SelfAssertedIn(Strict):
    data: dict[str, Any]
