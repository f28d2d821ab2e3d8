"""Consent use cases: request, approve, reject, revoke, expire, and the read decision.

Every operation that changes a consent, and every refusal to an authenticated
caller, runs as one group-committed unit: the consent row is locked (PostgreSQL
``FOR UPDATE``; SQLite holds the database write lock), the decision is made
against the live consent and the *current* catalogue, and the audit entry is the
unit's last statement. Seq order is therefore serialization order: no read
sequenced after a revocation is ever served.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import msgspec

from audit.log import AuditLog
from audit.models import EntryDraft, safe_token
from consent.errors import (
    ConsentError,
    ConsentExhausted,
    ConsentExpired,
    ConsentNotActive,
    ConsentNotFound,
    ConsentRevoked,
    ConsentStateConflict,
    ScopeNotConsented,
)
from consent.models import DAY_MS, Consent, Items, ReadGrant, Receipt, Status, StoredSuggestion
from consent.repository import ConsentRepository, EventRepository, SuggestionRepository
from policies import (
    Catalogue,
    PolicyDenied,
    expand_items,
    lifecycle_suggestions,
    may_request,
    released_fields,
)
from vault.clock import Clock
from vault.models import StoredVersion, new_id
from vault.service import Actor

RECEIPT_TYP = "consent-receipt+jwt"

#: (purpose, items) pairs whose released fields a ConsentService remembers at most.
RELEASED_MEMO = 4096

T = TypeVar("T")

_DENIAL_BY_STATUS: dict[Status, type[ConsentError]] = {
    Status.PENDING: ConsentNotActive,
    Status.REJECTED: ConsentNotActive,
    Status.REVOKED: ConsentRevoked,
    Status.EXPIRED: ConsentExpired,
    Status.EXHAUSTED: ConsentExhausted,
}

_ACTION_BY_STATUS: dict[Status, str] = {
    Status.ACTIVE: "consent.approved",
    Status.REJECTED: "consent.rejected",
    Status.REVOKED: "consent.revoked",
    Status.EXPIRED: "consent.expired",
    Status.EXHAUSTED: "consent.exhausted",
}

#: Transitions that issue a receipt (DESIGN section 5).
_RECEIPTED = frozenset({Status.ACTIVE, Status.REJECTED, Status.REVOKED, Status.EXPIRED})


@functools.lru_cache(maxsize=4096)
def iso(ms: int | None) -> str | None:
    """RFC 3339 UTC with milliseconds; remembered, since reads format the same record
    times again and again."""
    if ms is None:
        return None
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class ConsentService:
    def __init__(
        self,
        *,
        repo: ConsentRepository,
        audit: AuditLog,
        clock: Clock,
        catalogue: Callable[[], Catalogue],
        sign_receipt: Callable[[Mapping[str, object]], str],
        controller: str,
        suggestions: SuggestionRepository,
        events: EventRepository,
        jurisdiction: str = "KR",
    ) -> None:
        self.repo = repo
        self.suggestions = suggestions
        self.events = events
        self.audit = audit
        self.clock = clock
        self.catalogue = catalogue
        # released_fields per (purpose, items) under the catalogue it was computed
        # with: a read decides inside the batch's transaction, and consents repeat.
        self._released_under: Catalogue | None = None
        self._released: dict[tuple[str, Items], dict[str, tuple[str, ...]]] = {}
        self.sign_receipt = sign_receipt
        self.controller = controller
        self.jurisdiction = jurisdiction

    # -- plumbing -----------------------------------------------------------------------

    async def _run(self, work: Callable[[], Any]) -> Any:
        """Run a unit; raise the error it returned (with its entry's seq) after COMMIT."""
        value, entries = await self.audit.run(work)
        if isinstance(value, ConsentError | PolicyDenied):
            if entries:  # the refusal's own entry: no other may be appended for it
                value.audit_seq = entries[-1].seq
            raise value
        return value

    def _entry(
        self,
        actor: Actor,
        action: str,
        consent: Consent | None,
        *,
        outcome: str = "ok",
        reason: str | None = None,
        citizen_id: str | None = None,
    ) -> EntryDraft:
        return EntryDraft(
            action=action,
            actor_type=actor.type,  # type: ignore[arg-type]
            actor_id=actor.id,
            outcome=outcome,  # type: ignore[arg-type]
            citizen_id=consent.citizen_id if consent else citizen_id,
            client_id=consent.client_id
            if consent
            else (actor.id if actor.type == "client" else None),
            consent_id=consent.consent_id if consent else None,
            purpose=consent.purpose if consent else None,
            reason_code=reason,
            request_id=actor.request_id,
        )

    async def _transition(
        self, consent: Consent, status: Status, actor: Actor, now: int
    ) -> tuple[Consent, list[EntryDraft]]:
        """Move ``consent`` to ``status`` (inside a unit): row, receipt, entry."""
        valid_from = valid_until = None
        if status == Status.ACTIVE:
            valid_from = now
            valid_until = now + consent.valid_days * DAY_MS
        await self.repo.set_status(
            consent.consent_id, status, now, valid_from=valid_from, valid_until=valid_until
        )
        moved = msgspec.structs.replace(
            consent,
            status=status,
            valid_from=valid_from if valid_from is not None else consent.valid_from,
            valid_until=valid_until if valid_until is not None else consent.valid_until,
        )
        if status in _RECEIPTED:
            moved = await self._issue_receipt(moved, now)
        action = _ACTION_BY_STATUS[status]
        await self.events.add(
            client_id=moved.client_id, type=action, consent_id=moved.consent_id, at=now
        )
        return moved, [self._entry(actor, action, moved)]

    async def _issue_receipt(self, consent: Consent, now: int) -> Consent:
        version = consent.receipt_version + 1
        payload = {
            "receipt_id": new_id("rcp"),
            "consent_id": consent.consent_id,
            "version": version,
            "jurisdiction": self.jurisdiction,
            "controller": {"id": consent.client_id, "platform": self.controller},
            "data_subject": consent.citizen_id,
            "purpose": consent.purpose,
            "legal_basis": consent.legal_basis,
            "case_reference": consent.case_reference,
            "items": consent.items_json(),
            "access": consent.access,
            "max_fetches": consent.max_fetches,
            "valid_from": iso(consent.valid_from),
            "valid_until": iso(consent.valid_until),
            "status": consent.status.value,
            "issued_at": iso(now),
            "policy_version": consent.policy_version,
            "iss": self.controller,
            "iat": now // 1000,
        }
        jws = self.sign_receipt(payload)
        await self.repo.add_receipt(Receipt(consent.consent_id, version, consent.status, now, jws))
        return msgspec.structs.replace(consent, receipt_version=version)

    async def _expire_if_due(self, consent: Consent, now: int) -> tuple[Consent, list[EntryDraft]]:
        """Materialise a lazy expiry found under the lock."""
        if consent.status in (Status.ACTIVE, Status.PENDING) and (
            consent.effective_status(now) == Status.EXPIRED
        ):
            return await self._transition(consent, Status.EXPIRED, Actor("system", "expiry"), now)
        return consent, []

    # -- consumer -------------------------------------------------------------------------

    async def request(
        self,
        *,
        citizen_id: str,
        client_id: str,
        purpose: str,
        items: Sequence[Mapping[str, object]] | Sequence[tuple[str, Sequence[str]]],
        access: str,
        valid_days: int,
        max_fetches: int | None,
        case_reference: str | None,
        actor: Actor,
    ) -> tuple[Consent, bool]:
        """Create a pending consent (active for a statute purpose); a duplicate pending
        request returns the existing one with ``created=False``.

        Raises:
            PolicyDenied: purpose_not_allowed, items_not_allowed or validation_error.
        """
        catalogue = self.catalogue()
        decision = may_request(
            catalogue,
            client_id=client_id,
            purpose=purpose,
            items=items,
            access=access,
            valid_days=valid_days,
            max_fetches=max_fetches,
            case_reference=case_reference,
        )

        async def work() -> tuple[Any, list[EntryDraft]]:
            now = self.clock.now_ms()
            if not decision.allowed:
                error = PolicyDenied(decision.reasons or ("forbidden",), decision.details)
                return error, [
                    EntryDraft(
                        action="consent.requested",
                        actor_type=actor.type,  # type: ignore[arg-type]
                        actor_id=actor.id,
                        outcome="denied",
                        citizen_id=citizen_id,
                        client_id=client_id,
                        purpose=safe_token(purpose),
                        reason_code=error.code,
                        request_id=actor.request_id,
                    )
                ]
            the_purpose = catalogue.purposes[purpose]
            statute = the_purpose.legal_basis == "statute"
            if not statute:
                existing = await self.repo.pending_for(client_id, citizen_id, purpose)
                if existing is not None and existing.effective_status(now) == Status.PENDING:
                    return (existing, False), [self._entry(actor, "consent.requested", existing)]
                if existing is not None:
                    await self._expire_if_due(existing, now)
            consent = Consent(
                consent_id=new_id("cns"),
                citizen_id=citizen_id,
                client_id=client_id,
                purpose=purpose,
                items=expand_items(catalogue, purpose, items),
                access=access,
                max_fetches=1 if access == "once" else max_fetches,
                valid_days=valid_days,
                valid_from=None,
                valid_until=None,
                legal_basis=the_purpose.legal_basis,
                case_reference=case_reference if statute else None,
                created_at=now,
                policy_version=catalogue.version,
                status=Status.PENDING,
            )
            await self.repo.insert(consent, now)
            await self.events.add(
                client_id=client_id, type="consent.requested", consent_id=consent.consent_id, at=now
            )
            drafts = [self._entry(actor, "consent.requested", consent)]
            if statute:
                consent, more = await self._transition(consent, Status.ACTIVE, actor, now)
                drafts.extend(more)
            return (consent, True), drafts

        result: tuple[Consent, bool] = await self._run(work)
        return result

    async def get_for_client(self, consent_id: str, *, client_id: str, actor: Actor) -> Consent:
        """A client's own consent; another client's is ``consent_not_found`` (audited)."""
        consent = await self.repo.get(consent_id)
        if consent is not None and consent.client_id == client_id:
            return consent.viewed_at(self.clock.now_ms())

        async def work() -> tuple[Any, list[EntryDraft]]:
            return ConsentNotFound("no such consent"), [
                self._entry(
                    actor, "consent.viewed", None, outcome="denied", reason="consent_not_found"
                )
            ]

        result: Consent = await self._run(work)
        return result

    async def lock_for_read(
        self,
        consent_id: str,
        *,
        client_id: str,
        types: Sequence[str] | None,
        actor: Actor,
    ) -> tuple[ReadGrant | ConsentError, list[EntryDraft]]:
        """Inside a unit: lock the consent and decide what a read may release.

        ``types=None`` asks for every consented type. Returns a grant, or the refusal
        to answer with, plus the entries of any transition made on the way (a lazy
        expiry). The caller appends its own ``data.read`` entry.
        """
        now = self.clock.now_ms()
        consent = await self.repo.get(consent_id, lock=True)
        if consent is None or consent.client_id != client_id:
            return ConsentNotFound("no such consent"), []
        consent, drafts = await self._expire_if_due(consent, now)
        refusal: ConsentError
        if consent.status != Status.ACTIVE:
            refusal = _DENIAL_BY_STATUS[consent.status](f"consent is {consent.status.value}")
            refusal.citizen_id = consent.citizen_id
            return refusal, drafts
        released = self._released_fields(consent)
        if types is not None:
            if any(t not in released for t in types):
                refusal = ScopeNotConsented("this record type is not released by the consent")
                refusal.citizen_id = consent.citizen_id
                return refusal, drafts
            released = {t: released[t] for t in types}
        elif not released:
            refusal = ScopeNotConsented("the consent releases nothing under the current policy")
            refusal.citizen_id = consent.citizen_id
            return refusal, drafts
        return ReadGrant(consent=consent, released=released), drafts

    def _released_fields(self, consent: Consent) -> dict[str, tuple[str, ...]]:
        """``released_fields`` under the current catalogue, remembered per purpose and
        items until the catalogue changes (at most ``RELEASED_MEMO`` pairs; a fresh
        dict each call, the caller may change it)."""
        catalogue = self.catalogue()
        if catalogue is not self._released_under or len(self._released) >= RELEASED_MEMO:
            self._released_under, self._released = catalogue, {}
        key = (consent.purpose, consent.items)
        released = self._released.get(key)
        if released is None:
            released = released_fields(catalogue, consent.purpose, consent.items_mapping())
            self._released[key] = released
        return dict(released)

    async def count_fetch(
        self, grant: ReadGrant, *, actor: Actor
    ) -> tuple[Consent | ConsentError, list[EntryDraft]]:
        """Inside a unit, after :meth:`lock_for_read`: count one fetch (conditional)."""
        now = self.clock.now_ms()
        counted = await self.repo.count_fetch(grant.consent.consent_id, now)
        if counted is None:
            return ConsentExhausted("the consent's fetches are used up"), []
        fetch_count, status = counted
        consent = grant.consent.counted(fetch_count, status)
        if status == Status.EXHAUSTED:  # a transition: an entry and the client's event
            await self.events.add(
                client_id=consent.client_id,
                type="consent.exhausted",
                consent_id=consent.consent_id,
                at=now,
            )
            return consent, [
                self._entry(Actor("system", "fetch-limit"), "consent.exhausted", consent)
            ]
        return consent, []

    # -- citizen ----------------------------------------------------------------------------

    async def _citizen_transition(
        self,
        consent_id: str,
        *,
        citizen_id: str,
        allowed_from: frozenset[Status],
        to: Status,
        actor: Actor,
    ) -> Consent:
        action = _ACTION_BY_STATUS[to]

        async def work() -> tuple[Any, list[EntryDraft]]:
            now = self.clock.now_ms()
            consent = await self.repo.get(consent_id, lock=True)
            if consent is None or consent.citizen_id != citizen_id:
                return ConsentNotFound("no such consent"), [
                    self._entry(
                        actor,
                        action,
                        None,
                        outcome="denied",
                        reason="consent_not_found",
                        citizen_id=citizen_id,
                    )
                ]
            consent, drafts = await self._expire_if_due(consent, now)
            if consent.status not in allowed_from:
                return ConsentStateConflict(f"the consent is {consent.status.value}"), [
                    *drafts,
                    self._entry(
                        actor, action, consent, outcome="denied", reason="consent_state_conflict"
                    ),
                ]
            consent, more = await self._transition(consent, to, actor, now)
            return consent, [*drafts, *more]

        result: Consent = await self._run(work)
        return result

    async def approve(self, consent_id: str, *, citizen_id: str, actor: Actor) -> Consent:
        return await self._citizen_transition(
            consent_id,
            citizen_id=citizen_id,
            allowed_from=frozenset({Status.PENDING}),
            to=Status.ACTIVE,
            actor=actor,
        )

    async def reject(self, consent_id: str, *, citizen_id: str, actor: Actor) -> Consent:
        return await self._citizen_transition(
            consent_id,
            citizen_id=citizen_id,
            allowed_from=frozenset({Status.PENDING}),
            to=Status.REJECTED,
            actor=actor,
        )

    async def revoke(self, consent_id: str, *, citizen_id: str, actor: Actor) -> Consent:
        return await self._citizen_transition(
            consent_id,
            citizen_id=citizen_id,
            allowed_from=frozenset({Status.ACTIVE}),
            to=Status.REVOKED,
            actor=actor,
        )

    async def withdraw_all(self, *, citizen_id: str, actor: Actor) -> list[Consent]:
        """Erasure: revoke every pending and active consent of the citizen."""
        withdrawn: list[Consent] = []
        for consent in await self.repo.list_for_citizen(citizen_id):
            if consent.effective_status(self.clock.now_ms()) in (Status.PENDING, Status.ACTIVE):
                try:
                    withdrawn.append(
                        await self._citizen_transition(
                            consent.consent_id,
                            citizen_id=citizen_id,
                            allowed_from=frozenset({Status.PENDING, Status.ACTIVE}),
                            to=Status.REVOKED,
                            actor=actor,
                        )
                    )
                except ConsentStateConflict:
                    continue  # it changed meanwhile (expired, exhausted): nothing to withdraw
        return withdrawn

    async def list_for_citizen(
        self, citizen_id: str, *, status: str | None = None
    ) -> list[Consent]:
        now = self.clock.now_ms()
        consents = [c.viewed_at(now) for c in await self.repo.list_for_citizen(citizen_id)]
        return [c for c in consents if status is None or c.status.value == status]

    async def receipt(self, consent_id: str, *, citizen_id: str, version: int | None) -> Receipt:
        consent = await self.repo.get(consent_id)
        if consent is None or consent.citizen_id != citizen_id:
            raise ConsentNotFound("no such consent")
        receipt = await self.repo.receipt(consent_id, version)
        if receipt is None:
            raise ConsentNotFound("no such receipt")
        return receipt

    # -- life events ------------------------------------------------------------------------

    async def after_record_stored(
        self,
        *,
        citizen_id: str,
        record_type: str,
        data: Mapping[str, Any],
        version: int | None = None,
    ) -> list[EntryDraft]:
        """Inside the write's unit: tell every standing consent's client once
        (``record.updated``), and store what the lifecycle rules suggest (citizen only)."""
        return await self.after_records_stored(
            [StoredVersion(citizen_id, record_type, data, version)]
        )

    async def after_records_stored(self, stored: Sequence[StoredVersion]) -> list[EntryDraft]:
        """:meth:`after_record_stored` for many versions (a batch's unit): one query for
        the standing consents of all their citizens, then events and suggestions in order."""
        if not stored:
            return []
        now = self.clock.now_ms()
        standing = await self.events.standing_consents_of(
            sorted({s.citizen_id for s in stored}), now
        )
        today = datetime.fromtimestamp(now / 1000, tz=UTC).date()
        drafts: list[EntryDraft] = []
        for version in stored:
            for consent_id, client_id, types in standing.get(version.citizen_id, ()):
                if version.record_type in types:
                    await self.events.add(
                        client_id=client_id,
                        type="record.updated",
                        consent_id=consent_id,
                        record_type=version.record_type,
                        version=version.version,
                        at=now,
                    )
            drafts.extend(await self._suggest(version, today, now))
        return drafts

    async def _suggest(self, stored: StoredVersion, today: date, now: int) -> list[EntryDraft]:
        drafts: list[EntryDraft] = []
        for suggestion in lifecycle_suggestions(
            self.catalogue(),
            record_type=stored.record_type,
            event="record.updated",
            data=stored.data,
            today=today,
        ):
            suggested = StoredSuggestion(
                suggestion_id=new_id("sug"),
                citizen_id=stored.citizen_id,
                rule=suggestion.rule,
                client_id=suggestion.client_id,
                purpose=suggestion.purpose,
                access=suggestion.access,
                valid_days=suggestion.valid_days,
                status="open",
                created_at=now,
                consent_id=None,
            )
            if await self.suggestions.insert_if_new(suggested):
                drafts.append(
                    EntryDraft(
                        action="suggestion.created",
                        actor_type="system",
                        actor_id="lifecycle",
                        citizen_id=stored.citizen_id,
                        client_id=None,  # the suggested client learns nothing before acceptance
                        purpose=suggestion.purpose,
                        reason_code=suggestion.rule,
                    )
                )
        return drafts

    async def events_for(self, client_id: str, *, after: int, limit: int) -> list[Any]:
        return await self.events.after(client_id, after, limit)

    async def list_suggestions(self, citizen_id: str) -> list[StoredSuggestion]:
        return await self.suggestions.list_for_citizen(citizen_id)

    async def accept_suggestion(
        self, suggestion_id: str, *, citizen_id: str, actor: Actor
    ) -> Consent:
        """One click: an active consent for the suggested client, purpose and validity."""
        catalogue = self.catalogue()

        async def work() -> tuple[Any, list[EntryDraft]]:
            now = self.clock.now_ms()
            found = await self.suggestions.get(suggestion_id, lock=True)
            if found is None or found.citizen_id != citizen_id:
                return ConsentNotFound("no such suggestion"), [
                    self._entry(
                        actor,
                        "suggestion.accepted",
                        None,
                        outcome="denied",
                        reason="not_found",
                        citizen_id=citizen_id,
                    )
                ]
            if found.status != "open":
                return ConsentStateConflict(f"the suggestion is {found.status}"), [
                    self._entry(
                        actor,
                        "suggestion.accepted",
                        None,
                        outcome="denied",
                        reason="consent_state_conflict",
                        citizen_id=citizen_id,
                    )
                ]
            purpose = catalogue.purposes.get(found.purpose)
            if purpose is None or found.client_id not in purpose.clients:
                error = PolicyDenied(
                    ("purpose_not_allowed",), ("the purpose is no longer offered",)
                )
                return error, [
                    self._entry(
                        actor,
                        "suggestion.accepted",
                        None,
                        outcome="denied",
                        reason="purpose_not_allowed",
                        citizen_id=citizen_id,
                    )
                ]
            items = tuple(sorted((t, tuple(sorted(f))) for t, f in purpose.items.items()))
            consent = Consent(
                consent_id=new_id("cns"),
                citizen_id=citizen_id,
                client_id=found.client_id,
                purpose=found.purpose,
                items=items,
                access=found.access,
                max_fetches=1 if found.access == "once" else None,
                valid_days=min(found.valid_days, purpose.max_valid_days),
                valid_from=None,
                valid_until=None,
                legal_basis=purpose.legal_basis,
                case_reference=None,
                created_at=now,
                policy_version=catalogue.version,
                status=Status.PENDING,
            )
            await self.repo.insert(consent, now)
            consent, drafts = await self._transition(consent, Status.ACTIVE, actor, now)
            await self.suggestions.mark(suggestion_id, "accepted", consent.consent_id)
            return consent, drafts

        result: Consent = await self._run(work)
        return result

    # -- time -------------------------------------------------------------------------------

    async def expire_due(self, *, limit: int = 500) -> int:
        """Materialise expiries (pending past 7 days, active past valid_until); count them."""
        now = self.clock.now_ms()
        due = await self.repo.due_for_expiry(now, now - 7 * DAY_MS, limit=limit)
        done = 0
        for consent_id in due:

            async def work(consent_id: str = consent_id) -> tuple[Any, list[EntryDraft]]:
                consent = await self.repo.get(consent_id, lock=True)
                if consent is None:
                    return None, []
                moved, drafts = await self._expire_if_due(consent, self.clock.now_ms())
                return moved, drafts

            if await self._run(work) is not None:
                done += 1
        return done
