"""Success bodies of DESIGN section 10 (contract) as msgspec Structs.

Handlers return these, so ``/schema/openapi.json`` declares the shape on the wire:
field order is the wire's key order, every field is always present (``null`` where
the contract allows it) unless typed ``... | UnsetType`` (then absent when unset, as
``code`` or ``record_id`` in a batch result). Every body is closed
(``forbid_unknown_fields``, so ``additionalProperties: false`` in the document), which
lets schemathesis' ``response_schema_conformance`` catch an undocumented key.

Bodies served verbatim or built on a hot path keep their own encoding and are only
declared with these types (``responses=`` on the route): ``GET /v1/data`` and
``/v1/data/{type}``, audit entries (the stored leaf, as stored), the checkpoint, the
JWKS and the token endpoint's answer. ``tests/e2e/test_openapi_contract.py`` checks
real responses of every operation against the document.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

ConsentStatus = Literal["pending", "active", "rejected", "revoked", "expired", "exhausted"]
Access = Literal["once", "standing"]
LegalBasis = Literal["consent", "statute"]


class Body(msgspec.Struct, forbid_unknown_fields=True):
    """Base of every success body: closed (no key beyond the declared fields)."""


# -- operations ------------------------------------------------------------------------


class ServiceStatus(Body):
    """``/healthz`` (``ok``) and ``/readyz`` (``ready``)."""

    status: str


# -- records ---------------------------------------------------------------------------


class RecordPut(Body):
    """The stored (or unchanged) version of a record."""

    record_id: str
    type: str
    version: int


class BatchResult(Body):
    """One record of a batch: ``status`` 201 or 200 with the version, else 403/422 with
    ``code``."""

    index: int
    status: int
    record_id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    version: int | UnsetType = UNSET
    code: str | UnsetType = UNSET


class BatchResults(Body):
    results: list[BatchResult]


class RecordSummary(Body):
    """A record's latest version without its data; ``source`` is the issuing client id,
    or ``citizen`` for a self-asserted record."""

    type: str
    version: int
    source: str
    attested: bool
    updated_at: str


class RecordWithData(RecordSummary):
    """The latest version with its data."""

    data: dict[str, Any]


class RecordList(Body):
    records: list[RecordSummary]


# -- consents --------------------------------------------------------------------------


class ConsentItem(Body):
    type: str
    fields: list[str]


class ConsentBody(Body):
    """A consent (DESIGN section 10), as its client sees it."""

    consent_id: str
    status: ConsentStatus
    client_id: str
    purpose: str
    items: list[ConsentItem]
    access: Access
    valid_days: int
    valid_from: str | None
    valid_until: str | None
    max_fetches: int | None
    fetch_count: int
    legal_basis: LegalBasis
    case_reference: str | None
    created_at: str
    policy_version: str


class CitizenConsent(ConsentBody):
    """A consent as its citizen sees it: with the client's name and the purpose's title."""

    client_name: str
    purpose_title: str


class ConsentList(Body):
    consents: list[CitizenConsent]


class Receipt(Body):
    """A signed consent receipt (compact JWS) and its version."""

    receipt: str
    version: int


class Event(Body):
    seq: int
    type: str
    consent_id: str | None
    record_type: str | None
    version: int | None
    at: str


class EventPage(Body):
    """Events with ``seq > after``, oldest first; ``next`` is the last seq returned, or
    the given ``after`` when the page is empty."""

    events: list[Event]
    next: int


class SuggestionBody(Body):
    suggestion_id: str
    rule: str
    client_id: str
    client_name: str
    purpose: str
    purpose_title: str
    access: Access
    valid_days: int
    status: Literal["open", "accepted", "dismissed"]
    created_at: str
    consent_id: str | None


class SuggestionList(Body):
    suggestions: list[SuggestionBody]


# -- citizen ---------------------------------------------------------------------------


class Me(Body):
    citizen_id: str
    records: list[RecordSummary]
    consents: list[CitizenConsent]


class Kept(Body):
    """A type kept by a statutory retention rule, until when, and why."""

    type: str
    until: str
    reason: str


class Erasure(Body):
    """What ``DELETE /v1/me`` erased and kept, with a signed erasure receipt."""

    erased: list[str]
    kept: list[Kept]
    receipt: str


# -- consented data (declared only: the read path builds its own body) -----------------


class DataItem(Body):
    """One released item: only the consented fields that the purpose still allows."""

    type: str
    version: int
    data: dict[str, Any]
    source: str
    attested: bool
    updated_at: str


class DataRead(Body):
    consent_id: str
    items: list[DataItem]


class DataReadOne(Body):
    consent_id: str
    type: str
    version: int
    data: dict[str, Any]
    source: str
    attested: bool
    updated_at: str


# -- audit -----------------------------------------------------------------------------


class AuditActor(Body):
    type: Literal["citizen", "client", "operator", "system"]
    id: str | None


class AuditItem(Body):
    fields: list[str]
    type: str
    version: int


class AuditEntry(Body):
    """A section 7 entry as stored in its leaf (keys sorted; integers in ms)."""

    action: str
    actor: AuditActor
    citizen_id: str | None
    client_id: str | None
    consent_id: str | None
    items: list[AuditItem] | None
    outcome: Literal["ok", "denied", "error"]
    purpose: str | None
    reason_code: str | None
    record_type: str | None
    record_version: int | None
    request_id: str | None
    seq: int
    ts: int


class ServedEntry(Body):
    """``seq`` is the 0-based leaf index; ``leaf_hash`` lowercase hex."""

    seq: int
    leaf_hash: str
    entry: AuditEntry


class ServedEntryPage(Body):
    entries: list[ServedEntry]
    next: int
    tree_size: int


class InclusionProof(Body):
    """RFC 9162 section 2.1.3."""

    leaf_index: int
    tree_size: int
    root_hash: str
    inclusion_path: list[str]


class ConsistencyProof(Body):
    """RFC 9162 section 2.1.4."""

    first: int
    second: int
    first_root: str
    second_root: str
    consistency_path: list[str]


class Checkpoint(Body):
    """The latest signed checkpoint; ``jws`` signs ``{origin, tree_size, root_hash,
    timestamp}``."""

    tree_size: int
    root_hash: str
    timestamp: int
    jws: str


# -- OAuth and keys --------------------------------------------------------------------


class JWK(Body):
    """A platform public key (Ed25519); ``kid`` starts with ``at-``, ``rc-`` or ``cp-``."""

    alg: str
    crv: str
    kid: str
    kty: str
    use: str
    x: str


class JWKSet(Body):
    keys: list[JWK]


class AuthorizationDetail(Body):
    type: str
    consent_id: str


class TokenBody(Body):
    """RFC 6749 section 5.1; ``authorization_details`` only on a consent-bound token."""

    access_token: str
    token_type: Literal["Bearer", "DPoP"]
    expires_in: int
    scope: str
    authorization_details: list[AuthorizationDetail] | UnsetType = UNSET


class OAuthErrorBody(Body):
    """RFC 6749 section 5.2 error body of the token and revocation endpoints."""

    error: str
    error_description: str


class AuthorizationServerMetadata(Body):
    """RFC 8414 authorization server metadata."""

    issuer: str
    token_endpoint: str
    revocation_endpoint: str
    jwks_uri: str
    grant_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    token_endpoint_auth_signing_alg_values_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    scopes_supported: list[str]
    authorization_details_types_supported: list[str]
    dpop_signing_alg_values_supported: list[str]
    response_types_supported: list[str]
