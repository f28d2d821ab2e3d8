"""Use cases of the encrypted per-citizen store.

The shape of every write: key-provider calls first (unwrap or create the DEK),
then one group-committed unit that reads the latest state, writes, and appends its
audit entry last. No key-provider call happens while a transaction is open.
"""

from __future__ import annotations

import asyncio
import collections
import json
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import rfc8785
import structlog

from audit.log import AuditLog
from audit.models import EntryDraft, Item
from vault import crypto
from vault.clock import Clock
from vault.errors import (
    ConcurrentChange,
    DecryptionError,
    KeyProviderUnavailable,
    OncevaultError,
    RecordNotFound,
)
from vault.keyring import Keyring, secret_aad, signing_aad
from vault.keys import KeyProvider, UnwrapRequest, WrapRequest
from vault.ledger import Ledger
from vault.models import (
    ErasureResult,
    PutResult,
    RecordContent,
    RecordMeta,
    StoredVersion,
    Subject,
    new_id,
    new_ordered_id,
)
from vault.repository import DekRow, RecordHead, RecordRow, VaultRepository, WrappedRow
from vault.storage import Database

log = structlog.get_logger(__name__)

_PAYLOAD_ENCODER = msgspec.json.Encoder(order="sorted")
_PAYLOAD_DECODER = msgspec.json.Decoder()

DEK_VERSION = 1
ROTATION_PAGE = 500

#: The audit actions of an erasure (an API or retention erasure, one re-applied from
#: the ledger at start-up): a new one makes every process drop its cached DEKs.
ERASURE_ACTIONS = ("record.erased", "erasure.reapplied")
#: How often each server process looks for erasures made by another one (seconds).
ERASURE_WATCH_SECONDS = 1.0
#: Checkpoints an erasure runs to empty and truncate SQLite's WAL while a reader keeps
#: it busy (each waits up to the writer's busy timeout).
WAL_TRUNCATE_ATTEMPTS = 2


@dataclass(frozen=True)
class Actor:
    """Who acts, as the audit log names them."""

    type: str  # citizen | client | operator | system
    id: str | None
    request_id: str | None = None


#: An entry of :class:`DekCache`: the row's generation and the expiry (ms), then the key.
_DEK_ENTRY = struct.Struct(">QQ")


