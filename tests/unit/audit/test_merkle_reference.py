"""audit.merkle against a naive recursive RFC 9162 reference (§2.1.1-§2.1.4).

The reference below is the RFC text transcribed on lists of entries; it is
slow and obviously right. The optimised code builds the tree through
``append_nodes`` in random batches and proves from stored complete subtrees.
"""

import hashlib
import random
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import merkle

# --------------------------------------------------------------------------- the reference


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    """MTH(D[n]), RFC 9162 §2.1.1."""
    n = len(d)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return _sha256(b"\x00" + d[0])
    k = _k(n)
    return _sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]), RFC 9162 §2.1.3.1."""
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), RFC 9162 §2.1.4.1."""
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]), RFC 9162 §2.1.4.1."""
    return ref_subproof(m, d, True)


# --------------------------------------------------------------------------- the tree under test

MAX_SIZE = 300
ENTRIES = [f"entry-{i}".encode() for i in range(MAX_SIZE)]
LEAF_HASHES = [merkle.leaf_hash(e) for e in ENTRIES]


def build(batch_sizes: Sequence[int]) -> tuple[dict[merkle.Node, bytes], list[bytes], list[int]]:
    """Append ENTRIES in batches as a repository would; return nodes, frontier, sizes seen."""
    nodes: dict[merkle.Node, bytes] = {}
    frontier: list[bytes] = []
    size = 0
    sizes = [0]
    for batch in batch_sizes:
        # A repository loads only the frontier nodes before each append.
        assert frontier == [nodes[node] for node in merkle.frontier_nodes(size)]
        created, frontier = merkle.append_nodes(frontier, size, LEAF_HASHES[size : size + batch])
        for node, h in created:
            assert node not in nodes, "a complete subtree is written once"
            if node.level:  # its children completed earlier
                assert merkle.Node(node.level - 1, 2 * node.index) in nodes
                assert merkle.Node(node.level - 1, 2 * node.index + 1) in nodes
            nodes[node] = h
        size += batch
        sizes.append(size)
    return nodes, frontier, sizes


def random_batches(rng: random.Random, total: int) -> list[int]:
    batches: list[int] = []
    while sum(batches) < total:
        batches.append(min(rng.choice([0, 1, 1, 2, 3, 5, 8, 13, 40]), total - sum(batches)))
    return batches


def complete_nodes(size: int) -> set[merkle.Node]:
    return {
        merkle.Node(level, index)
        for level in range(size.bit_length())
        for index in range(size >> level)
    }


@pytest.fixture(scope="module")
def stored() -> dict[merkle.Node, bytes]:
    nodes, frontier, _ = build(random_batches(random.Random(9162), MAX_SIZE))
    assert merkle.root_from_frontier(frontier) == ref_mth(ENTRIES)
    return nodes


def _getter(
    nodes: dict[merkle.Node, bytes], allowed: set[merkle.Node]
) -> Callable[[merkle.Node], bytes]:
    """A node getter that fails on any node the proof did not announce it needs."""

    def get(node: merkle.Node) -> bytes:
        assert node in allowed, f"{node} was not in the prefetch set"
        return nodes[node]

    return get


# --------------------------------------------------------------------------- construction


def test_stored_nodes_are_exactly_the_complete_subtrees(stored: dict[merkle.Node, bytes]) -> None:
    assert set(stored) == complete_nodes(MAX_SIZE)
    for node, h in stored.items():
        assert h == ref_mth(ENTRIES[node.start : node.end]), node


def test_append_nothing_to_empty_tree() -> None:
    assert merkle.append_nodes([], 0, []) == ([], [])
    assert merkle.root_from_frontier([]) == merkle.EMPTY_ROOT
    assert merkle.frontier_nodes(0) == []
    assert merkle.range_nodes(0, 0) == []
    assert merkle.hash_range(0, 0, lambda node: b"") == merkle.EMPTY_ROOT


def test_frontier_and_range_nodes_examples() -> None:
    assert merkle.frontier_nodes(6) == [merkle.Node(2, 0), merkle.Node(1, 2)]
    assert merkle.frontier_nodes(7) == [merkle.Node(2, 0), merkle.Node(1, 2), merkle.Node(0, 6)]
    assert merkle.range_nodes(8, 13) == [merkle.Node(2, 2), merkle.Node(0, 12)]
    assert merkle.range_nodes(0, 300) == merkle.frontier_nodes(300)
    assert (merkle.Node(3, 5).start, merkle.Node(3, 5).end) == (40, 48)


def ref_position(node: merkle.Node) -> int:
    """Independent count: the complete subtrees whose last leaf comes before this
    node's, plus the lower levels completed by its own last leaf."""
    last = node.end - 1
    return sum(last >> height for height in range(last.bit_length())) + node.level


