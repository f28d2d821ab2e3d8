"""Storage of consents and receipts (raw SQL; rows become :mod:`consent.models` here)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from audit.log import shared_scope
from consent.models import (
    Client,
    Consent,
    Event,
    Receipt,
    Status,
    StoredSuggestion,
    items_from_text,
    items_to_text,
)
from vault.errors import StorageError
from vault.storage import IN_CHUNK, Database, marks

_COLUMNS = (
    "consent_id, citizen_id, client_id, purpose, items, access, max_fetches, valid_days,"
    " valid_from, valid_until, legal_basis, case_reference, created_at, policy_version,"
    " status, fetch_count, receipt_version"
)


def _opt_int(value: object) -> int | None:
    return None if value is None else int(str(value))


_COLUMN_NAMES = tuple(name.strip() for name in _COLUMNS.split(","))


def _consent(row: Mapping[str, Any]) -> Consent:
    return _consent_of([row[name] for name in _COLUMN_NAMES])


def _consent_of(values: Sequence[Any]) -> Consent:
    """A consent from its ``_COLUMNS`` values, in that order (:meth:`Database.fetch_values`)."""
    (
        consent_id,
        citizen_id,
        client_id,
        purpose,
        items,
        access,
        max_fetches,
        valid_days,
        valid_from,
        valid_until,
        legal_basis,
        case_reference,
        created_at,
        policy_version,
        status,
        fetch_count,
        receipt_version,
    ) = values
    return Consent(
        consent_id=consent_id,
        citizen_id=citizen_id,
        client_id=client_id,
        purpose=purpose,
        items=items_from_text(items),
        access=access,
        max_fetches=_opt_int(max_fetches),
        valid_days=int(valid_days),
        valid_from=_opt_int(valid_from),
        valid_until=_opt_int(valid_until),
        legal_basis=legal_basis,
        case_reference=case_reference,
        created_at=int(created_at),
        policy_version=policy_version,
        status=Status(status),
        fetch_count=int(fetch_count),
        receipt_version=int(receipt_version),
    )


#: Rows of one fetch-count write (five parameters each).
_COUNT_ROWS = IN_CHUNK // 5


class LockedConsents:
    """Consents locked for a run of consented reads in one group-committed batch.

    :meth:`ConsentRepository.lock_many` loads them (one statement) into the batch's
    :class:`audit.log.SharedScope`. While that scope is current, :meth:`ConsentRepository.get`
    answers from here and :meth:`ConsentRepository.count_fetch` counts here, exactly as
    its conditional ``UPDATE`` would; the new counts are written in one statement
    before the batch's append. Any other write to one of these consents first writes
    its pending count and then drops it from here, so later reads see the database.
    The rows are locked (``FOR UPDATE`` on PostgreSQL, the write lock on SQLite), so
    nothing else changes them meanwhile; the write re-checks that, and a count that
    moved fails the batch (which then runs its units one by one).
    """

    def __init__(self, database: Database, rows: Mapping[str, Consent | None]) -> None:
        self.db = database
        self.rows: dict[str, Consent | None] = dict(rows)
        #: consent id -> (fetch count as loaded, updated_at of the last count)
        self._counted: dict[str, tuple[int, int]] = {}
        self._deferred = False

    def holds(self, consent_id: str) -> bool:
        return consent_id in self.rows

    def count_fetch(self, consent_id: str, now: int) -> tuple[int, Status] | None:
        """:meth:`ConsentRepository.count_fetch` on the locked row."""
        consent = self.rows[consent_id]
        if consent is None or consent.status != Status.ACTIVE:
            return None
        if consent.max_fetches is not None and consent.fetch_count >= consent.max_fetches:
            return None
        count = consent.fetch_count + 1
        status = (
            Status.EXHAUSTED
            if consent.max_fetches is not None and count >= consent.max_fetches
            else consent.status
        )
        loaded, _ = self._counted.get(consent_id, (consent.fetch_count, now))
        self._counted[consent_id] = (loaded, now)
        self.rows[consent_id] = consent.counted(count, status)
        if not self._deferred:
            self._deferred = True
            scope = shared_scope()
            assert scope is not None
            scope.defer(self.flush)
        return count, status

    async def release(self, consent_id: str) -> None:
        """Before another write to ``consent_id``: write its count, then forget it."""
        if consent_id in self._counted:
            await self._write([consent_id])
        self.rows.pop(consent_id, None)

    async def flush(self) -> None:
        await self._write(list(self._counted))

    async def _write(self, consent_ids: list[str]) -> None:
        if not consent_ids:  # every count was written already, by a release
            return
        count_only: list[tuple[str, int, int, str, int]] = []
        with_status: list[tuple[str, int, int, str, int]] = []
        for consent_id in consent_ids:
            consent = self.rows[consent_id]
            assert consent is not None
            loaded, at = self._counted.pop(consent_id)
            row = (consent_id, loaded, consent.fetch_count, consent.status.value, at)
            alone = consent.status == Status.ACTIVE and self.db.dialect == "sqlite"
            (count_only if alone else with_status).append(row)
        # On SQLite a count alone does not name ``status``: SQLite rewrites the entry of
        # every index on a column the SET names, changed or not (consents_citizen holds
        # it). PostgreSQL compares the values itself, so one statement does there.
        await self._write_rows(count_only, _COUNT_UPDATE)
        await self._write_rows(with_status, _COUNT_UPDATE_STATUS)

    async def _write_rows(self, rows: list[tuple[str, int, int, str, int]], update: str) -> None:
        if not rows:
            return
        if self.db.dialect == "postgres":  # one statement text whatever the count
            written = await self.db.fetch(
                f"{update} FROM unnest($1::text[], $2::bigint[], $3::bigint[],"
                " $4::text[], $5::bigint[]) AS v(consent_id, loaded, fetch_count, status, at)"
                f" {_COUNT_WHERE_POSTGRES}",
                *(list(column) for column in zip(*rows, strict=True)),
            )
            self._check(written, len(rows))
            return
        for start in range(0, len(rows), _COUNT_ROWS):
            chunk = rows[start : start + _COUNT_ROWS]
            tuples = ", ".join(
                f"(CAST(${5 * i + 1} AS TEXT), CAST(${5 * i + 2} AS BIGINT),"
                f" CAST(${5 * i + 3} AS BIGINT), CAST(${5 * i + 4} AS TEXT),"
                f" CAST(${5 * i + 5} AS BIGINT))"
                for i in range(len(chunk))
            )
            written = await self.db.fetch(
                f"WITH v(consent_id, loaded, fetch_count, status, at) AS (VALUES {tuples})"
                f" {update} FROM v {_COUNT_WHERE}",
                *(value for row in chunk for value in row),
            )
            self._check(written, len(chunk))

    @staticmethod
    def _check(written: list[dict[str, Any]], expected: int) -> None:
        if len(written) != expected:
            raise StorageError("a locked consent changed before its fetches were counted")


_COUNT_UPDATE = "UPDATE consents SET fetch_count = v.fetch_count, updated_at = v.at"
#: The last fetch a consent allows also sets it ``exhausted``.
_COUNT_UPDATE_STATUS = (
    "UPDATE consents SET fetch_count = v.fetch_count, status = v.status, updated_at = v.at"
)
#: The write re-checks what the run loaded: a count that moved fails the run.
_COUNT_WHERE = (
    "WHERE consents.consent_id = v.consent_id AND consents.fetch_count = v.loaded"
    " AND consents.status = 'active' RETURNING consents.consent_id"
)
#: PostgreSQL: the ids again as an indexable condition, so the rows are found through
#: the primary key whatever the table's size; without it a small, often-updated
#: ``consents`` was joined by a sequential scan of all its pages (~1 ms a batch of 24
#: in the read benchmark; docs/performance.md, "Ninth session").
_COUNT_WHERE_POSTGRES = _COUNT_WHERE.replace(
    "WHERE ", "WHERE consents.consent_id = ANY($1::text[]) AND ", 1
)


def _locked_holding(consent_id: str) -> LockedConsents | None:
    """The current run's locked consents, when they hold ``consent_id``."""
    scope = shared_scope()
    found = scope.values.get(LockedConsents) if scope is not None else None
    if isinstance(found, LockedConsents) and found.holds(consent_id):
        return found
    return None


