"""The catalogue as frozen values: record types, purposes, lifecycle rules.

Every value here is built by ``policies.loader`` after validation, so code that
holds a ``Catalogue`` may rely on its cross-references: every purpose item names
a record type and fields of it, every rule names a known type, purpose and client.
Mappings are read-only (``MappingProxyType``) and keep the order of the file.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = [
    "ACCESS_MODES",
    "EVENTS",
    "LEGAL_BASES",
    "Access",
    "Catalogue",
    "FieldType",
    "LegalBasis",
    "LifecycleRule",
    "Purpose",
    "RecordType",
    "Suggestion",
]

Access = Literal["once", "standing"]
LegalBasis = Literal["consent", "statute"]

ACCESS_MODES: tuple[Access, ...] = ("once", "standing")
LEGAL_BASES: tuple[LegalBasis, ...] = ("consent", "statute")
EVENTS: tuple[str, ...] = ("record.updated",)


def _empty_nested() -> Mapping[str, Mapping[str, FieldType]]:
    return MappingProxyType({})


class FieldType(enum.Enum):
    """The type of one field of a record (DESIGN §9)."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    LIST = "list"
    OBJECT = "object"


@dataclass(frozen=True, slots=True)
class RecordType:
    """A kind of record the vault stores (``record_types.toml``).

    ``subfields`` (an oncevault extension of DESIGN §9) declares, for a ``list``
    field, the fields of each element (every element is then an object with exactly
    those fields) and, for an ``object`` field, the fields of that object. A
    ``list``/``object`` field without an entry holds any bounded JSON value.
    """

    name: str
    title: str
    title_ko: str | None
    issuers: frozenset[str]
    self_asserted: bool
    retention_days: int
    fields: Mapping[str, FieldType] = field(hash=False)
    subfields: Mapping[str, Mapping[str, FieldType]] = field(
        default_factory=_empty_nested, hash=False
    )

    def field_type(self, path: str) -> FieldType | None:
        """The type at ``name``, ``list_field[].sub`` or ``object_field.sub``; None if none."""
        if "[]." in path:
            head, _, sub = path.partition("[].")
            if self.fields.get(head) is not FieldType.LIST:
                return None
            return self.subfields.get(head, {}).get(sub)
        if "." in path:
            head, _, sub = path.partition(".")
            if self.fields.get(head) is not FieldType.OBJECT:
                return None
            return self.subfields.get(head, {}).get(sub)
        return self.fields.get(path)


@dataclass(frozen=True, slots=True)
class Purpose:
    """Why a client may ask for data, and which fields it may ask for (``purposes.toml``).

    ``items`` maps a record type to the fields the purpose allows, sorted, with
    ``"*"`` already expanded to the type's declared fields.
    """

    name: str
    title: str
    title_ko: str | None
    legal_basis: LegalBasis
    statute: str | None
    clients: frozenset[str]
    items: Mapping[str, tuple[str, ...]] = field(hash=False)
    max_valid_days: int
    access: frozenset[Access]


@dataclass(frozen=True, slots=True)
class LifecycleRule:
    """A proactive suggestion: when ``if_field`` of a new version is a date within
    the last ``within_days`` days, suggest a consent (``lifecycle.toml``)."""

    name: str
    when_type: str
    when_event: str
    if_field: str
    within_days: int
    suggest_client: str
    suggest_purpose: str
    suggest_access: Access
    suggest_valid_days: int


@dataclass(frozen=True, slots=True)
class Suggestion:
    """What a lifecycle rule proposes; the consent service stores and shows it."""

    rule: str
    client_id: str
    purpose: str
    access: Access
    valid_days: int


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The whole validated policy: three files, one version.

    ``clients`` is every client id the catalogue refers to (issuers, purpose
    clients, suggested clients). ``version`` is the ``policy_version`` stamped on
    consents (see ``policies.loader.catalogue_version``).
    """

    record_types: Mapping[str, RecordType] = field(hash=False)
    purposes: Mapping[str, Purpose] = field(hash=False)
    rules: Mapping[str, LifecycleRule] = field(hash=False)
    clients: frozenset[str]
    version: str
