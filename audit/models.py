"""Audit entries exactly as DESIGN section 7 (contract) defines them.

An entry's leaf bytes are ``json.dumps(entry, sort_keys=True, separators=(",", ":"))``.
Because every string is ASCII from ``[A-Za-z0-9_.:-]{0,128}`` and every integer is
below 2**53, those bytes are also the RFC 8785 (JCS) encoding; :func:`leaf_bytes`
enforces both conditions, so no caller can produce a leaf that encodes differently.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

ActorType = Literal["citizen", "client", "operator", "system"]
Outcome = Literal["ok", "denied", "error"]

ACTOR_TYPES: frozenset[str] = frozenset({"citizen", "client", "operator", "system"})
OUTCOMES: frozenset[str] = frozenset({"ok", "denied", "error"})

_LEAF_ENCODER = msgspec.json.Encoder(order="sorted")
#: The longest string an entry holds.
TOKEN_MAX = 128
_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{0,128}")
MAX_INT = 2**53 - 1

#: The entry fields, in contract order (the leaf itself sorts them).
FIELDS: tuple[str, ...] = (
    "seq",
    "ts",
    "actor",
    "action",
    "citizen_id",
    "client_id",
    "consent_id",
    "purpose",
    "record_type",
    "record_version",
    "items",
    "outcome",
    "reason_code",
    "request_id",
)


class InvalidEntry(ValueError):
    """An entry that would break the leaf encoding rules (a programming error)."""


def is_token(value: object) -> bool:
    """True when ``value`` is a string allowed in an entry."""
    # A longer string is never a token; checked first, so the memo below only ever
    # holds strings of at most 128 characters (a caller's megabyte-long purpose is
    # refused without being remembered).
    return isinstance(value, str) and len(value) <= TOKEN_MAX and _is_token_text(value)


@functools.lru_cache(maxsize=16384)
def _is_token_text(value: str) -> bool:
    # Memoised: the same client ids, actions, purposes and consent ids recur in every
    # entry, and each draft is checked inside the batch's transaction.
    return _TOKEN.fullmatch(value) is not None


def safe_token(value: object) -> str | None:
    """A caller-supplied value as an entry string, or ``None`` outside the alphabet.

    DESIGN section 7: caller-supplied values outside the allowed alphabet are ``null``.
    """
    return value if isinstance(value, str) and is_token(value) else None


class Item(msgspec.Struct, frozen=True):
    """One released item of a ``data.read`` entry."""

    type: str
    version: int
    fields: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "version": self.version, "fields": sorted(self.fields)}


class EntryDraft(msgspec.Struct, frozen=True):
    """What a use case records; the log adds ``seq`` and ``ts`` when it appends."""

    action: str
    actor_type: ActorType
    actor_id: str | None
    outcome: Outcome = "ok"
    citizen_id: str | None = None
    client_id: str | None = None
    consent_id: str | None = None
    purpose: str | None = None
    record_type: str | None = None
    record_version: int | None = None
    items: tuple[Item, ...] | None = None
    reason_code: str | None = None
    request_id: str | None = None

    def validate(self) -> None:
        """Raise :class:`InvalidEntry` unless the entry this draft becomes follows the
        section 7 rules, whatever its ``seq`` and ``ts``: the rules
        :func:`validate_entry` applies (:func:`_check_rules`, shared), on the draft's
        own fields, without building the entry (a unit's drafts are checked inside the
        batch's transaction, and built once, at the append).
        ``tests/unit/audit/test_draft_validation.py`` holds the two to the same verdict.
        """
        _check_rules(
            action=self.action,
            actor_type=self.actor_type,
            actor_id=self.actor_id,
            tokens=(  # _OPTIONAL_TOKENS, spelled out: this runs inside the write lock
                ("citizen_id", self.citizen_id),
                ("client_id", self.client_id),
                ("consent_id", self.consent_id),
                ("purpose", self.purpose),
                ("record_type", self.record_type),
                ("reason_code", self.reason_code),
                ("request_id", self.request_id),
            ),
            record_version=self.record_version,
            outcome=self.outcome,
            items=self.items,
            item_parts=_draft_item,
        )

    def to_entry(self, *, seq: int, ts: int, validate: bool = True) -> dict[str, Any]:
        """The contract dict for this draft at ``seq``/``ts``; validated unless the
        caller has validated this draft already (:meth:`validate`; only ``seq`` and
        ``ts`` differ)."""
        if validate:
            _check_int("seq", seq, nullable=False)
            _check_int("ts", ts, nullable=False)
            self.validate()
        entry: dict[str, Any] = {
            "seq": seq,
            "ts": ts,
            "actor": {"type": self.actor_type, "id": self.actor_id},
            "action": self.action,
            "citizen_id": self.citizen_id,
            "client_id": self.client_id,
            "consent_id": self.consent_id,
            "purpose": self.purpose,
            "record_type": self.record_type,
            "record_version": self.record_version,
            "items": (
                None
                if self.items is None
                else sorted(
                    (item.as_json() for item in self.items),
                    key=lambda i: (i["type"], i["version"]),
                )
            ),
            "outcome": self.outcome,
            "reason_code": self.reason_code,
            "request_id": self.request_id,
        }
        return entry


@dataclass(frozen=True)
class StoredEntry:
    """An entry as read back: its seq, leaf bytes and leaf hash."""

    seq: int
    leaf: bytes
    leaf_hash: bytes
    entry: dict[str, Any] = field(compare=False)


def _check_int(name: str, value: object, *, nullable: bool) -> None:
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise InvalidEntry(f"{name}: expected an integer in 0..2^53-1")


def _check_token(name: str, value: object, *, nullable: bool = True) -> None:
    if value is None and nullable:
        return
    if not is_token(value):
        raise InvalidEntry(f"{name}: expected a string matching [A-Za-z0-9_.:-]{{0,128}}")


def validate_entry(entry: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidEntry` unless ``entry`` follows the section 7 rules."""
    if set(entry) != set(FIELDS):
        raise InvalidEntry("entry fields differ from the contract")
    _check_int("seq", entry["seq"], nullable=False)
    _check_int("ts", entry["ts"], nullable=False)
    actor = entry["actor"]
    if not isinstance(actor, Mapping) or set(actor) != {"type", "id"}:
        raise InvalidEntry("actor: expected {type, id}")
    _check_rules(
        action=entry["action"],
        actor_type=actor["type"],
        actor_id=actor["id"],
        tokens=[(name, entry[name]) for name in _OPTIONAL_TOKENS],
        record_version=entry["record_version"],
        outcome=entry["outcome"],
        items=entry["items"],
        item_parts=_entry_item,
    )


#: The nullable string fields of an entry (besides ``actor.id``).
_OPTIONAL_TOKENS = (
    "citizen_id",
    "client_id",
    "consent_id",
    "purpose",
    "record_type",
    "reason_code",
    "request_id",
)


def _entry_item(item: object) -> tuple[object, object, object]:
    if not isinstance(item, dict) or set(item) != {"type", "version", "fields"}:
        raise InvalidEntry("items[]: expected {type, version, fields}")
    return item["type"], item["version"], item["fields"]


def _draft_item(item: object) -> tuple[object, object, object]:
    if not isinstance(item, Item):
        raise InvalidEntry("items[]: expected {type, version, fields}")
    return item.type, item.version, item.fields


def _check_rules(
    *,
    action: object,
    actor_type: object,
    actor_id: object,
    tokens: Sequence[tuple[str, object]],
    record_version: object,
    outcome: object,
    items: object,
    item_parts: Callable[[object], tuple[object, object, object]],
) -> None:
    """The section 7 rules on an entry's values, whether they sit in an entry dict
    (:func:`validate_entry`) or in a draft (:meth:`EntryDraft.validate`);
    ``item_parts`` takes one item apart, or refuses its shape."""
    if actor_type not in ACTOR_TYPES:
        raise InvalidEntry("actor.type: unknown")
    _check_token("actor.id", actor_id)
    _check_token("action", action, nullable=False)
    for name, value in tokens:
        _check_token(name, value)
    _check_int("record_version", record_version, nullable=True)
    if outcome not in OUTCOMES:
        raise InvalidEntry("outcome: expected ok, denied or error")
    if items is None:
        return
    if action != "data.read":
        raise InvalidEntry("items: only data.read entries list items")
    if not isinstance(items, list | tuple):
        raise InvalidEntry("items: expected a list")
    for item in items:
        item_type, version, fields = item_parts(item)
        _check_token("items[].type", item_type, nullable=False)
        _check_int("items[].version", version, nullable=False)
        if not isinstance(fields, list | tuple):
            raise InvalidEntry("items[].fields: expected a list")
        for name in fields:
            _check_token("items[].fields[]", name, nullable=False)


def leaf_bytes(entry: Mapping[str, Any], *, validated: bool = False) -> bytes:
    """The verbatim leaf: sorted keys, compact separators, ASCII (equal to JCS here).

    ``validated=True``: ``entry`` comes straight from :meth:`EntryDraft.to_entry`,
    which has just validated it.
    """
    if not validated:
        validate_entry(entry)
    # A valid entry holds only tokens ([A-Za-z0-9_.:-]), integers in 0..2^53-1, null,
    # lists and dicts: nothing to escape, no floats. On those msgspec's sorted
    # compact encoding is byte for byte ``json.dumps(entry, sort_keys=True,
    # separators=(",", ":"), ensure_ascii=True)``, ten times faster
    # (tests/unit/audit/test_leaf_encoding.py). A str or int subclass msgspec does
    # not know (enums it does) gets the json module's encoding itself.
    try:
        return _LEAF_ENCODER.encode(entry)
    except (TypeError, msgspec.EncodeError):
        return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
            "ascii"
        )


def parse_leaf(leaf: bytes) -> dict[str, Any]:
    """Decode leaf bytes back into an entry dict (no validation)."""
    value = json.loads(leaf.decode("ascii"))
    if not isinstance(value, dict):
        raise InvalidEntry("leaf is not a JSON object")
    return value
