"""Platform secrets: the blind-index key and the Ed25519 signing keys per use.

Both are made by ``oncevault init``, stored wrapped by the KEK (context
``"platform"``, associated data naming the secret), and unwrapped once per process
at start-up. Signing keys carry a ``kid`` prefix per use (``at-`` access tokens,
``rc-`` consent receipts, ``cp-`` audit checkpoints); retired keys stay published.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from audit.log import AuditLog
from audit.models import EntryDraft
from vault import crypto
from vault.clock import Clock
from vault.errors import KeyProviderMisconfigured
from vault.keys import KeyProvider, UnwrapRequest, WrapRequest
from vault.repository import VaultRepository

Use = Literal["at", "rc", "cp"]
USES: tuple[Use, ...] = ("at", "rc", "cp")
PLATFORM = "platform"
INDEX_KEY = "index_key"

SECRET_AAD_LABEL = "oncevault/secret/v1"  # noqa: S105 - a label, not a secret
SIGNING_AAD_LABEL = "oncevault/sig/v1"


def secret_aad(name: str) -> bytes:
    return crypto.encode_aad(SECRET_AAD_LABEL, name)


def signing_aad(kid: str) -> bytes:
    return crypto.encode_aad(SIGNING_AAD_LABEL, kid)


def new_kid(use: Use) -> str:
    return f"{use}-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class PublishedKey:
    kid: str
    use: Use
    status: str
    jwk: dict[str, Any]


class Keyring:
    """The unwrapped platform secrets of this process."""

    def __init__(
        self,
        *,
        index_key: bytes,
        signing: Mapping[Use, tuple[str, bytes]],
        published: list[PublishedKey],
    ) -> None:
        self._index_key = index_key
        self._signing = dict(signing)
        self.published = published

    def __repr__(self) -> str:
        return f"Keyring(kids={[k.kid for k in self.published]})"

    # -- use ------------------------------------------------------------------------

    def blind_index(self, kind: str, value: str) -> bytes:
        return crypto.blind_index(self._index_key, kind, value)

    def request_digest_key(self) -> bytes:
        """The key of the ``Idempotency-Key`` request digests (:func:`crypto.request_digest`)."""
        return crypto.request_digest_key(self._index_key)

    def current_kid(self, use: Use) -> str:
        return self._signing[use][0]

    def sign(self, use: Use, payload: Mapping[str, object], *, typ: str) -> str:
        kid, private = self._signing[use]
        return crypto.sign_jws(payload, private_key=private, kid=kid, typ=typ)

    def public_keys(self, use: Use) -> dict[str, dict[str, Any]]:
        """kid -> public JWK for every key of ``use`` (current and retired)."""
        return {k.kid: k.jwk for k in self.published if k.use == use}

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        return {"keys": [k.jwk for k in self.published]}

    # -- lifecycle ------------------------------------------------------------------

    @classmethod
    async def load(cls, *, repo: VaultRepository, keys: KeyProvider) -> Keyring:
        """Unwrap the index key and the current signing keys (one batch)."""
        secret = await repo.platform_secret(INDEX_KEY)
        rows = await repo.signing_keys()
        current = {row.use: row for row in rows if row.status == "current"}
        if secret is None or set(current) != set(USES):
            raise KeyProviderMisconfigured("platform keys are missing; run `oncevault init`")
        requests = [UnwrapRequest(PLATFORM, secret[0], secret_aad(INDEX_KEY))]
        order: list[Use] = list(USES)
        for use in order:
            requests.append(
                UnwrapRequest(PLATFORM, current[use].wrapped, signing_aad(current[use].kid))
            )
        opened = await keys.unwrap(requests)
        signing = {use: (current[use].kid, opened[i + 1]) for i, use in enumerate(order)}
        published = [
            PublishedKey(
                kid=row.kid,
                use=_use(row.use),
                status=row.status,
                jwk=json.loads(row.public_jwk),
            )
            for row in rows
        ]
        return cls(index_key=opened[0], signing=signing, published=published)

    @staticmethod
    async def create_missing(
        *,
        repo: VaultRepository,
        keys: KeyProvider,
        audit: AuditLog,
        clock: Clock,
    ) -> list[str]:
        """``init``: make the index key and any missing signing key; return what was made."""
        made: list[str] = []
        have_index = await repo.platform_secret(INDEX_KEY) is not None
        current = {row.use for row in await repo.signing_keys() if row.status == "current"}
        missing: list[Use] = [use for use in USES if use not in current]
        requests: list[WrapRequest] = []
        if not have_index:
            requests.append(WrapRequest(PLATFORM, crypto.random_key(), secret_aad(INDEX_KEY)))
        kids = {use: new_kid(use) for use in missing}
        privates = {use: crypto.generate_signing_key() for use in missing}
        for use in missing:
            requests.append(WrapRequest(PLATFORM, privates[use], signing_aad(kids[use])))
        if not requests:
            return made
        wrapped = await keys.wrap(requests)  # before the transaction: no KMS call inside
        version = await keys.current_version()
        now = clock.now_ms()
        async with audit.transaction():
            position = 0
            drafts: list[EntryDraft] = []
            if not have_index:
                await repo.insert_platform_secret(
                    name=INDEX_KEY, wrapped=wrapped[0], kek_version=version, now=now
                )
                position = 1
                made.append(INDEX_KEY)
                drafts.append(_key_entry("key.created", INDEX_KEY))
            for offset, use in enumerate(missing):
                kid = kids[use]
                await repo.insert_signing_key(
                    kid=kid,
                    use=use,
                    wrapped=wrapped[position + offset],
                    public_jwk=json.dumps(crypto.public_jwk(privates[use], kid), sort_keys=True),
                    kek_version=version,
                    now=now,
                )
                made.append(kid)
                drafts.append(_key_entry("key.created", kid))
            await audit.append(drafts)
        return made

    @staticmethod
    async def rotate_signing(
        *,
        repo: VaultRepository,
        keys: KeyProvider,
        audit: AuditLog,
        clock: Clock,
        uses: tuple[Use, ...] = USES,
    ) -> list[str]:
        """New signing key per use; the old ones stay published as retired."""
        kids = {use: new_kid(use) for use in uses}
        privates = {use: crypto.generate_signing_key() for use in uses}
        wrapped = await keys.wrap(
            [WrapRequest(PLATFORM, privates[u], signing_aad(kids[u])) for u in uses]
        )
        version = await keys.current_version()
        now = clock.now_ms()
        async with audit.transaction():
            for index, use in enumerate(uses):
                await repo.retire_signing_key(use, now)
                await repo.insert_signing_key(
                    kid=kids[use],
                    use=use,
                    wrapped=wrapped[index],
                    public_jwk=json.dumps(
                        crypto.public_jwk(privates[use], kids[use]), sort_keys=True
                    ),
                    kek_version=version,
                    now=now,
                )
            await audit.append([_key_entry("key.rotated", kids[use]) for use in uses])
        return [kids[use] for use in uses]


def _use(value: str) -> Use:
    if value == "at":
        return "at"
    if value == "rc":
        return "rc"
    if value == "cp":
        return "cp"
    raise KeyProviderMisconfigured("unknown signing key use")


def _key_entry(action: str, key_name: str) -> EntryDraft:
    # The key's name (a kid or "index_key") is not secret and fits the entry alphabet.
    return EntryDraft(
        action=action,
        actor_type="operator",
        actor_id="cli",
        reason_code=key_name,
    )
