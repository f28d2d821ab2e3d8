"""``Idempotency-Key`` for POSTs that create (DESIGN section 10).

A repeat of a request with the same key, by the same client, within 24 h, is answered
with the stored response (status, body bytes, content type and the few headers the
caller chose to keep, e.g. ``Location`` and ``X-Audit-Seq``) without running the
handler again. The same key with a different body, or on a different method/path, is
refused with ``validation_error`` (422). Keys are per client: two clients never see
each other's keys.

What is stored (``idempotency_keys``, through :mod:`api.repository` only): the client
id, the key, ``METHOD /path``, a keyed digest of the request (HMAC-SHA256 under a key
derived from the platform's index key, over client, ``METHOD /path`` and body bytes:
:func:`vault.crypto.request_digest`; nothing else of the request), and the response.
An unkeyed hash of a body would let whoever holds a copy of the database confirm
guesses of its content offline: a national id in a consumer's fixed request template
is a search of ~10^10 values. Responses of creating POSTs are ids, versions and
consents; callers must not pass a response that holds personal data.

Key syntax: 1 to 64 *visible* ASCII characters (``0x21``-``0x7E``). Spaces and control
characters are refused: intermediaries may trim or fold header whitespace, which would
make two spellings of one key. Errors name the header and never echo the key.

Concurrency (several workers share the table):

- A new key is *claimed* first: in one short transaction, a row with ``status = 0``
  whose ``response`` holds a random 16-byte token of the claiming request is inserted
  (``ON CONFLICT DO NOTHING``). Only the request whose insert succeeded runs the
  handler (``produce``); it then turns its claim into the stored response (an update
  conditioned on its token).
- A request that finds another request's claim polls the row (read-only, backing off
  from 50 ms to 250 ms) for up to ``wait_seconds`` (default 5 s) of real time and
  replays the response once stored. If the claim is still unfinished then, it raises
  :class:`IdempotencyInProgress`, a new code ``idempotency_in_progress`` meant to be
  answered 409 with a short ``Retry-After`` (``api/errors.py`` has to map it: until
  then it falls back to ``internal_error``). 409 because the key, not the request, is
  in conflict with a request being processed (as in the IETF Idempotency-Key draft).
- A ``produce`` that raises (or is cancelled) deletes its claim, so the client can
  retry with the same key. Nothing is stored for a failed request.
- A claim left by a worker that died is *abandoned* after ``claim_lease_seconds``
  (default 60 s, far beyond any request timeout): the next request with that key takes
  it over with a compare-and-set. If the first worker was merely slow and completes
  after all, the first *completed* response stays stored and both requests answer it.
- Entries older than the TTL (24 h) are ignored and replaced; after each stored
  response at most :data:`PURGE_BATCH` expired rows are deleted.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from api.repository import IdempotencyRepository, IdempotencyRow
from vault import crypto
from vault.clock import Clock
from vault.errors import OncevaultError
from vault.storage import Database

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 64
DEFAULT_TTL_SECONDS = 86_400
DEFAULT_CLAIM_LEASE_SECONDS = 60
DEFAULT_WAIT_SECONDS = 5.0

#: At most this many expired entries are deleted after one stored response.
PURGE_BATCH = 100

_IN_PROGRESS = 0
_POLL_FIRST = 0.05
_POLL_MAX = 0.25
_RACE_RETRIES = 5


class IdempotencyError(OncevaultError):
    """The Idempotency-Key cannot be honoured."""


class InvalidIdempotencyKey(IdempotencyError):
    """The Idempotency-Key header is not acceptable."""

    code = "validation_error"

    def __init__(self) -> None:
        super().__init__(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters")


class IdempotencyKeyReused(IdempotencyError):
    """The Idempotency-Key was used for another request."""

    code = "validation_error"


class IdempotencyInProgress(IdempotencyError):
    """A request with this Idempotency-Key is still being processed (answer 409)."""

    code = "idempotency_in_progress"

    def __init__(self) -> None:
        super().__init__(f"a request with this {HEADER} is still in progress; retry shortly")


@dataclass(frozen=True)
class StoredResponse:
    """A response as stored and replayed: byte-identical body, same status and headers."""

    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


def _headers_text(headers: Mapping[str, str]) -> str:
    return json.dumps(dict(headers), sort_keys=True, separators=(",", ":"))


def _stored(row: IdempotencyRow) -> StoredResponse:
    headers = json.loads(row.headers)
    return StoredResponse(
        status=row.status,
        body=row.response,
        content_type=row.content_type,
        headers={str(k): str(v) for k, v in headers.items()},
    )


class IdempotencyStore:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        *,
        digest_key: bytes,
        claim_lease_seconds: int = DEFAULT_CLAIM_LEASE_SECONDS,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
    ) -> None:
        if ttl_seconds <= 0 or claim_lease_seconds <= 0 or wait_seconds < 0:
            raise ValueError("ttl and lease must be positive, wait not negative")
        self.db = database
        self.clock = clock
        self.ttl_ms = ttl_seconds * 1000
        self.lease_ms = claim_lease_seconds * 1000
        self.wait_seconds = wait_seconds
        self.rows = IdempotencyRepository(database)
        if len(digest_key) != crypto.KEY_SIZE:
            raise ValueError("the request digest key must be 32 bytes")
        self._digest_key = digest_key

    def _digest(self, client_id: str, method_path: str, body: bytes) -> bytes:
        return crypto.request_digest(self._digest_key, client_id, method_path, body)

    # -- checks ------------------------------------------------------------------

    @staticmethod
    def validate_key(key: str) -> None:
        """Raise :class:`InvalidIdempotencyKey` unless 1-64 visible ASCII characters."""
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not all("!" <= ch <= "~" for ch in key):
            raise InvalidIdempotencyKey

    def _expired(self, row: IdempotencyRow, now: int) -> bool:
        return now - row.created_at >= self.ttl_ms

    def _abandoned(self, row: IdempotencyRow, now: int) -> bool:
        return row.status == _IN_PROGRESS and now - row.created_at >= self.lease_ms

    @staticmethod
    def _check_same(row: IdempotencyRow, method_path: str, digest: bytes) -> None:
        if row.method_path != method_path:
            raise IdempotencyKeyReused(f"{HEADER} was used with a different method or path")
        if not secrets.compare_digest(row.body_digest, digest):
            raise IdempotencyKeyReused(f"{HEADER} was used with a different request body")

    # -- public API ----------------------------------------------------------------

    async def lookup(
        self, client_id: str, key: str, method_path: str, body: bytes
    ) -> StoredResponse | None:
        """The stored response for this key, or None when there is none (or it expired).

        Raises :class:`IdempotencyKeyReused` when the key was used for another body or
        method/path, and :class:`IdempotencyInProgress` while another request holds a
        live claim on it.
        """
        self.validate_key(key)
        row = await self.rows.get(client_id, key)
        now = self.clock.now_ms()
        if row is None or self._expired(row, now) or self._abandoned(row, now):
            return None
        self._check_same(row, method_path, self._digest(client_id, method_path, body))
        if row.status == _IN_PROGRESS:
            raise IdempotencyInProgress
        return _stored(row)

    async def save(
        self,
        client_id: str,
        key: str,
        method_path: str,
        body: bytes,
        *,
        status: int,
        response_body: bytes,
        content_type: str,
        headers: Mapping[str, str],
    ) -> StoredResponse:
        """Store a response; when another one is already stored for the key, keep it.

        Returns the response that is stored now: this one, or the first one.
        """
        self.validate_key(key)
        response = StoredResponse(status, response_body, content_type, dict(headers))
        return await self._save(
            client_id,
            key,
            method_path,
            self._digest(client_id, method_path, body),
            response=response,
            token=None,
        )

    async def run(
        self,
        client_id: str,
        key: str | None,
        method_path: str,
        body: bytes,
        produce: Callable[[], Awaitable[StoredResponse]],
    ) -> tuple[StoredResponse, bool]:
        """Replay the stored response, or claim the key, ``produce`` and store.

        Returns ``(response, replayed)``. Without a key, just ``produce``. ``produce``
        must not run inside a transaction of the caller (it opens its own).
        """
        if key is None:
            return await produce(), False
        self.validate_key(key)
        digest = self._digest(client_id, method_path, body)
        token = await self._claim_or_wait(client_id, key, method_path, digest)
        if isinstance(token, StoredResponse):
            return token, True
        try:
            response = await produce()
        except BaseException:
            async with self.db.transaction():
                await self.rows.release(client_id, key, token)
            raise
        stored = await self._save(
            client_id, key, method_path, digest, response=response, token=token
        )
        return stored, stored is not response

    # -- internals -------------------------------------------------------------------

    async def _claim_or_wait(
        self, client_id: str, key: str, method_path: str, digest: bytes
    ) -> bytes | StoredResponse:
        """Our claim token, or the response another request stored."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        delay = _POLL_FIRST
        while True:
            outcome = await self._claim(client_id, key, method_path, digest)
            if outcome is not None:
                return outcome
            # Another request holds a live claim: poll read-only until it is settled.
            while True:
                if loop.time() >= deadline:
                    raise IdempotencyInProgress
                await asyncio.sleep(delay)
                delay = min(delay * 2, _POLL_MAX)
                row = await self.rows.get(client_id, key)
                now = self.clock.now_ms()
                if row is None or self._expired(row, now) or self._abandoned(row, now):
                    break  # released, expired or abandoned: try to claim it ourselves
                self._check_same(row, method_path, digest)
                if row.status != _IN_PROGRESS:
                    return _stored(row)

    async def _claim(
        self, client_id: str, key: str, method_path: str, digest: bytes
    ) -> bytes | StoredResponse | None:
        """Claim the key (our token), or the stored response, or None while in progress."""
        token = secrets.token_bytes(16)
        now = self.clock.now_ms()
        claim = IdempotencyRow(
            client_id=client_id,
            key=key,
            method_path=method_path,
            body_digest=digest,
            status=_IN_PROGRESS,
            response=token,
            content_type="",
            headers="{}",
            created_at=now,
        )
        async with self.db.transaction():
            for _ in range(_RACE_RETRIES):
                if await self.rows.insert(claim):
                    return token
                row = await self.rows.get(client_id, key)
                if row is None:
                    continue  # deleted since our insert saw it (PostgreSQL): insert again
                if self._expired(row, now) or self._abandoned(row, now):
                    if await self.rows.replace(claim, expected=row):
                        return token
                    continue
                self._check_same(row, method_path, digest)
                if row.status == _IN_PROGRESS:
                    return None
                return _stored(row)
        raise IdempotencyInProgress  # pragma: no cover - the row kept changing under us

    async def _save(
        self,
        client_id: str,
        key: str,
        method_path: str,
        digest: bytes,
        *,
        response: StoredResponse,
        token: bytes | None,
    ) -> StoredResponse:
        if not 100 <= response.status <= 599:
            raise ValueError("an HTTP status is 100..599")
        headers = _headers_text(response.headers)
        now = self.clock.now_ms()
        row = IdempotencyRow(
            client_id=client_id,
            key=key,
            method_path=method_path,
            body_digest=digest,
            status=response.status,
            response=response.body,
            content_type=response.content_type,
            headers=headers,
            created_at=now,
        )
        stored: StoredResponse | None = None
        async with self.db.transaction():
            if token is not None and await self.rows.complete(
                client_id,
                key,
                token,
                status=response.status,
                response=response.body,
                content_type=response.content_type,
                headers=headers,
            ):
                stored = response
            for _ in range(_RACE_RETRIES):
                if stored is not None:
                    break
                if await self.rows.insert(row):
                    stored = response
                    break
                existing = await self.rows.get(client_id, key)
                if existing is None:
                    continue
                if self._expired(existing, now):
                    if await self.rows.replace(row, expected=existing):
                        stored = response
                    continue
                self._check_same(existing, method_path, digest)
                if existing.status == _IN_PROGRESS:
                    # Another request's unfinished claim: the first completed response wins.
                    if await self.rows.replace(row, expected=existing):
                        stored = response
                    continue
                stored = _stored(existing)
            if stored is None:  # pragma: no cover - the row kept changing under us
                raise IdempotencyInProgress
        await self._purge(now)
        return stored

    async def _purge(self, now: int) -> None:
        async with self.db.transaction():
            await self.rows.purge_created_before(now - self.ttl_ms, limit=PURGE_BATCH)
