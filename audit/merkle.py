"""RFC 9162 Merkle tree over SHA-256: hashing, stored subtrees, proofs, verification.

Hashing (RFC 9162 §2.1.1)::

    MTH({})     = SHA-256()                              EMPTY_ROOT
    MTH({d0})   = SHA-256(0x00 || d0)                    leaf_hash
    MTH(D[n])   = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   node_hash
                  where k is the largest power of two smaller than n

Storage model. A *complete subtree* ``Node(level, index)`` covers the leaves
``[index * 2**level, (index + 1) * 2**level)``. Once all its leaves exist its hash
never changes, so a repository stores it once, when it is completed:

* appending: load the hashes at ``frontier_nodes(size)`` (one per set bit of
  ``size``), call ``append_nodes`` and insert every ``(Node, hash)`` it returns;
  ``root_from_frontier`` of the new frontier is the new root;
* proving: ``nodes_for_inclusion``/``nodes_for_consistency`` name every stored
  node a proof needs (fetch them in one query), then ``inclusion_proof`` /
  ``consistency_proof`` assemble the proof from them. Nothing scans the log.

Every subtree hash that appears in an RFC 9162 proof (and the root of any tree
size) is the MTH of a *proof-shaped* range ``[start, end)``: ``start`` is a
multiple of the smallest power of two >= ``end - start``. Such a range splits
greedily into complete subtrees, largest first, and its MTH is their hashes
folded right to left (``range_nodes``, ``hash_range``).

Verification (``verify_inclusion``, ``verify_consistency``) is pure and gives
the verdicts of transparency-dev/merkle ``proof/verify.go`` (including its edge
cases: no consistency proof from size 0; equal sizes need an empty proof and
equal roots), except that every hash it chains must be ``HASH_SIZE`` bytes
(verify.go checks only the leaf hash). It returns ``None`` or raises a
``ProofError`` subclass::

    ProofError           any failure to build or verify a proof
    +-- InvalidIndex     leaf index outside the tree
    +-- InvalidSize      tree sizes or leaf range that make no proof
    +-- MalformedHash    a hash that is not HASH_SIZE bytes
    +-- WrongProofLength proof has the wrong number of hashes
    +-- RootMismatch     the proof leads to another root
"""

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "InvalidIndex",
    "InvalidSize",
    "MalformedHash",
    "MemoryTree",
    "Node",
    "ProofError",
    "RootMismatch",
    "WrongProofLength",
    "append_nodes",
    "consistency_proof",
    "consistency_proof_ranges",
    "frontier_nodes",
    "hash_range",
    "inclusion_proof",
    "inclusion_proof_ranges",
    "leaf_hash",
    "node_hash",
    "nodes_for_consistency",
    "nodes_for_inclusion",
    "range_nodes",
    "root_from_consistency",
    "root_from_frontier",
    "root_from_inclusion",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Size in bytes of every hash in the tree (SHA-256)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
"""Root of the empty tree, ``MTH({}) = SHA-256()``."""


# --------------------------------------------------------------------------- errors


class ProofError(Exception):
    """A Merkle proof could not be built or did not verify."""

    code: ClassVar[str] = "proof_invalid"


class InvalidIndex(ProofError):
    """The leaf index is negative or not below the tree size."""

    code: ClassVar[str] = "proof_invalid_index"


class InvalidSize(ProofError):
    """The tree sizes (or leaf range) cannot have a proof."""

    code: ClassVar[str] = "proof_invalid_size"


class MalformedHash(ProofError):
    """A hash (leaf hash, proof element, stored node) is not ``HASH_SIZE`` bytes."""

    code: ClassVar[str] = "proof_malformed_hash"


class WrongProofLength(ProofError):
    """The proof does not have the number of hashes the sizes call for."""

    code: ClassVar[str] = "proof_wrong_length"

    def __init__(self, got: int, want: int) -> None:
        super().__init__(f"wrong proof length {got}, want {want}")
        self.got = got
        self.want = want


class RootMismatch(ProofError):
    """The root computed from the proof differs from the expected root."""

    code: ClassVar[str] = "proof_root_mismatch"

    def __init__(self, *, expected: bytes, calculated: bytes) -> None:
        super().__init__(f"calculated root {calculated.hex()} != expected {expected.hex()}")
        self.expected = expected
        self.calculated = calculated


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise MalformedHash(f"{what} has {len(value)} bytes, want {HASH_SIZE}")


