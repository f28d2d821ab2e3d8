"""Load and validate the policy catalogue (DESIGN §8, §9).

``load_catalogue(directory)`` reads ``record_types.toml``, ``purposes.toml`` and
``lifecycle.toml`` from ``directory`` (default: the catalogue shipped in
``policies/catalogue/``; the API passes ``ONCEVAULT_POLICY_DIR``), validates them
and returns a ``Catalogue``. Any problem raises ``CatalogueError`` with one line
``<file>: <key path>: <problem>``, e.g.::

    purposes.toml: purposes.mortgage_screening.items.income_certificate: unknown field 'salary'
    lifecycle.toml: line 3, column 7: invalid TOML: Expected '=' after a key in a key/value pair

Keys (DESIGN §9 keys exactly, plus the extensions marked *):

``record_types.toml`` — ``[record_types.<name>]``
    ``title`` (required), ``title_ko``\\* (optional Korean title), ``issuers``
    (client ids; default ``[]``), ``self_asserted`` (default ``false``),
    ``retention_days`` (0..36500; default 0 = erasable any time), ``fields``
    (required, non-empty; name -> field type), ``subfields``\\* (optional; for a
    ``list`` field, the fields of each element, which is then an object; for an
    ``object`` field, its fields).
``purposes.toml`` — ``[purposes.<name>]``
    ``title``, ``title_ko``\\*, ``legal_basis`` (``consent`` | ``statute``),
    ``statute`` (required for, and only allowed with, ``statute``), ``clients``,
    ``items`` (record type -> fields, or ``["*"]`` alone for every field; expanded
    and sorted at load), ``max_valid_days`` (1..36500), ``access`` (non-empty
    subset of ``once``, ``standing``). All but ``title_ko``/``statute`` required.
``lifecycle.toml`` — ``[rules.<name>]`` (the ``rules`` table may be absent)
    ``when = {type, event}`` (event: ``record.updated``), ``if = {field,
    within_days}`` (field ``name``, ``list_field[].sub`` or ``object_field.sub``
    naming a ``date`` field of the type), ``suggest = {client, purpose, access,
    valid_days}`` (the client must be allowed for the purpose, the access allowed
    by it, valid_days within its max_valid_days). All keys required.

Names of record types, purposes, rules and fields match ``[a-z0-9_]{1,64}``;
client ids match ``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``; titles are 1..200 characters.
Lists must not repeat an entry. A key the table above does not name is refused.

Version. ``catalogue_version`` is the lowercase hex SHA-256 of, for each file in
the order record_types.toml, purposes.toml, lifecycle.toml, the ASCII header
``"<file name> <byte length>\\n"`` followed by the file's bytes. Shell equivalent::

    for f in record_types.toml purposes.toml lifecycle.toml; do
        printf '%s %d\\n' "$f" "$(wc -c < "$f")"; cat "$f"; done | sha256sum
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn, cast

from policies.errors import CatalogueError
from policies.models import (
    ACCESS_MODES,
    EVENTS,
    LEGAL_BASES,
    Access,
    Catalogue,
    FieldType,
    LegalBasis,
    LifecycleRule,
    Purpose,
    RecordType,
)

__all__ = [
    "CATALOGUE_FILES",
    "CLIENT_ID_PATTERN",
    "DEFAULT_CATALOGUE_DIR",
    "MAX_DAYS",
    "NAME_PATTERN",
    "catalogue_version",
    "load_catalogue",
]

DEFAULT_CATALOGUE_DIR = Path(__file__).resolve().parent / "catalogue"
RECORD_TYPES_FILE = "record_types.toml"
PURPOSES_FILE = "purposes.toml"
LIFECYCLE_FILE = "lifecycle.toml"
CATALOGUE_FILES = (RECORD_TYPES_FILE, PURPOSES_FILE, LIFECYCLE_FILE)

NAME_PATTERN = re.compile(r"[a-z0-9_]{1,64}")
CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
MAX_DAYS = 36_500  # a hundred years: keeps every date computation in range
MAX_TITLE = 200
_TOML_POSITION = re.compile(r"\s*\(at (line (\d+), column (\d+)|end of document)\)$")
_FIELD_TYPES = ", ".join(t.value for t in FieldType)


def load_catalogue(directory: Path | None = None) -> Catalogue:
    """Read and validate the three catalogue files of ``directory``.

    Raises:
        CatalogueError: a file is missing, unreadable, not TOML, or invalid.
    """
    root = DEFAULT_CATALOGUE_DIR if directory is None else Path(directory)
    raw = {name: _read(root, name) for name in CATALOGUE_FILES}
    documents = {name: _parse(name, data) for name, data in raw.items()}
    record_types = _record_types(documents[RECORD_TYPES_FILE])
    purposes = _purposes(documents[PURPOSES_FILE], record_types)
    known_clients: set[str] = set()
    for record_type in record_types.values():
        known_clients |= record_type.issuers
    for purpose in purposes.values():
        known_clients |= purpose.clients
    rules = _rules(documents[LIFECYCLE_FILE], record_types, purposes, frozenset(known_clients))
    return Catalogue(
        record_types=MappingProxyType(record_types),
        purposes=MappingProxyType(purposes),
        rules=MappingProxyType(rules),
        clients=frozenset(known_clients),
        version=catalogue_version(raw),
    )


def catalogue_version(files: Mapping[str, bytes]) -> str:
    """SHA-256 (hex) over each catalogue file, prefixed by ``"<name> <length>\\n"``."""
    digest = hashlib.sha256()
    for name in CATALOGUE_FILES:
        data = files[name]
        digest.update(f"{name} {len(data)}\n".encode("ascii"))
        digest.update(data)
    return digest.hexdigest()


# --------------------------------------------------------------------------
# Reading and parsing
# --------------------------------------------------------------------------


def _read(root: Path, name: str) -> bytes:
    path = root / name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        problem = f"missing file (looked in {root})"
    except IsADirectoryError:
        problem = f"is a directory, expected a file (in {root})"
    except OSError as exc:
        problem = f"cannot read file: {exc.strerror or type(exc).__name__} (in {root})"
    raise CatalogueError(name, "", problem)


def _parse(name: str, data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problem = "not valid UTF-8"
        where = f"line {line}"
    else:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            match = _TOML_POSITION.search(message)
            where = "end of document"
            if match is not None:
                message = message[: match.start()]
                if match.group(2) is not None:
                    where = f"line {match.group(2)}, column {match.group(3)}"
            problem = f"invalid TOML: {message}"
    raise CatalogueError(name, where, problem)


# --------------------------------------------------------------------------
# Value checks: each names the file and key path in its error
# --------------------------------------------------------------------------


def _kind(value: object) -> str:
    """The TOML name of a parsed value's type (never the value itself)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return "date/time"


