"""Small secret files a deployment creates for itself (the development IdP's key, the
web session secret): made atomically with mode 0600, read only if still private."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from api.settings import SettingsError


def create_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) unless it exists. ``link()`` never
    replaces: when several workers start at once the first wins and the others read
    its file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_private_file(path: Path, *, max_size: int, holds: str) -> bytes:
    """At most ``max_size + 1`` bytes of ``path``, a regular file (not a symlink) that
    only its owner can read; ``holds`` names its content in the error.

    Raises:
        SettingsError: unreadable, not a regular file, or readable by others.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot be read ({exc.__class__.__name__})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SettingsError(f"{path}: not a regular file")
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise SettingsError(f"{path}: must be mode 0600 (it holds {holds})")
        return handle.read(max_size + 1)