def _verify_match(calculated: bytes, expected: bytes) -> None:
    if calculated != expected:
        raise RootMismatch(expected=expected, calculated=calculated)


# --------------------------------------------------------------------------- stored subtrees


@dataclass(frozen=True, slots=True)
class Node:
    """Coordinate of a complete subtree: leaves ``[index * 2**level, (index+1) * 2**level)``.

    ``Node(0, i)`` is the leaf hash of entry ``i``.
    """

    level: int
    index: int

    @property
    def start(self) -> int:
        """First leaf covered by this subtree."""
        return self.index << self.level

    @property
    def end(self) -> int:
        """One past the last leaf covered by this subtree."""
        return (self.index + 1) << self.level

    @property
    def position(self) -> int:
        """The node's number in the order appends create nodes (post-order, as a
        Merkle Mountain Range numbers its nodes): ``append_nodes`` returns nodes in
        increasing position, so a table keyed by it grows at one end only.

        The ``end`` leaves of a tree hold ``2 * end - popcount(end)`` complete
        subtrees; the last leaf completes the subtrees of levels ``0 ..
        trailing_zeros(end)`` in that order, so this node is followed by those
        above it.
        """
        end = self.end
        trailing_zeros = (end & -end).bit_length() - 1
        return 2 * end - end.bit_count() - (trailing_zeros - self.level) - 1


def frontier_nodes(size: int) -> list[Node]:
    """Return the complete subtrees that make up a tree of ``size`` leaves.

    One node per set bit of ``size``, largest (leftmost) first; these are the
    nodes ``append_nodes`` needs as its ``frontier``.
    """
    if size < 0:
        raise InvalidSize(f"negative tree size {size}")
    nodes: list[Node] = []
    start = 0
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            nodes.append(Node(level, start >> level))
            start += 1 << level
    return nodes


