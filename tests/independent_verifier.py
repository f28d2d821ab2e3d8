"""A stand-alone RFC 9162 (SHA-256) Merkle verifier for tests.

It imports nothing from oncevault on purpose: it is written from the RFC text
(the fn/sn algorithms of §2.1.3.2 and §2.1.4.2, and MTH of §2.1.1), not from
audit/merkle.py, so that tests which verify proofs served by the application
(for example over HTTP) check them against a second implementation.

Edge cases follow transparency-dev/merkle: a consistency proof from the empty
tree is rejected; equal sizes need an empty proof and equal roots.
"""

import hashlib
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "VerificationError",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "root_from_leaves",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class VerificationError(Exception):
    """The proof, the sizes or the roots do not check out."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes, by the recursive definition of RFC 9162 §2.1.1."""

    def mth(low: int, high: int) -> bytes:
        n = high - low
        if n == 1:
            return hashes[low]
        k = 1
        while k * 2 < n:  # the largest power of two smaller than n
            k *= 2
        return node_hash(mth(low, low + k), mth(low + k, high))

    if not hashes:
        return EMPTY_ROOT
    return mth(0, len(hashes))


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of entries (raw leaf bytes)."""
    return root_from_leaf_hashes([leaf_hash(leaf) for leaf in leaves])


def _require_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise VerificationError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2, step by step. Raises VerificationError."""
    _require_hash(leaf_hash, "leaf hash")
    for p in proof:
        _require_hash(p, "proof element")
    # 1. leaf_index must be below tree_size.
    if index < 0 or index >= size:
        raise VerificationError(f"leaf index {index} outside tree of size {size}")
    # 2. fn = leaf_index, sn = tree_size - 1.
    fn, sn = index, size - 1
    # 3. r = hash.
    r = leaf_hash
    # 4. For each p in inclusion_path:
    for p in proof:
        # a. sn == 0: the proof is too long.
        if sn == 0:
            raise VerificationError("inclusion proof too long")
        # b. a left sibling (fn is a right child, or on the right border) ...
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:  # on the right border: skip levels
                fn >>= 1
                sn >>= 1
        else:  # ... or a right sibling.
            r = node_hash(r, p)
        # c. one level up.
        fn >>= 1
        sn >>= 1
    # 5. sn == 0 and r == root_hash.
    if sn != 0:
        raise VerificationError("inclusion proof too short")
    if r != root:
        raise VerificationError("inclusion proof leads to another root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """RFC 9162 §2.1.4.2, step by step. Raises VerificationError."""
    if size1 < 0 or size2 < size1:
        raise VerificationError(f"sizes go backwards: {size1} -> {size2}")
    if size1 == 0:
        raise VerificationError("consistency with the empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise VerificationError("equal sizes need an empty proof")
        if root1 != root2:
            raise VerificationError("equal sizes but different roots")
        return
    _require_hash(root1, "first root")
    for c in proof:
        _require_hash(c, "proof element")
    # 1. An empty consistency_path fails.
    if not proof:
        raise VerificationError("empty consistency proof")
    path = list(proof)
    # 2. If first is an exact power of 2, prepend first_hash.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # 3. fn = first - 1, sn = second - 1.
    fn, sn = size1 - 1, size2 - 1
    # 4. While LSB(fn) is set, right-shift fn and sn.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = first value of the path.
    fr = sr = path[0]
    # 6. For each subsequent value c:
    for c in path[1:]:
        # a. sn == 0: the proof is too long.
        if sn == 0:
            raise VerificationError("consistency proof too long")
        # b. a left sibling: in both trees ...
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:  # on the right border: skip levels
                fn >>= 1
                sn >>= 1
        else:  # ... a right sibling: only in the second tree.
            sr = node_hash(sr, c)
        # c. one level up.
        fn >>= 1
        sn >>= 1
    # 7. fr == first_hash, sr == second_hash, sn == 0.
    if sn != 0:
        raise VerificationError("consistency proof too short")
    if fr != root1:
        raise VerificationError("consistency proof does not lead to the first root")
    if sr != root2:
        raise VerificationError("consistency proof does not lead to the second root")
