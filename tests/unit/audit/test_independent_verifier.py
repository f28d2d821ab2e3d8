"""tests/independent_verifier.py: the vectors, proofs from audit.merkle, mutations.

The independent verifier follows the RFC's fn/sn loops, audit.merkle the
transparency-dev decomposition; the differential tests below check that they
accept exactly the same inputs, including the odd ones.
"""

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import merkle
from tests import independent_verifier as iv

ENTRIES = [f"independent-{i}".encode() for i in range(300)]


@pytest.fixture(scope="module")
def tree() -> merkle.MemoryTree:
    t = merkle.MemoryTree()
    rng = random.Random(6962)
    while t.size < len(ENTRIES):
        t.append(ENTRIES[t.size : t.size + rng.randint(1, 17)])
    return t


def _accepts_inclusion(
    verify: Any, leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> bool:
    try:
        verify(leaf, index, size, proof, root)
    except (iv.VerificationError, merkle.ProofError):
        return False
    return True


def _accepts_consistency(
    verify: Any, size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> bool:
    try:
        verify(size1, size2, proof, root1, root2)
    except (iv.VerificationError, merkle.ProofError):
        return False
    return True


def _flip(h: bytes, byte: int = 0) -> bytes:
    return h[:byte] + bytes([h[byte] ^ 0x10]) + h[byte + 1 :]


def test_imports_nothing_from_the_project() -> None:
    source = Path(iv.__file__).read_text(encoding="utf-8")
    imports = {
        line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))
    }
    assert imports <= {"hashlib", "collections.abc"}


def test_agrees_with_vector(merkle_probe: dict[str, Any]) -> None:
    proof = [bytes.fromhex(h) for h in merkle_probe["proof"]]
    if merkle_probe["kind"] == "inclusion":
        accepted = _accepts_inclusion(
            iv.verify_inclusion,
            bytes.fromhex(merkle_probe["leafHash"]),
            merkle_probe["leafIdx"],
            merkle_probe["treeSize"],
            proof,
            bytes.fromhex(merkle_probe["root"]),
        )
    else:
        accepted = _accepts_consistency(
            iv.verify_consistency,
            merkle_probe["size1"],
            merkle_probe["size2"],
            proof,
            bytes.fromhex(merkle_probe["root1"]),
            bytes.fromhex(merkle_probe["root2"]),
        )
    assert accepted is not merkle_probe["wantErr"]


def test_roots_from_leaves_match(tree: merkle.MemoryTree) -> None:
    assert iv.root_from_leaves([]) == iv.EMPTY_ROOT == merkle.EMPTY_ROOT
    assert iv.leaf_hash(b"x") == merkle.leaf_hash(b"x")
    assert iv.node_hash(b"a", b"b") == merkle.node_hash(b"a", b"b")
    for size in range(len(ENTRIES) + 1):
        assert iv.root_from_leaves(ENTRIES[:size]) == tree.root(size), size


@pytest.mark.parametrize("size", range(1, 65))
def test_accepts_every_proof_of_small_trees(tree: merkle.MemoryTree, size: int) -> None:
    root = tree.root(size)
    for index in range(size):
        iv.verify_inclusion(
            tree.leaf_hash(index), index, size, tree.inclusion_proof(index, size), root
        )
    for size1 in range(1, size + 1):
        proof = tree.consistency_proof(size1, size)
        iv.verify_consistency(size1, size, proof, tree.root(size1), root)


@settings(deadline=None)  # example count comes from the profile (tests/conftest.py)
@given(st.data())
def test_accepts_proofs_and_rejects_mutations(tree: merkle.MemoryTree, data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=2, max_value=len(ENTRIES)), label="size")
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    size1 = data.draw(st.integers(min_value=1, max_value=size - 1), label="size1")
    root, root1, leaf = tree.root(size), tree.root(size1), tree.leaf_hash(index)

    proof = tree.inclusion_proof(index, size)
    iv.verify_inclusion(leaf, index, size, proof, root)
    bad_inclusions = [
        *(
            (leaf, index, size, [*proof[:i], _flip(h), *proof[i + 1 :]], root)
            for i, h in enumerate(proof)
        ),
        *((leaf, index, size, proof[:i] + proof[i + 1 :], root) for i in range(len(proof))),
        (leaf, index, size, [*proof, root], root),
        (leaf, index, size, [root, *proof], root),
        (_flip(leaf), index, size, proof, root),
        (leaf, index, size, proof, _flip(root, 31)),
        (leaf, (index + 1) % size, size, proof, root),
        (leaf, index, size * 2, proof, root),
        (leaf, size, size, proof, root),
    ]
    for args in bad_inclusions:
        with pytest.raises(iv.VerificationError):
            iv.verify_inclusion(*args)

    cproof = tree.consistency_proof(size1, size)
    iv.verify_consistency(size1, size, cproof, root1, root)
    bad_consistencies = [
        *(
            (size1, size, [*cproof[:i], _flip(h), *cproof[i + 1 :]], root1, root)
            for i, h in enumerate(cproof)
        ),
        *((size1, size, cproof[:i] + cproof[i + 1 :], root1, root) for i in range(len(cproof))),
        (size1, size, [*cproof, root], root1, root),
        (size1, size, [root1, *cproof], root1, root),
        (size1, size, cproof, _flip(root1), root),
        (size1, size, cproof, root1, _flip(root)),
        (size1, size, cproof, root, root1),
        *((other, size, cproof, root1, root) for other in {size1 - 1, size1 + 1} - {0}),
        (0, size, cproof, root1, root),
        (size1, size * 2, cproof, root1, root),
        (size, size1, cproof, root, root1),
    ]
    for cargs in bad_consistencies:
        with pytest.raises(iv.VerificationError):
            iv.verify_consistency(*cargs)


@pytest.mark.parametrize("size", range(1, 17))
def test_inclusion_verdicts_agree_with_audit_merkle(tree: merkle.MemoryTree, size: int) -> None:
    """Both verifiers accept exactly the same claims, for every index and claimed size."""
    root = tree.root(size)
    for index in range(size):
        proof = tree.inclusion_proof(index, size)
        leaf = tree.leaf_hash(index)
        for claimed_index in range(-1, size + 1):
            for claimed_size in range(2 * size + 2):
                args = (leaf, claimed_index, claimed_size, proof, root)
                assert _accepts_inclusion(iv.verify_inclusion, *args) is _accepts_inclusion(
                    merkle.verify_inclusion, *args
                ), args


@pytest.mark.parametrize("size2", range(1, 17))
def test_consistency_verdicts_agree_with_audit_merkle(tree: merkle.MemoryTree, size2: int) -> None:
    root2 = tree.root(size2)
    for size1 in range(1, size2 + 1):
        proof = tree.consistency_proof(size1, size2)
        root1 = tree.root(size1)
        for claimed1 in range(size2 + 2):
            for claimed2 in range(2 * size2 + 2):
                args = (claimed1, claimed2, proof, root1, root2)
                assert _accepts_consistency(iv.verify_consistency, *args) is _accepts_consistency(
                    merkle.verify_consistency, *args
                ), args