class ConsentRepository:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def lock_many(self, consent_ids: Sequence[str]) -> LockedConsents:
        """Lock and load these consents (in id order) for a run of reads; unknown ids
        are held as None. The caller puts the result in its shared scope."""
        wanted = sorted(set(consent_ids))
        rows: dict[str, Consent | None] = dict.fromkeys(wanted)
        if self.db.dialect == "postgres":
            found = await self.db.fetch_values(
                f"SELECT {_COLUMNS} FROM consents WHERE consent_id = ANY($1::text[])"
                " ORDER BY consent_id FOR UPDATE",
                wanted,
            )
        else:
            found = []
            for start in range(0, len(wanted), IN_CHUNK):
                chunk = wanted[start : start + IN_CHUNK]
                found += await self.db.fetch_values(
                    f"SELECT {_COLUMNS} FROM consents WHERE consent_id IN ({marks(len(chunk))})",
                    *chunk,
                )
        for values in found:
            consent = _consent_of(values)
            rows[consent.consent_id] = consent
        return LockedConsents(self.db, rows)

    async def _release(self, consent_id: str) -> None:
        locked = _locked_holding(consent_id)
        if locked is not None:
            await locked.release(consent_id)

    async def get(self, consent_id: str, *, lock: bool = False) -> Consent | None:
        """One consent; ``lock`` takes its row lock on PostgreSQL (SQLite holds the db lock)."""
        locked = _locked_holding(consent_id)
        if locked is not None:
            return locked.rows[consent_id]
        suffix = " FOR UPDATE" if lock and self.db.dialect == "postgres" else ""
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM consents WHERE consent_id = $1{suffix}", consent_id
        )
        return _consent(row) if row else None

    async def pending_for(self, client_id: str, citizen_id: str, purpose: str) -> Consent | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM consents WHERE client_id = $1 AND citizen_id = $2"
            " AND purpose = $3 AND status = 'pending'",
            client_id,
            citizen_id,
            purpose,
        )
        return _consent(row) if row else None

    async def insert(self, consent: Consent, now: int) -> None:
        await self._release(consent.consent_id)
        await self.db.execute(
            f"INSERT INTO consents ({_COLUMNS}, updated_at) VALUES"
            " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
            consent.consent_id,
            consent.citizen_id,
            consent.client_id,
            consent.purpose,
            items_to_text(consent.items),
            consent.access,
            consent.max_fetches,
            consent.valid_days,
            consent.valid_from,
            consent.valid_until,
            consent.legal_basis,
            consent.case_reference,
            consent.created_at,
            consent.policy_version,
            consent.status.value,
            consent.fetch_count,
            consent.receipt_version,
            now,
        )

    async def set_status(
        self,
        consent_id: str,
        status: Status,
        now: int,
        *,
        valid_from: int | None = None,
        valid_until: int | None = None,
    ) -> None:
        await self._release(consent_id)
        await self.db.execute(
            "UPDATE consents SET status = $1, updated_at = $2,"
            " valid_from = COALESCE($3, valid_from), valid_until = COALESCE($4, valid_until)"
            " WHERE consent_id = $5",
            status.value,
            now,
            valid_from,
            valid_until,
            consent_id,
        )

    async def count_fetch(self, consent_id: str, now: int) -> tuple[int, Status] | None:
        """Conditionally count one fetch; None when the consent cannot release any more.

        The condition is re-checked by the UPDATE itself, so even a caller that skipped
        the lock could never exceed ``max_fetches``. In a run of reads the locked row
        is counted in memory and written before the append (:class:`LockedConsents`).
        """
        locked = _locked_holding(consent_id)
        if locked is not None:
            return locked.count_fetch(consent_id, now)
        rows = await self.db.fetch(
            "UPDATE consents SET fetch_count = fetch_count + 1, updated_at = $1,"
            " status = CASE WHEN max_fetches IS NOT NULL AND fetch_count + 1 >= max_fetches"
            " THEN 'exhausted' ELSE status END"
            " WHERE consent_id = $2 AND status = 'active'"
            " AND (max_fetches IS NULL OR fetch_count < max_fetches)"
            " RETURNING fetch_count, status",
            now,
            consent_id,
        )
        if not rows:
            return None
        return int(rows[0]["fetch_count"]), Status(rows[0]["status"])

    async def list_for_citizen(self, citizen_id: str) -> list[Consent]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM consents WHERE citizen_id = $1 ORDER BY created_at DESC,"
            " consent_id",
            citizen_id,
        )
        return [_consent(row) for row in rows]

    async def list_for_client(self, client_id: str) -> list[Consent]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM consents WHERE client_id = $1 ORDER BY created_at, consent_id",
            client_id,
        )
        return [_consent(row) for row in rows]

    async def due_for_expiry(self, now: int, pending_before: int, *, limit: int) -> list[str]:
        rows = await self.db.fetch(
            "SELECT consent_id FROM consents WHERE (status = 'active' AND valid_until <= $1)"
            " OR (status = 'pending' AND created_at <= $2) ORDER BY consent_id LIMIT $3",
            now,
            pending_before,
            limit,
        )
        return [str(row["consent_id"]) for row in rows]

    # -- receipts -----------------------------------------------------------------

    async def add_receipt(self, receipt: Receipt) -> None:
        await self._release(receipt.consent_id)
        await self.db.execute(
            "INSERT INTO consent_receipts (consent_id, version, status, issued_at, jws)"
            " VALUES ($1, $2, $3, $4, $5)",
            receipt.consent_id,
            receipt.version,
            receipt.status.value,
            receipt.issued_at,
            receipt.jws,
        )
        await self.db.execute(
            "UPDATE consents SET receipt_version = $1 WHERE consent_id = $2",
            receipt.version,
            receipt.consent_id,
        )

    async def receipt(self, consent_id: str, version: int | None) -> Receipt | None:
        if version is None:
            row = await self.db.fetchrow(
                "SELECT consent_id, version, status, issued_at, jws FROM consent_receipts"
                " WHERE consent_id = $1 ORDER BY version DESC LIMIT 1",
                consent_id,
            )
        else:
            row = await self.db.fetchrow(
                "SELECT consent_id, version, status, issued_at, jws FROM consent_receipts"
                " WHERE consent_id = $1 AND version = $2",
                consent_id,
                version,
            )
        if row is None:
            return None
        return Receipt(
            consent_id=row["consent_id"],
            version=int(row["version"]),
            status=Status(row["status"]),
            issued_at=int(row["issued_at"]),
            jws=row["jws"],
        )


