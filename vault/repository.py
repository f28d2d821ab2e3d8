"""Storage of the vault: citizens, blind indexes, wrapped keys, record versions.

Raw SQL with ``$n`` placeholders (see :class:`vault.storage.Database`); rows become
:mod:`vault.models` objects at this edge. Methods that write expect an open
transaction; none of them calls the key provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from vault.models import RecordMeta
from vault.storage import IN_CHUNK, Database, marks

T = TypeVar("T")


def _bytes(value: object) -> bytes:
    if isinstance(value, memoryview):
        return value.tobytes()
    if not isinstance(value, bytes):
        raise TypeError("expected bytes from the database")
    return value


class DekRow(msgspec.Struct, frozen=True):
    dek_id: str
    citizen_id: str
    record_type: str
    dek_version: int
    wrapped: str
    kek_version: int
    generation: int
    created_at: int


class RecordRow(msgspec.Struct, frozen=True):
    meta: RecordMeta
    dek_id: str
    ciphertext: bytes
    content_digest: bytes


@dataclass(frozen=True)
class RecordHead:
    """Where a (citizen, type)'s next version starts: the latest version's number, id
    and content digest, or (no latest: all superseded) the highest version stored."""

    version: int
    record_id: str | None
    content_digest: bytes | None


@dataclass(frozen=True)
class WrappedRow:
    """Any row holding a KEK-wrapped secret, for rotation."""

    table: str
    key: str
    wrapped: str
    kek_version: int
    context: str
    aad_parts: tuple[str | int, ...]


@dataclass(frozen=True)
class SigningKeyRow:
    kid: str
    use: str
    wrapped: str
    public_jwk: str
    status: str
    created_at: int


_DEK_NAMES = (
    "dek_id",
    "citizen_id",
    "record_type",
    "dek_version",
    "wrapped",
    "kek_version",
    "generation",
    "created_at",
)


def _dek(row: Mapping[str, Any]) -> DekRow:
    return _dek_of([row[name] for name in _DEK_NAMES])


def _dek_of(values: Sequence[Any]) -> DekRow:
    """A DEK row from its ``_DEK_NAMES`` values, in that order."""
    dek_id, citizen_id, record_type, dek_version, wrapped, kek_version, generation, created = values
    return DekRow(
        dek_id=dek_id,
        citizen_id=citizen_id,
        record_type=record_type,
        dek_version=int(dek_version),
        wrapped=wrapped,
        kek_version=int(kek_version),
        generation=int(generation),
        created_at=int(created),
    )


_RECORD_COLUMNS = (
    "record_id, citizen_id, record_type, version, dek_id, ciphertext, content_digest,"
    " source, attested, created_at"
)


_INSERT_DEK = (
    "INSERT INTO deks (dek_id, citizen_id, record_type, dek_version, wrapped,"
    " kek_version, generation, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (citizen_id, record_type, dek_version) DO NOTHING"
)


def _dek_values(d: DekRow, created_at: int | None = None) -> tuple[object, ...]:
    return (
        d.dek_id,
        d.citizen_id,
        d.record_type,
        d.dek_version,
        d.wrapped,
        d.kek_version,
        d.generation,
        d.created_at if created_at is None else created_at,
    )


_RECORD_COLUMNS_OF_R = ", ".join("r." + c.strip() for c in _RECORD_COLUMNS.split(","))


_RECORD_NAMES = tuple(c.strip() for c in _RECORD_COLUMNS.split(","))


def _record(row: Mapping[str, Any]) -> RecordRow:
    return _record_of([row[name] for name in _RECORD_NAMES])


def _record_of(values: Sequence[Any]) -> RecordRow:
    """A record version from its ``_RECORD_COLUMNS`` values, in that order."""
    (
        record_id,
        citizen_id,
        record_type,
        version,
        dek_id,
        ciphertext,
        content_digest,
        source,
        attested,
        created_at,
    ) = values
    return RecordRow(
        meta=RecordMeta(
            record_id=record_id,
            citizen_id=citizen_id,
            record_type=record_type,
            version=int(version),
            source=source,
            attested=bool(attested),
            created_at=int(created_at),
        ),
        dek_id=dek_id,
        ciphertext=_bytes(ciphertext),
        content_digest=_bytes(content_digest),
    )


_LATEST_WITH_DEK = (
    f"SELECT {_RECORD_COLUMNS_OF_R}, d.dek_version, d.wrapped, d.kek_version,"
    " d.generation, d.created_at AS dek_created_at"
    " FROM records r JOIN deks d ON d.dek_id = r.dek_id"
)


def _sealed(values: Sequence[Any]) -> tuple[RecordRow, DekRow]:
    """A row of ``_LATEST_WITH_DEK`` (:meth:`Database.fetch_values`, columns in order):
    the record version and the DEK row it is sealed under."""
    *record_values, dek_version, wrapped, kek_version, generation, dek_created_at = values
    record = _record_of(record_values)
    meta = record.meta
    dek = _dek_of(
        (
            record.dek_id,
            meta.citizen_id,
            meta.record_type,
            dek_version,
            wrapped,
            kek_version,
            generation,
            dek_created_at,
        )
    )
    return record, dek


def _chunks(values: Sequence[T]) -> list[list[T]]:
    return [list(values[i : i + IN_CHUNK]) for i in range(0, len(values), IN_CHUNK)]


class VaultRepository:
    def __init__(self, database: Database) -> None:
        self.db = database

    # -- citizens -----------------------------------------------------------------

    async def citizen_by_index(self, blind_index: bytes) -> str | None:
        row = await self.db.fetchrow(
            "SELECT citizen_id FROM citizen_index WHERE blind_index = $1", blind_index
        )
        return str(row["citizen_id"]) if row else None

    async def create_citizen(
        self, *, citizen_id: str, blind_index: bytes, kind: str, now: int
    ) -> str:
        """Create the citizen unless the index exists; return the winner's id."""
        winner = await self.link_index(blind_index=blind_index, citizen_id=citizen_id, kind=kind)
        if winner == citizen_id:  # the index is this new citizen's: the citizen row too
            await self.db.execute(
                "INSERT INTO citizens (citizen_id, created_at) VALUES ($1, $2)"
                " ON CONFLICT (citizen_id) DO NOTHING",
                citizen_id,
                now,
            )
        return winner

    async def link_index(self, *, blind_index: bytes, citizen_id: str, kind: str) -> str:
        """Point ``blind_index`` at ``citizen_id`` unless it points somewhere already;
        return the citizen it points at now."""
        inserted = await self.db.fetch(
            "INSERT INTO citizen_index (blind_index, citizen_id, kind) VALUES ($1, $2, $3)"
            " ON CONFLICT (blind_index) DO NOTHING RETURNING citizen_id",
            blind_index,
            citizen_id,
            kind,
        )
        if inserted:
            return citizen_id
        owner = await self.citizen_by_index(blind_index)
        assert owner is not None
        return owner

    async def citizens_by_indexes(self, blind_indexes: Sequence[bytes]) -> dict[bytes, str]:
        """blind index -> citizen id, for those of ``blind_indexes`` that exist."""
        out: dict[bytes, str] = {}
        for chunk in _chunks(blind_indexes):
            rows = await self.db.fetch(
                "SELECT blind_index, citizen_id FROM citizen_index"
                f" WHERE blind_index IN ({marks(len(chunk))})",
                *chunk,
            )
            out.update({_bytes(r["blind_index"]): str(r["citizen_id"]) for r in rows})
        return out

    async def create_citizens(
        self, proposed: Mapping[bytes, tuple[str, str]], now: int
    ) -> dict[bytes, str]:
        """Create citizens ``blind index -> (citizen id, kind)`` unless their index exists
        (a concurrent writer's); return every index's winner. Inside a transaction."""
        await self.db.executemany(
            "INSERT INTO citizen_index (blind_index, citizen_id, kind) VALUES ($1, $2, $3)"
            " ON CONFLICT (blind_index) DO NOTHING",
            [(blind, citizen_id, kind) for blind, (citizen_id, kind) in proposed.items()],
        )
        winners = await self.citizens_by_indexes(list(proposed))
        await self.db.executemany(
            "INSERT INTO citizens (citizen_id, created_at) VALUES ($1, $2)"
            " ON CONFLICT (citizen_id) DO NOTHING",
            [
                (citizen_id, now)
                for blind, (citizen_id, _) in proposed.items()
                if winners.get(blind) == citizen_id
            ],
        )
        return winners

    async def citizen_exists(self, citizen_id: str) -> bool:
        row = await self.db.fetchrow(
            "SELECT 1 AS found FROM citizens WHERE citizen_id = $1", citizen_id
        )
        return row is not None

    async def delete_blind_indexes(self, citizen_id: str) -> int:
        rows = await self.db.fetch(
            "DELETE FROM citizen_index WHERE citizen_id = $1 RETURNING kind", citizen_id
        )
        return len(rows)

    # -- DEKs ---------------------------------------------------------------------

    async def current_dek(self, citizen_id: str, record_type: str) -> DekRow | None:
        row = await self.db.fetchrow(
            "SELECT * FROM deks WHERE citizen_id = $1 AND record_type = $2"
            " ORDER BY dek_version DESC LIMIT 1",
            citizen_id,
            record_type,
        )
        return _dek(row) if row else None

    async def current_deks(self, citizen_ids: Sequence[str]) -> dict[tuple[str, str], DekRow]:
        """(citizen, type) -> its current DEK (highest ``dek_version``), for every type of
        every citizen in ``citizen_ids``."""
        out: dict[tuple[str, str], DekRow] = {}
        for chunk in _chunks(citizen_ids):
            rows = await self.db.fetch(
                f"SELECT * FROM deks WHERE citizen_id IN ({marks(len(chunk))})", *chunk
            )
            for row in rows:
                dek = _dek(row)
                pair = (dek.citizen_id, dek.record_type)
                if pair not in out or out[pair].dek_version < dek.dek_version:
                    out[pair] = dek
        return out

    async def existing_dek_ids(self, dek_ids: Sequence[str]) -> set[str]:
        out: set[str] = set()
        for chunk in _chunks(dek_ids):
            rows = await self.db.fetch(
                f"SELECT dek_id FROM deks WHERE dek_id IN ({marks(len(chunk))})", *chunk
            )
            out.update(str(r["dek_id"]) for r in rows)
        return out

    async def insert_deks(self, deks: Sequence[DekRow], *, created_at: int) -> None:
        """Insert each DEK, stamped ``created_at``, unless (citizen, type, dek_version)
        exists (a concurrent writer's: :meth:`existing_dek_ids` tells). Inside a
        transaction."""
        await self.db.executemany(_INSERT_DEK, [_dek_values(d, created_at) for d in deks])

    async def dek(self, dek_id: str) -> DekRow | None:
        row = await self.db.fetchrow("SELECT * FROM deks WHERE dek_id = $1", dek_id)
        return _dek(row) if row else None

    async def insert_dek(self, dek: DekRow) -> bool:
        """Insert unless (citizen, type, dek_version) exists; True when inserted."""
        rows = await self.db.fetch(_INSERT_DEK + " RETURNING dek_id", *_dek_values(dek))
        return bool(rows)

    # -- records ------------------------------------------------------------------

    async def latest(self, citizen_id: str, record_type: str) -> RecordRow | None:
        row = await self.db.fetchrow(
            f"SELECT {_RECORD_COLUMNS} FROM records"
            " WHERE citizen_id = $1 AND record_type = $2 AND superseded_at IS NULL",
            citizen_id,
            record_type,
        )
        return _record(row) if row else None

    async def latest_with_deks(
        self, citizen_ids: Sequence[str], record_types: Sequence[str]
    ) -> dict[tuple[str, str], tuple[RecordRow, DekRow]]:
        """The latest version of these types of these citizens with the DEK row each is
        sealed under, keyed by (citizen, type): one statement (SQLite: one per ~500
        citizens). The consented read's unit and its runs load records with this."""
        citizens, types = sorted(set(citizen_ids)), sorted(set(record_types))
        if not citizens or not types:
            return {}
        if self.db.dialect == "postgres":  # one statement text whatever the sizes
            rows = await self.db.fetch_values(
                f"{_LATEST_WITH_DEK} WHERE r.citizen_id = ANY($1::text[])"
                " AND r.record_type = ANY($2::text[]) AND r.superseded_at IS NULL",
                citizens,
                types,
            )
        else:
            rows = []
            step = max(1, IN_CHUNK - len(types))
            for start in range(0, len(citizens), step):
                chunk = citizens[start : start + step]
                type_marks = marks(len(types), first=len(chunk) + 1)
                rows += await self.db.fetch_values(
                    f"{_LATEST_WITH_DEK} WHERE r.citizen_id IN ({marks(len(chunk))})"
                    f" AND r.record_type IN ({type_marks}) AND r.superseded_at IS NULL",
                    *chunk,
                    *types,
                )
        out: dict[tuple[str, str], tuple[RecordRow, DekRow]] = {}
        for values in rows:
            record, dek = _sealed(values)
            out[(record.meta.citizen_id, record.meta.record_type)] = (record, dek)
        return out

    async def version(self, citizen_id: str, record_type: str, version: int) -> RecordRow | None:
        row = await self.db.fetchrow(
            f"SELECT {_RECORD_COLUMNS} FROM records"
            " WHERE citizen_id = $1 AND record_type = $2 AND version = $3",
            citizen_id,
            record_type,
            version,
        )
        return _record(row) if row else None

    async def list_latest(self, citizen_id: str) -> list[RecordMeta]:
        rows = await self.db.fetch(
            f"SELECT {_RECORD_COLUMNS} FROM records"
            " WHERE citizen_id = $1 AND superseded_at IS NULL ORDER BY record_type",
            citizen_id,
        )
        return [_record(row).meta for row in rows]

    async def max_version(self, citizen_id: str, record_type: str) -> int:
        row = await self.db.fetchrow(
            "SELECT max(version) AS v FROM records WHERE citizen_id = $1 AND record_type = $2",
            citizen_id,
            record_type,
        )
        return int(row["v"]) if row and row["v"] is not None else 0

    async def heads_of(self, citizen_ids: Sequence[str]) -> dict[tuple[str, str], RecordHead]:
        """(citizen, type) -> where its next version starts, for every type of every
        citizen given: one statement a chunk, no ciphertext."""
        out: dict[tuple[str, str], RecordHead] = {}
        for chunk in _chunks(citizen_ids):
            rows = await self.db.fetch(
                "SELECT m.citizen_id, m.record_type, m.top, r.version, r.record_id,"
                " r.content_digest FROM (SELECT citizen_id, record_type, max(version) AS top"
                f" FROM records WHERE citizen_id IN ({marks(len(chunk))})"
                " GROUP BY citizen_id, record_type) AS m"
                " LEFT JOIN records AS r ON r.citizen_id = m.citizen_id"
                " AND r.record_type = m.record_type AND r.superseded_at IS NULL",
                *chunk,
            )
            for row in rows:
                live = row["record_id"] is not None
                out[(str(row["citizen_id"]), str(row["record_type"]))] = RecordHead(
                    version=int(row["version"] if live else row["top"]),
                    record_id=str(row["record_id"]) if live else None,
                    content_digest=_bytes(row["content_digest"]) if live else None,
                )
        return out

    async def supersede_many(self, record_ids: Sequence[str], now: int) -> None:
        await self.db.executemany(
            "UPDATE records SET superseded_at = $1 WHERE record_id = $2",
            [(now, record_id) for record_id in record_ids],
        )

    async def insert_records(self, rows: Sequence[tuple[RecordRow, int | None]]) -> None:
        """Insert versions with their ``superseded_at`` (a version superseded within the
        same batch is stored superseded). Inside a transaction."""
        await self.db.executemany(
            f"INSERT INTO records ({_RECORD_COLUMNS}, superseded_at) VALUES"
            " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            [
                (
                    row.meta.record_id,
                    row.meta.citizen_id,
                    row.meta.record_type,
                    row.meta.version,
                    row.dek_id,
                    row.ciphertext,
                    row.content_digest,
                    row.meta.source,
                    1 if row.meta.attested else 0,
                    row.meta.created_at,
                    superseded_at,
                )
                for row, superseded_at in rows
            ],
        )

    async def supersede(self, record_id: str, now: int) -> None:
        await self.db.execute(
            "UPDATE records SET superseded_at = $1 WHERE record_id = $2", now, record_id
        )

    async def insert_record(self, row: RecordRow) -> None:
        """Insert the latest version. Inside a transaction."""
        await self.insert_records([(row, None)])

    async def types_of(self, citizen_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT record_type FROM deks WHERE citizen_id = $1"
            " UNION SELECT record_type FROM records WHERE citizen_id = $1",
            citizen_id,
        )
        return sorted({str(row["record_type"]) for row in rows})

    async def count_erasable(self, citizen_id: str, types: Sequence[str], at: int) -> int:
        if not types:
            return 0
        type_marks = marks(len(types), first=3)
        row = await self.db.fetchrow(
            "SELECT (SELECT count(*) FROM records WHERE citizen_id = $1 AND created_at <= $2"
            f" AND record_type IN ({type_marks})) + (SELECT count(*) FROM deks"
            f" WHERE citizen_id = $1 AND created_at <= $2 AND record_type IN ({type_marks}))"
            " AS n",
            citizen_id,
            at,
            *types,
        )
        return int(row["n"]) if row else 0

    async def shred(self, citizen_id: str, types: Sequence[str], at: int) -> int:
        """Delete ciphertexts, digests and wrapped DEKs made at or before ``at``."""
        if not types:
            return 0
        type_marks = marks(len(types), first=3)
        records = await self.db.fetch(
            f"DELETE FROM records WHERE citizen_id = $1 AND created_at <= $2"
            f" AND record_type IN ({type_marks}) RETURNING record_id",
            citizen_id,
            at,
            *types,
        )
        deks = await self.db.fetch(
            f"DELETE FROM deks WHERE citizen_id = $1 AND created_at <= $2"
            f" AND record_type IN ({type_marks}) RETURNING dek_id",
            citizen_id,
            at,
            *types,
        )
        return len(records) + len(deks)

    # -- platform secrets and signing keys ----------------------------------------

    async def platform_secret(self, name: str) -> tuple[str, int] | None:
        row = await self.db.fetchrow(
            "SELECT wrapped, kek_version FROM platform_secrets WHERE name = $1", name
        )
        return (str(row["wrapped"]), int(row["kek_version"])) if row else None

    async def insert_platform_secret(
        self, *, name: str, wrapped: str, kek_version: int, now: int
    ) -> None:
        await self.db.execute(
            "INSERT INTO platform_secrets (name, wrapped, kek_version, generation, created_at)"
            " VALUES ($1, $2, $3, 1, $4)",
            name,
            wrapped,
            kek_version,
            now,
        )

    async def signing_keys(self) -> list[SigningKeyRow]:
        rows = await self.db.fetch(
            "SELECT kid, use, wrapped, public_jwk, status, created_at FROM signing_keys"
            " ORDER BY created_at, kid"
        )
        return [
            SigningKeyRow(
                kid=r["kid"],
                use=r["use"],
                wrapped=r["wrapped"],
                public_jwk=r["public_jwk"],
                status=r["status"],
                created_at=int(r["created_at"]),
            )
            for r in rows
        ]

    async def retire_signing_key(self, use: str, now: int) -> None:
        await self.db.execute(
            "UPDATE signing_keys SET status = 'retired', retired_at = $1"
            " WHERE use = $2 AND status = 'current'",
            now,
            use,
        )

    async def insert_signing_key(
        self, *, kid: str, use: str, wrapped: str, public_jwk: str, kek_version: int, now: int
    ) -> None:
        await self.db.execute(
            "INSERT INTO signing_keys (kid, use, wrapped, public_jwk, kek_version, generation,"
            " status, created_at) VALUES ($1, $2, $3, $4, $5, 1, 'current', $6)",
            kid,
            use,
            wrapped,
            public_jwk,
            kek_version,
            now,
        )

    # -- KEK rotation ---------------------------------------------------------------

    async def wrapped_below(self, kek_version: int, *, limit: int) -> list[WrappedRow]:
        """Rows still wrapped under an older KEK version (a page of at most ``limit``)."""
        out: list[WrappedRow] = []
        for row in await self.db.fetch(
            "SELECT dek_id, citizen_id, record_type, dek_version, wrapped, kek_version"
            " FROM deks WHERE kek_version < $1 ORDER BY dek_id LIMIT $2",
            kek_version,
            limit,
        ):
            out.append(
                WrappedRow(
                    table="deks",
                    key=row["dek_id"],
                    wrapped=row["wrapped"],
                    kek_version=int(row["kek_version"]),
                    context=row["citizen_id"],
                    aad_parts=(row["record_type"], int(row["dek_version"])),
                )
            )
        for row in await self.db.fetch(
            "SELECT kid, wrapped, kek_version FROM signing_keys WHERE kek_version < $1",
            kek_version,
        ):
            out.append(
                WrappedRow(
                    table="signing_keys",
                    key=row["kid"],
                    wrapped=row["wrapped"],
                    kek_version=int(row["kek_version"]),
                    context="platform",
                    aad_parts=(row["kid"],),
                )
            )
        for row in await self.db.fetch(
            "SELECT name, wrapped, kek_version FROM platform_secrets WHERE kek_version < $1",
            kek_version,
        ):
            out.append(
                WrappedRow(
                    table="platform_secrets",
                    key=row["name"],
                    wrapped=row["wrapped"],
                    kek_version=int(row["kek_version"]),
                    context="platform",
                    aad_parts=(row["name"],),
                )
            )
        return out

    async def replace_wrapped(self, row: WrappedRow, wrapped: str, kek_version: int) -> bool:
        """Compare-and-set a rewrapped secret; False when the row changed meanwhile."""
        column = {"deks": "dek_id", "signing_keys": "kid", "platform_secrets": "name"}[row.table]
        updated = await self.db.fetch(
            f"UPDATE {row.table} SET wrapped = $1, kek_version = $2,"
            f" generation = generation + 1 WHERE {column} = $3 AND wrapped = $4"
            f" RETURNING {column}",
            wrapped,
            kek_version,
            row.key,
            row.wrapped,
        )
        return bool(updated)

    async def referenced_kek_versions(self) -> set[int]:
        rows = await self.db.fetch(
            "SELECT DISTINCT kek_version AS v FROM deks"
            " UNION SELECT DISTINCT kek_version FROM signing_keys"
            " UNION SELECT DISTINCT kek_version FROM platform_secrets"
        )
        return {int(row["v"]) for row in rows}

    # -- erasure holds ------------------------------------------------------------------

    async def add_hold(self, citizen_id: str, record_type: str, until: int) -> None:
        await self.db.execute(
            "INSERT INTO erasure_holds (citizen_id, record_type, until) VALUES ($1, $2, $3)"
            " ON CONFLICT (citizen_id, record_type) DO UPDATE SET until = excluded.until",
            citizen_id,
            record_type,
            until,
        )

    async def due_holds(self, now: int, *, limit: int = 500) -> list[tuple[str, str]]:
        rows = await self.db.fetch(
            "SELECT citizen_id, record_type FROM erasure_holds WHERE until <= $1"
            " ORDER BY until LIMIT $2",
            now,
            limit,
        )
        return [(str(r["citizen_id"]), str(r["record_type"])) for r in rows]

    async def drop_hold(self, citizen_id: str, record_type: str) -> int:
        """Remove a hold; return how many holds the citizen still has."""
        await self.db.execute(
            "DELETE FROM erasure_holds WHERE citizen_id = $1 AND record_type = $2",
            citizen_id,
            record_type,
        )
        row = await self.db.fetchrow(
            "SELECT count(*) AS n FROM erasure_holds WHERE citizen_id = $1", citizen_id
        )
        return int(row["n"]) if row else 0
