"""The citizen's erasure (``DELETE /v1/me``) and the daily retention job.

Erasure revokes every pending and active consent (their clients hear it in their
event feeds), crypto-shreds every type that no statutory retention holds, and
answers with what was erased, what was kept (type, until, reason) and a signed
erasure receipt. Retained types are shredded by the retention job once their
retention ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from consent.models import DAY_MS, Consent
from consent.service import ConsentService, iso
from vault.models import new_id
from vault.service import Actor, VaultService

log = structlog.get_logger(__name__)

ERASURE_RECEIPT_TYP = "erasure-receipt+jwt"


@dataclass(frozen=True)
class Kept:
    type: str
    until: int
    reason: str


@dataclass(frozen=True)
class ErasureOutcome:
    erased: tuple[str, ...]
    kept: tuple[Kept, ...]
    receipt: str
    revoked: tuple[str, ...]


class ErasureService:
    def __init__(
        self,
        *,
        consents: ConsentService,
        vault: VaultService,
        sign_receipt: Callable[[Mapping[str, object]], str],
        issuer: str,
    ) -> None:
        self.consents = consents
        self.vault = vault
        self.sign_receipt = sign_receipt
        self.issuer = issuer

    async def _retained(self, citizen_id: str, now: int) -> list[Kept]:
        catalogue = self.consents.catalogue()
        kept: list[Kept] = []
        for meta in await self.vault.list_records(citizen_id):
            record_type = catalogue.record_types.get(meta.record_type)
            if record_type is None or record_type.retention_days <= 0:
                continue
            until = meta.created_at + record_type.retention_days * DAY_MS
            if until > now:
                kept.append(
                    Kept(
                        meta.record_type,
                        until,
                        f"statutory retention ({record_type.retention_days} days)",
                    )
                )
        return kept

    async def erase_citizen(self, *, citizen_id: str, actor: Actor) -> ErasureOutcome:
        """Withdraw every consent, hold what statute retains, shred the rest.

        Nothing changes before the erasure ledger (outside the database) has the entry:
        a ledger or key provider that does not answer fails the request with every
        consent as it was, instead of withdrawn with nothing shredded.
        """
        now = self.consents.clock.now_ms()
        kept = await self._retained(citizen_id, now)
        withdrawn: list[Consent] = []

        async def withdraw_and_hold() -> None:
            withdrawn.extend(await self.consents.withdraw_all(citizen_id=citizen_id, actor=actor))
            for hold in kept:
                async with self.vault.db.transaction():
                    await self.vault.repo.add_hold(citizen_id, hold.type, hold.until)

        result = await self.vault.erase(
            citizen_id=citizen_id,
            types=None,
            actor=actor,
            keep=[k.type for k in kept],
            after_ledger=withdraw_and_hold,
        )
        payload: dict[str, Any] = {
            "receipt_id": new_id("ers"),
            "jurisdiction": "KR",
            "controller": self.issuer,
            "data_subject": citizen_id,
            "erased": list(result.erased),
            "kept": [{"type": k.type, "until": iso(k.until), "reason": k.reason} for k in kept],
            "revoked_consents": [c.consent_id for c in withdrawn],
            "erased_at": iso(result.at),
            "iss": self.issuer,
            "iat": result.at // 1000,
        }
        receipt = self.sign_receipt(payload)
        return ErasureOutcome(
            erased=result.erased,
            kept=tuple(kept),
            receipt=receipt,
            revoked=tuple(c.consent_id for c in withdrawn),
        )

    async def run_retention(self) -> int:
        """Shred what erasures kept once its retention has ended; return how many types.

        The last hold of a citizen going also removes the blind indexes, completing
        the erasure the citizen asked for.
        """
        now = self.consents.clock.now_ms()
        done = 0
        for citizen_id, record_type in await self.vault.repo.due_holds(now):
            await self.vault.erase(
                citizen_id=citizen_id, types=[record_type], actor=Actor("system", "retention")
            )
            # Under the tree lock, as every writer of blind indexes (a sign-in linking
            # one) is: none can be put back for a citizen whose last index goes here.
            async with self.vault.audit.transaction():
                remaining = await self.vault.repo.drop_hold(citizen_id, record_type)
                if remaining == 0:
                    await self.vault.repo.delete_blind_indexes(citizen_id)
            done += 1
        if done:
            log.info("retention.shredded", count=done)
        return done