_SUGGESTION_COLUMNS = (
    "suggestion_id, citizen_id, rule, client_id, purpose, access, valid_days, status,"
    " created_at, consent_id"
)


def _suggestion(row: dict[str, Any]) -> StoredSuggestion:
    return StoredSuggestion(
        suggestion_id=row["suggestion_id"],
        citizen_id=row["citizen_id"],
        rule=row["rule"],
        client_id=row["client_id"],
        purpose=row["purpose"],
        access=row["access"],
        valid_days=int(row["valid_days"]),
        status=row["status"],
        created_at=int(row["created_at"]),
        consent_id=row["consent_id"],
    )


class SuggestionRepository:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def insert_if_new(self, suggestion: StoredSuggestion) -> bool:
        """Insert unless the citizen already has this rule's suggestion open."""
        rows = await self.db.fetch(
            f"INSERT INTO suggestions ({_SUGGESTION_COLUMNS}) VALUES"
            " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (citizen_id, rule) WHERE status = 'open' DO NOTHING"
            " RETURNING suggestion_id",
            suggestion.suggestion_id,
            suggestion.citizen_id,
            suggestion.rule,
            suggestion.client_id,
            suggestion.purpose,
            suggestion.access,
            suggestion.valid_days,
            suggestion.status,
            suggestion.created_at,
            suggestion.consent_id,
        )
        return bool(rows)

    async def get(self, suggestion_id: str, *, lock: bool = False) -> StoredSuggestion | None:
        suffix = " FOR UPDATE" if lock and self.db.dialect == "postgres" else ""
        row = await self.db.fetchrow(
            f"SELECT {_SUGGESTION_COLUMNS} FROM suggestions WHERE suggestion_id = $1{suffix}",
            suggestion_id,
        )
        return _suggestion(row) if row else None

    async def list_for_citizen(self, citizen_id: str) -> list[StoredSuggestion]:
        rows = await self.db.fetch(
            f"SELECT {_SUGGESTION_COLUMNS} FROM suggestions WHERE citizen_id = $1"
            " ORDER BY created_at DESC, suggestion_id",
            citizen_id,
        )
        return [_suggestion(row) for row in rows]

    async def mark(self, suggestion_id: str, status: str, consent_id: str | None) -> None:
        await self.db.execute(
            "UPDATE suggestions SET status = $1, consent_id = $2 WHERE suggestion_id = $3",
            status,
            consent_id,
            suggestion_id,
        )


