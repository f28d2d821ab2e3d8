"""The erasure ledger and checkpoint copies, kept with the key provider, outside the database.

Ledger (Protocol)
├── LocalLedger     ``erasures.jsonl`` and ``checkpoints/<name>`` in the KEK directory
└── TransitLedger   KV v2 entries under ``secret/oncevault/`` next to the transit key

An erasure is appended here *before* the database transaction that shreds it, so
a database restored from an older backup can be brought back in line at start-up
(every ledger entry the database still lacks is re-applied). Audit checkpoints
copied here let ``audit verify`` detect a truncated audit log.

Entries are JSON objects (``{citizen_id, types, at}``); they hold identifiers, not
plaintext personal data, and are read back in append order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import hvac.exceptions

from vault.errors import KeyProviderMisconfigured, KeyProviderUnavailable
from vault.keys import TransitKeyProvider, check_private_dir, fsync_dir

__all__ = ["Ledger", "LocalLedger", "TransitLedger"]

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PRIVATE_BITS: Final = stat.S_IRWXG | stat.S_IRWXO
_TAIL_CHUNK: Final = 4096


class Ledger(Protocol):
    """Append-only erasure ledger plus named checkpoint copies."""

    async def append_erasure(self, entry: Mapping[str, object]) -> None:
        """Durably append one erasure; returns only once it is on stable storage.

        Raises:
            ValueError: ``entry`` is not JSON-serialisable.
            KeyProviderUnavailable: the store cannot be written now.
        """
        ...

    async def erasures(self) -> list[dict[str, Any]]:
        """Every erasure, oldest first."""
        ...

    async def write_checkpoint(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name``, replacing any previous copy atomically."""
        ...

    async def read_checkpoint(self, name: str) -> bytes | None:
        """The copy stored under ``name``, or None."""
        ...


