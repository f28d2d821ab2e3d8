"""Piccolo tables of the consent package (storage shape only; the migration is the schema)."""

from __future__ import annotations

from piccolo.columns import BigInt, Integer, Text
from piccolo.table import Table


class ConsentRow(Table, tablename="consents"):
    consent_id = Text(primary_key=True)
    citizen_id = Text()
    client_id = Text()
    purpose = Text()
    items = Text()
    access = Text()
    max_fetches = Integer(null=True)
    valid_days = Integer()
    valid_from = BigInt(null=True)
    valid_until = BigInt(null=True)
    legal_basis = Text()
    case_reference = Text(null=True)
    created_at = BigInt()
    policy_version = Text()
    status = Text()
    fetch_count = Integer()
    receipt_version = Integer()
    updated_at = BigInt()


class ConsentReceipt(Table, tablename="consent_receipts"):
    """The real key is (consent_id, version); Piccolo needs one pk column."""

    consent_id = Text(primary_key=True)
    version = Integer()
    status = Text()
    issued_at = BigInt()
    jws = Text()


class SuggestionRow(Table, tablename="suggestions"):
    suggestion_id = Text(primary_key=True)
    citizen_id = Text()
    rule = Text()
    client_id = Text()
    purpose = Text()
    access = Text()
    valid_days = Integer()
    status = Text()
    created_at = BigInt()
    consent_id = Text(null=True)


class ClientRow(Table, tablename="clients"):
    client_id = Text(primary_key=True)
    name = Text()
    kind = Text()
    roles = Text()
    jwks = Text()
    approved = Integer()
    enabled = Integer()
    dpop_required = Integer()
    created_at = BigInt()
    updated_at = BigInt()


class ReplayGuard(Table, tablename="replay_guard"):
    """The real key is (scope, jti); Piccolo needs one pk column."""

    scope = Text(primary_key=True)
    jti = Text()
    expires_at = BigInt()


class RevokedToken(Table, tablename="revoked_tokens"):
    jti = Text(primary_key=True)
    expires_at = BigInt()


class EventRow(Table, tablename="events"):
    """A consumer's event: consent.* for its consents, record.updated for covered types."""

    seq = BigInt(primary_key=True)
    client_id = Text()
    type = Text()
    consent_id = Text(null=True)
    record_type = Text(null=True)
    version = Integer(null=True)
    at = BigInt()


TABLES: tuple[type[Table], ...] = (
    EventRow,
    ConsentRow,
    ConsentReceipt,
    SuggestionRow,
    ClientRow,
    ReplayGuard,
    RevokedToken,
)