@functools.lru_cache(maxsize=1024)
def _parsed_jwks(text: str) -> dict[str, dict[str, Any]]:
    """The registered JWKS by kid (callers copy; nothing mutates a key). Memoised on
    the stored text only: a changed registration is a different text, and the text
    is read from the database on every request."""
    keys = json.loads(text)
    return {str(k["kid"]): k for k in keys["keys"]}


def _client(row: Mapping[str, Any]) -> Client:
    return Client(
        client_id=row["client_id"],
        name=row["name"],
        kind=row["kind"],
        roles=frozenset(str(row["roles"]).split()),
        jwks=dict(_parsed_jwks(row["jwks"])),
        approved=bool(row["approved"]),
        enabled=bool(row["enabled"]),
        dpop_required=bool(row["dpop_required"]),
    )


_CLIENT_COLUMNS = "client_id, name, kind, roles, jwks, approved, enabled, dpop_required"


class ClientRepository:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def get(self, client_id: str) -> Client | None:
        row = await self.db.fetchrow(
            f"SELECT {_CLIENT_COLUMNS} FROM clients WHERE client_id = $1", client_id
        )
        return _client(row) if row else None

    async def get_for_token(self, client_id: str, jti: str) -> tuple[Client | None, bool]:
        """The live registration (None: no such client) and whether the token ``jti``
        is revoked: one query."""
        return (await self.for_tokens([(client_id, jti)]))[(client_id, jti)]

    async def for_tokens(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[Client | None, bool]]:
        """The live registration and revocation status of every ``(client_id, jti)`` of
        a run of requests, in one statement: the clients' rows, then the revoked
        ``jti``s among them."""
        client_ids = sorted({client_id for client_id, _ in pairs})
        jtis = sorted({jti for _, jti in pairs})
        nulls = ", ".join(["NULL"] * (len(_CLIENT_COLUMNS.split(", ")) - 1))
        union = (
            f"SELECT 0 AS revoked, {_CLIENT_COLUMNS} FROM clients WHERE client_id {{}}"
            f" UNION ALL SELECT 1, jti, {nulls} FROM revoked_tokens WHERE jti {{}}"
        )
        rows: list[dict[str, Any]] = []
        if self.db.dialect == "postgres":
            sql = union.format("= ANY($1::text[])", "= ANY($2::text[])")
            rows = await self.db.fetch(sql, client_ids, jtis)
        else:
            for start in range(0, max(len(client_ids), len(jtis)), IN_CHUNK):
                some_clients = client_ids[start : start + IN_CHUNK]
                some_jtis = jtis[start : start + IN_CHUNK]
                sql = union.format(
                    f"IN ({marks(len(some_clients))})",
                    f"IN ({marks(len(some_jtis), first=len(some_clients) + 1)})",
                )
                rows += await self.db.fetch(sql, *some_clients, *some_jtis)
        clients = {row["client_id"]: _client(row) for row in rows if not row["revoked"]}
        revoked = {row["client_id"] for row in rows if row["revoked"]}
        return {
            (client_id, jti): (clients.get(client_id), jti in revoked) for client_id, jti in pairs
        }

    async def list(self) -> list[Client]:
        rows = await self.db.fetch(f"SELECT {_CLIENT_COLUMNS} FROM clients ORDER BY client_id")
        return [_client(row) for row in rows]

    async def names(self, client_ids: Sequence[str]) -> dict[str, str]:
        if not client_ids:
            return {}
        rows = await self.db.fetch(
            f"SELECT client_id, name FROM clients WHERE client_id IN ({marks(len(client_ids))})",
            *client_ids,
        )
        return {str(r["client_id"]): str(r["name"]) for r in rows}

    async def insert(self, client: Client, now: int) -> bool:
        rows = await self.db.fetch(
            f"INSERT INTO clients ({_CLIENT_COLUMNS}, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"
            " ON CONFLICT (client_id) DO NOTHING RETURNING client_id",
            client.client_id,
            client.name,
            client.kind,
            " ".join(sorted(client.roles)),
            json.dumps({"keys": list(client.jwks.values())}, sort_keys=True),
            int(client.approved),
            int(client.enabled),
            int(client.dpop_required),
            now,
        )
        return bool(rows)

    async def update(self, client_id: str, now: int, **changes: object) -> bool:
        allowed = {"approved", "enabled", "jwks", "roles", "name"}
        assert set(changes) <= allowed
        sets = ", ".join(f"{name} = ${i + 3}" for i, name in enumerate(changes))
        rows = await self.db.fetch(
            f"UPDATE clients SET updated_at = $1, {sets} WHERE client_id = $2 RETURNING client_id",
            now,
            client_id,
            *changes.values(),
        )
        return bool(rows)


