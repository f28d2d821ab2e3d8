"""Piccolo tables of the audit log (storage shape only; the migration is the schema)."""

from __future__ import annotations

from piccolo.columns import BigInt, Bytea, Integer, Text
from piccolo.table import Table


class AuditEntry(Table, tablename="audit_entries"):
    """One leaf: verbatim bytes plus the columns that index it (checked by verify)."""

    seq = BigInt(primary_key=True)
    leaf = Bytea()
    leaf_hash = Bytea()
    ts = BigInt()
    action = Text()
    actor_type = Text()
    actor_id = Text(null=True)
    citizen_id = Text(null=True)
    client_id = Text(null=True)
    consent_id = Text(null=True)
    outcome = Text()
    request_id = Text(null=True)


class AuditNode(Table, tablename="audit_nodes"):
    """Hash of a complete subtree ``(level, idx)``, keyed by ``merkle.Node.position``
    (the order appends create nodes: a batch's nodes are adjacent)."""

    pos = BigInt(primary_key=True)
    level = Integer()
    idx = BigInt()
    hash = Bytea()


class AuditState(Table, tablename="audit_state"):
    """The one tree-state row; appends lock it on PostgreSQL."""

    id = Integer(primary_key=True)
    size = BigInt()
    root_hash = Bytea()
    frontier = Bytea(null=True)  # merkle.frontier_nodes(size) hashes, concatenated


class AuditCheckpoint(Table, tablename="audit_checkpoints"):
    tree_size = BigInt(primary_key=True)
    root_hash = Bytea()
    ts = BigInt()
    jws = Text()


TABLES: tuple[type[Table], ...] = (AuditEntry, AuditNode, AuditState, AuditCheckpoint)
