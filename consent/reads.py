"""The consented read: consent decision, records, fetch count and audit entry in one unit.

Path of a read (DESIGN section 5, 12):

1. one group-committed unit: read the client's live registration and whether the
   token is revoked (a refusal here is 401/403 with no entry, as on any route), lock
   the consent, decide against the live consent and the current catalogue, load each
   released type's latest record with the DEK row it is sealed under (one
   statement), record the DPoP proof's use and count the rate limit, count the
   fetch with a conditional update, append ``data.read`` (``ok`` with exactly what
   is released, or ``denied`` with ``[]``) as its last statement;
2. a granted read whose DEKs are not in memory writes nothing and appends nothing:
   the keys are unwrapped outside any transaction (key provider down -> 503, nothing
   counted, nothing appended) and the unit runs again;
3. after COMMIT: decrypt and project the released fields.

A data response therefore never exists without its committed entry, and no read
sequenced after a revocation (of the consent, the token or the client) is served.
No key-provider call happens inside a unit, and the hot path (keys cached) costs no
statement outside it.

Reads that meet in a batch share their statements (:class:`ReadGroup`, an
:class:`audit.log.UnitGroup`): one statement reads every caller's client row and
revoked ``jti``, one locks and loads every consent of the run,
one loads the latest record and DEK row of the types its consents name, the fetch
counts and the rate-limit counters are written once before the append. Each unit still runs
the same decision code against those rows; a batch that runs with savepoints (after a
unit raised) runs them one by one against the database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from audit.log import SharedScope, shared_scope
from audit.models import EntryDraft, Item, safe_token
from consent.errors import ConsentError
from consent.models import Client, ReadGrant, Status
from consent.repository import ClientRepository, LockedConsents
from consent.service import ConsentService
from consent.tokens import Forbidden, SignedToken, TokenInvalid
from vault.errors import DecryptionError, OncevaultError, RecordNotFound, StorageError
from vault.repository import DekRow, RecordRow
from vault.service import Actor, VaultService


@dataclass(frozen=True)
class ReleasedItem:
    type: str
    version: int
    data: dict[str, Any]
    source: str
    attested: bool
    updated_at: int


@dataclass(frozen=True)
class _NeedKeys:
    """A granted read's unit found DEKs that are not in memory (it wrote nothing)."""

    rows: list[DekRow]


#: Units a read runs at most: one, plus one after each round of keys unwrapped (a DEK
#: replaced between the rounds, by a rotation or an erasure, takes another). Past
#: that, 503 ``unavailable``.
KEY_ROUNDS = 3


@dataclass(frozen=True)
class ReadResult:
    consent_id: str
    items: list[ReleasedItem]
    audit_seq: int


@dataclass(frozen=True)
class _Callers:
    """The live registration and revocation status of each ``(client_id, jti)`` of a
    run of reads (a run's shared load)."""

    found: dict[tuple[str, str], tuple[Client | None, bool]]


@dataclass(frozen=True)
class _Latest:
    """The latest record and DEK row of the types each citizen's consents in a run of
    reads name (a run's shared load)."""

    types_of: dict[str, frozenset[str]]
    rows: dict[tuple[str, str], tuple[RecordRow, DekRow]]


