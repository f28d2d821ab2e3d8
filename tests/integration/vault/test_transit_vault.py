"""The vault on a real OpenBao transit key: store, read, outage, recovery, refusals."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import httpx
import pytest

from api.runtime import Runtime, prepare_provider
from api.settings import Settings, load_settings
from tests.fixtures.openbao import OpenBaoServer
from tests.helpers.runtime import open_runtime
from tests.helpers.server import ServerProcess, clean_env, run_cli
from vault.clock import ManualClock
from vault.errors import KeyProviderUnavailable
from vault.models import Subject
from vault.service import Actor
from vault.storage import Database

pytestmark = pytest.mark.openbao
ISSUER = Actor("client", "nts")


def transit_settings(tmp_path: Path, bao: OpenBaoServer, **extra: str) -> Settings:
    flags = {
        "ONCEVAULT_KEY_PROVIDER": "transit",
        "VAULT_ADDR": bao.addr,
        "VAULT_TOKEN": bao.token,
        "ONCEVAULT_TRANSIT_KEY": extra.pop("key", "oncevault-" + secrets.token_hex(4)),
        "ONCEVAULT_DEK_CACHE_SECONDS": extra.pop("cache", "0"),
        "ONCEVAULT_KMS_TIMEOUT_SECONDS": "1",
        **extra,
    }
    return load_settings(flags, {}, data_dir_flag=str(tmp_path / "data"))


async def _transit_runtime(settings: Settings, database: Database) -> Runtime:
    runtime = await Runtime.open(
        settings, database=database, clock=ManualClock(), create=True, load_keys=False
    )
    await prepare_provider(settings, runtime.keys, runtime.ledger, create=True)
    await runtime.close(database=False)
    return await open_runtime(settings, database, ManualClock())


async def test_store_and_read_through_transit(
    openbao_dev: OpenBaoServer, database: Database, tmp_path: Path
) -> None:
    runtime = await _transit_runtime(transit_settings(tmp_path, openbao_dev), database)
    try:
        vault = runtime.vault
        assert vault is not None
        citizen = await vault.resolve(Subject.parse({"nid": "9001011234567"}))
        await vault.put(
            citizen_id=citizen,
            record_type="income_certificate",
            data={"year": 2025},
            source="nts",
            actor=ISSUER,
        )
        content, _ = await vault.read(
            citizen_id=citizen, record_type="income_certificate", actor=ISSUER
        )
        assert content.data == {"year": 2025}
        wrapped = await database.fetchrow("SELECT wrapped FROM deks")
        assert wrapped is not None and wrapped["wrapped"].startswith("vault:v1:")
        # Erasure ledger lives in KV v2 next to the key.
        await vault.erase(citizen_id=citizen, types=None, actor=ISSUER)
        assert any(e["citizen_id"] == citizen for e in await runtime.ledger.erasures())
    finally:
        await runtime.close(database=False)


async def test_outage_fails_closed_and_recovers_without_restart(
    openbao_raft: OpenBaoServer, database: Database, tmp_path: Path
) -> None:
    settings = transit_settings(tmp_path, openbao_raft)
    runtime = await _transit_runtime(settings, database)
    try:
        vault = runtime.vault
        assert vault is not None
        citizen = await vault.resolve(Subject.parse({"nid": "9001011234567"}))
        await vault.put(
            citizen_id=citizen, record_type="address", data={"a": 1}, source="citizen", actor=ISSUER
        )
        records = await database.fetch("SELECT record_id FROM records")
        size = (await runtime.audit.state()).size

        openbao_raft.kill()
        for attempt in (
            vault.read(citizen_id=citizen, record_type="address", actor=ISSUER),
            vault.put(
                citizen_id=citizen,
                record_type="address",
                data={"a": 2},
                source="citizen",
                actor=ISSUER,
            ),
            vault.put(
                citizen_id=citizen,
                record_type="bank_account",
                data={"b": 1},
                source="citizen",
                actor=ISSUER,
            ),
            runtime.keys.check(),
        ):
            started = time.monotonic()
            with pytest.raises(KeyProviderUnavailable):
                await attempt
            assert time.monotonic() - started < settings.kms_timeout_seconds + 1
        # Nothing half-written: no record, no DEK, no audit entry.
        assert await database.fetch("SELECT record_id FROM records") == records
        assert len(await database.fetch("SELECT dek_id FROM deks")) == 1
        assert (await runtime.audit.state()).size == size

        openbao_raft.restart()
        await runtime.keys.check()
        content, _ = await vault.read(citizen_id=citizen, record_type="address", actor=ISSUER)
        assert content.data == {"a": 1}
        result = await vault.put(
            citizen_id=citizen, record_type="address", data={"a": 2}, source="citizen", actor=ISSUER
        )
        assert result.version == 2
    finally:
        await runtime.close(database=False)


async def test_a_paused_provider_times_out(
    openbao_raft: OpenBaoServer, database: Database, tmp_path: Path
) -> None:
    settings = transit_settings(tmp_path, openbao_raft)
    runtime = await _transit_runtime(settings, database)
    try:
        vault = runtime.vault
        assert vault is not None
        citizen = await vault.resolve(Subject.parse({"nid": "9001011234567"}))
        await vault.put(
            citizen_id=citizen, record_type="address", data={"a": 1}, source="citizen", actor=ISSUER
        )
        openbao_raft.pause()
        try:
            started = time.monotonic()
            with pytest.raises(KeyProviderUnavailable):
                await vault.read(citizen_id=citizen, record_type="address", actor=ISSUER)
            elapsed = time.monotonic() - started
            assert settings.kms_timeout_seconds - 0.2 < elapsed < settings.kms_timeout_seconds + 1
        finally:
            openbao_raft.resume()
        await asyncio.sleep(0)
        content, _ = await vault.read(citizen_id=citizen, record_type="address", actor=ISSUER)
        assert content.data == {"a": 1}
    finally:
        await runtime.close(database=False)


def test_init_refuses_a_non_derived_key(openbao_dev: OpenBaoServer, tmp_path: Path) -> None:
    key = "plain-" + secrets.token_hex(4)
    openbao_dev.client().secrets.transit.create_key(name=key, key_type="aes256-gcm96")
    env = clean_env(
        ONCEVAULT_KEY_PROVIDER="transit",
        VAULT_ADDR=openbao_dev.addr,
        VAULT_TOKEN=openbao_dev.token,
        ONCEVAULT_TRANSIT_KEY=key,
    )
    result = run_cli("init", "--data-dir", str(tmp_path / "data"), env=env)
    assert result.returncode == 1
    assert key in result.stderr
    assert "derived" in result.stderr
    assert openbao_dev.token not in result.stderr


def test_serve_readyz_follows_the_provider(openbao_raft: OpenBaoServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = clean_env(
        ONCEVAULT_KEY_PROVIDER="transit",
        VAULT_ADDR=openbao_raft.addr,
        VAULT_TOKEN=openbao_raft.token,
        ONCEVAULT_KMS_TIMEOUT_SECONDS="1",
    )
    init = run_cli("init", "--data-dir", str(data_dir), env=env)
    assert init.returncode == 0, init.stderr
    assert not (data_dir / ".env").exists()  # not embedded: no development IdP
    with ServerProcess(data_dir, env=env) as server:
        assert httpx.get(server.base_url + "/readyz").status_code == 200
        openbao_raft.kill()
        started = time.monotonic()
        down = httpx.get(server.base_url + "/readyz", timeout=10)
        assert down.status_code == 503
        assert down.json()["code"] == "kms_unavailable"
        assert time.monotonic() - started < 2.5
        openbao_raft.restart()
        assert httpx.get(server.base_url + "/readyz", timeout=10).status_code == 200
