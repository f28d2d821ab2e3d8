"""Errors of the policies package.

OncevaultError                 (vault.errors) base of every domain error; carries a stable ``code``
└── PolicyError                base of the errors below
    ├── CatalogueError         a catalogue file is missing or invalid; stops start-up
    ├── RecordInvalid          record data does not match its type (``validation_error``)
    └── PolicyDenied           a decision denied; ``code`` is its first reason code

Decisions themselves never raise: they return a ``Decision``. ``PolicyDenied``
exists for callers that prefer an exception (``Decision.require()``,
``expand_items``). No message here ever contains record content.
"""

from __future__ import annotations

from vault.errors import OncevaultError

__all__ = ["CatalogueError", "PolicyDenied", "PolicyError", "RecordInvalid"]


class PolicyError(OncevaultError):
    """A policy could not be applied."""

    code = "policy_error"


class CatalogueError(PolicyError):
    """The policy catalogue is invalid.

    The message is one line, ``<file>: <key path>: <problem>``, for example
    ``purposes.toml: purposes.mortgage_screening.items.income_certificate: unknown field
    'salary'``. ``file`` and ``key_path`` are also kept as attributes.
    """

    code = "catalogue_invalid"

    def __init__(self, file: str, key_path: str, problem: str) -> None:
        self.file = file
        self.key_path = key_path
        self.problem = problem
        where = f"{file}: {key_path}" if key_path else file
        super().__init__(f"{where}: {problem}")


class RecordInvalid(PolicyError):
    """The record data does not match its record type.

    The message names the field path (``data.children[0].birth_date: expected a date
    (YYYY-MM-DD)``) and never contains a submitted value or a submitted key.
    """

    code = "validation_error"

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class PolicyDenied(PolicyError):
    """A policy decision denied the request.

    ``code`` is the first reason code of the decision (a DESIGN §10 code such as
    ``purpose_not_allowed``); ``reasons`` and ``details`` hold all of them.
    """

    code = "forbidden"

    def __init__(self, reasons: tuple[str, ...], details: tuple[str, ...] = ()) -> None:
        self.reasons = reasons
        self.details = details
        message = "; ".join(details) if details else ", ".join(reasons) or "denied"
        super().__init__(message, code=reasons[0] if reasons else "forbidden")
