"""The consent artefact and its status (DESIGN section 5)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

DAY_MS = 86_400_000
PENDING_TTL_MS = 7 * DAY_MS

Items = tuple[tuple[str, tuple[str, ...]], ...]


class Status(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    REJECTED = "rejected"
    REVOKED = "revoked"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"


#: Statuses that release nothing, ever again.
FINAL = frozenset({Status.REJECTED, Status.REVOKED, Status.EXPIRED, Status.EXHAUSTED})


class Consent(msgspec.Struct, frozen=True):
    """The immutable artefact plus its current status and fetch count."""

    consent_id: str
    citizen_id: str
    client_id: str
    purpose: str
    items: Items
    access: str
    max_fetches: int | None
    valid_days: int
    valid_from: int | None
    valid_until: int | None
    legal_basis: str
    case_reference: str | None
    created_at: int
    policy_version: str
    status: Status
    fetch_count: int = 0
    receipt_version: int = 0

    def effective_status(self, now: int) -> Status:
        """The status every view and read uses: a stored status past its time is expired."""
        if (
            self.status == Status.ACTIVE
            and self.valid_until is not None
            and now >= self.valid_until
        ):
            return Status.EXPIRED
        if self.status == Status.PENDING and now >= self.created_at + PENDING_TTL_MS:
            return Status.EXPIRED
        return self.status

    def counted(self, fetch_count: int, status: Status) -> Consent:
        """This consent with another fetch count and status (a read counts its fetch
        inside the batch's transaction, holding the write lock)."""
        return msgspec.structs.replace(self, fetch_count=fetch_count, status=status)

    def viewed_at(self, now: int) -> Consent:
        return msgspec.structs.replace(self, status=self.effective_status(now))

    def items_json(self) -> list[dict[str, Any]]:
        return [{"type": t, "fields": list(fields)} for t, fields in self.items]

    def items_mapping(self) -> dict[str, tuple[str, ...]]:
        return dict(self.items)


def items_to_text(items: Items) -> str:
    return json.dumps([[t, list(f)] for t, f in items], separators=(",", ":"))


@functools.lru_cache(maxsize=4096)
def items_from_text(text: str) -> Items:
    """A consent's stored items (immutable tuples; memoised on the stored text)."""
    return tuple((str(t), tuple(str(x) for x in f)) for t, f in json.loads(text))


@dataclass(frozen=True)
class Receipt:
    consent_id: str
    version: int
    status: Status
    issued_at: int
    jws: str


class ReadGrant(msgspec.Struct, frozen=True):
    """What one read may release: fields per type, decided under the consent lock."""

    consent: Consent
    released: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class StoredSuggestion:
    """A lifecycle rule's proposal, shown to the citizen only."""

    suggestion_id: str
    citizen_id: str
    rule: str
    client_id: str
    purpose: str
    access: str
    valid_days: int
    status: str
    created_at: int
    consent_id: str | None


class Client(msgspec.Struct, frozen=True):
    client_id: str
    name: str
    kind: str
    roles: frozenset[str]
    jwks: dict[str, dict[str, Any]]  # kid -> public JWK
    approved: bool
    enabled: bool
    dpop_required: bool

    @property
    def may_obtain_tokens(self) -> bool:
        """Enabled, and approved when private (agencies need no approval)."""
        return self.enabled and (self.kind == "agency" or self.approved)


@dataclass(frozen=True)
class Event:
    seq: int
    type: str
    consent_id: str | None
    record_type: str | None
    version: int | None
    at: int
