"""Check record data against its record type (DESIGN §9: a mismatch is a 422).

``validate_record(record_type, data)`` returns a fresh copy of ``data`` or raises
``RecordInvalid`` (code ``validation_error``). The rules:

* ``data`` is a JSON object (a ``dict`` with string keys).
* Exactly the declared fields: an undeclared field is refused, and **every
  declared field is required** (``null`` is not a value of any type). A consumer
  that was granted ``total_income`` can then rely on getting it, and two issuers
  cannot store differently shaped versions of one type. A field that may be
  unknown needs a representation in the type (an empty list, a flag).
* Types are strict: ``integer`` is an ``int`` but not a ``bool``, within
  ±(2**53 - 1) so that every JSON implementation reads it exactly; ``number`` is
  an ``integer`` or a finite ``float``; ``boolean`` is ``True``/``False`` only;
  ``string`` is at most 4,096 characters of valid Unicode (no lone surrogates);
  ``date`` is a string ``YYYY-MM-DD`` naming a real calendar day.
* ``list``/``object`` fields with declared ``subfields`` hold objects with
  exactly those subfields (same rules, one level). Without ``subfields`` they hold
  any JSON value: nesting at most 16 levels (the record object is level 1), at
  most 10,000 values and 1 MiB of string characters per record.

Messages name the path from ``data`` (``data.children[0].birth_date: expected a
date (YYYY-MM-DD)``) and never contain a submitted value, nor a submitted key
(an unknown key could itself be personal data; the message lists the allowed
names instead). No exception is chained to ``RecordInvalid``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any

from policies.errors import RecordInvalid
from policies.models import FieldType, RecordType

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_SAFE_INTEGER",
    "MAX_STRING_LENGTH",
    "MAX_TOTAL_CHARS",
    "parse_date",
    "validate_record",
]

MAX_SAFE_INTEGER = 2**53 - 1
MAX_STRING_LENGTH = 4096
MAX_DEPTH = 16
MAX_NODES = 10_000
MAX_TOTAL_CHARS = 1 << 20

_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_date(value: object) -> dt.date | None:
    """``YYYY-MM-DD`` (ASCII digits, a real calendar day, year >= 1) or None. Never raises."""
    if not isinstance(value, str):
        return None
    match = _DATE.fullmatch(value)
    if match is None:
        return None
    year, month, day = (int(part) for part in match.groups())
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    return dt.date(year, month, day)


def validate_record(record_type: RecordType, data: object) -> dict[str, Any]:
    """Return a copy of ``data`` if it matches ``record_type``.

    Raises:
        RecordInvalid: the first mismatch found, naming its path, never its value.
    """
    return _Validator().fields(record_type.fields, record_type.subfields, data, "data")


class _Validator:
    """One validation pass; counts values and characters across the whole record."""

    def __init__(self) -> None:
        self.nodes = 0
        self.chars = 0

    def count(self, path: str, chars: int = 0) -> None:
        self.nodes += 1
        self.chars += chars
        if self.nodes > MAX_NODES:
            raise RecordInvalid("data", f"more than {MAX_NODES} values")
        if self.chars > MAX_TOTAL_CHARS:
            raise RecordInvalid("data", f"more than {MAX_TOTAL_CHARS} characters of text")

    def fields(
        self,
        fields: Mapping[str, FieldType],
        subfields: Mapping[str, Mapping[str, FieldType]],
        data: object,
        path: str,
        depth: int = 1,
    ) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise RecordInvalid(path, "expected a JSON object")
        self.count(path)
        for key in data:
            if key not in fields:
                allowed = ", ".join(fields)
                raise RecordInvalid(path, f"unknown field (allowed fields: {allowed})")
        result: dict[str, Any] = {}
        for name, field_type in fields.items():
            field_path = f"{path}.{name}"
            if name not in data:
                raise RecordInvalid(field_path, "missing required field")
            result[name] = self.value(
                field_type, subfields.get(name), data[name], field_path, depth + 1
            )
        return result

    def value(
        self,
        field_type: FieldType,
        shape: Mapping[str, FieldType] | None,
        value: object,
        path: str,
        depth: int,
    ) -> Any:
        if field_type is FieldType.STRING:
            return self.string(value, path)
        if field_type is FieldType.INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                raise RecordInvalid(path, "expected an integer")
            if abs(value) > MAX_SAFE_INTEGER:
                raise RecordInvalid(path, "integer out of range (at most 2**53 - 1 in magnitude)")
            self.count(path)
            return int(value)
        if field_type is FieldType.NUMBER:
            return self.number(value, path)
        if field_type is FieldType.BOOLEAN:
            if not isinstance(value, bool):
                raise RecordInvalid(path, "expected a boolean")
            self.count(path)
            return value
        if field_type is FieldType.DATE:
            if parse_date(value) is None:
                raise RecordInvalid(path, "expected a date (YYYY-MM-DD)")
            self.count(path, 10)
            return str(value)
        if field_type is FieldType.LIST:
            if not isinstance(value, list):
                raise RecordInvalid(path, "expected a list")
            if shape is None:
                return self.json(value, path, depth)
            if depth > MAX_DEPTH:
                raise RecordInvalid(path, f"nested deeper than {MAX_DEPTH} levels")
            self.count(path)
            return [
                self.fields(shape, {}, element, f"{path}[{index}]", depth + 1)
                for index, element in enumerate(value)
            ]
        # FieldType.OBJECT
        if not isinstance(value, dict):
            raise RecordInvalid(path, "expected an object")
        if shape is None:
            return self.json(value, path, depth)
        if depth > MAX_DEPTH:
            raise RecordInvalid(path, f"nested deeper than {MAX_DEPTH} levels")
        return self.fields(shape, {}, value, path, depth)

    def string(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            raise RecordInvalid(path, "expected a string")
        problem = _string_problem(value)
        if problem is not None:
            raise RecordInvalid(path, problem)
        self.count(path, len(value))
        return str(value)

    def number(self, value: object, path: str) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordInvalid(path, "expected a number")
        problem = _number_problem(value)
        if problem is not None:
            raise RecordInvalid(path, problem)
        self.count(path)
        return float(value) if isinstance(value, float) else int(value)

    def json(self, value: object, field_path: str, depth: int) -> Any:
        """Any bounded JSON value at ``depth``; errors name ``field_path`` (the declared
        field) only, since the keys below it are the submitter's."""
        if value is None or isinstance(value, bool):
            self.count(field_path)
            return value
        if isinstance(value, int | float):
            if _number_problem(value) is not None:
                raise RecordInvalid(field_path, "contains a number out of range or not finite")
            return self.number(value, field_path)
        if isinstance(value, str):
            if _string_problem(value) is not None:
                raise RecordInvalid(
                    field_path, "contains a string that is too long or not valid Unicode"
                )
            return self.string(value, field_path)
        if not isinstance(value, list | dict):
            raise RecordInvalid(field_path, "contains a value that is not JSON")
        if depth > MAX_DEPTH:
            raise RecordInvalid(field_path, f"nested deeper than {MAX_DEPTH} levels")
        self.count(field_path)
        if isinstance(value, list):
            return [self.json(item, field_path, depth + 1) for item in value]
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str) or _string_problem(key) is not None:
                raise RecordInvalid(field_path, "contains an object key that is not a valid string")
            self.count(field_path, len(key))
            result[key] = self.json(item, field_path, depth + 1)
        return result


def _string_problem(value: str) -> str | None:
    if len(value) > MAX_STRING_LENGTH:
        return f"string longer than {MAX_STRING_LENGTH} characters"
    if _SURROGATE.search(value):
        return "string is not valid Unicode (lone surrogate)"
    return None


def _number_problem(value: int | float) -> str | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else "expected a finite number"
    if abs(value) > MAX_SAFE_INTEGER:
        return "number out of range (at most 2**53 - 1 in magnitude)"
    return None
