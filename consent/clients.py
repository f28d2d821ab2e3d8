"""The client registry: agencies and approved private services, their roles and keys.

Authorization state is never cached per process: every request reads the client's
registration (enabled, approved, roles) from the database, so disabling a client or
removing a role takes effect on its next request, whatever tokens it holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from audit.log import AuditLog
from audit.models import EntryDraft
from consent.models import Client
from consent.repository import ClientRepository
from vault import crypto
from vault.clock import Clock
from vault.errors import InvalidJWKS, OncevaultError
from vault.service import Actor

ROLES = ("issuer", "consumer", "auditor")
KINDS = ("agency", "private")
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ClientError(OncevaultError):
    """A client registration was refused."""

    code = "validation_error"


class ClientNotFound(ClientError):
    """No such client."""

    code = "not_found"


class ClientService:
    """Operator use cases (the ``oncevault clients`` commands), each audited."""

    def __init__(self, *, repo: ClientRepository, audit: AuditLog, clock: Clock) -> None:
        self.repo = repo
        self.audit = audit
        self.clock = clock

    @staticmethod
    def validate(
        *, client_id: str, name: str, kind: str, roles: Sequence[str], jwks: Mapping[str, Any]
    ) -> tuple[frozenset[str], dict[str, dict[str, Any]]]:
        if not CLIENT_ID.fullmatch(client_id):
            raise ClientError("--id: use 1-64 letters, digits, '.', '_' or '-'")
        if not name.strip() or len(name) > 200:
            raise ClientError("--name: 1-200 characters")
        if kind not in KINDS:
            raise ClientError("--kind: agency or private")
        if not roles or any(role not in ROLES for role in roles):
            raise ClientError("--role: one or more of issuer, consumer, auditor")
        try:
            keys = crypto.validate_public_jwks(jwks)
        except InvalidJWKS as exc:
            raise ClientError(f"--jwks: {exc}") from None
        return frozenset(roles), keys

    def _entry(self, actor: Actor, action: str, client_id: str, reason: str) -> EntryDraft:
        return EntryDraft(
            action=action,
            actor_type=actor.type,  # type: ignore[arg-type]
            actor_id=actor.id,
            client_id=client_id,
            reason_code=reason,
            request_id=actor.request_id,
        )

    async def add(
        self,
        *,
        client_id: str,
        name: str,
        kind: str,
        roles: Sequence[str],
        jwks: Mapping[str, Any],
        approved: bool,
        dpop_required: bool,
        actor: Actor,
    ) -> Client:
        role_set, keys = self.validate(
            client_id=client_id, name=name, kind=kind, roles=roles, jwks=jwks
        )
        client = Client(
            client_id=client_id,
            name=name.strip(),
            kind=kind,
            roles=role_set,
            jwks=keys,
            approved=approved or kind == "agency",
            enabled=True,
            dpop_required=dpop_required,
        )
        async with self.audit.transaction():
            if not await self.repo.insert(client, self.clock.now_ms()):
                raise ClientError(f"client {client_id} already exists")
            await self.audit.append([self._entry(actor, "client.added", client_id, "added")])
        return client

    async def change(
        self, client_id: str, *, actor: Actor, reason: str, **changes: object
    ) -> Client:
        async with self.audit.transaction():
            if not await self.repo.update(client_id, self.clock.now_ms(), **changes):
                raise ClientNotFound(f"no client {client_id}")
            await self.audit.append([self._entry(actor, "client.changed", client_id, reason)])
        found = await self.repo.get(client_id)
        assert found is not None
        return found

    async def approve(self, client_id: str, *, actor: Actor) -> Client:
        return await self.change(client_id, actor=actor, reason="approved", approved=1)

    async def enable(self, client_id: str, *, actor: Actor) -> Client:
        return await self.change(client_id, actor=actor, reason="enabled", enabled=1)

    async def disable(self, client_id: str, *, actor: Actor) -> Client:
        return await self.change(client_id, actor=actor, reason="disabled", enabled=0)

    async def set_jwks(self, client_id: str, jwks: Mapping[str, Any], *, actor: Actor) -> Client:
        try:
            keys = crypto.validate_public_jwks(jwks)
        except InvalidJWKS as exc:
            raise ClientError(f"--jwks: {exc}") from None
        text = json.dumps({"keys": list(keys.values())}, sort_keys=True)
        return await self.change(client_id, actor=actor, reason="jwks_set", jwks=text)
