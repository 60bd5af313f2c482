"""crypto.merkle: RFC 6962 hashing, proofs, and RFC 9162 verification.

Checked against transparency-dev/merkle's probe files and 8-leaf reference tree
(tests/vectors/merkle, see PROVENANCE.md), against a naive transcription of RFC 6962 §2.1 written
here, and by mutating every proof we generate.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.errors import CryptoError
from crypto.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parent / "vectors" / "merkle"
REASONS = {"index", "size", "hash", "length", "root"}
REF = json.loads((VECTORS / "reference_tree.json").read_text())
REF_LEAVES = [bytes.fromhex(h) for h in REF["leaf_inputs"]]
REF_ROOTS = [bytes.fromhex(h) for h in REF["root_hashes"]]


def _probes(kind: str) -> list[tuple[str, dict]]:
    root = VECTORS / "testdata" / kind
    return [(str(p.relative_to(root)), json.loads(p.read_text())) for p in sorted(root.rglob("*.json"))]


INCLUSION = _probes("inclusion")
CONSISTENCY = _probes("consistency")


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def proof_of(probe: dict) -> list[bytes]:
    return [b64(h) for h in probe["proof"] or []]  # Go's nil proof is JSON null


def outcome(fn, *args) -> str | None:
    """None if ``fn`` accepts, else the ProofError reason."""
    try:
        fn(*args)
    except ProofError as exc:
        assert exc.reason in REASONS, exc.reason
        return exc.reason
    return None


# -- the upstream probe files ----------------------------------------------------------------------
def test_vector_files_are_all_there() -> None:
    assert len(INCLUSION) == 98 and len(CONSISTENCY) == 98
    assert sum(not p["wantErr"] for _, p in INCLUSION + CONSISTENCY) == 12


@pytest.mark.parametrize("probe", [p for _, p in INCLUSION], ids=[name for name, _ in INCLUSION])
def test_inclusion_probe(probe: dict) -> None:
    reason = outcome(
        verify_inclusion,
        b64(probe["leafHash"]),
        probe["leafIdx"],
        probe["treeSize"],
        proof_of(probe),
        b64(probe["root"]),
    )
    assert (reason is not None) == probe["wantErr"], (probe["desc"], reason)


@pytest.mark.parametrize("probe", [p for _, p in CONSISTENCY], ids=[name for name, _ in CONSISTENCY])
def test_consistency_probe(probe: dict) -> None:
    reason = outcome(
        verify_consistency,
        probe["size1"],
        probe["size2"],
        b64(probe["root1"]),
        b64(probe["root2"]),
        proof_of(probe),
    )
    assert (reason is not None) == probe["wantErr"], (probe["desc"], reason)


def test_probe_failures_name_the_right_reason() -> None:
    by_desc: dict[str, set[str]] = {}
    for _, p in INCLUSION:
        r = outcome(
            verify_inclusion, b64(p["leafHash"]), p["leafIdx"], p["treeSize"], proof_of(p), b64(p["root"])
        )
        by_desc.setdefault(p["desc"], set()).add(r)
    assert by_desc["happy path"] == {None}
    assert by_desc["trailing garbage"] == {"hash"}  # an empty []byte appended
    assert by_desc["trailing root"] <= {"length"}
    assert by_desc["removed component"] == {"length"}
    assert by_desc["random root"] == {"root"}
    assert by_desc["leafIdx plus @1"] <= {"index", "length", "root"}
    for _, p in CONSISTENCY:
        r = outcome(verify_consistency, p["size1"], p["size2"], b64(p["root1"]), b64(p["root2"]), proof_of(p))
        by_desc.setdefault("c:" + p["desc"], set()).add(r)
    assert by_desc["c:size1 is greater than size2"] == {"size"}
    assert by_desc["c:consistency check on empty tree (size1 is zero) is useless"] == {"size"}
    assert by_desc["c:sizes are equal (zero) and proof is empty"] == {"size"}
    assert by_desc["c:sizes are equal (one) and proof is empty"] == {None}
    assert by_desc["c:truncated proof"] == {"length"}
    assert by_desc["c:swapped roots"] == {"root"}


# -- the 8-leaf reference tree ---------------------------------------------------------------------
def test_reference_tree_hashes_and_roots() -> None:
    hashes = [leaf_hash(d) for d in REF_LEAVES]
    assert [h.hex() for h in hashes] == REF["node_hashes"][0]
    for height, row in enumerate(REF["node_hashes"]):
        width = 1 << height
        assert [root_of(hashes[i * width : (i + 1) * width]).hex() for i in range(len(row))] == row
    tree = MerkleTree(REF_LEAVES)
    assert REF_ROOTS[0] == EMPTY_ROOT
    for size in range(9):
        assert tree.root(size) == REF_ROOTS[size] == root_of(hashes[:size])
        assert MerkleTree(REF_LEAVES[:size]).root() == REF_ROOTS[size]


def test_reference_tree_proofs_are_the_upstream_happy_paths() -> None:
    tree = MerkleTree(REF_LEAVES)
    happy = [p for _, p in INCLUSION if p["desc"] == "happy path"]
    assert len(happy) == 5
    for p in happy:
        assert b64(p["root"]) == REF_ROOTS[p["treeSize"]]
        assert tree.leaf_hash(p["leafIdx"]) == b64(p["leafHash"])
        assert tree.inclusion_proof(p["leafIdx"], p["treeSize"]) == proof_of(p)
    happy = [p for _, p in CONSISTENCY if p["desc"] == "happy path"]
    assert len(happy) == 5
    for p in happy:
        assert (b64(p["root1"]), b64(p["root2"])) == (REF_ROOTS[p["size1"]], REF_ROOTS[p["size2"]])
        assert tree.consistency_proof(p["size1"], p["size2"]) == proof_of(p)


def test_reference_tree_every_proof_verifies() -> None:
    tree = MerkleTree(REF_LEAVES)
    for size in range(1, 9):
        for index in range(size):
            verify_inclusion(
                tree.leaf_hash(index), index, size, tree.inclusion_proof(index, size), REF_ROOTS[size]
            )
        for old in range(1, size + 1):
            verify_consistency(old, size, REF_ROOTS[old], REF_ROOTS[size], tree.consistency_proof(old, size))


# -- RFC 6962 §2.1 transcribed naively, as a second opinion on generation ---------------------------
def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_mth(d: list[bytes]) -> bytes:
    if not d:
        return EMPTY_ROOT
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return node_hash(rfc_mth(d[:k]), rfc_mth(d[k:]))


def rfc_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return rfc_path(m, d[:k]) + [rfc_mth(d[k:])]
    return rfc_path(m - k, d[k:]) + [rfc_mth(d[:k])]


def rfc_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [rfc_mth(d)]
    k = _k(n)
    if m <= k:
        return rfc_subproof(m, d[:k], b) + [rfc_mth(d[k:])]
    return rfc_subproof(m - k, d[k:], False) + [rfc_mth(d[:k])]


def hashes_for(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 140), st.data())
def test_generation_matches_rfc_text(n: int, data) -> None:
    hashes = hashes_for(n)
    tree = MerkleTree.from_leaf_hashes(hashes)
    size = data.draw(st.integers(1, n), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(1, size), label="old")
    assert tree.root(size) == rfc_mth(hashes[:size]) == root_of(hashes[:size])
    assert (
        tree.inclusion_proof(index, size)
        == rfc_path(index, hashes[:size])
        == inclusion_proof(hashes[:size], index)
    )
    want = rfc_subproof(old, hashes[:size], True)
    assert tree.consistency_proof(old, size) == want == consistency_proof(hashes[:size], old)


def test_generation_matches_rfc_text_exhaustively_up_to_33() -> None:
    for n in range(1, 34):
        hashes = hashes_for(n)
        tree = MerkleTree.from_leaf_hashes(hashes)
        assert tree.root() == rfc_mth(hashes)
        for i in range(n):
            assert tree.inclusion_proof(i) == rfc_path(i, hashes)
        for m in range(1, n + 1):
            assert tree.consistency_proof(m) == rfc_subproof(m, hashes, True)


# -- every mutation of a good proof fails ----------------------------------------------------------
def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def inclusion_mutants(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes, bits):
    """(description, args) for every single-bit flip in ``bits``, truncation and extension."""
    for bit in bits:
        yield f"leaf bit {bit}", (flip(leaf, bit), index, size, proof, root)
        yield f"root bit {bit}", (leaf, index, size, proof, flip(root, bit))
        for i in range(len(proof)):
            yield (
                f"proof[{i}] bit {bit}",
                (leaf, index, size, [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]], root),
            )
    if proof:
        yield "drop last", (leaf, index, size, proof[:-1], root)
        yield "drop first", (leaf, index, size, proof[1:], root)
    for extra in (root, leaf, EMPTY_ROOT):
        yield "append", (leaf, index, size, [*proof, extra], root)
        yield "prepend", (leaf, index, size, [extra, *proof], root)
    for other in (index - 1, index + 1):
        if 0 <= other < size:
            yield f"index {other}", (leaf, other, size, proof, root)


def consistency_mutants(old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes], bits):
    for bit in bits:
        yield f"old root bit {bit}", (old, new, flip(old_root, bit), new_root, proof)
        yield f"new root bit {bit}", (old, new, old_root, flip(new_root, bit), proof)
        for i in range(len(proof)):
            yield (
                f"proof[{i}] bit {bit}",
                (old, new, old_root, new_root, [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]]),
            )
    if proof:
        yield "drop last", (old, new, old_root, new_root, proof[:-1])
        yield "drop first", (old, new, old_root, new_root, proof[1:])
    for extra in (old_root, new_root, EMPTY_ROOT):
        yield "append", (old, new, old_root, new_root, [*proof, extra])
        yield "prepend", (old, new, old_root, new_root, [extra, *proof])
    if old_root != new_root:
        yield "swapped roots", (old, new, new_root, old_root, proof)


def test_every_single_bit_mutation_fails_exhaustively() -> None:
    n = 7
    tree = MerkleTree(i.to_bytes(2, "big") for i in range(n))
    all_bits = range(256)
    for size in range(1, n + 1):
        root = tree.root(size)
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            verify_inclusion(tree.leaf_hash(index), index, size, proof, root)
            for what, args in inclusion_mutants(tree.leaf_hash(index), index, size, proof, root, all_bits):
                assert outcome(verify_inclusion, *args) is not None, (size, index, what)
        for old in range(1, size + 1):
            proof = tree.consistency_proof(old, size)
            verify_consistency(old, size, tree.root(old), root, proof)
            for what, args in consistency_mutants(old, size, tree.root(old), root, proof, all_bits):
                assert outcome(verify_consistency, *args) is not None, (old, size, what)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 3000), st.data())
def test_random_trees_proofs_verify_and_mutants_fail(n: int, data) -> None:
    tree = MerkleTree(i.to_bytes(4, "big") for i in range(n))
    size = data.draw(st.integers(1, n), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(1, size), label="old")
    bits = data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=3), label="bits")
    root = tree.root(size)
    proof = tree.inclusion_proof(index, size)
    verify_inclusion(tree.leaf_hash(index), index, size, proof, root)
    for what, args in inclusion_mutants(tree.leaf_hash(index), index, size, proof, root, bits):
        assert outcome(verify_inclusion, *args) is not None, what
    proof = tree.consistency_proof(old, size)
    verify_consistency(old, size, tree.root(old), root, proof)
    for what, args in consistency_mutants(old, size, tree.root(old), root, proof, bits):
        assert outcome(verify_consistency, *args) is not None, what


# -- argument checking -----------------------------------------------------------------------------
def test_reasons_for_bad_arguments() -> None:
    tree = MerkleTree([b"a", b"b", b"c"])
    leaf, proof, root = tree.leaf_hash(1), tree.inclusion_proof(1), tree.root()
    assert outcome(verify_inclusion, leaf, 3, 3, proof, root) == "index"
    assert outcome(verify_inclusion, leaf, 0, 0, [], EMPTY_ROOT) == "index"
    assert outcome(verify_inclusion, leaf, -1, 3, proof, root) == "index"
    assert outcome(verify_inclusion, leaf, True, 3, proof, root) == "index"
    assert outcome(verify_inclusion, leaf, 1, 1 << 64, proof, root) == "size"
    assert outcome(verify_inclusion, leaf[:31], 1, 3, proof, root) == "hash"
    assert outcome(verify_inclusion, leaf, 1, 3, proof, root + b"\0") == "hash"
    assert outcome(verify_inclusion, leaf, 1, 3, [*proof[:-1], "x" * 32], root) == "hash"
    assert outcome(verify_inclusion, leaf, 1, 3, b"".join(proof), root) == "hash"
    assert outcome(verify_inclusion, leaf, 1, 3, proof[:-1], root) == "length"
    assert outcome(verify_inclusion, leaf, 1, 3, proof, tree.root(2)) == "root"
    assert outcome(verify_inclusion, bytearray(leaf), 1, 3, [memoryview(p) for p in proof], root) is None
    assert outcome(verify_consistency, 3, 2, root, root, []) == "size"
    assert outcome(verify_consistency, 0, 3, EMPTY_ROOT, root, []) == "size"
    assert outcome(verify_consistency, 0, 0, EMPTY_ROOT, EMPTY_ROOT, []) == "size"
    assert outcome(verify_consistency, 3, 3, root, root, [root]) == "length"
    assert outcome(verify_consistency, 3, 3, root, tree.root(2), []) == "root"
    assert outcome(verify_consistency, 2, 3, tree.root(2), root, []) == "length"
    assert outcome(verify_consistency, 2, 3, tree.root(2)[:8], root, tree.consistency_proof(2)) == "hash"
    assert issubclass(ProofError, CryptoError)


def test_generators_reject_out_of_range() -> None:
    tree = MerkleTree([b"x"] * 4)
    hashes = [tree.leaf_hash(i) for i in range(4)]
    for call in (
        lambda: tree.root(5),
        lambda: tree.inclusion_proof(4),
        lambda: tree.inclusion_proof(2, 2),
        lambda: tree.consistency_proof(3, 2),
        lambda: tree.consistency_proof(0, 5),
        lambda: tree.leaf_hash(4),
        lambda: tree.append_leaf_hash(b"short"),
        lambda: inclusion_proof(hashes, 4),
        lambda: consistency_proof(hashes, 5),
        lambda: root_of([b"short"]),
    ):
        with pytest.raises(ValueError):
            call()
    assert consistency_proof(hashes, 0) == consistency_proof(hashes, 4) == tree.consistency_proof(0) == []
    assert root_of([]) == MerkleTree().root() == EMPTY_ROOT


def test_tree_append_returns_indices_and_keeps_history() -> None:
    tree = MerkleTree()
    roots = [tree.root()]
    for i in range(40):
        assert tree.append(b"entry %d" % i) == i
        roots.append(tree.root())
    assert len(tree) == tree.size == 40
    assert [tree.root(s) for s in range(41)] == roots
    assert tree.append_leaf_hash(leaf_hash(b"pre-hashed")) == 40
    assert tree.leaf_hash(40) == leaf_hash(b"pre-hashed")


@settings(max_examples=300, deadline=None)
@given(
    leaf=st.binary(max_size=40),
    index=st.integers(-2, 1 << 65),
    size=st.integers(-2, 1 << 65) | st.integers(0, 20),
    proof=st.lists(st.binary(max_size=40), max_size=70),
    root=st.binary(max_size=40),
)
def test_verify_inclusion_only_raises_proof_error(leaf, index, size, proof, root) -> None:
    outcome(verify_inclusion, leaf, index, size, proof, root)


@settings(max_examples=300, deadline=None)
@given(
    old=st.integers(-2, 1 << 65) | st.integers(0, 20),
    new=st.integers(-2, 1 << 65) | st.integers(0, 20),
    old_root=st.binary(max_size=40),
    new_root=st.binary(max_size=40),
    proof=st.lists(st.binary(min_size=31, max_size=33), max_size=70),
)
def test_verify_consistency_only_raises_proof_error(old, new, old_root, new_root, proof) -> None:
    outcome(verify_consistency, old, new, old_root, new_root, proof)


def test_truncate_undoes_appends_exactly():
    from crypto.merkle import MerkleTree

    tree = MerkleTree(bytes([i]) for i in range(13))
    before = (tree.root(), tree.inclusion_proof(5), tree.consistency_proof(7))
    for i in range(13, 40):
        tree.append(bytes([i]))
    tree.truncate(13)
    assert tree.size == 13 and (tree.root(), tree.inclusion_proof(5), tree.consistency_proof(7)) == before
    tree.append(b"\x0d")
    assert tree.root() == MerkleTree(bytes([i]) for i in range(14)).root()
