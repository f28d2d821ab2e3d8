"""Errors of the vault package.

OncevaultError                 base of every domain error; carries a stable ``code``
├── DecryptionError            any failure to open a sealed or wrapped value (one opaque error)
├── KeyProviderUnavailable     the KEK provider did not answer in time or refused (fail closed)
├── KeyProviderMisconfigured   the provider answered, but its key or mounts are unsafe or missing
├── InvalidJWS                 a compact JWS failed verification (signature, header, size, kid)
├── InvalidJWKS                a JWKS offered for registration is unusable or holds private members
├── StorageError               the database is missing, unmigrated or unreachable
├── InvalidSubject             a subject that is neither a valid nid nor a valid ci
├── RecordNotFound             no such record (or it was erased)
└── ConcurrentChange           a write kept racing an erasure; the caller may retry
"""

from __future__ import annotations


class OncevaultError(Exception):
    """Base class of every oncevault domain error.

    ``code`` is the stable machine-readable code that ``api/errors.py`` maps to an
    HTTP status. Messages never contain personal data or secrets. ``audit_seq`` is
    the seq of the entry that audited a refusal, when one did (``X-Audit-Seq``).
    """

    code: str = "internal_error"
    audit_seq: int | None = None

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        if code is not None:
            self.code = code


class DecryptionError(OncevaultError):
    """The value could not be opened."""

    code = "decryption_failed"

    def __init__(self) -> None:
        # Deliberately the same message for every failure: wrong key, wrong
        # associated data, truncated or tampered input.
        super().__init__("decryption failed")


class KeyProviderUnavailable(OncevaultError):
    """The key provider is unavailable."""

    code = "kms_unavailable"


class KeyProviderMisconfigured(OncevaultError):
    """The key provider's configuration is unsafe or incomplete."""

    code = "kms_misconfigured"


class InvalidJWS(OncevaultError):
    """The signed token is not valid."""

    code = "invalid_token"


class InvalidJWKS(OncevaultError):
    """The key set is not acceptable."""

    code = "invalid_jwks"


class StorageError(OncevaultError):
    """The database is not usable."""

    code = "unavailable"


class ConnectionLostBeforeCommit(StorageError):
    """The database connection failed inside a transaction before COMMIT was sent:
    the server rolled everything back, so the work may run again on a new connection."""


class InvalidSubject(OncevaultError):
    """The subject is not a valid ``{"nid": ...}`` or ``{"ci": ...}``."""

    code = "validation_error"


class RecordNotFound(OncevaultError):
    """No such record."""

    code = "record_not_found"


class ConcurrentChange(OncevaultError):
    """The row changed under us too many times (an erasure raced a write); retry."""

    code = "unavailable"