def _entry_json(entry: Mapping[str, object]) -> str:
    """Canonical one-line JSON of an entry (``\\n`` inside strings is escaped)."""
    try:
        return json.dumps(
            dict(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"erasure entry is not JSON-serialisable: {exc}") from None


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError("checkpoint name must be 1-128 of [A-Za-z0-9._-], not starting with . - _")
    return name


# --------------------------------------------------------------------------
# Local: files in the KEK directory
# --------------------------------------------------------------------------


def _end_of_last_line(fd: int, size: int) -> int:
    """Offset just after the last ``\\n`` in the first ``size`` bytes of ``fd`` (0 if none)."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


class LocalLedger:
    """``erasures.jsonl`` (fsynced appends under ``flock``) and checkpoint files in ``kek_dir``.

    A crash in the middle of an append leaves a torn last line without its
    newline. That erasure was never acknowledged (the shredding transaction runs
    only after the append returns), so reads skip it and the next append cuts it off.
    """

    def __init__(self, kek_dir: Path) -> None:
        """Use the ledger in ``kek_dir``, which must be a private (0700) directory.

        Raises:
            KeyProviderMisconfigured: the directory or a file in it is not private.
        """
        check_private_dir(kek_dir)
        self.kek_dir = kek_dir
        self.path = kek_dir / "erasures.jsonl"
        self.checkpoint_dir = kek_dir / "checkpoints"

    # -- erasures ----------------------------------------------------------

    def _refuse_loose(self, st: os.stat_result, path: Path) -> None:
        if not stat.S_ISREG(st.st_mode) or st.st_mode & _PRIVATE_BITS:
            raise KeyProviderMisconfigured(
                f"{path} is accessible to group or others or is not a regular file "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); it must be 0600"
            )

    def _append(self, line: bytes) -> None:
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        created = True
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            created = False
            fd = os.open(self.path, flags)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # serialise appends of several workers
            st = os.fstat(fd)
            self._refuse_loose(st, self.path)
            if st.st_size:
                keep = _end_of_last_line(fd, st.st_size)
                if keep != st.st_size:  # a torn, unacknowledged line: cut it off
                    os.ftruncate(fd, keep)
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)  # also releases the lock
        if created:
            fsync_dir(self.kek_dir)

    async def append_erasure(self, entry: Mapping[str, object]) -> None:
        line = (_entry_json(entry) + "\n").encode("utf-8")
        try:
            await asyncio.to_thread(self._append, line)
        except OSError as exc:
            raise KeyProviderUnavailable(
                f"erasure ledger {self.path} not writable: {exc.strerror}"
            ) from None

    def _read(self) -> bytes | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            self._refuse_loose(os.fstat(fd), self.path)
            with os.fdopen(os.dup(fd), "rb") as file:
                return file.read()
        finally:
            os.close(fd)

    async def erasures(self) -> list[dict[str, Any]]:
        """Every complete line, in order; a torn last line (no newline) is skipped.

        Raises:
            KeyProviderMisconfigured: a complete line is not a JSON object (corruption).
            KeyProviderUnavailable: the file cannot be read.
        """
        try:
            data = await asyncio.to_thread(self._read)
        except OSError as exc:
            raise KeyProviderUnavailable(
                f"erasure ledger {self.path} not readable: {exc.strerror}"
            ) from None
        if not data:
            return []
        lines = data.split(b"\n")
        lines.pop()  # after the last newline: b"" or a torn line
        entries: list[dict[str, Any]] = []
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not isinstance(entry, dict):
                raise KeyProviderMisconfigured(
                    f"erasure ledger {self.path}: line {number} is corrupt"
                )
            entries.append(entry)
        return entries

    # -- checkpoints -------------------------------------------------------

    def _write_checkpoint(self, name: str, data: bytes) -> None:
        if not self.checkpoint_dir.exists():
            with contextlib.suppress(FileExistsError):
                self.checkpoint_dir.mkdir(mode=0o700)
                self.checkpoint_dir.chmod(0o700)
                fsync_dir(self.kek_dir)
        final = self.checkpoint_dir / name
        tmp = self.checkpoint_dir / f".{name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(self.checkpoint_dir)

    async def write_checkpoint(self, name: str, data: bytes) -> None:
        """Write to a temporary file, fsync, rename over ``checkpoints/<name>``, fsync the dir."""
        _check_name(name)
        try:
            await asyncio.to_thread(self._write_checkpoint, name, bytes(data))
        except OSError as exc:
            raise KeyProviderUnavailable(
                f"checkpoint copy in {self.checkpoint_dir} not writable: {exc.strerror}"
            ) from None

    def _read_checkpoint(self, name: str) -> bytes | None:
        path = self.checkpoint_dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            self._refuse_loose(os.fstat(fd), path)
            with os.fdopen(os.dup(fd), "rb") as file:
                return file.read()
        finally:
            os.close(fd)

    async def read_checkpoint(self, name: str) -> bytes | None:
        _check_name(name)
        try:
            return await asyncio.to_thread(self._read_checkpoint, name)
        except OSError as exc:
            raise KeyProviderUnavailable(
                f"checkpoint copy in {self.checkpoint_dir} not readable: {exc.strerror}"
            ) from None


# --------------------------------------------------------------------------
# Transit: KV v2 next to the transit key
# --------------------------------------------------------------------------


class TransitLedger:
    """One KV v2 entry per erasure at ``<mount>/<prefix>/erasures/<ns timestamp>-<random>``.

    Checkpoint copies live at ``<mount>/<prefix>/checkpoints/<name>``. Calls go
    through the transit provider's pool, timeout and error mapping. The KV v2
    mount is the operator's to create (a real server has none): :meth:`check_mount`
    refuses, naming it, when it is missing.
    """

    def __init__(
        self, provider: TransitKeyProvider, *, mount: str = "secret", prefix: str = "oncevault"
    ) -> None:
        self._provider = provider
        self.mount = mount.strip("/")
        self.prefix = prefix.strip("/")

    def _missing_mount(self) -> KeyProviderMisconfigured:
        return KeyProviderMisconfigured(
            f"no KV v2 mount at {self.mount}/ on {self._provider.addr} (or this token cannot "
            f"use it); the operator must create it: bao secrets enable -path={self.mount} "
            "-version=2 kv"
        )

    def _not_found(self, exc: Any) -> None:
        """Re-raise a 404 that means "no such mount"; return for "no such entry"."""
        if exc.errors:  # 'no handler for route "<mount>/..."'
            raise self._missing_mount() from None

    async def check_mount(self) -> None:
        """Refuse a missing or non-KV-v2 ``<mount>/``.

        Raises:
            KeyProviderMisconfigured: naming the mount.
            KeyProviderUnavailable: the server did not answer.
        """

        def mount_info(client: Any) -> dict[str, Any]:
            try:
                info: dict[str, Any] = client.adapter.get(
                    f"/v1/sys/internal/ui/mounts/{self.mount}"
                )["data"]
            except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidPath):
                # OpenBao answers 403 "preflight capability check" for a missing mount.
                raise self._missing_mount() from None
            return info

        info = await self._provider.call("KV mount lookup", mount_info)
        options = info.get("options") or {}
        if (
            info.get("path") != f"{self.mount}/"
            or info.get("type") != "kv"
            or str(options.get("version")) != "2"
        ):
            raise KeyProviderMisconfigured(
                f"{self.mount}/ is not a KV version 2 mount (type {info.get('type')!r}, "
                f"version {options.get('version')!r}); the erasure ledger needs KV v2"
            )

    async def append_erasure(self, entry: Mapping[str, object]) -> None:
        """Write a new entry (``cas=0``: never overwrites) named by time, then randomness."""
        secret = json.loads(_entry_json(entry))
        path = f"{self.prefix}/erasures/{time.time_ns():020d}-{secrets.token_hex(8)}"

        def write(client: Any) -> None:
            try:
                client.secrets.kv.v2.create_or_update_secret(
                    path, secret=secret, cas=0, mount_point=self.mount
                )
            except hvac.exceptions.InvalidPath as exc:
                self._not_found(exc)
                raise

        await self._provider.call("erasure ledger append", write)

    async def erasures(self) -> list[dict[str, Any]]:
        """List the entries, then read them (at most ``max_workers`` at a time), sorted by name."""

        def list_keys(client: Any) -> list[str]:
            try:
                keys = client.secrets.kv.v2.list_secrets(
                    f"{self.prefix}/erasures", mount_point=self.mount
                )["data"]["keys"]
            except hvac.exceptions.InvalidPath as exc:
                self._not_found(exc)
                return []  # nothing erased yet
            return [k for k in keys if isinstance(k, str) and not k.endswith("/")]

        names = sorted(await self._provider.call("erasure ledger list", list_keys))
        entries: list[dict[str, Any]] = []
        step = self._provider.max_workers
        for start in range(0, len(names), step):
            chunk = names[start : start + step]
            results = await asyncio.gather(
                *(self._read_entry(name) for name in chunk), return_exceptions=True
            )
            for result in results:  # every read has finished: no task is left behind
                if isinstance(result, BaseException):
                    raise result
                entries.append(result)
        return entries

    async def _read_entry(self, name: str) -> dict[str, Any]:
        path = f"{self.prefix}/erasures/{name}"

        def read(client: Any) -> dict[str, Any]:
            try:
                data = client.secrets.kv.v2.read_secret_version(
                    path, mount_point=self.mount, raise_on_deleted_version=True
                )["data"]["data"]
            except hvac.exceptions.InvalidPath as exc:
                self._not_found(exc)
                raise KeyProviderMisconfigured(
                    f"erasure ledger entry {self.mount}/{path} was listed but cannot be read "
                    "(deleted?)"
                ) from None
            if not isinstance(data, dict):
                raise KeyProviderMisconfigured(
                    f"erasure ledger entry {self.mount}/{path} is corrupt"
                )
            return data

        return await self._provider.call("erasure ledger read", read)

    async def write_checkpoint(self, name: str, data: bytes) -> None:
        """A new KV version of ``checkpoints/<name>`` (each KV write is atomic)."""
        path = f"{self.prefix}/checkpoints/{_check_name(name)}"
        secret = {"data": base64.b64encode(data).decode("ascii")}

        def write(client: Any) -> None:
            try:
                client.secrets.kv.v2.create_or_update_secret(
                    path, secret=secret, mount_point=self.mount
                )
            except hvac.exceptions.InvalidPath as exc:
                self._not_found(exc)
                raise

        await self._provider.call("checkpoint copy write", write)

    async def read_checkpoint(self, name: str) -> bytes | None:
        path = f"{self.prefix}/checkpoints/{_check_name(name)}"

        def read(client: Any) -> str | None:
            try:
                data = client.secrets.kv.v2.read_secret_version(
                    path, mount_point=self.mount, raise_on_deleted_version=True
                )["data"]["data"]
            except hvac.exceptions.InvalidPath as exc:
                self._not_found(exc)
                return None
            value = data.get("data") if isinstance(data, dict) else None
            if not isinstance(value, str):
                raise KeyProviderMisconfigured(f"checkpoint copy {self.mount}/{path} is corrupt")
            return value

        encoded = await self._provider.call("checkpoint copy read", read)
        if encoded is None:
            return None
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise KeyProviderMisconfigured(
                f"checkpoint copy {self.mount}/{path} is corrupt"
            ) from None
