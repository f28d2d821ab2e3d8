"""Piccolo tables of the vault: storage shape only, no behaviour.

The schema itself is created by the raw-SQL migrations in ``piccolo_migrations/``
(one statement list per engine, so constraints and indexes are exact); these classes
mirror it for Piccolo queries, and ``tests/integration/storage/test_migrations.py``
checks that the two agree on both engines. Nothing here holds plaintext personal
data: identifiers appear only as HMAC blind indexes, record content only sealed.
"""

from __future__ import annotations

from piccolo.columns import BigInt, Bytea, Integer, Text
from piccolo.table import Table


class InstanceMeta(Table, tablename="oncevault_meta"):
    """Facts about this installation (``instance_id``, ``initialised_at``, ...)."""

    key = Text(primary_key=True)
    value = Text()


class Citizen(Table, tablename="citizens"):
    citizen_id = Text(primary_key=True)
    created_at = BigInt()


class CitizenIndex(Table, tablename="citizen_index"):
    """``HMAC-SHA256(index_key, kind ":" identifier)`` -> citizen id."""

    blind_index = Bytea(primary_key=True)
    citizen_id = Text()
    kind = Text()


class PlatformSecret(Table, tablename="platform_secrets"):
    """Secrets wrapped by the KEK (``index_key``)."""

    name = Text(primary_key=True)
    wrapped = Text()
    kek_version = Integer()
    generation = Integer()
    created_at = BigInt()


class SigningKey(Table, tablename="signing_keys"):
    """Ed25519 keys per use (``at``, ``rc``, ``cp``), private part wrapped by the KEK."""

    kid = Text(primary_key=True)
    use = Text()
    wrapped = Text()
    public_jwk = Text()
    kek_version = Integer()
    generation = Integer()
    status = Text()
    created_at = BigInt()
    retired_at = BigInt(null=True)


class Dek(Table, tablename="deks"):
    """One data-encryption key per (citizen, record type), wrapped by the KEK."""

    dek_id = Text(primary_key=True)
    citizen_id = Text()
    record_type = Text()
    dek_version = Integer()
    wrapped = Text()
    kek_version = Integer()
    generation = Integer()
    created_at = BigInt()


class Record(Table, tablename="records"):
    """One row per record version; ``ciphertext`` seals the data and attestation."""

    record_id = Text(primary_key=True)
    citizen_id = Text()
    record_type = Text()
    version = Integer()
    dek_id = Text()
    ciphertext = Bytea()
    content_digest = Bytea()
    source = Text()
    attested = Integer()
    created_at = BigInt()
    superseded_at = BigInt(null=True)


class ErasureHold(Table, tablename="erasure_holds"):
    """A type kept after an erasure until its statutory retention ends.

    The real key is (citizen_id, record_type); Piccolo needs one pk column.
    """

    citizen_id = Text(primary_key=True)
    record_type = Text()
    until = BigInt()


TABLES: tuple[type[Table], ...] = (
    ErasureHold,
    InstanceMeta,
    Citizen,
    CitizenIndex,
    PlatformSecret,
    SigningKey,
    Dek,
    Record,
)