@settings(deadline=None)  # example count comes from the profile (tests/conftest.py)
@given(st.lists(st.integers(min_value=0, max_value=40), max_size=MAX_SIZE // 40))
def test_appends_create_nodes_in_position_order_without_gaps(batches: list[int]) -> None:
    """A table keyed by ``Node.position`` only ever grows at its end."""
    frontier: list[bytes] = []
    size, positions = 0, []
    for batch in batches:
        created, frontier = merkle.append_nodes(frontier, size, LEAF_HASHES[size : size + batch])
        positions += [node.position for node, _ in created]
        size += batch
    assert positions == list(range(len(positions)))
    assert len(positions) == 2 * size - size.bit_count()


@settings(deadline=None)  # example count comes from the profile (tests/conftest.py)
@given(st.integers(min_value=0, max_value=20), st.integers(min_value=0, max_value=2**40))
def test_position_matches_the_reference_count(level: int, index: int) -> None:
    node = merkle.Node(level, index)
    assert node.position == ref_position(node)
    assert 0 <= node.position < 2**63  # a signed 64-bit key holds it


def test_position_examples() -> None:
    order = [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1), (2, 0), (0, 4)]
    assert [merkle.Node(*node).position for node in order] == list(range(8))


@pytest.mark.parametrize(("start", "end"), [(1, 3), (2, 5), (4, 3), (-1, 0), (5, 5), (3, 4 + 3)])
def test_range_nodes_rejects_ranges_no_proof_contains(start: int, end: int) -> None:
    with pytest.raises(merkle.InvalidSize):
        merkle.range_nodes(start, end)


def test_append_nodes_rejects_a_frontier_of_the_wrong_shape() -> None:
    h = merkle.leaf_hash(b"x")
    with pytest.raises(merkle.InvalidSize, match="frontier"):
        merkle.append_nodes([h], 3, [h])
    with pytest.raises(merkle.InvalidSize):
        merkle.append_nodes([h, h], 4, [h])
    with pytest.raises(merkle.MalformedHash):
        merkle.append_nodes([h[:16]], 1, [h])
    with pytest.raises(merkle.MalformedHash):
        merkle.append_nodes([], 0, [b"short"])


def test_hash_range_rejects_malformed_stored_hash() -> None:
    with pytest.raises(merkle.MalformedHash):
        merkle.hash_range(0, 1, lambda node: b"\x00" * 31)


@settings(deadline=None)  # example count comes from the profile (tests/conftest.py)
@given(st.lists(st.integers(min_value=0, max_value=40), max_size=MAX_SIZE // 40))
def test_any_batching_gives_the_same_nodes_and_roots(batches: list[int]) -> None:
    nodes, frontier, sizes = build(batches)
    size = sizes[-1]
    assert set(nodes) == complete_nodes(size)
    assert merkle.root_from_frontier(frontier) == ref_mth(ENTRIES[:size])
    for s in sizes:
        assert merkle.hash_range(0, s, nodes.__getitem__) == ref_mth(ENTRIES[:s])


# --------------------------------------------------------------------------- proofs, size by size


def _check_inclusion(nodes: dict[merkle.Node, bytes], index: int, size: int, root: bytes) -> None:
    get = _getter(nodes, merkle.nodes_for_inclusion(index, size))
    proof = merkle.inclusion_proof(index, size, get)
    assert proof == ref_path(index, ENTRIES[:size])
    assert merkle.root_from_inclusion(LEAF_HASHES[index], index, size, proof) == root
    merkle.verify_inclusion(LEAF_HASHES[index], index, size, proof, root)


def _check_consistency(nodes: dict[merkle.Node, bytes], size1: int, size2: int) -> None:
    get = _getter(nodes, merkle.nodes_for_consistency(size1, size2))
    proof = merkle.consistency_proof(size1, size2, get)
    assert proof == ref_proof(size1, ENTRIES[:size2])
    root1, root2 = ref_mth(ENTRIES[:size1]), ref_mth(ENTRIES[:size2])
    assert merkle.root_from_consistency(size1, size2, proof, root1) == root2
    merkle.verify_consistency(size1, size2, proof, root1, root2)


@pytest.mark.parametrize("size", range(1, 201))
def test_roots_and_proofs_match_reference(stored: dict[merkle.Node, bytes], size: int) -> None:
    root = ref_mth(ENTRIES[:size])
    assert merkle.hash_range(0, size, stored.__getitem__) == root
    rng = random.Random(size)
    for index in {0, size - 1, *(rng.randrange(size) for _ in range(3))}:
        _check_inclusion(stored, index, size, root)
    for size1 in {1, size, (size + 1) // 2, *(rng.randint(1, size) for _ in range(3))}:
        _check_consistency(stored, size1, size)


@pytest.mark.parametrize("size", range(1, 41))
def test_every_proof_of_small_trees_matches_reference(
    stored: dict[merkle.Node, bytes], size: int
) -> None:
    root = ref_mth(ENTRIES[:size])
    for index in range(size):
        _check_inclusion(stored, index, size, root)
    for size1 in range(1, size + 1):
        _check_consistency(stored, size1, size)


@settings(deadline=None)  # example count comes from the profile (tests/conftest.py)
@given(st.data())
def test_inclusion_proofs_match_reference(
    stored: dict[merkle.Node, bytes], data: st.DataObject
) -> None:
    size = data.draw(st.integers(min_value=1, max_value=MAX_SIZE), label="size")
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    _check_inclusion(stored, index, size, ref_mth(ENTRIES[:size]))


@settings(deadline=None)  # example count comes from the profile (tests/conftest.py)
@given(st.data())
def test_consistency_proofs_match_reference(
    stored: dict[merkle.Node, bytes], data: st.DataObject
) -> None:
    size2 = data.draw(st.integers(min_value=1, max_value=MAX_SIZE), label="size2")
    size1 = data.draw(st.integers(min_value=1, max_value=size2), label="size1")
    _check_consistency(stored, size1, size2)


def test_memory_tree_matches_reference() -> None:
    tree = merkle.MemoryTree()
    rng = random.Random(7)
    for batch in random_batches(rng, 100):
        tree.append(ENTRIES[tree.size : tree.size + batch])
        assert tree.root() == ref_mth(ENTRIES[: tree.size])
    assert tree.size == 100
    assert set(tree.nodes) == complete_nodes(100)
    for size in (1, 37, 64, 100):
        assert tree.root(size) == ref_mth(ENTRIES[:size])
        assert tree.inclusion_proof(size - 1, size) == ref_path(size - 1, ENTRIES[:size])
    assert tree.inclusion_proof(42) == ref_path(42, ENTRIES[:100])
    assert tree.consistency_proof(37) == ref_proof(37, ENTRIES[:100])
    assert tree.consistency_proof(5, 64) == ref_proof(5, ENTRIES[:64])
    assert tree.leaf_hash(3) == LEAF_HASHES[3]
    with pytest.raises(merkle.InvalidSize):
        tree.root(101)
    with pytest.raises(merkle.InvalidIndex):
        tree.inclusion_proof(100)
    with pytest.raises(merkle.InvalidIndex):
        tree.leaf_hash(100)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (5, 5), (6, 5), (-1, 5)])
def test_inclusion_proof_of_a_leaf_outside_the_tree(index: int, size: int) -> None:
    with pytest.raises(merkle.InvalidIndex):
        merkle.inclusion_proof_ranges(index, size)


@pytest.mark.parametrize(("size1", "size2"), [(0, 0), (0, 5), (6, 5), (-1, 3)])
def test_consistency_proof_between_impossible_sizes(size1: int, size2: int) -> None:
    with pytest.raises(merkle.InvalidSize):
        merkle.consistency_proof_ranges(size1, size2)


def test_consistency_proof_between_equal_sizes_is_empty() -> None:
    assert merkle.consistency_proof_ranges(7, 7) == []
    assert merkle.nodes_for_consistency(7, 7) == set()


# --------------------------------------------------------------------------- mutated proofs
#
# Not every change of size is detectable: an inclusion or consistency proof
# does not bind the size of the new tree on its own (e.g. leaf 0's proof in a
# tree of 3 also verifies as a proof in a tree of 4 against the same root);
# the signed checkpoint binds root and size together. What is always rejected
# is tested: any change to the hashes or to the proof length, another leaf
# index, another old size, a doubled new size, and impossible parameters.


def _flip(h: bytes, byte: int) -> bytes:
    return h[:byte] + bytes([h[byte] ^ 0x01]) + h[byte + 1 :]


OTHER = merkle.leaf_hash(b"not in the log")


def inclusion_mutations(
    index: int, size: int, proof: list[bytes], root: bytes
) -> list[tuple[str, tuple[bytes, int, int, list[bytes], bytes], type[merkle.ProofError]]]:
    leaf = LEAF_HASHES[index]
    out: list[tuple[str, tuple[bytes, int, int, list[bytes], bytes], type[merkle.ProofError]]] = []
    for i, h in enumerate(proof):
        for byte in (0, 17, 31):
            bad = [*proof[:i], _flip(h, byte), *proof[i + 1 :]]
            out.append(
                (f"flip proof[{i}][{byte}]", (leaf, index, size, bad, root), merkle.RootMismatch)
            )
        out.append(
            (
                f"drop proof[{i}]",
                (leaf, index, size, proof[:i] + proof[i + 1 :], root),
                merkle.WrongProofLength,
            )
        )
    out += [
        ("append", (leaf, index, size, [*proof, OTHER], root), merkle.WrongProofLength),
        ("append root", (leaf, index, size, [*proof, root], root), merkle.WrongProofLength),
        ("prepend", (leaf, index, size, [OTHER, *proof], root), merkle.WrongProofLength),
        ("short element", (leaf, index, size, [*proof, OTHER[:31]], root), merkle.MalformedHash),
        ("wrong leaf", (OTHER, index, size, proof, root), merkle.RootMismatch),
        ("flip leaf", (_flip(leaf, 5), index, size, proof, root), merkle.RootMismatch),
        ("wrong root", (leaf, index, size, proof, OTHER), merkle.RootMismatch),
        ("flip root", (leaf, index, size, proof, _flip(root, 31)), merkle.RootMismatch),
        ("empty root", (leaf, index, size, proof, merkle.EMPTY_ROOT), merkle.RootMismatch),
        ("short leaf", (leaf[:31], index, size, proof, root), merkle.MalformedHash),
        ("index = size", (leaf, size, size, proof, root), merkle.InvalidIndex),
        ("negative index", (leaf, -1, size, proof, root), merkle.InvalidIndex),
        ("size 0", (leaf, index, 0, proof, root), merkle.InvalidIndex),
        ("size * 2", (leaf, index, size * 2, proof, root), merkle.WrongProofLength),
    ]
    for other in {index - 1, index + 1, index ^ 1, index ^ 2, index ^ 4} - {index}:
        if 0 <= other < size:  # another leaf of the same tree: never accepted
            out.append((f"index {other}", (leaf, other, size, proof, root), merkle.ProofError))
    return out


def consistency_mutations(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> list[tuple[str, tuple[int, int, list[bytes], bytes, bytes], type[merkle.ProofError]]]:
    out: list[tuple[str, tuple[int, int, list[bytes], bytes, bytes], type[merkle.ProofError]]] = []
    for i, h in enumerate(proof):
        for byte in (0, 17, 31):
            bad = [*proof[:i], _flip(h, byte), *proof[i + 1 :]]
            out.append(
                (f"flip proof[{i}][{byte}]", (size1, size2, bad, root1, root2), merkle.RootMismatch)
            )
        out.append(
            (
                f"drop proof[{i}]",
                (size1, size2, proof[:i] + proof[i + 1 :], root1, root2),
                merkle.WrongProofLength,
            )
        )
    out += [
        ("append", (size1, size2, [*proof, OTHER], root1, root2), merkle.WrongProofLength),
        ("prepend root1", (size1, size2, [root1, *proof], root1, root2), merkle.WrongProofLength),
        (
            "prepend proof[0]",
            (size1, size2, [proof[0], *proof], root1, root2),
            merkle.WrongProofLength,
        ),
        ("empty proof", (size1, size2, [], root1, root2), merkle.WrongProofLength),
        (
            "short element",
            (size1, size2, [*proof[:-1], proof[-1][:31]], root1, root2),
            merkle.MalformedHash,
        ),
        ("wrong root1", (size1, size2, proof, OTHER, root2), merkle.RootMismatch),
        ("wrong root2", (size1, size2, proof, root1, OTHER), merkle.RootMismatch),
        ("flip root2", (size1, size2, proof, root1, _flip(root2, 0)), merkle.RootMismatch),
        ("swapped roots", (size1, size2, proof, root2, root1), merkle.RootMismatch),
        ("size1 0", (0, size2, proof, root1, root2), merkle.InvalidSize),
        ("size2 < size1", (size1, size1 - 1, proof, root1, root2), merkle.InvalidSize),
        ("equal sizes", (size2, size2, proof, root2, root2), merkle.WrongProofLength),
        ("size2 * 2", (size1, size2 * 2, proof, root1, root2), merkle.WrongProofLength),
    ]
    for other in range(1, size2 + 2):  # another old size: never accepted
        if other != size1:
            out.append((f"size1 {other}", (other, size2, proof, root1, root2), merkle.ProofError))
    return out


def assert_rejected(
    name: str, error: type[merkle.ProofError], verify: Callable[..., None], *args: object
) -> None:
    try:
        verify(*args)
    except merkle.ProofError as exc:
        caught = exc
    else:
        pytest.fail(f"accepted mutation {name!r}")
    assert isinstance(caught, error), f"mutation {name!r}: {caught!r} is not a {error.__name__}"


MUTATION_SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 33, 100, 255]


@pytest.mark.parametrize("size", MUTATION_SIZES)
def test_mutated_inclusion_proofs_are_rejected(stored: dict[merkle.Node, bytes], size: int) -> None:
    root = ref_mth(ENTRIES[:size])
    for index in sorted({0, 1, size // 2, size - 2, size - 1} & set(range(size))):
        proof = merkle.inclusion_proof(index, size, stored.__getitem__)
        for name, args, error in inclusion_mutations(index, size, proof, root):
            assert_rejected(
                f"{name} of leaf {index} in size {size}", error, merkle.verify_inclusion, *args
            )


@pytest.mark.parametrize("size2", [s for s in MUTATION_SIZES if s > 1])
def test_mutated_consistency_proofs_are_rejected(
    stored: dict[merkle.Node, bytes], size2: int
) -> None:
    root2 = ref_mth(ENTRIES[:size2])
    for size1 in sorted({1, 2, size2 // 2, size2 - 1} & set(range(1, size2))):
        root1 = ref_mth(ENTRIES[:size1])
        proof = merkle.consistency_proof(size1, size2, stored.__getitem__)
        for name, args, error in consistency_mutations(size1, size2, proof, root1, root2):
            assert_rejected(
                f"{name} of {size1} -> {size2}", error, merkle.verify_consistency, *args
            )


def test_errors_carry_details() -> None:
    with pytest.raises(merkle.WrongProofLength) as length:
        merkle.verify_inclusion(LEAF_HASHES[0], 0, 4, [LEAF_HASHES[1]], merkle.EMPTY_ROOT)
    assert (length.value.got, length.value.want) == (1, 2)
    assert length.value.code == "proof_wrong_length"
    with pytest.raises(merkle.RootMismatch) as mismatch:
        merkle.verify_inclusion(LEAF_HASHES[0], 0, 1, [], merkle.EMPTY_ROOT)
    assert mismatch.value.expected == merkle.EMPTY_ROOT
    assert mismatch.value.calculated == LEAF_HASHES[0]
    assert isinstance(mismatch.value, merkle.ProofError)