def append_nodes(
    frontier: Sequence[bytes], size: int, leaf_hashes: Sequence[bytes]
) -> tuple[list[tuple[Node, bytes]], list[bytes]]:
    """Append leaf hashes to a tree of ``size`` leaves given by its frontier.

    Args:
        frontier: hashes at ``frontier_nodes(size)``, largest subtree first.
        size: number of leaves already in the tree.
        leaf_hashes: ``leaf_hash(entry)`` of each new entry, in log order.

    Returns:
        Every complete subtree created by the append, as ``(Node, hash)`` in the
        order they complete (each leaf, then the nodes it completes), and the
        new frontier (for ``size + len(leaf_hashes)``).

    Raises:
        InvalidSize: ``frontier`` does not have one hash per set bit of ``size``.
        MalformedHash: a hash is not ``HASH_SIZE`` bytes.
    """
    if size < 0 or len(frontier) != size.bit_count():
        raise InvalidSize(f"frontier has {len(frontier)} hashes, tree size {size} needs")
    for h in frontier:
        _check_hash(h, "frontier hash")
    stack = list(frontier)
    created: list[tuple[Node, bytes]] = []
    for position, leaf in enumerate(leaf_hashes, start=size):
        _check_hash(leaf, "leaf hash")
        level, index, subtree = 0, position, leaf
        created.append((Node(level, index), subtree))
        # A set low bit means a complete left sibling of the same level is on
        # top of the stack: merge, moving one level up, until the bit is clear.
        while index & 1:
            subtree = node_hash(stack.pop(), subtree)
            level, index = level + 1, index >> 1
            created.append((Node(level, index), subtree))
        stack.append(subtree)
    return created, stack


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    """Hash complete subtrees of a proof-shaped range, largest first, into its MTH."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = node_hash(h, result)
    return result


def root_from_frontier(frontier: Sequence[bytes]) -> bytes:
    """Return the tree root from its frontier (``EMPTY_ROOT`` for an empty tree)."""
    return _fold_right(frontier)


def _check_range(start: int, end: int) -> None:
    if start == end == 0:
        return
    if not 0 <= start < end:
        raise InvalidSize(f"empty or negative leaf range [{start}, {end})")
    width = 1 << (end - start - 1).bit_length()  # smallest power of two >= end - start
    if start % width:
        raise InvalidSize(f"leaf range [{start}, {end}) is not a subtree of any proof")


def range_nodes(start: int, end: int) -> list[Node]:
    """Split the proof-shaped leaf range ``[start, end)`` into complete subtrees.

    Largest first. ``[0, size)`` gives the root's subtrees (``frontier_nodes``).

    Raises:
        InvalidSize: ``start`` is not a multiple of the smallest power of two
            >= ``end - start`` (no RFC 9162 proof contains such a range), or the
            range is empty and not ``[0, 0)``.
    """
    _check_range(start, end)
    nodes: list[Node] = []
    position = start
    while position < end:
        level = (end - position).bit_length() - 1  # largest power of two that fits
        nodes.append(Node(level, position >> level))
        position += 1 << level
    return nodes


def hash_range(start: int, end: int, get: Callable[[Node], bytes]) -> bytes:
    """Return MTH of the leaves ``[start, end)`` from stored complete-subtree hashes.

    ``MTH(D[n]) = H(MTH(D[0:k]), MTH(D[k:n]))`` with ``k`` the largest power of
    two below ``n`` (RFC 9162 §2.1.1): for a proof-shaped range ``D[0:k]`` is
    the first complete subtree of ``range_nodes``, so the MTH is a right-to-left
    fold of the decomposition.

    Raises:
        InvalidSize: the range is not proof-shaped (see ``range_nodes``).
        MalformedHash: ``get`` returned a hash that is not ``HASH_SIZE`` bytes.
    """
    hashes = [get(node) for node in range_nodes(start, end)]
    for h in hashes:
        _check_hash(h, "stored node hash")
    return _fold_right(hashes)


# --------------------------------------------------------------------------- building proofs


def _split(width: int) -> int:
    """Return ``k``, the largest power of two smaller than ``width`` (``width > 1``)."""
    return 1 << ((width - 1).bit_length() - 1)


def inclusion_proof_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Return the leaf ranges whose MTHs form the inclusion proof of leaf ``index``.

    RFC 9162 §2.1.3.1, ``PATH(m, D[n])`` for n > 1, k the largest power of two < n::

        m < k:   PATH(m, D[0:k]) : MTH(D[k:n])
        m >= k:  PATH(m - k, D[k:n]) : MTH(D[0:k])

    so the sibling nearest the leaf comes first and the root's child last.

    Raises:
        InvalidIndex: ``index`` is not in ``[0, size)``.
    """
    if not 0 <= index < size:
        raise InvalidIndex(f"leaf index {index} not in tree of size {size}")
    ranges: list[tuple[int, int]] = []
    low, high = 0, size
    while high - low > 1:  # PATH(0, {d0}) = {}
        middle = low + _split(high - low)
        if index < middle:
            ranges.append((middle, high))
            high = middle
        else:
            ranges.append((low, middle))
            low = middle
    ranges.reverse()
    return ranges