def _key(key: str) -> str:
    return key if BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _join(path: str, key: str) -> str:
    return f"{path}.{_key(key)}" if path else _key(key)


class _File:
    """Validation helpers bound to one file name."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, path: str, problem: str) -> NoReturn:
        raise CatalogueError(self.file, path, problem)

    def table(self, value: object, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"expected a table, got {_kind(value)}")
        return value

    def keys(
        self,
        table: Mapping[str, object],
        path: str,
        *,
        required: tuple[str, ...],
        optional: tuple[str, ...] = (),
    ) -> None:
        allowed = required + optional
        for key in table:
            if key not in allowed:
                self.fail(_join(path, key), f"unknown key (expected one of: {', '.join(allowed)})")
        for key in required:
            if key not in table:
                self.fail(_join(path, key), "missing required key")

    def string(self, value: object, path: str, *, max_length: int = MAX_TITLE) -> str:
        if not isinstance(value, str):
            self.fail(path, f"expected a string, got {_kind(value)}")
        if not value.strip():
            self.fail(path, "must not be empty")
        if len(value) > max_length:
            self.fail(path, f"longer than {max_length} characters")
        return value

    def boolean(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"expected a boolean, got {_kind(value)}")
        return value

    def integer(self, value: object, path: str, *, minimum: int, maximum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected an integer, got {_kind(value)}")
        if value < minimum:
            if minimum == 1:
                self.fail(path, "must be a positive integer")
            self.fail(path, f"must be at least {minimum}")
        if value > maximum:
            self.fail(path, f"must be at most {maximum}")
        return value

    def name(self, value: str, path: str, what: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            self.fail(path, f"invalid {what} name (must match [a-z0-9_]{{1,64}})")
        return value

    def strings(self, value: object, path: str) -> list[str]:
        """A list of strings without repeats (possibly empty)."""
        if not isinstance(value, list):
            self.fail(path, f"expected an array, got {_kind(value)}")
        seen: set[str] = set()
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{path}[{index}]", f"expected a string, got {_kind(item)}")
            if item in seen:
                self.fail(f"{path}[{index}]", f"duplicate entry '{item}'")
            seen.add(item)
        return cast("list[str]", value)

    def clients(self, value: object, path: str) -> frozenset[str]:
        items = self.strings(value, path)
        for index, client in enumerate(items):
            if not CLIENT_ID_PATTERN.fullmatch(client):
                self.fail(
                    f"{path}[{index}]",
                    "invalid client id (must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63})",
                )
        return frozenset(items)

    def field_types(self, value: object, path: str) -> dict[str, FieldType]:
        table = self.table(value, path)
        if not table:
            self.fail(path, "no fields declared (the table is empty)")
        result: dict[str, FieldType] = {}
        for field_name, type_name in table.items():
            field_path = _join(path, field_name)
            self.name(field_name, field_path, "field")
            if not isinstance(type_name, str):
                self.fail(field_path, f"expected a field type string, got {_kind(type_name)}")
            try:
                result[field_name] = FieldType(type_name)
            except ValueError:
                self.fail(
                    field_path,
                    f"unknown field type '{type_name}' (expected one of: {_FIELD_TYPES})",
                )
        return result


# --------------------------------------------------------------------------
# record_types.toml
# --------------------------------------------------------------------------


def _record_types(document: dict[str, Any]) -> dict[str, RecordType]:
    f = _File(RECORD_TYPES_FILE)
    f.keys(document, "", required=("record_types",))
    entries = f.table(document["record_types"], "record_types")
    result: dict[str, RecordType] = {}
    for name, entry in entries.items():
        path = _join("record_types", name)
        f.name(name, path, "record type")
        table = f.table(entry, path)
        f.keys(
            table,
            path,
            required=("title", "fields"),
            optional=("title_ko", "issuers", "self_asserted", "retention_days", "subfields"),
        )
        fields = f.field_types(table["fields"], f"{path}.fields")
        subfields: dict[str, Mapping[str, FieldType]] = {}
        if "subfields" in table:
            sub_path = f"{path}.subfields"
            for field_name, sub_table in f.table(table["subfields"], sub_path).items():
                field_path = _join(sub_path, field_name)
                declared = fields.get(field_name)
                if declared is None:
                    f.fail(field_path, f"unknown field '{field_name}' (not in fields)")
                if declared not in (FieldType.LIST, FieldType.OBJECT):
                    f.fail(
                        field_path,
                        f"field '{field_name}' is a {declared.value}, not a list or object",
                    )
                subfields[field_name] = MappingProxyType(f.field_types(sub_table, field_path))
        result[name] = RecordType(
            name=name,
            title=f.string(table["title"], f"{path}.title"),
            title_ko=f.string(table["title_ko"], f"{path}.title_ko")
            if "title_ko" in table
            else None,
            issuers=f.clients(table.get("issuers", []), f"{path}.issuers"),
            self_asserted=f.boolean(table.get("self_asserted", False), f"{path}.self_asserted"),
            retention_days=f.integer(
                table.get("retention_days", 0),
                f"{path}.retention_days",
                minimum=0,
                maximum=MAX_DAYS,
            ),
            fields=MappingProxyType(fields),
            subfields=MappingProxyType(subfields),
        )
    return result


# --------------------------------------------------------------------------
# purposes.toml
# --------------------------------------------------------------------------


def _purposes(
    document: dict[str, Any], record_types: Mapping[str, RecordType]
) -> dict[str, Purpose]:
    f = _File(PURPOSES_FILE)
    f.keys(document, "", required=("purposes",))
    entries = f.table(document["purposes"], "purposes")
    result: dict[str, Purpose] = {}
    for name, entry in entries.items():
        path = _join("purposes", name)
        f.name(name, path, "purpose")
        table = f.table(entry, path)
        f.keys(
            table,
            path,
            required=("title", "legal_basis", "clients", "items", "max_valid_days", "access"),
            optional=("title_ko", "statute"),
        )
        legal_basis = _legal_basis(f, table["legal_basis"], f"{path}.legal_basis")
        statute: str | None = None
        if legal_basis == "statute":
            if "statute" not in table:
                f.fail(f"{path}.statute", "missing required key (legal_basis is 'statute')")
            statute = f.string(table["statute"], f"{path}.statute", max_length=500)
        elif "statute" in table:
            f.fail(f"{path}.statute", "only allowed when legal_basis = 'statute'")
        result[name] = Purpose(
            name=name,
            title=f.string(table["title"], f"{path}.title"),
            title_ko=f.string(table["title_ko"], f"{path}.title_ko")
            if "title_ko" in table
            else None,
            legal_basis=legal_basis,
            statute=statute,
            clients=f.clients(table["clients"], f"{path}.clients"),
            items=_items(f, table["items"], f"{path}.items", record_types),
            max_valid_days=f.integer(
                table["max_valid_days"], f"{path}.max_valid_days", minimum=1, maximum=MAX_DAYS
            ),
            access=_access(f, table["access"], f"{path}.access"),
        )
    return result


def _legal_basis(f: _File, value: object, path: str) -> LegalBasis:
    if not isinstance(value, str):
        f.fail(path, f"expected a string, got {_kind(value)}")
    if value not in LEGAL_BASES:
        f.fail(path, f"unknown legal basis '{value}' (expected 'consent' or 'statute')")
    return value


def _access(f: _File, value: object, path: str) -> frozenset[Access]:
    modes = f.strings(value, path)
    if not modes:
        f.fail(path, "must name at least one of 'once', 'standing'")
    for index, mode in enumerate(modes):
        if mode not in ACCESS_MODES:
            f.fail(f"{path}[{index}]", f"unknown access '{mode}' (expected 'once' or 'standing')")
    return frozenset(cast("list[Access]", modes))


def _items(
    f: _File, value: object, path: str, record_types: Mapping[str, RecordType]
) -> Mapping[str, tuple[str, ...]]:
    table = f.table(value, path)
    if not table:
        f.fail(path, "no items (the table is empty)")
    result: dict[str, tuple[str, ...]] = {}
    for type_name, fields_value in table.items():
        item_path = _join(path, type_name)
        record_type = record_types.get(type_name)
        if record_type is None:
            f.fail(item_path, f"unknown record type '{type_name}'")
        fields = f.strings(fields_value, item_path)
        if not fields:
            f.fail(item_path, 'empty field list (use ["*"] for every field)')
        if "*" in fields:
            if len(fields) > 1:
                f.fail(item_path, "'*' must be the only entry")
            fields = list(record_type.fields)
        for field_name in fields:
            if field_name not in record_type.fields:
                f.fail(item_path, f"unknown field '{field_name}'")
        result[type_name] = tuple(sorted(fields))
    return MappingProxyType(result)


# --------------------------------------------------------------------------
# lifecycle.toml
# --------------------------------------------------------------------------


def _rules(
    document: dict[str, Any],
    record_types: Mapping[str, RecordType],
    purposes: Mapping[str, Purpose],
    clients: frozenset[str],
) -> dict[str, LifecycleRule]:
    f = _File(LIFECYCLE_FILE)
    f.keys(document, "", required=(), optional=("rules",))
    entries = f.table(document.get("rules", {}), "rules")
    result: dict[str, LifecycleRule] = {}
    for name, entry in entries.items():
        path = _join("rules", name)
        f.name(name, path, "rule")
        table = f.table(entry, path)
        f.keys(table, path, required=("when", "if", "suggest"))

        when = f.table(table["when"], f"{path}.when")
        f.keys(when, f"{path}.when", required=("type", "event"))
        type_name = f.string(when["type"], f"{path}.when.type")
        record_type = record_types.get(type_name)
        if record_type is None:
            f.fail(f"{path}.when.type", f"unknown record type '{type_name}'")
        event = f.string(when["event"], f"{path}.when.event")
        if event not in EVENTS:
            f.fail(f"{path}.when.event", f"unknown event '{event}' (expected 'record.updated')")

        condition = f.table(table["if"], f"{path}.if")
        f.keys(condition, f"{path}.if", required=("field", "within_days"))
        field_path = f.string(condition["field"], f"{path}.if.field")
        field_type = record_type.field_type(field_path)
        if field_type is None:
            f.fail(
                f"{path}.if.field", f"'{field_path}' is not a field of record type '{type_name}'"
            )
        if field_type is not FieldType.DATE:
            f.fail(
                f"{path}.if.field",
                f"'{field_path}' is a {field_type.value} field; a rule needs a date field",
            )
        within_days = f.integer(
            condition["within_days"], f"{path}.if.within_days", minimum=1, maximum=MAX_DAYS
        )

        suggest = f.table(table["suggest"], f"{path}.suggest")
        f.keys(suggest, f"{path}.suggest", required=("client", "purpose", "access", "valid_days"))
        purpose_name = f.string(suggest["purpose"], f"{path}.suggest.purpose")
        purpose = purposes.get(purpose_name)
        if purpose is None:
            f.fail(f"{path}.suggest.purpose", f"unknown purpose '{purpose_name}'")
        client = f.string(suggest["client"], f"{path}.suggest.client")
        if client not in clients:
            f.fail(
                f"{path}.suggest.client",
                f"unknown client '{client}' (not an issuer or purpose client in the catalogue)",
            )
        if client not in purpose.clients:
            f.fail(
                f"{path}.suggest.client", f"client '{client}' may not use purpose '{purpose_name}'"
            )
        access = f.string(suggest["access"], f"{path}.suggest.access")
        if access not in ACCESS_MODES:
            f.fail(
                f"{path}.suggest.access",
                f"unknown access '{access}' (expected 'once' or 'standing')",
            )
        if access not in purpose.access:
            f.fail(
                f"{path}.suggest.access",
                f"access '{access}' is not allowed by purpose '{purpose_name}'",
            )
        valid_days = f.integer(
            suggest["valid_days"], f"{path}.suggest.valid_days", minimum=1, maximum=MAX_DAYS
        )
        if valid_days > purpose.max_valid_days:
            f.fail(
                f"{path}.suggest.valid_days",
                f"must be at most {purpose.max_valid_days} (max_valid_days of purpose"
                f" '{purpose_name}')",
            )
        result[name] = LifecycleRule(
            name=name,
            when_type=type_name,
            when_event=event,
            if_field=field_path,
            within_days=within_days,
            suggest_client=client,
            suggest_purpose=purpose_name,
            suggest_access=access,
            suggest_valid_days=valid_days,
        )
    return result
