"""audit.merkle against the transparency-dev/merkle vectors and the RFC 9162 known roots."""

from collections import Counter
from typing import Any

import pytest

from audit import merkle

# Leaves and roots for tree sizes 0..8 from /work/shared/vectors/README.md.
README_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
README_ROOTS = [
    bytes.fromhex(h)
    for h in [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]

# Mutations whose failure is pinned to one error class (desc prefix -> class).
# Mutated indices and sizes fail in different ways from case to case.
EXPECTED_ERROR: dict[str, type[merkle.ProofError]] = {
    "modified proof": merkle.RootMismatch,
    "trailing garbage": merkle.MalformedHash,
    "preceding garbage": merkle.MalformedHash,
    "wrong leaf": merkle.MalformedHash,
    "trailing root": merkle.WrongProofLength,
    "preceding root": merkle.WrongProofLength,
    "preceding proof": merkle.WrongProofLength,
    "removed component": merkle.WrongProofLength,
    "inserted component": merkle.WrongProofLength,
    "truncated proof": merkle.WrongProofLength,
    "empty proof": merkle.WrongProofLength,
    "treeSize mul": merkle.WrongProofLength,
    "size2 mul": merkle.WrongProofLength,
    "random root": merkle.RootMismatch,
    "swapped roots": merkle.RootMismatch,
    "wrong root2": merkle.RootMismatch,
    "size1 is greater than size2": merkle.InvalidSize,
    "size1 is zero": merkle.InvalidSize,
    "sizes are equal (zero)": merkle.InvalidSize,
    "sizes are equal (one) but roots are not": merkle.RootMismatch,
    "sizes match but proof is not empty and sizes are one": merkle.WrongProofLength,
}


def _hashes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def run_probe(probe: dict[str, Any]) -> None:
    if probe["kind"] == "inclusion":
        merkle.verify_inclusion(
            bytes.fromhex(probe["leafHash"]),
            probe["leafIdx"],
            probe["treeSize"],
            _hashes(probe["proof"]),
            bytes.fromhex(probe["root"]),
        )
    else:
        merkle.verify_consistency(
            probe["size1"],
            probe["size2"],
            _hashes(probe["proof"]),
            bytes.fromhex(probe["root1"]),
            bytes.fromhex(probe["root2"]),
        )


def test_all_vectors_loaded(merkle_probes: list[dict[str, Any]]) -> None:
    assert len(merkle_probes) == 196
    counts = Counter((p["kind"], p["wantErr"]) for p in merkle_probes)
    assert counts == {
        ("inclusion", False): 6,
        ("inclusion", True): 92,
        ("consistency", False): 6,
        ("consistency", True): 92,
    }


def test_vector(merkle_probe: dict[str, Any]) -> None:
    if not merkle_probe["wantErr"]:
        run_probe(merkle_probe)  # raises on failure
        return
    expected = next(
        (cls for prefix, cls in EXPECTED_ERROR.items() if merkle_probe["desc"].startswith(prefix)),
        merkle.ProofError,
    )
    with pytest.raises(expected) as info:
        run_probe(merkle_probe)
    assert info.value.code.startswith("proof_")


def test_valid_vectors_are_the_proofs_we_build(merkle_probes: list[dict[str, Any]]) -> None:
    """The happy-path vectors are proofs over the README leaves: we build the same ones."""
    tree = merkle.MemoryTree()
    tree.append(README_LEAVES)
    checked = 0
    for probe in merkle_probes:
        if probe["wantErr"] or probe["desc"] != "happy path":
            continue
        proof = _hashes(probe["proof"])
        if probe["kind"] == "inclusion":
            index, size = probe["leafIdx"], probe["treeSize"]
            assert bytes.fromhex(probe["root"]) == tree.root(size)
            assert bytes.fromhex(probe["leafHash"]) == tree.leaf_hash(index)
            assert tree.inclusion_proof(index, size) == proof
        else:
            size1, size2 = probe["size1"], probe["size2"]
            assert bytes.fromhex(probe["root1"]) == tree.root(size1)
            assert bytes.fromhex(probe["root2"]) == tree.root(size2)
            assert tree.consistency_proof(size1, size2) == proof
        checked += 1
    assert checked == 10


def test_known_roots_by_appending_one_at_a_time() -> None:
    tree = merkle.MemoryTree()
    assert tree.root() == README_ROOTS[0] == merkle.EMPTY_ROOT
    for size, leaf in enumerate(README_LEAVES, start=1):
        tree.append([leaf])
        assert tree.size == size
        assert tree.root() == README_ROOTS[size]


@pytest.mark.parametrize("size", range(9))
def test_known_roots_from_stored_nodes(size: int) -> None:
    created, frontier = merkle.append_nodes(
        [], 0, [merkle.leaf_hash(leaf) for leaf in README_LEAVES]
    )
    nodes = dict(created)
    assert merkle.hash_range(0, size, nodes.__getitem__) == README_ROOTS[size]
    assert merkle.root_from_frontier(frontier) == README_ROOTS[8]
    prefix_frontier = [nodes[node] for node in merkle.frontier_nodes(size)]
    assert merkle.root_from_frontier(prefix_frontier) == README_ROOTS[size]


def test_hashing_primitives() -> None:
    assert merkle.HASH_SIZE == 32
    assert merkle.leaf_hash(b"") == README_ROOTS[1]
    assert merkle.node_hash(merkle.leaf_hash(b""), merkle.leaf_hash(b"\x00")) == README_ROOTS[2]
    assert merkle.EMPTY_ROOT.hex() == README_ROOTS[0].hex()
