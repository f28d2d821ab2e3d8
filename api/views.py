"""Response shapes of DESIGN section 10, built from domain objects (never from tables)."""

from __future__ import annotations

from typing import Any

from consent.models import Consent
from consent.service import iso


def consent_json(
    consent: Consent, *, client_name: str | None = None, purpose_title: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "consent_id": consent.consent_id,
        "status": consent.status.value,
        "client_id": consent.client_id,
        "purpose": consent.purpose,
        "items": consent.items_json(),
        "access": consent.access,
        "valid_days": consent.valid_days,
        "valid_from": iso(consent.valid_from),
        "valid_until": iso(consent.valid_until),
        "max_fetches": consent.max_fetches,
        "fetch_count": consent.fetch_count,
        "legal_basis": consent.legal_basis,
        "case_reference": consent.case_reference,
        "created_at": iso(consent.created_at),
        "policy_version": consent.policy_version,
    }
    if client_name is not None or purpose_title is not None:
        body["client_name"] = client_name
        body["purpose_title"] = purpose_title
    return body