class ReadGroup:
    """The consented reads of one batch load their rows together (audit.log.UnitGroup).

    A unit's key is ``(consent_id, client_id, jti)``. Records are loaded only for
    consents that are active and belong to the client asking, and only for the types
    they name (what a read may release is a subset); anything else a unit asks for is
    read from the database as outside a run."""

    def __init__(
        self, *, consents: ConsentService, vault: VaultService, clients: ClientRepository
    ) -> None:
        self.consents = consents
        self.vault = vault
        self.clients = clients

    async def load(self, scope: SharedScope, keys: Sequence[Any]) -> None:
        scope.values[_Callers] = _Callers(
            await self.clients.for_tokens([(client_id, jti) for _, client_id, jti in keys])
        )
        locked = await self.consents.repo.lock_many([consent_id for consent_id, _, _ in keys])
        scope.values[LockedConsents] = locked
        wanted: dict[str, set[str]] = {}
        for consent_id, client_id, _ in keys:
            consent = locked.rows.get(consent_id)
            if consent is None or consent.client_id != client_id:
                continue
            if consent.status != Status.ACTIVE:
                continue
            wanted.setdefault(consent.citizen_id, set()).update(t for t, _ in consent.items)
        types = {t for named in wanted.values() for t in named}
        rows = await self.vault.latest_sealed(list(wanted), list(types))
        types_of = {citizen: frozenset(named) for citizen, named in wanted.items()}
        scope.values[_Latest] = _Latest(
            types_of, {pair: row for pair, row in rows.items() if pair[1] in types_of[pair[0]]}
        )

    async def caller(self, client_id: str, jti: str) -> tuple[Client | None, bool]:
        """The client's live registration and whether ``jti`` is revoked: from the
        run's rows when the run loaded them, else from the database."""
        scope = shared_scope()
        loaded = scope.values.get(_Callers) if scope is not None else None
        if isinstance(loaded, _Callers):
            found = loaded.found.get((client_id, jti))
            if found is not None:
                return found
        return await self.clients.get_for_token(client_id, jti)

    async def latest(self, citizen_id: str, record_type: str) -> tuple[RecordRow, DekRow] | None:
        """The latest version of a type and its DEK row: from the run's rows when the
        run loaded that type of that citizen, else from the database."""
        scope = shared_scope()
        loaded = scope.values.get(_Latest) if scope is not None else None
        if isinstance(loaded, _Latest) and record_type in loaded.types_of.get(citizen_id, ()):
            return loaded.rows.get((citizen_id, record_type))
        found = await self.vault.latest_sealed([citizen_id], [record_type])
        return found.get((citizen_id, record_type))


