"""LocalKeyProvider and LocalLedger: KEK files, wrap, rotate, retire, ledger, checkpoints."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from vault import crypto
from vault.errors import DecryptionError, KeyProviderMisconfigured, KeyProviderUnavailable
from vault.keys import LocalKeyProvider, UnwrapRequest, WrapRequest
from vault.ledger import LocalLedger

AAD = crypto.wrap_aad("citizen-a", "address", 1)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def kek_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def provider(kek_dir: Path) -> LocalKeyProvider:
    return LocalKeyProvider.create(kek_dir)


# -- creation and permissions -------------------------------------------------


def test_create_writes_private_dir_and_first_kek(kek_dir: Path) -> None:
    LocalKeyProvider.create(kek_dir)
    assert _mode(kek_dir) == 0o700
    assert sorted(p.name for p in kek_dir.iterdir()) == ["kek.1"]
    assert _mode(kek_dir / "kek.1") == 0o600
    assert len((kek_dir / "kek.1").read_bytes()) == 32


def test_create_refuses_existing_kek_unless_reused(provider: LocalKeyProvider) -> None:
    kek = (provider.kek_dir / "kek.1").read_bytes()
    with pytest.raises(KeyProviderMisconfigured, match="already exists"):
        LocalKeyProvider.create(provider.kek_dir)
    reused = LocalKeyProvider.create(provider.kek_dir, reuse=True)
    assert reused.kek_dir == provider.kek_dir
    assert (provider.kek_dir / "kek.1").read_bytes() == kek


def test_load_without_kek_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    with pytest.raises(KeyProviderMisconfigured, match="no KEK"):
        LocalKeyProvider(empty)
    with pytest.raises(KeyProviderMisconfigured, match="does not exist"):
        LocalKeyProvider(tmp_path / "missing")


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o770, 0o777])
def test_loose_directory_is_refused_naming_it(provider: LocalKeyProvider, mode: int) -> None:
    provider.kek_dir.chmod(mode)
    with pytest.raises(KeyProviderMisconfigured) as caught:
        LocalKeyProvider(provider.kek_dir)
    assert str(provider.kek_dir) in str(caught.value)
    assert "0700" in str(caught.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_loose_kek_file_is_refused_naming_it(provider: LocalKeyProvider, mode: int) -> None:
    (provider.kek_dir / "kek.1").chmod(mode)
    with pytest.raises(KeyProviderMisconfigured) as caught:
        LocalKeyProvider(provider.kek_dir)
    assert str(provider.kek_dir / "kek.1") in str(caught.value)


def test_symlink_or_bad_size_kek_is_refused(provider: LocalKeyProvider, tmp_path: Path) -> None:
    (provider.kek_dir / "kek.2").symlink_to(provider.kek_dir / "kek.1")
    with pytest.raises(KeyProviderMisconfigured, match=r"kek\.2"):
        LocalKeyProvider(provider.kek_dir)
    (provider.kek_dir / "kek.2").unlink()
    short = provider.kek_dir / "kek.3"
    fd = os.open(short, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"short")
    os.close(fd)
    with pytest.raises(KeyProviderMisconfigured, match="not 32 bytes"):
        LocalKeyProvider(provider.kek_dir)


def test_create_refuses_loose_existing_dir(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    with pytest.raises(KeyProviderMisconfigured, match=re.escape(str(loose))):
        LocalKeyProvider.create(loose)


# -- wrap / unwrap ---------------------------------------------------------


async def test_wrap_unwrap_round_trip(provider: LocalKeyProvider) -> None:
    deks = [crypto.random_key() for _ in range(3)]
    wrapped = await provider.wrap([WrapRequest("citizen-a", dek, AAD) for dek in deks])
    assert all(w.startswith("local:v1:") for w in wrapped)
    assert len(set(wrapped)) == 3
    assert [provider.version_of(w) for w in wrapped] == [1, 1, 1]
    opened = await provider.unwrap([UnwrapRequest("citizen-a", w, AAD) for w in wrapped])
    assert opened == deks
    assert await provider.wrap([]) == []
    assert await provider.unwrap([]) == []


async def test_unwrap_with_wrong_aad_or_context_fails(provider: LocalKeyProvider) -> None:
    [wrapped] = await provider.wrap([WrapRequest("citizen-a", b"dek", AAD)])
    other_aad = crypto.wrap_aad("citizen-a", "address", 2)
    with pytest.raises(DecryptionError):
        await provider.unwrap([UnwrapRequest("citizen-a", wrapped, other_aad)])
    with pytest.raises(DecryptionError):
        await provider.unwrap([UnwrapRequest("citizen-b", wrapped, AAD)])


async def test_one_bad_item_fails_the_batch(provider: LocalKeyProvider) -> None:
    good, other = await provider.wrap(
        [WrapRequest("citizen-a", b"one", AAD), WrapRequest("citizen-a", b"two", AAD)]
    )
    tampered = other[:-2] + ("A" if other[-2] != "A" else "B") + other[-1]
    with pytest.raises(DecryptionError):
        await provider.unwrap(
            [UnwrapRequest("citizen-a", good, AAD), UnwrapRequest("citizen-a", tampered, AAD)]
        )


@pytest.mark.parametrize(
    "wrapped",
    ["", "local:v1:", "local:v0:AAAA", "local:1:AAAA", "vault:v1:AAAA", "local:v1:AA==", "x"],
)
async def test_malformed_wrapped_values_fail_opaquely(
    provider: LocalKeyProvider, wrapped: str
) -> None:
    with pytest.raises(DecryptionError) as caught:
        await provider.unwrap([UnwrapRequest("citizen-a", wrapped, AAD)])
    assert str(caught.value) == "decryption failed"


async def test_missing_version_is_a_decryption_error(provider: LocalKeyProvider) -> None:
    [wrapped] = await provider.wrap([WrapRequest("citizen-a", b"dek", AAD)])
    with pytest.raises(DecryptionError):
        await provider.unwrap([UnwrapRequest("citizen-a", wrapped.replace(":v1:", ":v7:"), AAD)])
    with pytest.raises(DecryptionError):
        provider.version_of("vault:v1:AAAA")


async def test_empty_context_is_refused(provider: LocalKeyProvider) -> None:
    with pytest.raises(ValueError, match="context"):
        await provider.wrap([WrapRequest("", b"dek", AAD)])


def test_wrap_request_repr_hides_plaintext() -> None:
    assert "secret-dek" not in repr(WrapRequest("citizen-a", b"secret-dek", AAD))


# -- rotation, rewrap, retirement -------------------------------------------


async def test_rotate_new_wraps_use_v2_and_v1_still_unwraps(provider: LocalKeyProvider) -> None:
    [old] = await provider.wrap([WrapRequest("citizen-a", b"old-dek", AAD)])
    assert await provider.rotate() == 2
    assert await provider.current_version() == 2
    assert _mode(provider.kek_dir / "kek.2") == 0o600
    [new] = await provider.wrap([WrapRequest("citizen-a", b"new-dek", AAD)])
    assert provider.version_of(old) == 1
    assert provider.version_of(new) == 2
    assert await provider.unwrap(
        [UnwrapRequest("citizen-a", old, AAD), UnwrapRequest("citizen-a", new, AAD)]
    ) == [b"old-dek", b"new-dek"]


async def test_rewrap_moves_to_current_version(provider: LocalKeyProvider) -> None:
    [old] = await provider.wrap([WrapRequest("citizen-a", b"dek", AAD)])
    await provider.rotate()
    [rewrapped] = await provider.rewrap([UnwrapRequest("citizen-a", old, AAD)])
    assert provider.version_of(rewrapped) == 2
    assert await provider.unwrap([UnwrapRequest("citizen-a", rewrapped, AAD)]) == [b"dek"]


async def test_retire_deletes_only_unreferenced_old_versions(provider: LocalKeyProvider) -> None:
    [v1] = await provider.wrap([WrapRequest("citizen-a", b"one", AAD)])
    await provider.rotate()
    [v2] = await provider.wrap([WrapRequest("citizen-a", b"two", AAD)])
    await provider.rotate()
    await provider.rotate()  # current: 4

    assert await provider.retire({2}) == [1, 3]

    assert sorted(p.name for p in provider.kek_dir.iterdir()) == ["kek.2", "kek.4"]
    assert await provider.unwrap([UnwrapRequest("citizen-a", v2, AAD)]) == [b"two"]
    with pytest.raises(DecryptionError):
        await provider.unwrap([UnwrapRequest("citizen-a", v1, AAD)])
    assert await provider.retire(set()) == [2]  # the current version always stays
    assert await provider.retire(set()) == []
    assert sorted(p.name for p in provider.kek_dir.iterdir()) == ["kek.4"]


async def test_other_process_rotation_and_retirement_are_seen(provider: LocalKeyProvider) -> None:
    other = LocalKeyProvider(provider.kek_dir)
    [v1] = await provider.wrap([WrapRequest("citizen-a", b"dek", AAD)])
    await other.rotate()
    [v2] = await provider.wrap([WrapRequest("citizen-a", b"dek2", AAD)])
    assert provider.version_of(v2) == 2  # picked up without reloading
    await other.retire(set())
    with pytest.raises(DecryptionError):
        await provider.unwrap([UnwrapRequest("citizen-a", v1, AAD)])
    await provider.check()
    await provider.close()


# -- ledger ----------------------------------------------------------------


async def test_ledger_append_and_read_in_order(provider: LocalKeyProvider) -> None:
    ledger = LocalLedger(provider.kek_dir)
    assert await ledger.erasures() == []
    entries = [
        {"citizen_id": f"c-{i}", "types": ["address", "phone"], "at": 1_700_000_000 + i}
        for i in range(3)
    ]
    for entry in entries:
        await ledger.append_erasure(entry)
    assert await ledger.erasures() == entries
    assert _mode(ledger.path) == 0o600
    lines = ledger.path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert json.loads(lines[0]) == entries[0]
    LocalKeyProvider(provider.kek_dir)  # the ledger file does not upset the KEK dir check


async def test_ledger_skips_torn_last_line_and_next_append_cuts_it(
    provider: LocalKeyProvider,
) -> None:
    ledger = LocalLedger(provider.kek_dir)
    await ledger.append_erasure({"citizen_id": "c-1", "types": ["a"], "at": 1})
    with ledger.path.open("ab") as file:
        file.write(b'{"citizen_id":"c-2","ty')  # a crash in the middle of an append
    assert await ledger.erasures() == [{"at": 1, "citizen_id": "c-1", "types": ["a"]}]

    await ledger.append_erasure({"citizen_id": "c-3", "types": ["b"], "at": 3})

    assert [e["citizen_id"] for e in await ledger.erasures()] == ["c-1", "c-3"]
    assert b"c-2" not in ledger.path.read_bytes()


async def test_ledger_torn_only_line_and_corrupt_complete_line(provider: LocalKeyProvider) -> None:
    ledger = LocalLedger(provider.kek_dir)
    fd = os.open(ledger.path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"torn"')
    os.close(fd)
    assert await ledger.erasures() == []
    await ledger.append_erasure({"citizen_id": "c-1", "types": [], "at": 1})
    assert len(await ledger.erasures()) == 1

    with ledger.path.open("ab") as file:
        file.write(b"not json\n")
    with pytest.raises(KeyProviderMisconfigured, match="line 2 is corrupt"):
        await ledger.erasures()


async def test_ledger_refuses_unserialisable_entry_and_loose_file(
    provider: LocalKeyProvider,
) -> None:
    ledger = LocalLedger(provider.kek_dir)
    with pytest.raises(ValueError, match="JSON"):
        await ledger.append_erasure({"at": object()})
    await ledger.append_erasure({"citizen_id": "c-1", "types": [], "at": 1})
    ledger.path.chmod(0o644)
    with pytest.raises(KeyProviderMisconfigured, match=r"erasures\.jsonl"):
        await ledger.erasures()
    with pytest.raises(KeyProviderMisconfigured, match=r"erasures\.jsonl"):
        LocalKeyProvider(provider.kek_dir)


# -- checkpoint copies ------------------------------------------------------


async def test_checkpoint_write_read_replace(provider: LocalKeyProvider) -> None:
    ledger = LocalLedger(provider.kek_dir)
    assert await ledger.read_checkpoint("audit-latest") is None
    await ledger.write_checkpoint("audit-latest", b"first")
    assert await ledger.read_checkpoint("audit-latest") == b"first"
    await ledger.write_checkpoint("audit-latest", b"second \x00\xff")
    assert await ledger.read_checkpoint("audit-latest") == b"second \x00\xff"

    assert _mode(ledger.checkpoint_dir) == 0o700
    assert _mode(ledger.checkpoint_dir / "audit-latest") == 0o600
    assert [p.name for p in ledger.checkpoint_dir.iterdir()] == ["audit-latest"]  # no tmp left
    LocalKeyProvider(provider.kek_dir)


async def test_checkpoint_write_is_atomic_on_failure(
    provider: LocalKeyProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = LocalLedger(provider.kek_dir)
    await ledger.write_checkpoint("cp", b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(KeyProviderUnavailable, match="not writable"):
        await ledger.write_checkpoint("cp", b"new")
    monkeypatch.undo()

    assert await ledger.read_checkpoint("cp") == b"old"
    assert [p.name for p in ledger.checkpoint_dir.iterdir()] == ["cp"]


@pytest.mark.parametrize("name", ["", "../kek.1", ".hidden", "a/b", "x" * 129])
async def test_checkpoint_names_are_restricted(provider: LocalKeyProvider, name: str) -> None:
    ledger = LocalLedger(provider.kek_dir)
    with pytest.raises(ValueError, match="checkpoint name"):
        await ledger.write_checkpoint(name, b"x")
    with pytest.raises(ValueError, match="checkpoint name"):
        await ledger.read_checkpoint(name)