class DekCache:
    """Unwrapped DEKs in memory, keyed by dek id and the row's generation; never on disk.

    A row's generation changes whenever its wrapped value does; an erased DEK's row
    is gone, so a lookup that starts from the database never finds a stale key.

    Each entry is one ``bytes`` (generation, expiry, key) under its dek id: with the
    id, ~250 bytes an entry instead of ~330 as tuples, so the 100,000-entry ceiling
    costs a worker ~25 MB (``bench/dek_cache.py``).
    """

    def __init__(self, *, clock: Clock, ttl_seconds: float, max_entries: int = 100_000) -> None:
        self.clock = clock
        self.ttl_ms = int(ttl_seconds * 1000)
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0
        self._next_sweep = 0
        #: Moves at every forget and clear: a key unwrapped before it moved (the call
        #: was at the provider meanwhile) is not put back (see :meth:`put`).
        self.epoch = 0

    def _sweep(self, now: int) -> None:
        """Drop every expired key, at most once per TTL: unwrapped keys do not outlive
        their TTL in memory by more than one TTL, even when no one asks for them."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.ttl_ms
        unpack = _DEK_ENTRY.unpack_from
        for dek_id in [d for d, entry in self._entries.items() if unpack(entry)[1] <= now]:
            del self._entries[dek_id]

    def get(self, dek_id: str, generation: int) -> bytes | None:
        if self.ttl_ms <= 0:
            return None
        now = self.clock.now_ms()
        self._sweep(now)
        found = self._entries.get(dek_id)
        if found is not None:
            cached_generation, expires = _DEK_ENTRY.unpack_from(found)
            if expires <= now:
                del self._entries[dek_id]
            elif cached_generation == generation:
                self._entries.move_to_end(dek_id)
                self.hits += 1
                return found[_DEK_ENTRY.size :]
        self.misses += 1
        return None

    def put(self, dek_id: str, generation: int, dek: bytes, *, epoch: int | None = None) -> None:
        """Keep ``dek``; with ``epoch`` (the :attr:`epoch` read before the key was
        unwrapped) only if nothing was forgotten or cleared since, so a key erased while
        its unwrap was at the provider does not come back for the TTL."""
        if self.ttl_ms <= 0 or (epoch is not None and epoch != self.epoch):
            return
        now = self.clock.now_ms()
        self._sweep(now)
        self._entries[dek_id] = _DEK_ENTRY.pack(generation, now + self.ttl_ms) + dek
        self._entries.move_to_end(dek_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, dek_ids: Sequence[str]) -> None:
        self.epoch += 1
        for dek_id in dek_ids:
            self._entries.pop(dek_id, None)

    def clear(self) -> None:
        self.epoch += 1
        self._entries.clear()


#: JCS's integers: the ones an IEEE 754 double holds exactly (``rfc8785`` refuses others).
_JCS_MAX_INT = 2**53 - 1


def canonical(data: Mapping[str, Any]) -> bytes:
    """RFC 8785 (JCS) bytes of a record's data: the input of its content digest.

    A value made only of dicts with ASCII keys, lists, printable strings, safe
    integers, booleans and null is encoded by msgspec with sorted keys, which is byte
    for byte what ``rfc8785.dumps`` writes for it (no escapes but ``\\"`` and
    ``\\\\``, UTF-8 as is, key order by code point equal to UTF-16's on ASCII;
    tests/unit/vault/test_canonical.py) and ~5x faster; anything else (floats, whose
    spelling JCS defines, control characters, other keys) goes to ``rfc8785``."""
    if _plain(data):
        return _PAYLOAD_ENCODER.encode(data)
    encoded: bytes = rfc8785.dumps(data)
    return encoded


def _plain(value: object) -> bool:
    """True when ``value`` holds nothing JCS spells differently from msgspec."""
    if type(value) is str:
        return value.isprintable()
    if type(value) is int:
        return -_JCS_MAX_INT <= value <= _JCS_MAX_INT
    if type(value) is bool or value is None:
        return True
    if type(value) is dict:
        return all(
            type(key) is str and key.isascii() and key.isprintable() and _plain(item)
            for key, item in value.items()
        )
    if type(value) is list:
        return all(_plain(item) for item in value)
    return False


def _sealed_payload(data: Mapping[str, Any], attestation: Any) -> bytes:
    """The plaintext of a version: compact JSON with sorted keys. Not a digest input
    (that is :func:`canonical`), so msgspec's float spelling (``1e308``) is as good as
    the json module's (``1e+308``); ``data`` has passed the catalogue's validation
    (finite numbers only) and ``attestation`` was decoded from JSON."""
    return _PAYLOAD_ENCODER.encode({"data": data, "attestation": attestation})


def _open_payload(plaintext: bytes) -> Any:
    """The JSON value of a version's plaintext, as ``json.loads`` reads it.

    msgspec reads what :func:`_sealed_payload` writes ~6x faster; what it refuses
    (``NaN``, a number out of a double's range, a lone surrogate escaped or as UTF-8
    bytes, a BOM, bytes that are not UTF-8) is read by the json module, as every
    version was before."""
    try:
        return _PAYLOAD_DECODER.decode(plaintext)
    except (msgspec.DecodeError, UnicodeDecodeError):  # bad UTF-8 in a string: the latter
        pass
    try:
        return json.loads(plaintext)
    except ValueError:
        raise DecryptionError from None


@dataclass(frozen=True)
class _Sealed:
    """A version's ciphertext, bound to its row: AAD (citizen, type, version, a new
    record id)."""

    version: int
    record_id: str
    ciphertext: bytes


def _seal_version(
    dek: bytes,
    citizen_id: str,
    record_type: str,
    version: int,
    *,
    data: Mapping[str, Any],
    attestation: Any,
) -> _Sealed:
    record_id = new_id("rec")
    ciphertext = crypto.seal(
        dek,
        _sealed_payload(data, attestation),
        crypto.record_aad(citizen_id, record_type, version, record_id),
    )
    return _Sealed(version, record_id, ciphertext)


def _version_row(
    *,
    dek_row: DekRow,
    record_type: str,
    sealed: _Sealed,
    source: str,
    attested: bool,
    digest: bytes,
    now: int,
) -> RecordRow:
    meta = RecordMeta(
        record_id=sealed.record_id,
        citizen_id=dek_row.citizen_id,
        record_type=record_type,
        version=sealed.version,
        source=source,
        attested=attested,
        created_at=now,
    )
    return RecordRow(
        meta=meta, dek_id=dek_row.dek_id, ciphertext=sealed.ciphertext, content_digest=digest
    )


@dataclass(frozen=True)
class PutRequest:
    """One record for :meth:`VaultService.put_many` (data already validated)."""

    subject: Subject
    record_type: str
    data: Mapping[str, Any]
    source: str
    attestation: Any = None


@dataclass(frozen=True)
class _Retry:
    """A unit's answer when the DEK it was given disappeared (an erasure raced it)."""


