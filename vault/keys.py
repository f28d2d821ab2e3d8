"""Key providers: the key-encryption keys (KEKs) that wrap every DEK and platform secret.

KeyProvider (Protocol)
├── LocalKeyProvider     ``kek.<n>`` files of 32 random bytes in a 0700 directory
└── TransitKeyProvider   an OpenBao/Vault transit key (``aes256-gcm96``, derived) through hvac

A wrapped value is a ``str`` that names its KEK version:

- local: ``local:v<n>:<base64url of crypto.seal(kek, plaintext, aad')>``, where
  ``aad'`` binds the wrap context too (see :meth:`LocalKeyProvider.wrap`);
- transit: the ``vault:v<n>:...`` ciphertext exactly as the server returns it.

Errors (all from :mod:`vault.errors`; no hvac, requests or OS exception escapes):

- :class:`DecryptionError`: a value did not unwrap (wrong context, wrong
  associated data, tampered, unknown or retired version). One failing item
  fails the whole batch.
- :class:`KeyProviderUnavailable`: no answer within the timeout, connection
  refused, sealed or failing server, a refused token, an unreadable KEK
  directory. Callers fail closed (503).
- :class:`KeyProviderMisconfigured`: the provider answered but its key, mount
  or files are missing or unsafe.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import hvac
import hvac.exceptions
import requests

from vault import crypto
from vault.errors import (
    DecryptionError,
    KeyProviderMisconfigured,
    KeyProviderUnavailable,
    OncevaultError,
)

__all__ = [
    "KeyProvider",
    "LocalKeyProvider",
    "TransitKeyProvider",
    "UnwrapRequest",
    "WrapRequest",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WrapRequest:
    """One secret to wrap. ``context`` is the citizen id, or ``"platform"`` for platform secrets."""

    context: str
    plaintext: bytes = field(repr=False)
    aad: bytes


@dataclass(frozen=True, slots=True)
class UnwrapRequest:
    """One wrapped value to open with the ``context`` and ``aad`` it was wrapped with."""

    context: str
    wrapped: str
    aad: bytes


class KeyProvider(Protocol):
    """Where the KEK lives. Every method fails closed with a :mod:`vault.errors` error."""

    name: str
    """``"local"`` or ``"transit"``."""

    async def wrap(self, items: Sequence[WrapRequest]) -> list[str]:
        """Wrap each plaintext with the current KEK version, in order."""
        ...

    async def unwrap(self, items: Sequence[UnwrapRequest]) -> list[bytes]:
        """Unwrap each value, in order.

        Raises:
            DecryptionError: any item fails (the whole batch fails).
            KeyProviderUnavailable: transport failure or timeout.
        """
        ...

    async def rewrap(self, items: Sequence[UnwrapRequest]) -> list[str]:
        """Unwrap each value and wrap it again with the current KEK version."""
        ...

    async def check(self) -> None:
        """Readiness probe: the KEK is reachable and usable.

        Raises:
            KeyProviderUnavailable: not reachable.
            KeyProviderMisconfigured: reachable, but the key is missing or unsafe.
        """
        ...

    async def rotate(self) -> int:
        """Create a new KEK version, which wraps from now on; return it."""
        ...

    def version_of(self, wrapped: str) -> int:
        """The KEK version of a wrapped value (:class:`DecryptionError` when malformed)."""
        ...

    async def current_version(self) -> int:
        """The KEK version that wraps now."""
        ...

    async def retire(self, referenced: set[int]) -> list[int]:
        """Make versions older than needed unusable; return the versions retired."""
        ...

    async def close(self) -> None:
        """Release threads, connections and in-memory keys."""
        ...


def _require_context(context: str) -> None:
    if not context:
        raise ValueError("a wrap context (citizen id or 'platform') is required")


def _parse_wrapped(pattern: re.Pattern[str], wrapped: str) -> tuple[int, str]:
    match = pattern.fullmatch(wrapped) if isinstance(wrapped, str) else None
    if match is None:
        raise DecryptionError
    return int(match.group(1)), match.group(2)


# --------------------------------------------------------------------------
# Local: KEK files
# --------------------------------------------------------------------------

_KEK_FILE: Final = re.compile(r"kek\.([1-9][0-9]{0,8})")
_LOCAL_WRAPPED: Final = re.compile(r"local:v([1-9][0-9]{0,8}):([A-Za-z0-9_-]+)")
_LOCAL_WRAP_LABEL: Final = "oncevault/kek-local/v1"
_PRIVATE_BITS: Final = stat.S_IRWXG | stat.S_IRWXO


def fsync_dir(path: Path) -> None:
    """fsync a directory so a file created, renamed or deleted in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_private_dir(path: Path) -> None:
    """Refuse a KEK directory that is missing, not a directory or group/world-accessible.

    Every entry in it must be private too (mode ``0600``/``0700``; symlinks are refused).

    Raises:
        KeyProviderMisconfigured: naming the offending path.
        KeyProviderUnavailable: the directory cannot be read.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyProviderMisconfigured(f"KEK directory {path} does not exist") from None
    except OSError as exc:
        raise KeyProviderUnavailable(f"KEK directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise KeyProviderMisconfigured(f"KEK directory {path} is not a directory")
    if st.st_mode & _PRIVATE_BITS:
        raise KeyProviderMisconfigured(
            f"KEK directory {path} is accessible to group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); it must be 0700"
        )
    try:
        entries = list(os.scandir(path))
    except OSError as exc:
        raise KeyProviderUnavailable(f"KEK directory {path}: {exc.strerror}") from None
    for entry in entries:
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except FileNotFoundError:
            continue  # removed meanwhile (a retired KEK, a renamed temporary file)
        if stat.S_ISLNK(mode) or mode & _PRIVATE_BITS:
            raise KeyProviderMisconfigured(
                f"{entry.path} is accessible to group or others or is a symlink "
                f"(mode {stat.S_IMODE(mode):04o}); KEK files must be 0600"
            )


def _write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` (O_EXCL, 0600), write ``data`` and fsync it; raises FileExistsError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)


class LocalKeyProvider:
    """KEK versions as ``kek.<n>`` files in a private directory; the highest ``n`` wraps.

    The directory is re-listed before every operation, so a rotation or retirement
    by another process (``oncevault keys rotate --kek``) is seen at once: a new
    version is picked up, a deleted one is dropped from memory.
    """

    name: str = "local"

    def __init__(self, kek_dir: Path) -> None:
        """Load the KEKs in ``kek_dir``.

        Raises:
            KeyProviderMisconfigured: the directory or a file in it is group/world-
                accessible, a KEK file is malformed, or there is no KEK at all.
        """
        self.kek_dir = kek_dir
        self._keys: dict[int, bytes] = {}
        check_private_dir(kek_dir)
        self._refresh()
        if not self._keys:
            raise KeyProviderMisconfigured(f"no KEK (kek.<n>) in {kek_dir}; run init first")

    @classmethod
    def create(cls, kek_dir: Path, *, reuse: bool = False) -> LocalKeyProvider:
        """Create ``kek_dir`` (0700) with a first KEK ``kek.1`` (0600), for ``init``.

        Raises:
            KeyProviderMisconfigured: a KEK already exists and ``reuse`` is false, an
                existing directory is not private, or the directory cannot be written.
        """
        try:
            return cls._create(kek_dir, reuse=reuse)
        except OSError as exc:
            raise KeyProviderMisconfigured(
                f"cannot create a KEK in {kek_dir}: {exc.strerror}"
            ) from None

    @classmethod
    def _create(cls, kek_dir: Path, *, reuse: bool) -> LocalKeyProvider:
        if kek_dir.exists():
            check_private_dir(kek_dir)
            if any(_KEK_FILE.fullmatch(p.name) for p in kek_dir.iterdir()):
                if reuse:
                    return cls(kek_dir)
                raise KeyProviderMisconfigured(
                    f"a KEK already exists in {kek_dir}; refusing to create another"
                )
        else:
            kek_dir.mkdir(mode=0o700, parents=True)
            kek_dir.chmod(0o700)  # mkdir's mode is filtered by the umask
            fsync_dir(kek_dir.parent)
        _write_new_file(kek_dir / "kek.1", crypto.random_key())
        fsync_dir(kek_dir)
        return cls(kek_dir)

    # -- KEK files -------------------------------------------------------

    def _load(self, path: Path) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise KeyProviderMisconfigured(f"KEK file {path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_mode & _PRIVATE_BITS:
                raise KeyProviderMisconfigured(
                    f"KEK file {path} is accessible to group or others or is not a "
                    f"regular file (mode {stat.S_IMODE(st.st_mode):04o}); it must be 0600"
                )
            data = os.read(fd, crypto.KEY_SIZE + 1)
        except OSError as exc:
            raise KeyProviderUnavailable(f"KEK file {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        if len(data) != crypto.KEY_SIZE:
            raise KeyProviderMisconfigured(f"KEK file {path} is not {crypto.KEY_SIZE} bytes")
        return data

    def _fsync_dir(self) -> None:
        try:
            fsync_dir(self.kek_dir)
        except OSError as exc:
            raise KeyProviderUnavailable(f"KEK directory {self.kek_dir}: {exc.strerror}") from None

    def _refresh(self) -> None:
        """Sync the in-memory KEKs with the directory: load new versions, drop deleted ones."""
        try:
            names = [entry.name for entry in self.kek_dir.iterdir()]
        except OSError as exc:
            raise KeyProviderUnavailable(f"KEK directory {self.kek_dir}: {exc.strerror}") from None
        present: set[int] = set()
        for name in names:
            match = _KEK_FILE.fullmatch(name)
            if match is None:
                continue
            version = int(match.group(1))
            present.add(version)
            if version not in self._keys:
                self._keys[version] = self._load(self.kek_dir / name)
        for version in set(self._keys) - present:
            del self._keys[version]

    def _current(self) -> tuple[int, bytes]:
        self._refresh()
        if not self._keys:
            raise KeyProviderUnavailable(f"no KEK left in {self.kek_dir}")
        version = max(self._keys)
        return version, self._keys[version]

    def _key(self, version: int) -> bytes:
        key = self._keys.get(version)
        if key is None:
            raise DecryptionError  # retired or never existed
        return key

    @staticmethod
    def _aad(context: str, aad: bytes) -> bytes:
        # Bind the context as transit does through key derivation, so a value
        # wrapped for one citizen never opens under another on either provider.
        return crypto.encode_aad(_LOCAL_WRAP_LABEL, context, aad)

    # -- KeyProvider -----------------------------------------------------

    async def wrap(self, items: Sequence[WrapRequest]) -> list[str]:
        """Seal each plaintext under the current KEK, binding ``context`` and ``aad``."""
        for item in items:
            _require_context(item.context)
        version, kek = self._current()
        return [
            f"local:v{version}:"
            + crypto.b64url_encode(
                crypto.seal(kek, item.plaintext, self._aad(item.context, item.aad))
            )
            for item in items
        ]

    async def unwrap(self, items: Sequence[UnwrapRequest]) -> list[bytes]:
        """Open each value with the KEK version named in its prefix.

        Raises:
            DecryptionError: any item is malformed, of a missing version, or fails to open.
        """
        self._refresh()  # one listdir per batch: a version retired elsewhere stops at once
        out: list[bytes] = []
        for item in items:
            version, body = _parse_wrapped(_LOCAL_WRAPPED, item.wrapped)
            try:
                sealed = crypto.b64url_decode(body)
            except ValueError:
                raise DecryptionError from None
            out.append(crypto.open_(self._key(version), sealed, self._aad(item.context, item.aad)))
        return out

    async def rewrap(self, items: Sequence[UnwrapRequest]) -> list[str]:
        plaintexts = await self.unwrap(items)
        return await self.wrap(
            [
                WrapRequest(context=item.context, plaintext=plaintext, aad=item.aad)
                for item, plaintext in zip(items, plaintexts, strict=True)
            ]
        )

    async def check(self) -> None:
        self._current()

    async def rotate(self) -> int:
        """Write ``kek.<n+1>`` (O_EXCL, fsynced) and return ``n+1``."""
        for _ in range(100):
            version = self._current()[0] + 1
            try:
                _write_new_file(self.kek_dir / f"kek.{version}", crypto.random_key())
                self._fsync_dir()
            except FileExistsError:
                continue  # another process rotated at the same moment: take the next one
            except OSError as exc:
                raise KeyProviderUnavailable(
                    f"cannot write a KEK in {self.kek_dir}: {exc.strerror}"
                ) from None
            self._refresh()
            return version
        raise KeyProviderUnavailable(
            f"cannot rotate the KEK in {self.kek_dir}: too much contention"
        )

    def version_of(self, wrapped: str) -> int:
        return _parse_wrapped(_LOCAL_WRAPPED, wrapped)[0]

    async def current_version(self) -> int:
        return self._current()[0]

    async def retire(self, referenced: set[int]) -> list[int]:
        """Delete every ``kek.<n>`` that is neither referenced nor current; return those n.

        Each file is overwritten with zeros and fsynced before it is unlinked (best
        effort: copy-on-write or journalling filesystems may keep old blocks).
        """
        current = self._current()[0]
        retired = sorted(v for v in self._keys if v != current and v not in referenced)
        for version in retired:
            path = self.kek_dir / f"kek.{version}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                try:
                    os.write(fd, bytes(crypto.KEY_SIZE))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                path.unlink()
            except FileNotFoundError:
                pass  # retired by another process meanwhile
            except OSError as exc:
                raise KeyProviderUnavailable(f"cannot delete {path}: {exc.strerror}") from None
            self._keys.pop(version, None)
        if retired:
            self._fsync_dir()
        return retired

    async def close(self) -> None:
        self._keys.clear()


# --------------------------------------------------------------------------
# Transit: OpenBao / Vault
# --------------------------------------------------------------------------

_TRANSIT_WRAPPED: Final = re.compile(r"vault:v([1-9][0-9]{0,8}):([A-Za-z0-9+/=]+)")
_PATH_SEGMENT: Final = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")
_KEY_TYPE: Final = "aes256-gcm96"

# hvac exceptions meaning "the server is there but cannot serve now".
_SERVER_DOWN: Final = (
    hvac.exceptions.VaultDown,  # 503: sealed or standby without a leader
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.RateLimitExceeded,
    hvac.exceptions.VaultNotInitialized,
    hvac.exceptions.UnexpectedError,
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _KeyNotFound(KeyProviderMisconfigured):
    """The transit mount is there but the key is not (``ensure_key`` may create it)."""


def _check_path(value: str, what: str) -> str:
    if not _PATH_SEGMENT.fullmatch(value) or ".." in value.split("/"):
        raise KeyProviderMisconfigured(f"invalid transit {what} {value!r}")
    return value


class TransitKeyProvider:
    """A transit key (``aes256-gcm96``, ``derived=true``) on OpenBao or HashiCorp Vault.

    hvac is synchronous: every call runs in a bounded thread pool under
    ``asyncio.timeout(timeout_seconds)`` (hvac gets the same timeout for each socket
    operation), so a hung server costs a caller at most ``timeout_seconds``. The
    provider object survives an outage: once the server is back (and unsealed),
    calls succeed again without restarting anything on our side.

    Rewrap does not use ``transit/rewrap``: that endpoint takes no associated data
    (measured on OpenBao 2.7: every AAD-bound value fails with "message
    authentication failed"), so :meth:`rewrap` is a batch decrypt plus a batch encrypt.
    """

    name: str = "transit"

    def __init__(
        self,
        addr: str,
        token: str,
        *,
        key_name: str = "oncevault",
        mount: str = "transit",
        timeout_seconds: float = 2.0,
        max_workers: int = 8,
        verify: bool | str = True,
    ) -> None:
        if not token:
            raise KeyProviderMisconfigured("transit provider needs a token")
        if timeout_seconds <= 0 or max_workers < 1:
            raise ValueError("timeout_seconds must be > 0 and max_workers >= 1")
        self.addr = addr
        self.key_name = _check_path(key_name, "key name")
        self.mount = _check_path(mount, "mount")
        self.timeout_seconds = timeout_seconds
        self.max_workers = max_workers
        self._client = hvac.Client(url=addr, token=token, timeout=timeout_seconds, verify=verify)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="oncevault-kms")
        self._closed = False

    # -- running hvac ----------------------------------------------------

    async def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(hvac_client)`` in the pool within the timeout; map every failure.

        ``fn`` may raise a :class:`~vault.errors.OncevaultError` itself (it passes
        through). Otherwise: no answer in time, a refused connection, 5xx, 429,
        401/403 -> :class:`KeyProviderUnavailable`; 400/404 -> :class:`KeyProviderMisconfigured`.
        ``what`` names the operation in messages; it must not contain personal data.
        """
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._pool, fn, self._client)
        except RuntimeError:  # the pool is shut down
            raise KeyProviderUnavailable("transit provider is closed") from None
        try:
            # A call still queued for a worker when the time is up is cancelled; one
            # already running finishes in its thread within hvac's own timeout.
            return await asyncio.wait_for(future, self.timeout_seconds)
        except OncevaultError:
            raise
        except TimeoutError:
            raise KeyProviderUnavailable(
                f"transit {what}: no answer from {self.addr} within {self.timeout_seconds:g} s"
            ) from None
        except requests.RequestException as exc:
            raise KeyProviderUnavailable(
                f"transit {what}: {self.addr} unreachable ({type(exc).__name__})"
            ) from None
        except (hvac.exceptions.Unauthorized, hvac.exceptions.Forbidden):
            raise KeyProviderUnavailable(
                f"transit {what}: permission denied (token invalid, expired or lacking a policy)"
            ) from None
        except _SERVER_DOWN as exc:
            raise KeyProviderUnavailable(
                f"transit {what}: {self.addr} cannot serve ({type(exc).__name__})"
            ) from None
        except hvac.exceptions.InvalidPath:
            raise KeyProviderMisconfigured(
                f"transit {what}: no such path on {self.addr} (is the {self.mount}/ mount there?)"
            ) from None
        except hvac.exceptions.VaultError as exc:
            raise KeyProviderMisconfigured(
                f"transit {what}: request refused ({type(exc).__name__})"
            ) from None

    def _key_not_found(self) -> KeyProviderMisconfigured:
        return _KeyNotFound(f"transit key {self.key_name!r} not found at {self.mount}/; run init")

    # -- key management --------------------------------------------------

    async def _read_key(self) -> dict[str, Any]:
        def read(client: Any) -> dict[str, Any]:
            try:
                data: dict[str, Any] = client.secrets.transit.read_key(
                    self.key_name, mount_point=self.mount
                )["data"]
            except hvac.exceptions.InvalidPath as exc:
                if exc.errors:  # "no handler for route": the mount itself is missing
                    raise KeyProviderMisconfigured(
                        f"no transit mount at {self.mount}/ on {self.addr}"
                    ) from None
                raise self._key_not_found() from None
            return data

        return await self.call("read key", read)

    def _refuse_unsafe(self, data: Mapping[str, Any]) -> None:
        problems: list[str] = []
        if data.get("type") != _KEY_TYPE:
            problems.append(f"type is {data.get('type')!r}, not {_KEY_TYPE!r}")
        if data.get("derived") is not True:
            problems.append(
                "it is not derived (derived=false): transit would silently ignore the "
                "per-citizen context"
            )
        if data.get("exportable") is not False:
            problems.append("it is exportable (exportable=true)")
        if data.get("allow_plaintext_backup") is not False:
            problems.append("it allows plaintext backup (allow_plaintext_backup=true)")
        if problems:
            raise KeyProviderMisconfigured(
                f"transit key {self.key_name!r} at {self.mount}/ is unsafe: "
                + "; ".join(problems)
                + f". Use a new {_KEY_TYPE} key created with derived=true, exportable=false "
                "and allow_plaintext_backup=false (these flags cannot be changed in place)."
            )

    async def ensure_key(self, *, create: bool) -> None:
        """For ``init``/``serve``: create the key when missing (if ``create``), then vet it.

        Raises:
            KeyProviderMisconfigured: missing (and not ``create``), or not a derived,
                non-exportable ``aes256-gcm96`` key without plaintext backup.
            KeyProviderUnavailable: the server did not answer.
        """
        try:
            data = await self._read_key()
        except _KeyNotFound:
            if not create:
                raise

            def create_key(client: Any) -> None:
                client.secrets.transit.create_key(
                    self.key_name,
                    key_type=_KEY_TYPE,
                    derived=True,
                    exportable=False,
                    allow_plaintext_backup=False,
                    mount_point=self.mount,
                )

            await self.call("create key", create_key)
            data = await self._read_key()
        self._refuse_unsafe(data)

    # -- KeyProvider -----------------------------------------------------

    async def wrap(self, items: Sequence[WrapRequest]) -> list[str]:
        """Batch ``transit/encrypt``: per item base64 plaintext, context and associated data."""
        if not items:
            return []
        for item in items:
            _require_context(item.context)
        batch = [
            {
                "plaintext": _b64(item.plaintext),
                "context": _b64(item.context.encode("utf-8")),
                "associated_data": _b64(item.aad),
            }
            for item in items
        ]

        def encrypt(client: Any) -> Any:
            try:
                return client.secrets.transit.encrypt_data(
                    self.key_name, batch_input=batch, mount_point=self.mount
                )
            except hvac.exceptions.InvalidRequest as exc:
                if "not found" in str(exc):
                    raise self._key_not_found() from None
                raise KeyProviderMisconfigured(
                    f"transit encrypt refused by key {self.key_name!r} at {self.mount}/"
                ) from None

        response = await self.call("encrypt", encrypt)
        results = self._batch_results(response, len(items), "encrypt")
        wrapped: list[str] = []
        for result in results:
            ciphertext = result.get("ciphertext")
            if (
                result.get("error")
                or not isinstance(ciphertext, str)
                or not _TRANSIT_WRAPPED.fullmatch(ciphertext)
            ):
                raise KeyProviderMisconfigured(
                    f"transit encrypt with key {self.key_name!r} returned an unusable item"
                )
            wrapped.append(ciphertext)
        return wrapped

    def _batch_results(self, response: Any, count: int, what: str) -> list[dict[str, Any]]:
        try:
            results = response["data"]["batch_results"]
        except (KeyError, TypeError):
            results = None
        if not isinstance(results, list) or len(results) != count:
            raise KeyProviderUnavailable(f"transit {what}: malformed answer from {self.addr}")
        return [r if isinstance(r, dict) else {"error": "malformed"} for r in results]

    async def unwrap(self, items: Sequence[UnwrapRequest]) -> list[bytes]:
        """Batch ``transit/decrypt``; any failing item fails the batch with DecryptionError."""
        if not items:
            return []
        for item in items:
            _parse_wrapped(_TRANSIT_WRAPPED, item.wrapped)  # never send what is not ours
        batch = [
            {
                "ciphertext": item.wrapped,
                "context": _b64(item.context.encode("utf-8")),
                "associated_data": _b64(item.aad),
            }
            for item in items
        ]

        def decrypt(client: Any) -> Any:
            try:
                return client.secrets.transit.decrypt_data(
                    self.key_name, batch_input=batch, mount_point=self.mount
                )
            except hvac.exceptions.InvalidRequest as exc:
                # A batch with a failing item is a 400 whose per-item results sit in
                # the body; a 400 without them is about the request or the key.
                body = exc.json if isinstance(exc.json, dict) else {}
                data = body.get("data")
                if isinstance(data, dict) and "batch_results" in data:
                    raise DecryptionError from None
                if "not found" in str(exc):
                    raise self._key_not_found() from None
                raise DecryptionError from None

        response = await self.call("decrypt", decrypt)
        out: list[bytes] = []
        for result in self._batch_results(response, len(items), "decrypt"):
            plaintext = result.get("plaintext")
            if result.get("error") or not isinstance(plaintext, str):
                raise DecryptionError
            try:
                out.append(base64.b64decode(plaintext, validate=True))
            except (binascii.Error, ValueError):
                raise DecryptionError from None
        return out

    async def rewrap(self, items: Sequence[UnwrapRequest]) -> list[str]:
        """Decrypt and encrypt again with the latest version (see the class docstring)."""
        plaintexts = await self.unwrap(items)
        return await self.wrap(
            [
                WrapRequest(context=item.context, plaintext=plaintext, aad=item.aad)
                for item, plaintext in zip(items, plaintexts, strict=True)
            ]
        )

    async def check(self) -> None:
        """Read the key: proves reachability, an unsealed server, the token, and a safe key."""
        self._refuse_unsafe(await self._read_key())

    async def rotate(self) -> int:
        def rotate(client: Any) -> None:
            client.secrets.transit.rotate_key(self.key_name, mount_point=self.mount)

        await self.call("rotate key", rotate)
        return await self.current_version()

    def version_of(self, wrapped: str) -> int:
        return _parse_wrapped(_TRANSIT_WRAPPED, wrapped)[0]

    async def current_version(self) -> int:
        data = await self._read_key()
        version = data.get("latest_version")
        if not isinstance(version, int) or version < 1:
            raise KeyProviderUnavailable(f"transit read key: malformed answer from {self.addr}")
        return version

    async def retire(self, referenced: set[int]) -> list[int]:
        """Raise ``min_decryption_version`` to the oldest referenced version; return those cut off.

        Never lowers it and never trims: key versions stay in the server (an
        operator can still lower ``min_decryption_version``). Destroying them for
        good is ``trim``, a separate, deliberate operator step.
        """
        data = await self._read_key()
        latest = data.get("latest_version")
        floor = data.get("min_decryption_version")
        if not isinstance(latest, int) or not isinstance(floor, int):
            raise KeyProviderUnavailable(f"transit read key: malformed answer from {self.addr}")
        floor = max(floor, 1)
        target = min({v for v in referenced if v <= latest} | {latest})
        if target <= floor:
            return []

        def raise_floor(client: Any) -> None:
            client.secrets.transit.update_key_configuration(
                self.key_name, min_decryption_version=target, mount_point=self.mount
            )

        await self.call("update key configuration", raise_floor)
        return list(range(floor, target))

    async def close(self) -> None:
        """Stop the pool (waiting for calls in flight, at most one timeout) and close HTTP."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        self._client.adapter.close()
