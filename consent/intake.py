"""Records coming in: attested records from issuers, self-asserted ones from citizens.

Each write is checked against the current catalogue (may this client issue this
type; is the citizen allowed to assert it; does the data match the type's fields),
stored once through the vault, and announced inside the same unit: lifecycle rules
make suggestions. A refused write to an authenticated caller is audited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audit.models import EntryDraft, safe_token
from consent.service import ConsentService
from policies import PolicyDenied, may_issue, may_self_assert, validate_record
from vault.errors import OncevaultError
from vault.models import PutResult, Subject
from vault.service import Actor, PutRequest, VaultService


@dataclass(frozen=True)
class IssueRequest:
    """One record of an issuer's batch, as received."""

    subject: Mapping[str, Any]
    record_type: str
    data: Any
    attestation: Any = None


#: Issuer batches one process expands at once (:meth:`RecordIntake.issue_many`). A
#: 1,000-record batch holds ~7 MB of Python objects while it is checked, sealed and
#: stored; two at once let one be prepared while the other holds the write lock, and
#: a worker's memory does not grow with the number of batches its clients send.
BATCHES_IN_FLIGHT = 2


class RecordIntake:
    def __init__(
        self,
        *,
        vault: VaultService,
        consents: ConsentService,
        batches_in_flight: int = BATCHES_IN_FLIGHT,
    ) -> None:
        self.vault = vault
        self.consents = consents
        self.audit = consents.audit
        self._batches = asyncio.Semaphore(batches_in_flight)

    async def _refuse(
        self, actor: Actor, error: PolicyDenied, record_type: str, citizen_id: str | None
    ) -> PolicyDenied:
        draft = EntryDraft(
            action="record.put",
            actor_type=actor.type,  # type: ignore[arg-type]
            actor_id=actor.id,
            outcome="denied",
            citizen_id=citizen_id,
            client_id=actor.id if actor.type == "client" else None,
            record_type=safe_token(record_type),
            reason_code=error.code,
            request_id=actor.request_id,
        )
        return await self.audit.record_refusal(draft, error)

    async def issue(
        self,
        *,
        client_id: str,
        subject: Mapping[str, Any],
        record_type: str,
        data: Any,
        attestation: Any,
        actor: Actor,
    ) -> PutResult:
        """An issuer's attested record.

        Raises:
            PolicyDenied: ``type_not_issuable`` (audited).
            RecordInvalid / InvalidSubject: ``validation_error`` (422).
        """
        catalogue = self.consents.catalogue()
        decision = may_issue(catalogue, client_id, record_type)
        if not decision.allowed:
            raise await self._refuse(
                actor, PolicyDenied(decision.reasons, decision.details), record_type, None
            )
        parsed = Subject.parse(dict(subject))
        clean = validate_record(catalogue.record_types[record_type], data)
        citizen_id = await self.vault.resolve(parsed)
        return await self._put(
            citizen_id,
            record_type,
            clean,
            source=client_id,
            attestation=attestation,
            actor=actor,
            client_id=client_id,
        )

    async def issue_many(
        self, *, client_id: str, records: Sequence[IssueRequest], actor: Actor
    ) -> list[PutResult | OncevaultError]:
        """An issuer's batch, in order: each record checked as :meth:`issue` checks it,
        the valid ones stored in one set-based unit (:meth:`VaultService.put_many`).
        A record that raced a concurrent writer runs again alone.

        Returns one result per record: the stored version, or the refusal
        (``type_not_issuable``, audited; ``validation_error``). Raises what fails the
        whole batch (key provider or database unavailable). At most
        ``batches_in_flight`` calls run at once in a process; the others wait their turn.
        """
        async with self._batches:
            return await self._issue_many(client_id, records, actor)

    async def _issue_many(
        self, client_id: str, records: Sequence[IssueRequest], actor: Actor
    ) -> list[PutResult | OncevaultError]:
        catalogue = self.consents.catalogue()
        out: list[PutResult | OncevaultError | None] = [None] * len(records)
        requests: list[PutRequest] = []
        where: list[int] = []
        refused: list[tuple[int, PolicyDenied, str]] = []
        for index, record in enumerate(records):
            decision = may_issue(catalogue, client_id, record.record_type)
            if not decision.allowed:
                refused.append(
                    (index, PolicyDenied(decision.reasons, decision.details), record.record_type)
                )
                continue
            try:
                parsed = Subject.parse(dict(record.subject))
                clean = validate_record(catalogue.record_types[record.record_type], record.data)
            except OncevaultError as exc:
                out[index] = exc
                continue
            requests.append(
                PutRequest(parsed, record.record_type, clean, client_id, record.attestation)
            )
            where.append(index)
        # Refusals are audited concurrently: their units share group commits.
        denials = await asyncio.gather(
            *(self._refuse(actor, error, record_type, None) for _, error, record_type in refused)
        )
        for (index, _, _), denial in zip(refused, denials, strict=True):
            out[index] = denial
        stored = await self.vault.put_many(
            requests,
            actor=actor,
            client_id=client_id,
            on_stored=self.consents.after_records_stored,
        )
        for index, result in zip(where, stored, strict=True):
            out[index] = (
                result
                if result is not None
                else await self._issue_alone(client_id, records[index], actor)
            )
        done = [result for result in out if result is not None]
        assert len(done) == len(records)
        return done

    async def _issue_alone(
        self, client_id: str, record: IssueRequest, actor: Actor
    ) -> PutResult | OncevaultError:
        """A batch's record that raced a concurrent writer, through :meth:`issue`; its
        refusal is its result (the catalogue may have changed meanwhile), an outage
        fails the batch."""
        try:
            return await self.issue(
                client_id=client_id,
                subject=record.subject,
                record_type=record.record_type,
                data=record.data,
                attestation=record.attestation,
                actor=actor,
            )
        except OncevaultError as exc:
            if exc.code in ("kms_unavailable", "unavailable"):
                raise
            return exc

    async def self_assert(
        self, *, citizen_id: str, record_type: str, data: Any, actor: Actor
    ) -> PutResult:
        """A citizen's own record of a self-asserted type (``PUT /v1/me/records/{type}``)."""
        catalogue = self.consents.catalogue()
        decision = may_self_assert(catalogue, record_type)
        if not decision.allowed:
            raise await self._refuse(
                actor, PolicyDenied(decision.reasons, decision.details), record_type, citizen_id
            )
        clean = validate_record(catalogue.record_types[record_type], data)
        return await self._put(
            citizen_id,
            record_type,
            clean,
            source="citizen",
            attestation=None,
            actor=actor,
            client_id=None,
        )

    async def _put(
        self,
        citizen_id: str,
        record_type: str,
        data: dict[str, Any],
        *,
        source: str,
        attestation: Any,
        actor: Actor,
        client_id: str | None,
    ) -> PutResult:
        async def on_stored(version: int) -> Sequence[EntryDraft]:
            return await self.consents.after_record_stored(
                citizen_id=citizen_id, record_type=record_type, data=data, version=version
            )

        return await self.vault.put(
            citizen_id=citizen_id,
            record_type=record_type,
            data=data,
            source=source,
            actor=actor,
            attestation=attestation,
            client_id=client_id,
            on_stored=on_stored,
        )
