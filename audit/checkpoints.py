"""Signed checkpoints: made every second while entries arrive, copied outside the database.

A checkpoint is a compact JWS (``cp-`` key, ``typ: checkpoint+jwt``) over
``{origin, tree_size, root_hash, timestamp}``. Each one is stored in the database
and the newest is copied beside the erasure ledger (the KEK dir, or OpenBao KV),
where a database restored from an older copy cannot reach it: ``serve`` compares
the two and refuses a database whose tree is smaller than, or inconsistent with,
the copy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from audit.log import AuditLog
from audit.models import EntryDraft
from audit.repository import CheckpointRow
from vault.clock import Clock
from vault.errors import OncevaultError
from vault.ledger import Ledger

log = structlog.get_logger(__name__)

CHECKPOINT_TYP = "checkpoint+jwt"
COPY_NAME = "latest"

Signer = Callable[[Mapping[str, object]], str]


class RollbackDetected(OncevaultError):
    """The database's audit tree is behind or inconsistent with the checkpoint copy."""

    code = "rollback"


@dataclass(frozen=True)
class Checkpoint:
    tree_size: int
    root_hash: bytes
    timestamp: int
    jws: str

    def as_json(self) -> dict[str, Any]:
        """The shape served by ``GET /v1/audit/checkpoint`` and kept as the copy."""
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp": self.timestamp,
            "jws": self.jws,
        }

    @classmethod
    def from_row(cls, row: CheckpointRow) -> Checkpoint:
        return cls(row.tree_size, row.root_hash, row.timestamp, row.jws)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Checkpoint:
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("checkpoint is not a JSON object")
        size, root, ts, jws = (value.get(k) for k in ("tree_size", "root_hash", "timestamp", "jws"))
        if not (isinstance(size, int) and isinstance(root, str) and isinstance(ts, int)):
            raise ValueError("checkpoint fields are missing or mistyped")
        if not isinstance(jws, str):
            raise ValueError("checkpoint has no jws")
        return cls(size, bytes.fromhex(root), ts, jws)


class Checkpointer:
    """Makes, stores and copies checkpoints; checks the copy at start-up."""

    def __init__(
        self,
        *,
        audit: AuditLog,
        ledger: Ledger,
        sign: Signer,
        origin: str,
        clock: Clock,
    ) -> None:
        self.audit = audit
        self.ledger = ledger
        self.sign = sign
        self.origin = origin
        self.clock = clock
        self._lock = asyncio.Lock()

    def payload(self, tree_size: int, root_hash: bytes, timestamp: int) -> dict[str, object]:
        return {
            "origin": self.origin,
            "tree_size": tree_size,
            "root_hash": root_hash.hex(),
            "timestamp": timestamp,
        }

    async def latest(self) -> Checkpoint | None:
        row = await self.audit.repo.latest_checkpoint()
        return Checkpoint.from_row(row) if row else None

    async def make(self, *, force_copy: bool = False) -> Checkpoint | None:
        """Checkpoint the current tree if it grew; refresh the copy. Returns the newest."""
        async with self._lock:
            state = await self.audit.state()
            latest = await self.latest()
            if latest is None or state.size > latest.tree_size:
                timestamp = self.clock.now_ms()
                jws = self.sign(self.payload(state.size, state.root_hash, timestamp))
                made = Checkpoint(state.size, state.root_hash, timestamp, jws)
                await self.audit.repo.insert_checkpoint(
                    CheckpointRow(made.tree_size, made.root_hash, made.timestamp, made.jws)
                )
                latest = await self.latest()
            if latest is not None:
                await self._copy(latest, force=force_copy)
            return latest

    async def _copy(self, checkpoint: Checkpoint, *, force: bool) -> None:
        existing = await self.read_copy()
        if existing is not None and existing.tree_size >= checkpoint.tree_size and not force:
            return
        await self.ledger.write_checkpoint(
            COPY_NAME, json.dumps(checkpoint.as_json(), sort_keys=True).encode("ascii")
        )

    async def read_copy(self) -> Checkpoint | None:
        raw = await self.ledger.read_checkpoint(COPY_NAME)
        if raw is None:
            return None
        return Checkpoint.from_json(raw)

    async def check_rollback(self) -> None:
        """Raise :class:`RollbackDetected` when the database is behind the copy."""
        copy = await self.read_copy()
        if copy is None:
            return
        state = await self.audit.state()
        if state.size < copy.tree_size:
            raise RollbackDetected(
                f"rollback: the database's audit log has {state.size} entries but the "
                f"checkpoint kept outside it has {copy.tree_size}; restore a newer copy, "
                "or start with --accept-rollback after a deliberate restore"
            )
        if copy.tree_size and await self.audit.root_at(copy.tree_size) != copy.root_hash:
            raise RollbackDetected(
                f"rollback: the database's audit log is inconsistent with the checkpoint "
                f"kept outside it at size {copy.tree_size}; start with --accept-rollback "
                "only after a deliberate restore"
            )

    async def accept_rollback(self, *, reapply: Callable[[], Awaitable[int]]) -> tuple[int, int]:
        """After a deliberate restore: keep the old copy as evidence, re-apply erasures,
        record ``log.rollback_accepted`` and checkpoint anew. Returns (old, new) sizes."""
        copy = await self.read_copy()
        old_size = copy.tree_size if copy else 0
        if copy is not None:
            await self.ledger.write_checkpoint(
                f"rollback-{self.clock.now_ms()}",
                json.dumps(copy.as_json(), sort_keys=True).encode("ascii"),
            )
        await reapply()
        new_size = (await self.audit.state()).size
        async with self.audit.transaction():
            await self.audit.append(
                [
                    EntryDraft(
                        action="log.rollback_accepted",
                        actor_type="operator",
                        actor_id="cli",
                        reason_code=f"size.{old_size}.to.{new_size}",
                    )
                ]
            )
        await self.make(force_copy=True)
        log.warning("audit.rollback_accepted", old_size=old_size, new_size=new_size)
        return old_size, new_size

    async def run(self, *, interval: float = 1.0) -> None:
        """Checkpoint at least every ``interval`` seconds while entries arrive."""
        while True:
            try:
                await self.make()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep checkpointing; the next tick retries
                log.warning("audit.checkpoint_failed", error=exc.__class__.__name__)
            await asyncio.sleep(interval)