class DataReader:
    def __init__(
        self, *, consents: ConsentService, vault: VaultService, clients: ClientRepository
    ) -> None:
        self.consents = consents
        self.vault = vault
        self.audit = consents.audit
        self.group = ReadGroup(consents=consents, vault=vault, clients=clients)

    async def read(
        self,
        *,
        consent_id: str,
        token: SignedToken,
        role: str,
        types: Sequence[str] | None,
        request_id: str | None,
        gate: Callable[[], Awaitable[OncevaultError | None]] | None = None,
    ) -> ReadResult:
        """Release the consented fields (of ``types``, or every consented type) to the
        caller of ``token``, a token checked without the database
        (:meth:`consent.tokens.TokenService.check`) that must hold ``role``.

        Raises TokenInvalid (the caller, in the unit; nothing written, no entry, as any
        route refuses an unknown caller), then (each refusal carries ``audit_seq``)
        Forbidden (the caller lacks ``role``: nothing but its entry written),
        ConsentError subclasses, RecordNotFound;
        KeyProviderUnavailable before anything is recorded.
        """
        client_id = token.client_id
        actor = Actor("client", client_id, request_id)
        single = types[0] if types is not None and len(types) == 1 else None
        unwrapped: dict[tuple[str, int], bytes] = {}

        def key_of(dek: DekRow) -> bytes | None:
            found = unwrapped.get((dek.dek_id, dek.generation))
            return found if found is not None else self.vault.cached_dek(dek)

        async def work() -> tuple[Any, list[EntryDraft]]:
            client, revoked = await self.group.caller(client_id, token.jti)
            try:
                principal = token.principal(client, revoked=revoked)
            except TokenInvalid as not_caller:
                return not_caller, []  # not the caller it claims: before any read or entry
            try:
                principal.require(role)
            except Forbidden as forbidden:
                # The caller, without the role: refused before any read, audited.
                return forbidden, [self._denied(actor, forbidden.code, None, None, single)]
            grant, drafts = await self.consents.lock_for_read(
                consent_id, client_id=client_id, types=types, actor=actor
            )
            rows: list[tuple[RecordRow, bytes, tuple[str, ...]]] = []
            if not isinstance(grant, ConsentError):
                missing: list[DekRow] = []
                for record_type, fields in sorted(grant.released.items()):
                    found = await self.group.latest(grant.consent.citizen_id, record_type)
                    if found is None:
                        continue
                    row, dek_row = found
                    dek = key_of(dek_row)
                    if dek is None:
                        missing.append(dek_row)
                    else:
                        rows.append((row, dek, fields))
                if missing:
                    # Nothing of the read is written: no count, no proof use, no entry
                    # (``drafts`` is empty for a grant; passed on so that could never
                    # leave a transition without its entry).
                    return _NeedKeys(missing), drafts
            if gate is not None:
                refused = await gate()  # DPoP proof use, rate limit: counted in this unit
                if refused is not None:
                    return refused, [*drafts, self._denied(actor, refused.code, None, None, single)]
            if isinstance(grant, ConsentError):
                owned = grant.code != "consent_not_found"
                return grant, [
                    *drafts,
                    self._denied(
                        actor,
                        grant.code,
                        consent_id if owned else None,
                        grant.citizen_id,
                        single,
                    ),
                ]
            if not rows:
                return RecordNotFound("no consented record exists"), [
                    *drafts,
                    self._denied(
                        actor, "record_not_found", consent_id, grant.consent.citizen_id, single
                    ),
                ]
            counted, more = await self.consents.count_fetch(grant, actor=actor)
            if isinstance(counted, ConsentError):
                return counted, [
                    *drafts,
                    self._denied(actor, counted.code, consent_id, grant.consent.citizen_id, single),
                ]
            return (grant, rows), [*drafts, *more, self._ok(actor, grant, rows, single)]

        for round_ in range(1, KEY_ROUNDS + 1):
            value, entries = await self.audit.run(
                work, group=self.group, key=(consent_id, client_id, token.jti)
            )
            if not isinstance(value, _NeedKeys):
                break
            if round_ == KEY_ROUNDS:
                raise StorageError("the record keys changed during the read; retry shortly")
            # Outside any transaction; KeyProviderUnavailable leaves nothing recorded.
            try:
                deks = await self.vault.unwrap(value.rows)
            except DecryptionError:
                # A rotation may have rewrapped a row since the unit read it: the next
                # round reads it again, and a row that truly fails fails there.
                if round_ + 1 == KEY_ROUNDS:
                    raise
                continue
            for dek_row, dek in zip(value.rows, deks, strict=True):
                unwrapped[(dek_row.dek_id, dek_row.generation)] = dek
        if isinstance(value, TokenInvalid):
            raise value  # no entry: not an authenticated caller
        seq = entries[-1].seq
        if isinstance(value, OncevaultError):
            value.audit_seq = seq
            raise value
        grant, rows = value
        # 3. After COMMIT: decrypt and project. A ciphertext that does not open (a row
        #    altered in the database) released nothing after all: an ``error`` entry
        #    follows the ``ok`` one, so the log does not say the fields went out.
        items = []
        for row, dek, fields in rows:
            try:
                content = self.vault.open_record(row, dek)
            except DecryptionError as failed:
                consent = grant.consent
                raise await self.audit.record_failure(
                    self._denied(
                        actor,
                        failed.code,
                        consent.consent_id,
                        consent.citizen_id,
                        single,
                        outcome="error",
                        purpose=consent.purpose,
                    ),
                    failed,
                ) from None
            items.append(
                ReleasedItem(
                    type=row.meta.record_type,
                    version=row.meta.version,
                    data={name: content.data[name] for name in fields if name in content.data},
                    source=row.meta.source,
                    attested=row.meta.attested,
                    updated_at=row.meta.created_at,
                )
            )
        return ReadResult(consent_id=grant.consent.consent_id, items=items, audit_seq=seq)

    @staticmethod
    def _denied(
        actor: Actor,
        reason: str,
        consent_id: str | None,
        citizen_id: str | None,
        single: str | None,
        *,
        outcome: Literal["denied", "error"] = "denied",
        purpose: str | None = None,
    ) -> EntryDraft:
        """A ``data.read`` entry that released nothing: a refusal, or (``error``) a
        release that failed after its ``ok`` entry committed."""
        return EntryDraft(
            action="data.read",
            actor_type="client",
            actor_id=actor.id,
            outcome=outcome,
            citizen_id=citizen_id,
            client_id=actor.id,
            consent_id=consent_id,
            purpose=purpose,
            record_type=safe_token(single),
            items=(),
            reason_code=reason,
            request_id=actor.request_id,
        )

    @staticmethod
    def _ok(
        actor: Actor,
        grant: ReadGrant,
        rows: list[tuple[RecordRow, bytes, tuple[str, ...]]],
        single: str | None,
    ) -> EntryDraft:
        items = tuple(
            Item(row.meta.record_type, row.meta.version, fields) for row, _, fields in rows
        )
        return EntryDraft(
            action="data.read",
            actor_type="client",
            actor_id=actor.id,
            citizen_id=grant.consent.citizen_id,
            client_id=actor.id,
            consent_id=grant.consent.consent_id,
            purpose=grant.consent.purpose,
            record_type=single,
            record_version=rows[0][0].meta.version if single else None,
            items=items,
            request_id=actor.request_id,
        )