class VaultService:
    """Records, erasure and key rotation over one database and one key provider."""

    def __init__(
        self,
        *,
        database: Database,
        repo: VaultRepository,
        keys: KeyProvider,
        ledger: Ledger,
        keyring: Keyring,
        audit: AuditLog,
        clock: Clock,
        dek_cache: DekCache,
    ) -> None:
        self.db = database
        self.repo = repo
        self.keys = keys
        self.ledger = ledger
        self.keyring = keyring
        self.audit = audit
        self.clock = clock
        self.cache = dek_cache
        #: Unwraps at the key provider right now, by (dek id, generation): the answer
        #: (a key, or the error), or None when the call ended without one for the row.
        self._unwrapping: dict[tuple[str, int], asyncio.Future[bytes | Exception | None]] = {}
        #: Called after every erasure, before it answers (refreshes the checkpoint copy).
        self.after_erasure: Callable[[], Awaitable[object]] | None = None
        #: Citizens whose identifier link conflict this process has reported.
        self._conflicts_told: set[str] = set()
        #: The newest erasure entry :meth:`forget_erased_elsewhere` has seen (None:
        #: none looked at yet; -1: the log had none).
        self._erasure_seen: int | None = None

    # -- citizens -------------------------------------------------------------------

    async def resolve(self, subject: Subject, *, link: Subject | None = None) -> str:
        """The citizen id for ``subject``, created on first use (no enumeration).

        ``link``: another identifier of the same person that the citizen's IdP asserted
        with ``subject`` (the CI beside the resident number). It ends up naming the same
        citizen: a citizen known only by ``link`` (a private service asked for it
        first) gets ``subject`` too, and one known by ``subject`` gets ``link``. When
        both already name two different citizens, ``link``'s is answered (the citizen
        such a sign-in reached before linking existed) and nothing moves
        (:meth:`_link_conflict`): merging two citizens is not for a sign-in to decide.
        """
        blind = self.keyring.blind_index(subject.kind, subject.value)
        found = await self.repo.citizen_by_index(blind)
        if link is not None:
            return await self._resolve_linked(subject, blind, found, link)
        if found is not None:
            return found
        citizen_id, now = new_id("cit"), self.clock.now_ms()

        async def create() -> tuple[str, list[EntryDraft]]:
            winner = await self.repo.create_citizen(
                citizen_id=citizen_id, blind_index=blind, kind=subject.kind, now=now
            )
            return winner, []

        # A unit of the group commit: concurrent first requests share one COMMIT.
        created, _ = await self.audit.run(create)
        return created

    async def _resolve_linked(
        self, subject: Subject, blind: bytes, found: str | None, link: Subject
    ) -> str:
        link_blind = self.keyring.blind_index(link.kind, link.value)
        linked = await self.repo.citizen_by_index(link_blind)
        if found is not None and linked is not None:
            if linked != found:
                return await self._link_conflict(linked)
            return found
        citizen_id, now = new_id("cit"), self.clock.now_ms()

        async def attach() -> tuple[str, list[EntryDraft]]:
            # Decided again inside the unit: another sign-in may have come first.
            owner = await self.repo.citizen_by_index(blind)
            by_link = await self.repo.citizen_by_index(link_blind)
            if by_link is not None:  # the CI's citizen answers (and gets the nid if new)
                if owner is None:
                    await self.repo.link_index(
                        blind_index=blind, citizen_id=by_link, kind=subject.kind
                    )
                return by_link, []
            if owner is None:
                owner = await self.repo.create_citizen(
                    citizen_id=citizen_id, blind_index=blind, kind=subject.kind, now=now
                )
            await self.repo.link_index(blind_index=link_blind, citizen_id=owner, kind=link.kind)
            return owner, []

        owner, _ = await self.audit.run(attach)
        return owner

    async def _link_conflict(self, linked: str) -> str:
        """The resident number and the CI of one sign-in already name two citizens: the
        CI's answers, as it did before linking existed, and nothing moves. Once a
        process, a ``citizen.link_conflict`` entry (actor ``system``, the CI's citizen)
        tells operators; merging the two is theirs to decide."""
        if linked not in self._conflicts_told:
            self._conflicts_told.add(linked)
            log.warning("citizen.link_conflict")
            draft = EntryDraft(
                action="citizen.link_conflict",
                actor_type="system",
                actor_id="identity-link",
                outcome="error",
                citizen_id=linked,
                reason_code="link_conflict",
            )
            await self.audit.append_alone(draft)
        return linked

    async def lookup(self, subject: Subject) -> str | None:
        """The citizen id for ``subject`` if one exists (never creates)."""
        return await self.repo.citizen_by_index(
            self.keyring.blind_index(subject.kind, subject.value)
        )

    # -- DEKs -------------------------------------------------------------------------

    async def _unwrap(self, row: DekRow) -> bytes:
        cached = self.cache.get(row.dek_id, row.generation)
        if cached is not None:
            return cached
        return (await self.unwrap([row]))[0]

    async def _unwrap_each(self, rows: Sequence[DekRow]) -> list[bytes | DecryptionError]:
        """:meth:`unwrap` in one call; when one of them does not unwrap (the provider
        fails the whole call), one by one, so only that one fails."""
        try:
            return list(await self.unwrap(rows))
        except DecryptionError:
            out: list[bytes | DecryptionError] = []
            for row in rows:
                try:
                    out.append((await self.unwrap([row]))[0])
                except DecryptionError as exc:
                    out.append(exc)
            return out

    async def latest_sealed(
        self, citizen_ids: Sequence[str], record_types: Sequence[str]
    ) -> dict[tuple[str, str], tuple[RecordRow, DekRow]]:
        """The latest version of these types of these citizens and the DEK row each is
        sealed under, keyed by (citizen, type); nothing is unwrapped or decrypted, so a
        unit may call it (the consented read)."""
        return await self.repo.latest_with_deks(citizen_ids, record_types)

    def cached_dek(self, row: DekRow) -> bytes | None:
        """The unwrapped DEK of ``row`` when the cache holds it (no key-provider call:
        safe inside a unit)."""
        return self.cache.get(row.dek_id, row.generation)

    async def unwrap(self, rows: Sequence[DekRow]) -> list[bytes]:
        """Unwrap ``rows`` at the key provider (one call) and cache the keys. Never
        inside a unit: the provider may be slow or down (KeyProviderUnavailable).

        Single flight: a row that another caller in this process is unwrapping right
        now is not asked for again; this call waits for that answer (after a restart,
        the concurrent reads of one citizen make one provider call, not one each). A
        joined call that failed with KeyProviderUnavailable fails this one too; one
        that failed otherwise (a DecryptionError of another row of its call) or was
        cancelled leaves this call to ask for the row itself.
        """
        if not rows:
            return []
        keys = [(row.dek_id, row.generation) for row in rows]
        row_of = dict(zip(keys, rows, strict=True))
        joined: dict[tuple[str, int], asyncio.Future[bytes | Exception | None]] = {}
        mine: dict[tuple[str, int], DekRow] = {}
        for key, row in row_of.items():
            running = self._unwrapping.get(key)
            if running is None:
                mine[key] = row
            else:
                joined[key] = running
        found: dict[tuple[str, int], bytes] = {}
        if mine:
            found.update(await self._unwrap_leading(mine))
        alone: dict[tuple[str, int], DekRow] = {}
        for key, future in joined.items():
            # shield: a cancelled joiner must not cancel the leader's answer.
            answer = await asyncio.shield(future)
            if isinstance(answer, bytes):
                found[key] = answer
            elif isinstance(answer, KeyProviderUnavailable):
                raise KeyProviderUnavailable(str(answer)) from None
            else:
                alone[key] = row_of[key]
        if alone:
            found.update(await self._unwrap_at_provider(alone))
        return [found[key] for key in keys]

    async def _unwrap_leading(
        self, rows: dict[tuple[str, int], DekRow]
    ) -> dict[tuple[str, int], bytes]:
        """:meth:`_unwrap_at_provider`, its answer shared with the calls that join it."""
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in rows}
        self._unwrapping.update(futures)
        outcome: dict[tuple[str, int], bytes] | Exception | None = None
        try:
            outcome = await self._unwrap_at_provider(rows)
            return outcome
        except Exception as exc:
            outcome = exc
            raise
        finally:
            for key, future in futures.items():
                if self._unwrapping.get(key) is future:
                    del self._unwrapping[key]
                if not future.done():
                    future.set_result(outcome.get(key) if isinstance(outcome, dict) else outcome)

    async def _unwrap_at_provider(
        self, rows: dict[tuple[str, int], DekRow]
    ) -> dict[tuple[str, int], bytes]:
        epoch = self.cache.epoch
        deks = await self.keys.unwrap(
            [
                UnwrapRequest(
                    row.citizen_id,
                    row.wrapped,
                    crypto.wrap_aad(row.citizen_id, row.record_type, row.dek_version),
                )
                for row in rows.values()
            ]
        )
        out: dict[tuple[str, int], bytes] = {}
        for (key, row), dek in zip(rows.items(), deks, strict=True):
            self.cache.put(row.dek_id, row.generation, dek, epoch=epoch)
            out[key] = dek
        return out

    async def _new_deks(
        self, pairs: Sequence[tuple[str, str]], *, now: int
    ) -> list[tuple[DekRow, bytes]]:
        """A fresh DEK for each (citizen, type), wrapped in one key-provider call (never
        inside a unit); the rows are not stored yet."""
        if not pairs:
            return []
        fresh = [crypto.random_key() for _ in pairs]
        made_at = self.clock.now_ms()
        wrapped = await self.keys.wrap(
            [
                WrapRequest(c, dek, crypto.wrap_aad(c, t, DEK_VERSION))
                for (c, t), dek in zip(pairs, fresh, strict=True)
            ]
        )
        return [
            (
                DekRow(
                    dek_id=new_ordered_id("dek", made_at),
                    citizen_id=c,
                    record_type=t,
                    dek_version=DEK_VERSION,
                    wrapped=value,
                    kek_version=self.keys.version_of(value),
                    generation=1,
                    created_at=now,
                ),
                dek,
            )
            for (c, t), dek, value in zip(pairs, fresh, wrapped, strict=True)
        ]

    async def dek_for_write(self, citizen_id: str, record_type: str) -> tuple[DekRow, bytes]:
        """The current DEK of (citizen, type), created and wrapped when missing."""
        row = await self.repo.current_dek(citizen_id, record_type)
        if row is not None:
            return row, await self._unwrap(row)
        ((candidate, dek),) = await self._new_deks(
            [(citizen_id, record_type)], now=self.clock.now_ms()
        )

        async def insert() -> tuple[bool, list[EntryDraft]]:
            return await self.repo.insert_dek(candidate), []

        # A unit of the group commit (the key provider was called before it).
        inserted, _ = await self.audit.run(insert)
        if inserted:
            self.cache.put(candidate.dek_id, candidate.generation, dek)
            return candidate, dek
        # Another writer made it first: use theirs.
        winner = await self.repo.current_dek(citizen_id, record_type)
        if winner is None:
            raise ConcurrentChange("the data key changed during the write; retry")
        return winner, await self._unwrap(winner)

    async def dek_for_read(self, citizen_id: str, record_type: str) -> tuple[DekRow, bytes] | None:
        row = await self.repo.current_dek(citizen_id, record_type)
        if row is None:
            return None
        return row, await self._unwrap(row)

    # -- records ---------------------------------------------------------------------

    async def put(
        self,
        *,
        citizen_id: str,
        record_type: str,
        data: Mapping[str, Any],
        source: str,
        actor: Actor,
        attestation: Any = None,
        client_id: str | None = None,
        on_stored: Callable[[int], Awaitable[Sequence[EntryDraft]]] | None = None,
    ) -> PutResult:
        """Store ``data`` as the next version unless it equals the latest.

        Content identical to the latest version (by keyed digest) creates nothing and
        returns that version with ``created=False``. Retries when an erasure races.
        ``on_stored(version)`` runs inside the same unit after a new version is stored
        (events, suggestions); its entries are appended with the write's own.
        """
        canonical_data = canonical(data)
        attested = attestation is not None
        for _ in range(3):
            dek_row, dek = await self.dek_for_write(citizen_id, record_type)
            digest = crypto.content_digest(dek, canonical_data)

            async def work(
                dek_row: DekRow = dek_row, dek: bytes = dek, digest: bytes = digest
            ) -> tuple[PutResult | _Retry, Sequence[EntryDraft]]:
                if await self.repo.dek(dek_row.dek_id) is None:
                    return _Retry(), ()
                latest = await self.repo.latest(citizen_id, record_type)
                action = "record.attested" if attested else "record.put"
                if latest is not None and crypto.constant_time_equal(latest.content_digest, digest):
                    result = PutResult(
                        latest.meta.record_id, citizen_id, record_type, latest.meta.version, False
                    )
                    return result, [
                        self._entry(
                            actor, action, citizen_id, record_type, latest.meta.version, client_id
                        )
                    ]
                now = self.clock.now_ms()
                if latest is None:
                    version = await self.repo.max_version(citizen_id, record_type) + 1
                else:
                    version = latest.meta.version + 1
                    await self.repo.supersede(latest.meta.record_id, now)
                row = _version_row(
                    dek_row=dek_row,
                    record_type=record_type,
                    sealed=_seal_version(
                        dek, citizen_id, record_type, version, data=data, attestation=attestation
                    ),
                    source=source,
                    attested=attested,
                    digest=digest,
                    now=now,
                )
                await self.repo.insert_record(row)
                result = PutResult(row.meta.record_id, citizen_id, record_type, version, True)
                drafts = [self._entry(actor, action, citizen_id, record_type, version, client_id)]
                if on_stored is not None:
                    drafts.extend(await on_stored(version))
                return result, drafts

            value, _ = await self.audit.run(work)
            if isinstance(value, PutResult):
                return value
        raise ConcurrentChange("the record kept changing during the write; retry")

    async def put_many(
        self,
        requests: Sequence[PutRequest],
        *,
        actor: Actor,
        client_id: str | None,
        on_stored: Callable[[Sequence[StoredVersion]], Awaitable[Sequence[EntryDraft]]]
        | None = None,
    ) -> list[PutResult | OncevaultError | None]:
        """:meth:`resolve` and :meth:`put` for many records in ONE group-committed unit,
        set-based: one query per kind of row, inserts with ``executemany``, one key-
        provider call to unwrap the DEKs not in memory and one to wrap the new ones
        (both before the unit). Requests are applied in order: a later one for the same
        citizen and type sees the earlier one's version.

        A request that raced a concurrent writer (its new citizen or DEK lost to
        another's, its citizen or DEK erased meanwhile) is not stored and has no entry:
        its result is None and the caller runs it alone through :meth:`put`. A request
        whose DEK does not unwrap gets that :class:`DecryptionError` as its result;
        the others are stored. Times are read inside the unit (an erasure shreds by
        ``created_at``).

        The unit holds the database's write lock, so the work that needs no lock is done
        before it: content digests, and each record sealed at the version it gets if no
        other writer comes first. The unit decides every version again from the rows
        it reads and seals again only a record whose version moved.
        """
        if not requests:
            return []
        # 1. Citizens, outside the unit: existing ones found, new ids proposed.
        blinds = [self.keyring.blind_index(r.subject.kind, r.subject.value) for r in requests]
        known = await self.repo.citizens_by_indexes(sorted(set(blinds)))
        proposed: dict[bytes, tuple[str, str]] = {}
        citizen_of: list[str] = []
        for request, blind in zip(requests, blinds, strict=True):
            citizen_id = known.get(blind)
            if citizen_id is None:
                if blind not in proposed:
                    proposed[blind] = (new_id("cit"), request.subject.kind)
                citizen_id = proposed[blind][0]
            citizen_of.append(citizen_id)
        # 2. DEKs, outside the unit: unwrap the ones not in memory, make the missing ones.
        pair_of = [(c, r.record_type) for c, r in zip(citizen_of, requests, strict=True)]
        pairs = sorted(set(pair_of))
        current = await self.repo.current_deks(sorted(set(known.values())))
        keys: dict[tuple[str, str], tuple[DekRow, bytes]] = {}
        locked: list[DekRow] = []
        for pair in pairs:
            row = current.get(pair)
            if row is None:
                continue
            dek = self.cache.get(row.dek_id, row.generation)
            if dek is None:
                locked.append(row)
            else:
                keys[pair] = (row, dek)
        failed: dict[tuple[str, str], DecryptionError] = {}
        for row, unwrapped in zip(locked, await self._unwrap_each(locked), strict=True):
            pair = (row.citizen_id, row.record_type)
            if isinstance(unwrapped, DecryptionError):
                failed[pair] = unwrapped
            else:
                keys[pair] = (row, unwrapped)
        missing = [pair for pair in pairs if pair not in current]
        new_deks: list[DekRow] = []
        for row, dek in await self._new_deks(missing, now=0):  # stamped inside the unit
            new_deks.append(row)
            keys[(row.citizen_id, row.record_type)] = (row, dek)
        # Content digests, one HKDF per DEK.
        digest_keys = {pair: crypto.digest_key(dek) for pair, (_, dek) in keys.items()}
        digests = [
            crypto.keyed_content_digest(digest_keys[pair], canonical(request.data))
            if pair in keys
            else b""
            for pair, request in zip(pair_of, requests, strict=True)
        ]
        # 3. Sealed before the unit too, at the version each record gets if no other
        #    writer comes first (heads read now): the unit, which holds the database's
        #    write lock, seals again only a record whose version has moved.
        ahead = self._seal_ahead(
            requests, pair_of, keys, digests, await self.repo.heads_of(sorted(set(known.values())))
        )

        async def work() -> tuple[
            tuple[list[PutResult | OncevaultError | None], set[str]], list[EntryDraft]
        ]:
            now = self.clock.now_ms()
            # Known citizens erased since they were looked up: their items go alone.
            still = await self.repo.citizens_by_indexes(sorted(known))
            lost = {c for blind, c in known.items() if still.get(blind) != c}
            if proposed:
                winners = await self.repo.create_citizens(proposed, now)
                lost |= {c for blind, (c, _) in proposed.items() if winners.get(blind) != c}
            await self.repo.insert_deks(
                [d for d in new_deks if d.citizen_id not in lost], created_at=now
            )
            present = await self.repo.existing_dek_ids([row.dek_id for row, _ in keys.values()])
            stored_citizens = sorted({c for c in citizen_of if c not in lost})
            existing = sorted(set(stored_citizens) & set(known.values()))
            # (citizen, type) -> (version, digest, record id, pending insert index or None)
            heads: dict[tuple[str, str], tuple[int, bytes | None, str | None, int | None]] = {
                pair: (head.version, head.content_digest, head.record_id, None)
                for pair, head in (await self.repo.heads_of(existing)).items()
            }
            results: list[PutResult | OncevaultError | None] = []
            drafts: list[EntryDraft] = []
            inserts: list[tuple[RecordRow, int | None]] = []
            superseded: list[str] = []
            announced: list[StoredVersion] = []
            for index, request in enumerate(requests):
                citizen_id, record_type = pair = pair_of[index]
                if pair in failed:
                    results.append(failed[pair])
                    continue
                dek_row, dek = keys[pair]
                if citizen_id in lost or dek_row.dek_id not in present:
                    results.append(None)
                    continue
                digest = digests[index]
                attested = request.attestation is not None
                action = "record.attested" if attested else "record.put"
                version, head_digest, head_id, pending = heads.get(pair, (0, None, None, None))
                if (
                    head_digest is not None
                    and head_id is not None
                    and crypto.constant_time_equal(head_digest, digest)
                ):
                    results.append(PutResult(head_id, citizen_id, record_type, version, False))
                    drafts.append(
                        self._entry(actor, action, citizen_id, record_type, version, client_id)
                    )
                    continue
                if pending is not None:  # an earlier version of this batch, stored superseded
                    inserts[pending] = (inserts[pending][0], now)
                elif head_id is not None:
                    superseded.append(head_id)
                version += 1
                sealed = ahead[index]
                if sealed is None or sealed.version != version:
                    sealed = _seal_version(
                        dek,
                        citizen_id,
                        record_type,
                        version,
                        data=request.data,
                        attestation=request.attestation,
                    )
                row = _version_row(
                    dek_row=dek_row,
                    record_type=record_type,
                    sealed=sealed,
                    source=request.source,
                    attested=attested,
                    digest=digest,
                    now=now,
                )
                heads[pair] = (version, digest, sealed.record_id, len(inserts))
                inserts.append((row, None))
                results.append(PutResult(sealed.record_id, citizen_id, record_type, version, True))
                drafts.append(
                    self._entry(actor, action, citizen_id, record_type, version, client_id)
                )
                announced.append(StoredVersion(citizen_id, record_type, request.data, version))
            await self.repo.supersede_many(superseded, now)
            await self.repo.insert_records(inserts)
            if on_stored is not None:
                drafts.extend(await on_stored(announced))
            return (results, present), drafts

        (results, present), _ = await self.audit.run(work, weight=len(requests))
        for row in new_deks:
            if row.dek_id in present:
                self.cache.put(
                    row.dek_id, row.generation, keys[(row.citizen_id, row.record_type)][1]
                )
        return results

    @staticmethod
    def _seal_ahead(
        requests: Sequence[PutRequest],
        pair_of: Sequence[tuple[str, str]],
        keys: Mapping[tuple[str, str], tuple[DekRow, bytes]],
        digests: Sequence[bytes],
        heads: Mapping[tuple[str, str], RecordHead],
    ) -> list[_Sealed | None]:
        """Each record of :meth:`put_many` sealed at the version it gets if ``heads``
        still hold when its unit runs (None: no key, or the same content as the
        latest version). The unit decides again and seals again where they moved."""
        top = {
            pair: (head.version, head.content_digest if head.record_id else None)
            for pair, head in heads.items()
        }
        out: list[_Sealed | None] = []
        for request, pair, digest in zip(requests, pair_of, digests, strict=True):
            key = keys.get(pair)
            version, head_digest = top.get(pair, (0, None))
            if key is None or (
                head_digest is not None and crypto.constant_time_equal(head_digest, digest)
            ):
                out.append(None)
                continue
            top[pair] = (version + 1, digest)
            out.append(
                _seal_version(
                    key[1], *pair, version + 1, data=request.data, attestation=request.attestation
                )
            )
        return out

    def _entry(  # noqa: PLR0917 - mirrors the entry's own field order
        self,
        actor: Actor,
        action: str,
        citizen_id: str,
        record_type: str | None,
        version: int | None,
        client_id: str | None,
        **extra: Any,
    ) -> EntryDraft:
        return EntryDraft(
            action=action,
            actor_type=actor.type,  # type: ignore[arg-type]
            actor_id=actor.id,
            citizen_id=citizen_id,
            client_id=client_id,
            record_type=record_type,
            record_version=version,
            request_id=actor.request_id,
            **extra,
        )

    def open_record(self, row: RecordRow, dek: bytes) -> RecordContent:
        """Decrypt one version; any mismatch of row and key raises DecryptionError."""
        meta = row.meta
        plaintext = crypto.open_(
            dek,
            row.ciphertext,
            crypto.record_aad(meta.citizen_id, meta.record_type, meta.version, meta.record_id),
        )
        payload = _open_payload(plaintext)
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
            raise DecryptionError
        return RecordContent(
            meta=meta, data=payload["data"], attestation=payload.get("attestation")
        )

    async def read(
        self,
        *,
        citizen_id: str,
        record_type: str,
        actor: Actor,
        client_id: str | None = None,
        purpose: str | None = None,
        consent_id: str | None = None,
        fields: tuple[str, ...] = (),
    ) -> tuple[RecordContent, int]:
        """Read and decrypt the latest version; the read is audited (``data.read``).

        Returns the content and the seq of its committed audit entry.

        Raises:
            RecordNotFound: no such record (no entry is appended: nothing was read).
            KeyProviderUnavailable: the DEK is not cached and the provider is down.
        """
        unwrapped = await self.dek_for_read(citizen_id, record_type)
        if unwrapped is None:
            raise RecordNotFound("no such record")
        dek_row, dek = unwrapped

        async def work() -> tuple[RecordRow | None, Sequence[EntryDraft]]:
            row = await self.repo.latest(citizen_id, record_type)
            if row is None or row.dek_id != dek_row.dek_id:
                return None, ()
            return row, [
                self._entry(
                    actor,
                    "data.read",
                    citizen_id,
                    record_type,
                    row.meta.version,
                    client_id,
                    purpose=purpose,
                    consent_id=consent_id,
                    items=(Item(record_type, row.meta.version, fields),),
                )
            ]

        row, entries = await self.audit.run(work)
        if row is None:
            raise RecordNotFound("no such record")
        try:
            return self.open_record(row, dek), entries[0].seq
        except DecryptionError as failed:
            # The ok entry said the record went out; it did not: an error entry follows.
            draft = self._entry(
                actor,
                "data.read",
                citizen_id,
                record_type,
                None,
                client_id,
                purpose=purpose,
                consent_id=consent_id,
                items=(),
                outcome="error",
                reason_code=failed.code,
            )
            raise await self.audit.record_failure(draft, failed) from None

    async def list_records(self, citizen_id: str) -> list[RecordMeta]:
        return await self.repo.list_latest(citizen_id)

    # -- erasure --------------------------------------------------------------------------

    async def erase(
        self,
        *,
        citizen_id: str,
        types: Sequence[str] | None,
        actor: Actor,
        keep: Sequence[str] = (),
        after_ledger: Callable[[], Awaitable[None]] | None = None,
    ) -> ErasureResult:
        """Crypto-shred ``types`` (all the citizen's types when None) except ``keep``.

        The ledger entry is written (and fsynced) first, outside the database, so a
        database restored from before this moment is shredded again at start-up.
        ``after_ledger`` runs once that entry is written and before the shredding: what
        the erasure changes besides (a citizen's consents withdrawn) waits for the
        ledger, so a ledger that does not answer leaves nothing changed.
        """
        present = await self.repo.types_of(citizen_id)
        wanted = present if types is None else [t for t in types if t in present]
        doomed = sorted(t for t in wanted if t not in set(keep))
        index_removed = types is None and not keep
        at = self.clock.now_ms()
        await self.ledger.append_erasure(
            {"citizen_id": citizen_id, "types": doomed, "at": at, "index_removed": index_removed}
        )
        if after_ledger is not None:
            await after_ledger()
        dek_ids = await self._apply_erasure(
            citizen_id, doomed, at, index_removed=index_removed, actor=actor, action="record.erased"
        )
        self.cache.forget(dek_ids)
        if self.after_erasure is not None:
            await self.after_erasure()
        return ErasureResult(citizen_id, tuple(doomed), at, index_removed)

    async def forget_erased_elsewhere(self) -> bool:
        """Drop every unwrapped DEK held in memory when an erasure was recorded since
        the last call (by any process; the first call too); True when it did.

        An erasure forgets its own DEKs in the process that ran it; another worker may
        still hold them in its DEK cache. Nothing can use them there (a read needs the
        DEK row, which is gone), but shredded key material should not outlive the
        erasure by the cache's TTL: the server calls this every
        ``ERASURE_WATCH_SECONDS``. One indexed lookup a call; erasures are rare, so
        clearing the whole cache is simpler than finding which of its keys were shredded.
        """
        latest = await self.audit.latest_seq_of(ERASURE_ACTIONS)
        seen = -1 if latest is None else latest
        if seen == self._erasure_seen:
            return False
        self._erasure_seen = seen
        self.cache.clear()
        return True

    async def _apply_erasure(
        self,
        citizen_id: str,
        types: Sequence[str],
        at: int,
        *,
        index_removed: bool,
        actor: Actor,
        action: str,
    ) -> list[str]:
        dek_ids = [
            row.dek_id
            for t in types
            if (row := await self.repo.current_dek(citizen_id, t)) is not None
        ]
        async with self.audit.transaction():
            if self.db.dialect == "sqlite":
                # Freed pages are zeroed, so no deleted wrapped DEK lingers in the file.
                await self.db.execute("PRAGMA secure_delete = ON")
            await self.repo.shred(citizen_id, types, at)
            if index_removed:
                await self.repo.delete_blind_indexes(citizen_id)
            await self.audit.append(
                [self._entry(actor, action, citizen_id, t, None, None) for t in types]
                or [self._entry(actor, action, citizen_id, None, None, None)]
            )
        # No frame of a shredded row stays in SQLite's WAL. The erasure has committed
        # either way; a WAL a reader kept busy is said, and the next erasure truncates.
        if not await self.db.truncate_wal(WAL_TRUNCATE_ATTEMPTS):
            log.warning("erasure.wal_not_truncated", attempts=WAL_TRUNCATE_ATTEMPTS)
        return dek_ids

    async def reapply_erasures(self) -> int:
        """Shred again what the ledger (or the audit log) says was erased; count them."""
        reapplied = 0
        for entry in await self.ledger.erasures():
            citizen_id = str(entry.get("citizen_id", ""))
            types = [str(t) for t in entry.get("types", [])]
            at = int(entry.get("at", 0))
            index_removed = bool(entry.get("index_removed", False))
            pending = await self.repo.count_erasable(citizen_id, types, at)
            if pending == 0 and not (index_removed and await self._has_index(citizen_id, at)):
                continue
            await self._apply_erasure(
                citizen_id,
                types,
                at,
                index_removed=index_removed,
                actor=Actor("system", "startup"),
                action="erasure.reapplied",
            )
            reapplied += 1
        if reapplied:
            self.cache.clear()
            log.warning("vault.erasures_reapplied", count=reapplied)
        return reapplied

    async def _has_index(self, citizen_id: str, at: int) -> bool:
        row = await self.db.fetchrow(
            "SELECT 1 AS found FROM citizen_index i JOIN citizens c USING (citizen_id)"
            " WHERE i.citizen_id = $1 AND c.created_at <= $2",
            citizen_id,
            at,
        )
        return row is not None

    # -- KEK rotation ----------------------------------------------------------------------

    async def rotate_kek(self, *, actor: Actor) -> tuple[int, int, list[int]]:
        """New KEK version, every wrapped secret rewrapped, unreferenced versions retired.

        Returns (new version, rows rewrapped, versions retired).
        """
        version = await self.keys.rotate()
        rewrapped = 0
        while True:
            page = await self.repo.wrapped_below(version, limit=ROTATION_PAGE)
            if not page:
                break
            fresh = await self.keys.rewrap(
                [UnwrapRequest(row.context, row.wrapped, _rotation_aad(row)) for row in page]
            )
            async with self.db.transaction():
                for row, wrapped in zip(page, fresh, strict=True):
                    if await self.repo.replace_wrapped(row, wrapped, self.keys.version_of(wrapped)):
                        rewrapped += 1
        self.cache.clear()
        retired = await self.keys.retire(await self.repo.referenced_kek_versions())
        async with self.audit.transaction():
            await self.audit.append(
                [
                    EntryDraft(
                        action="key.rotated",
                        actor_type=actor.type,  # type: ignore[arg-type]
                        actor_id=actor.id,
                        reason_code=f"kek.v{version}",
                        request_id=actor.request_id,
                    )
                ]
            )
        return version, rewrapped, retired


def _rotation_aad(row: WrappedRow) -> bytes:
    if row.table == "deks":
        record_type, dek_version = row.aad_parts
        return crypto.wrap_aad(row.context, str(record_type), int(dek_version))
    if row.table == "signing_keys":
        return signing_aad(str(row.aad_parts[0]))
    return secret_aad(str(row.aad_parts[0]))
