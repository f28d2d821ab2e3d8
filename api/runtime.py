"""Build the running system from settings: database, key provider, ledger, services.

Used by the CLI and by the app's lifespan, so both wire the same objects the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.db import open_database
from api.idempotency import IdempotencyStore
from api.idp import CitizenTokenVerifier, DevIdP
from api.ratelimit import RateLimiter
from api.settings import Settings
from audit.checkpoints import CHECKPOINT_TYP, Checkpointer
from audit.log import AuditLog
from consent.clients import ClientService
from consent.erasure import ERASURE_RECEIPT_TYP, ErasureService
from consent.intake import RecordIntake
from consent.reads import DataReader
from consent.repository import (
    ClientRepository,
    ConsentRepository,
    EventRepository,
    ReplayRepository,
    SuggestionRepository,
)
from consent.service import RECEIPT_TYP, ConsentService
from consent.tokens import TokenService
from policies import Catalogue, load_catalogue
from vault.clock import Clock, SystemClock
from vault.keyring import Keyring
from vault.keys import KeyProvider, LocalKeyProvider, TransitKeyProvider
from vault.ledger import Ledger, LocalLedger, TransitLedger
from vault.repository import VaultRepository
from vault.service import DekCache, VaultService
from vault.storage import Database


def key_provider(settings: Settings, *, create: bool = False) -> KeyProvider:
    """The configured provider. ``create`` (init only) makes a local KEK if none exists."""
    if settings.key_provider == "local":
        if create:
            return LocalKeyProvider.create(settings.kek_dir, reuse=True)
        return LocalKeyProvider(settings.kek_dir)
    assert settings.vault_addr is not None
    assert settings.vault_token is not None
    return TransitKeyProvider(
        settings.vault_addr,
        settings.vault_token,
        key_name=settings.transit_key,
        timeout_seconds=settings.kms_timeout_seconds,
    )


def ledger_for(settings: Settings, keys: KeyProvider) -> Ledger:
    if isinstance(keys, TransitKeyProvider):
        return TransitLedger(keys)
    return LocalLedger(settings.kek_dir)


async def prepare_provider(
    settings: Settings, keys: KeyProvider, ledger: Ledger, *, create: bool
) -> None:
    """Refuse an unsafe transit key or a missing KV mount (init and serve)."""
    if isinstance(keys, TransitKeyProvider):
        await keys.ensure_key(create=create)
    if isinstance(ledger, TransitLedger):
        await ledger.check_mount()


@dataclass
class Runtime:
    settings: Settings
    database: Database
    keys: KeyProvider
    ledger: Ledger
    audit: AuditLog
    clock: Clock
    repo: VaultRepository
    keyring: Keyring | None = None
    vault: VaultService | None = None
    checkpointer: Checkpointer | None = None
    catalogue: Catalogue | None = None
    consents: ConsentService | None = None
    clients: ClientService | None = None
    tokens: TokenService | None = None
    reader: DataReader | None = None
    intake: RecordIntake | None = None
    citizens: CitizenTokenVerifier | None = None
    erasure: ErasureService | None = None
    rate_limiter: RateLimiter | None = None
    idempotency: IdempotencyStore | None = None
    dev_idp: DevIdP | None = None

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        database: Database | None = None,
        clock: Clock | None = None,
        create: bool = False,
        load_keys: bool = True,
    ) -> Runtime:
        clock = clock or SystemClock()
        db = database or open_database(
            settings.database, sqlite_synchronous=settings.sqlite_synchronous
        )
        await db.start(create=create)
        keys = key_provider(settings, create=create)
        ledger = ledger_for(settings, keys)
        runtime = cls(
            settings=settings,
            database=db,
            keys=keys,
            ledger=ledger,
            audit=AuditLog(database=db, clock=clock),
            clock=clock,
            repo=VaultRepository(db),
        )
        if load_keys:
            await runtime.load_services()
        return runtime

    async def load_services(self) -> None:
        self.keyring = await Keyring.load(repo=self.repo, keys=self.keys)
        self.vault = VaultService(
            database=self.database,
            repo=self.repo,
            keys=self.keys,
            ledger=self.ledger,
            keyring=self.keyring,
            audit=self.audit,
            clock=self.clock,
            dek_cache=DekCache(clock=self.clock, ttl_seconds=self.settings.dek_cache_seconds),
        )
        keyring = self.keyring
        self.checkpointer = Checkpointer(
            audit=self.audit,
            ledger=self.ledger,
            sign=lambda payload: keyring.sign("cp", payload, typ=CHECKPOINT_TYP),
            origin=self.settings.issuer,
            clock=self.clock,
        )
        self.vault.after_erasure = self.checkpointer.make
        if self.catalogue is None:
            self.catalogue = load_catalogue(self.settings.policy_dir)
        self.consents = ConsentService(
            repo=ConsentRepository(self.database),
            audit=self.audit,
            clock=self.clock,
            catalogue=self.current_catalogue,
            sign_receipt=lambda payload: keyring.sign("rc", payload, typ=RECEIPT_TYP),
            controller=self.settings.issuer,
            suggestions=SuggestionRepository(self.database),
            events=EventRepository(self.database),
        )
        client_repo = ClientRepository(self.database)
        self.clients = ClientService(repo=client_repo, audit=self.audit, clock=self.clock)
        self.tokens = TokenService(
            clients=client_repo,
            consents=ConsentRepository(self.database),
            replay=ReplayRepository(self.database),
            audit=self.audit,
            clock=self.clock,
            keyring=keyring,
            issuer=self.settings.issuer,
        )

        self.reader = DataReader(consents=self.consents, vault=self.vault, clients=client_repo)
        self.intake = RecordIntake(vault=self.vault, consents=self.consents)
        self.erasure = ErasureService(
            consents=self.consents,
            vault=self.vault,
            sign_receipt=lambda payload: keyring.sign("rc", payload, typ=ERASURE_RECEIPT_TYP),
            issuer=self.settings.issuer,
        )
        if self.settings.dev_idp:
            self.dev_idp = DevIdP.load_or_create(
                self.settings.data_dir, self.settings.issuer, nid_claim=self.settings.idp_nid_claim
            )
        self.citizens = CitizenTokenVerifier(self.settings, dev_idp=self.dev_idp)
        self.rate_limiter = RateLimiter(
            self.database, self.clock, self.settings.rate_limit_per_minute
        )
        self.idempotency = IdempotencyStore(
            self.database, self.clock, digest_key=keyring.request_digest_key()
        )

    def current_catalogue(self) -> Catalogue:
        assert self.catalogue is not None
        return self.catalogue

    def jwks(self) -> dict[str, Any]:
        assert self.keyring is not None
        return dict(self.keyring.jwks())

    async def close(self, *, database: bool = True) -> None:
        await self.audit.close()
        await self.keys.close()
        if database:
            await self.database.close()