#: Seconds between two sweeps of expired single-use identifiers by one process.
REPLAY_SWEEP_SECONDS = 10


class ReplayRepository:
    """Single-use identifiers (DPoP proofs' and client assertions' ``jti``).

    Times (``expires_at``, ``now``) are epoch milliseconds. A use is remembered until
    ``expires_at``, which callers set past the last moment the identifier is accepted
    (a DPoP proof's ``max(now, iat)`` + window + skew, an assertion's ``exp`` + skew);
    after that its own time checks refuse it. So sweeping expired rows is only garbage
    collection, and runs at most every ``REPLAY_SWEEP_SECONDS`` per process, not at
    every use (a sweep per use was one more statement in every DPoP read).
    """

    def __init__(self, database: Database) -> None:
        self.db = database
        self._next_sweep = 0

    async def use_once(self, scope: str, jti: str, expires_at: int, now: int) -> bool:
        """Record a single-use identifier; False when it was seen before (a replay)."""
        async with self.db.transaction():
            return await self.use_once_here(scope, jti, expires_at, now)

    async def use_once_here(self, scope: str, jti: str, expires_at: int, now: int) -> bool:
        """:meth:`use_once` inside the caller's transaction (a group-committed unit)."""
        if now >= self._next_sweep:  # times in ms
            await self.db.execute("DELETE FROM replay_guard WHERE expires_at < $1", now - 60)
            self._next_sweep = now + REPLAY_SWEEP_SECONDS * 1000
        rows = await self.db.fetch(
            "INSERT INTO replay_guard (scope, jti, expires_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (scope, jti) DO NOTHING RETURNING jti",
            scope,
            jti,
            expires_at,
        )
        return bool(rows)

    async def revoke_here(self, jti: str, expires_at: int) -> bool:
        """Revoke an access token's ``jti`` inside the caller's transaction (a
        group-committed unit); False when it was revoked already."""
        rows = await self.db.fetch(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2)"
            " ON CONFLICT (jti) DO NOTHING RETURNING jti",
            jti,
            expires_at,
        )
        return bool(rows)


