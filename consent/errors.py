"""Errors of the consent package (each ``code`` is a DESIGN section 10 code).

ConsentError(OncevaultError)
├── ConsentNotFound          consent_not_found   no such consent for this caller
├── ConsentNotActive         consent_not_active  pending or rejected
├── ConsentRevoked           consent_revoked
├── ConsentExpired           consent_expired
├── ConsentExhausted         consent_exhausted   fetch limit reached
├── ScopeNotConsented        scope_not_consented the type is not (or no longer) released
└── ConsentStateConflict     consent_state_conflict  approve/reject/revoke from the wrong state

A refusal that was audited carries ``audit_seq``: the seq of its committed entry,
answered as ``X-Audit-Seq``.
"""

from __future__ import annotations

from vault.errors import OncevaultError


class ConsentError(OncevaultError):
    """A consent refused the operation.

    ``citizen_id``: the citizen of the refused consent when the caller owns it (set by
    :meth:`consent.service.ConsentService.lock_for_read`, for the denied entry the
    citizen sees); never in an error body.
    """

    citizen_id: str | None = None


class ConsentNotFound(ConsentError):
    """No such consent."""

    code = "consent_not_found"


class ConsentNotActive(ConsentError):
    """The consent is not active."""

    code = "consent_not_active"


class ConsentRevoked(ConsentError):
    """The consent was revoked."""

    code = "consent_revoked"


class ConsentExpired(ConsentError):
    """The consent has expired."""

    code = "consent_expired"


class ConsentExhausted(ConsentError):
    """The consent's fetches are used up."""

    code = "consent_exhausted"


class ScopeNotConsented(ConsentError):
    """This record type is not released by the consent."""

    code = "scope_not_consented"


class ConsentStateConflict(ConsentError):
    """The consent is not in a state that allows this."""

    code = "consent_state_conflict"