def consistency_proof_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Return the leaf ranges whose MTHs form the consistency proof ``size1 -> size2``.

    RFC 9162 §2.1.4.1, ``PROOF(m, D[n]) = SUBPROOF(m, D[n], true)``::

        SUBPROOF(m, D[m], true)  = {}
        SUBPROOF(m, D[m], false) = {MTH(D[m])}
        m <= k:  SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
        m > k:   SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])

    Equal sizes give an empty proof.

    Raises:
        InvalidSize: not ``0 < size1 <= size2`` (a proof from the empty tree is
            meaningless, as in transparency-dev/merkle).
    """
    if not 0 < size1 <= size2:
        raise InvalidSize(f"no consistency proof from size {size1} to size {size2}")
    ranges: list[tuple[int, int]] = []
    low, high, whole = 0, size2, True
    while size1 < high:
        middle = low + _split(high - low)
        if size1 <= middle:
            ranges.append((middle, high))
            high = middle
        else:
            ranges.append((low, middle))
            low, whole = middle, False
    if not whole:  # D[low:high] is the old tree's last subtree, not its root
        ranges.append((low, high))
    ranges.reverse()
    return ranges


def _nodes_for(ranges: Iterable[tuple[int, int]]) -> set[Node]:
    return {node for start, end in ranges for node in range_nodes(start, end)}


def nodes_for_inclusion(index: int, size: int) -> set[Node]:
    """Return every stored node needed by ``inclusion_proof(index, size, ...)``."""
    return _nodes_for(inclusion_proof_ranges(index, size))


def nodes_for_consistency(size1: int, size2: int) -> set[Node]:
    """Return every stored node needed by ``consistency_proof(size1, size2, ...)``."""
    return _nodes_for(consistency_proof_ranges(size1, size2))


def inclusion_proof(index: int, size: int, get: Callable[[Node], bytes]) -> list[bytes]:
    """Return the RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size``.

    ``get`` returns the stored hash of a node in ``nodes_for_inclusion(index, size)``.
    """
    return [hash_range(start, end, get) for start, end in inclusion_proof_ranges(index, size)]


def consistency_proof(size1: int, size2: int, get: Callable[[Node], bytes]) -> list[bytes]:
    """Return the RFC 9162 consistency proof between tree sizes ``size1 <= size2``.

    ``get`` returns the stored hash of a node in ``nodes_for_consistency(size1, size2)``.
    """
    return [hash_range(start, end, get) for start, end in consistency_proof_ranges(size1, size2)]


# --------------------------------------------------------------------------- verifying proofs
#
# RFC 9162 §2.1.3.2 and §2.1.4.2 walk the proof bit by bit with `fn`/`sn`
# counters. As in transparency-dev/merkle, the same walk is split here at the
# level where the paths to leaf `index` and to the last leaf `size - 1`
# diverge: below it ("inner") the bit of `index` says on which side the
# sibling is; above it ("border") the path runs along the right border of the
# tree, where every sibling is a left one and a level without a sibling is
# skipped. Counting both parts up front gives the exact proof length.


def _inclusion_shape(index: int, size: int) -> tuple[int, int]:
    """Return ``(inner, border)``: how many proof hashes lie below/above the divergence."""
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(h, seed) if index >> i & 1 else node_hash(seed, h)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """Like ``_chain_inner`` but only with left siblings: the subtree's older version."""
    for i, h in enumerate(proof):
        if index >> i & 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def root_from_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Return the root that ``proof`` leads to from leaf ``index`` of a tree of ``size``.

    Raises:
        InvalidIndex: ``index`` is not in ``[0, size)``.
        MalformedHash: ``leaf_hash`` or a proof element is not ``HASH_SIZE`` bytes.
        WrongProofLength: ``proof`` has the wrong number of hashes.
    """
    # 1. (§2.1.3.2 step 1) The leaf must be inside the tree.
    if not 0 <= index < size:
        raise InvalidIndex(f"leaf index {index} not in tree of size {size}")
    _check_hash(leaf_hash, "leaf hash")
    for h in proof:
        _check_hash(h, "proof hash")
    # 2. (steps 2, 4a and 5's "sn is 0") The index and size fix the proof length.
    inner, border = _inclusion_shape(index, size)
    if len(proof) != inner + border:
        raise WrongProofLength(len(proof), inner + border)
    # 3. (steps 3-4) Chain from the leaf hash: below the divergence the index bit
    #    picks the side, above it every sibling is on the left.
    result = _chain_inner(leaf_hash, proof[:inner], index)
    return _chain_border_right(result, proof[inner:])


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify an RFC 9162 inclusion proof (§2.1.3.2); return ``None`` when it holds.

    Raises:
        InvalidIndex: ``index`` is not in ``[0, size)``.
        MalformedHash: ``leaf_hash`` or a proof element is not ``HASH_SIZE`` bytes.
        WrongProofLength: ``proof`` has the wrong number of hashes.
        RootMismatch: the proof leads to a root other than ``root``.
    """
    # 4. (§2.1.3.2 step 5) The computed root must be the expected root.
    _verify_match(root_from_inclusion(leaf_hash, index, size, proof), root)


