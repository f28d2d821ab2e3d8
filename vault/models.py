"""Value objects of the vault (no Piccolo, no Litestar)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from vault.errors import InvalidSubject

SubjectKind = Literal["nid", "ci"]

TYPE_NAME = re.compile(r"[a-z0-9_]{1,64}")
_NID = re.compile(r"\d{6}-?\d{7}")
_CI = re.compile(r"[A-Za-z0-9+/=_-]{1,256}")


#: Byte -> lowercase RFC 4648 base32 character of its low 5 bits. 256 is a multiple
#: of 32, so a uniformly random byte gives a uniformly random character.
_BASE32_OF_BYTE = bytes(b"abcdefghijklmnopqrstuvwxyz234567"[b & 31] for b in range(256))


def random_base32(length: int = 26) -> str:
    """``length`` characters of lowercase base32, 5 fresh random bits each (26: 130 bits).

    The alphabet and length of ``b32encode(token_bytes(20))[:26]``, without the
    pure-Python base32 encoder (a few µs per id; a bulk batch makes three a record).
    """
    return secrets.token_bytes(length).translate(_BASE32_OF_BYTE).decode("ascii")


def new_id(prefix: str) -> str:
    """``prefix`` + ``_`` + 26 characters of random base32 (130 bits), lowercase."""
    return f"{prefix}_{random_base32()}"


#: The base32 characters in byte order: a number spelled with them sorts as it counts.
_SORTED_BASE32 = "234567abcdefghijklmnopqrstuvwxyz"
_TIME_CHARS = 10  # 50 bits: milliseconds since 1970 until the year 37,648
_ORDERED_RANDOM_CHARS = 16  # 80 random bits


def new_ordered_id(prefix: str, now_ms: int) -> str:
    """``prefix`` + ``_`` + 26 lowercase base32 characters, as :func:`new_id`, whose
    first 10 spell ``now_ms`` (milliseconds since 1970, in the alphabet's byte order,
    so ids sort by time) and whose last 16 are random (80 bits).

    For DEK ids: each is the key of a unique index, and a random key puts every insert
    on a random page of it (a bulk batch of 1,000 new citizens dirtied ~600 pages of
    each such index at 10^5 records); a time-ordered key appends at the index's right
    edge. A DEK id never leaves the vault, and its row holds the same time
    (``created_at``). Record ids stay random: an issuer re-sending unchanged content
    gets the latest version's id, which may be another writer's (or the citizen's own,
    for a self-asserted type), and when that version was made is not the issuer's to
    learn. Citizen ids stay random too: they are pseudonyms many parties see.
    """
    if type(now_ms) is not int or not 0 <= now_ms < 1 << (5 * _TIME_CHARS):
        raise ValueError("time out of range")
    head = "".join(
        _SORTED_BASE32[(now_ms >> shift) & 31] for shift in range(5 * (_TIME_CHARS - 1), -1, -5)
    )
    return f"{prefix}_{head}{random_base32(_ORDERED_RANDOM_CHARS)}"


@dataclass(frozen=True)
class Subject:
    """Who a record is about: a resident registration number or a CI value.

    ``value`` never appears in ``repr`` (it is personal data).
    """

    kind: SubjectKind
    value: str = field(repr=False)

    @classmethod
    def parse(cls, raw: object) -> Subject:
        """From the request shape ``{"nid": "..."}`` or ``{"ci": "..."}``."""
        if not isinstance(raw, dict) or len(raw) != 1:
            raise InvalidSubject("subject: expected exactly one of nid or ci")
        ((kind, value),) = raw.items()
        if kind == "nid":
            if not isinstance(value, str) or not _NID.fullmatch(value):
                raise InvalidSubject("subject.nid: expected 13 digits (YYMMDD-NNNNNNN)")
            return cls("nid", value.replace("-", ""))
        if kind == "ci":
            if not isinstance(value, str) or not _CI.fullmatch(value):
                raise InvalidSubject("subject.ci: expected 1..256 base64 characters")
            return cls("ci", value)
        raise InvalidSubject("subject: expected exactly one of nid or ci")


@dataclass(frozen=True)
class StoredVersion:
    """A version just stored, as the write's unit announces it (events, suggestions)."""

    citizen_id: str
    record_type: str
    data: Mapping[str, Any]
    version: int | None


@dataclass(frozen=True)
class PutResult:
    record_id: str
    citizen_id: str
    record_type: str
    version: int
    created: bool


class RecordMeta(msgspec.Struct, frozen=True):
    """A record version without its content."""

    record_id: str
    citizen_id: str
    record_type: str
    version: int
    source: str
    attested: bool
    created_at: int


@dataclass(frozen=True)
class RecordContent:
    """A decrypted record version."""

    meta: RecordMeta
    data: dict[str, Any] = field(repr=False)
    attestation: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class ErasureResult:
    citizen_id: str
    erased: tuple[str, ...]
    at: int
    index_removed: bool