class EventRepository:
    """The event feed. Inserts happen only inside appending transactions (tree lock
    held), so seq order is commit order and a cursor never skips an event."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def add(
        self,
        *,
        client_id: str,
        type: str,
        at: int,
        consent_id: str | None = None,
        record_type: str | None = None,
        version: int | None = None,
    ) -> None:
        await self.db.execute(
            "INSERT INTO events (client_id, type, consent_id, record_type, version, at)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            client_id,
            type,
            consent_id,
            record_type,
            version,
            at,
        )

    async def after(self, client_id: str, after: int, limit: int) -> list[Event]:
        rows = await self.db.fetch(
            "SELECT seq, type, consent_id, record_type, version, at FROM events"
            " WHERE client_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            client_id,
            after,
            limit,
        )
        return [
            Event(
                seq=int(r["seq"]),
                type=r["type"],
                consent_id=r["consent_id"],
                record_type=r["record_type"],
                version=None if r["version"] is None else int(r["version"]),
                at=int(r["at"]),
            )
            for r in rows
        ]

    async def standing_consents_of(
        self, citizen_ids: Sequence[str], now: int
    ) -> dict[str, list[tuple[str, str, frozenset[str]]]]:
        """Per citizen: (consent_id, client_id, item types) of its active standing
        consents, for every citizen of ``citizen_ids`` in one statement per 500."""
        out: dict[str, list[tuple[str, str, frozenset[str]]]] = {}
        for start in range(0, len(citizen_ids), IN_CHUNK):
            chunk = list(citizen_ids[start : start + IN_CHUNK])
            rows = await self.db.fetch(
                "SELECT consent_id, client_id, citizen_id, items FROM consents"
                f" WHERE citizen_id IN ({marks(len(chunk), first=2)}) AND status = 'active'"
                " AND access = 'standing' AND valid_until > $1"
                " ORDER BY consent_id",
                now,
                *chunk,
            )
            for row in rows:
                types = frozenset(t for t, _ in json.loads(row["items"]))
                out.setdefault(str(row["citizen_id"]), []).append(
                    (str(row["consent_id"]), str(row["client_id"]), types)
                )
        return out