def root_from_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes) -> bytes:
    """Check ``proof`` against ``root1`` and return the root of size ``size2`` it proves.

    Raises:
        InvalidSize: not ``0 < size1 <= size2``.
        MalformedHash: the sizes differ and a proof element or ``root1`` is not
            ``HASH_SIZE`` bytes.
        WrongProofLength: the proof has the wrong number of hashes (equal sizes
            need an empty proof, different sizes a non-empty one).
        RootMismatch: the proof does not lead to ``root1``.
    """
    # 1. Sizes: the tree only grows, and nothing can be proved about the empty tree.
    if size2 < size1:
        raise InvalidSize(f"size2 {size2} < size1 {size1}")
    if size1 <= 0:
        raise InvalidSize("a consistency proof from the empty tree is meaningless")
    # 2. Equal sizes: the proof is empty and the roots are the same.
    if size1 == size2:
        if proof:
            raise WrongProofLength(len(proof), 0)
        return root1
    _check_hash(root1, "root1")
    for h in proof:
        _check_hash(h, "proof hash")
    # 3. (§2.1.4.2 steps 2-4) The proof is the inclusion proof of leaf size1 - 1 in
    #    size2, from level `shift` up (the subtrees below are in both trees),
    #    preceded by the hash of the level-`shift` subtree holding that leaf,
    #    unless that subtree is the whole old tree: its hash is then root1.
    inner, border = _inclusion_shape(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1  # trailing zero bits of size1
    inner -= shift
    start = 0 if size1 == 1 << shift else 1
    if len(proof) != start + inner + border:
        raise WrongProofLength(len(proof), start + inner + border)
    seed = root1 if start == 0 else proof[0]
    rest = proof[start:]
    # 4. (§2.1.4.2 steps 5-7) Rebuild the old root from left siblings only ...
    mask = (size1 - 1) >> shift
    hash1 = _chain_inner_right(seed, rest[:inner], mask)
    hash1 = _chain_border_right(hash1, rest[inner:])
    _verify_match(hash1, root1)
    # 5. ... and the new root from all of them.
    hash2 = _chain_inner(seed, rest[:inner], mask)
    return _chain_border_right(hash2, rest[inner:])


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Verify an RFC 9162 consistency proof (§2.1.4.2); return ``None`` when it holds.

    Semantics are those of transparency-dev/merkle ``VerifyConsistency``:
    ``size1 == 0`` is always an error; equal sizes need an empty proof and
    ``root1 == root2``.

    Raises:
        InvalidSize: not ``0 < size1 <= size2``.
        MalformedHash: the sizes differ and a proof element or ``root1`` is not
            ``HASH_SIZE`` bytes.
        WrongProofLength: the proof has the wrong number of hashes.
        RootMismatch: the proof does not lead to ``root1`` or to ``root2``.
    """
    _verify_match(root_from_consistency(size1, size2, proof, root1), root2)


# --------------------------------------------------------------------------- in memory


class MemoryTree:
    """An append-only tree in memory, keeping every complete subtree hash.

    It uses exactly the functions a database-backed log uses, so it serves as
    their executable example, in tests, and for offline verification of an
    exported log.
    """

    def __init__(self) -> None:
        self.nodes: dict[Node, bytes] = {}
        self._frontier: list[bytes] = []
        self._size = 0

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._size

    def append(self, leaves: Iterable[bytes]) -> None:
        """Append entries (leaf bytes, hashed with ``leaf_hash``)."""
        self.append_hashes([leaf_hash(leaf) for leaf in leaves])

    def append_hashes(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append entries given by their leaf hashes."""
        created, self._frontier = append_nodes(self._frontier, self._size, leaf_hashes)
        self.nodes.update(created)
        self._size += len(leaf_hashes)

    def leaf_hash(self, index: int) -> bytes:
        """Return the leaf hash of entry ``index``."""
        if not 0 <= index < self._size:
            raise InvalidIndex(f"leaf index {index} not in tree of size {self._size}")
        return self.nodes[Node(0, index)]

    def _size_or_current(self, size: int | None) -> int:
        if size is None:
            return self._size
        if not 0 <= size <= self._size:
            raise InvalidSize(f"tree size {size} not in [0, {self._size}]")
        return size

    def root(self, size: int | None = None) -> bytes:
        """Return the root of the tree at ``size`` leaves (default: now)."""
        if size is None or size == self._size:
            return root_from_frontier(self._frontier)
        return hash_range(0, self._size_or_current(size), self.nodes.__getitem__)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Return the inclusion proof of leaf ``index`` in the tree at ``size`` leaves."""
        return inclusion_proof(index, self._size_or_current(size), self.nodes.__getitem__)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Return the consistency proof from ``size1`` leaves to ``size2`` (default: now)."""
        return consistency_proof(size1, self._size_or_current(size2), self.nodes.__getitem__)
