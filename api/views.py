"""Response shapes of DESIGN section 10, built from domain objects (never from tables)."""

from __future__ import annotations

from typing import Any

from api.responses import CitizenConsent, ConsentBody, ConsentItem
from consent.models import Consent
from consent.service import iso


def iso_at(ms: int) -> str:
    """``iso`` of a timestamp that is never null (the type checker cannot know)."""
    text = iso(ms)
    assert text is not None
    return text


def _fields(consent: Consent) -> dict[str, Any]:
    return {
        "consent_id": consent.consent_id,
        "status": consent.status.value,
        "client_id": consent.client_id,
        "purpose": consent.purpose,
        "items": [ConsentItem(type=t, fields=list(fields)) for t, fields in consent.items],
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


def consent_body(consent: Consent) -> ConsentBody:
    """A consent as its client sees it."""
    return ConsentBody(**_fields(consent))


def citizen_consent(consent: Consent, *, client_name: str, purpose_title: str) -> CitizenConsent:
    """A consent as its citizen sees it: with the client's name and the purpose's title."""
    return CitizenConsent(**_fields(consent), client_name=client_name, purpose_title=purpose_title)
