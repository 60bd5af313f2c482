"""RFC 6962 / RFC 9162 Merkle trees over SHA-256: hashes, roots, proofs, and an in-memory log.

Hashing (RFC 6962 §2.1): ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) = SHA-256(0x01 || l
|| r)``, and the empty tree's root is ``SHA-256("")``. The tree over n > 1 leaves splits at k, the
largest power of two below n: ``MTH(D[n]) = node_hash(MTH(D[0:k]), MTH(D[k:n]))``.

* Proof generation follows RFC 6962 §2.1.1 (``PATH``) and §2.1.2 (``PROOF``/``SUBPROOF``). Bad
  arguments to a generator are a caller bug: ``ValueError``.
* Proof verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step, with the proof length
  checked up front (as transparency-dev/merkle ``proof/verify.go`` does). Verifiers take untrusted
  input and raise only :class:`ProofError`. A consistency proof *from* size 0 is always rejected:
  it proves nothing (transparency-dev/merkle PR #236 and its ``testdata/consistency`` vectors);
  a client with no earlier checkpoint has nothing to check. Equal sizes need an empty proof and
  equal roots, compared as bytes (as ``verify.go`` does, whatever their length).
* :class:`MerkleTree` is an append-only log held in memory. It caches every complete,
  power-of-two-aligned subtree hash as leaves arrive (amortised two hashes per append), so the
  root at any size costs O(log n) hashes and a proof O(log² n).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

from .errors import CryptoError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
MAX_TREE_SIZE = (1 << 64) - 1
"""Sizes and indices are uint64 on the wire (RFC 9162, transparency-dev): larger ones are refused."""

_sha256 = hashlib.sha256


class ProofError(CryptoError):
    """A Merkle proof does not verify.

    ``reason`` is one short word: ``index`` (leaf index not below the tree size), ``size`` (a size
    out of range, old size above new size, or a consistency proof from size 0), ``hash`` (a leaf
    hash, root or proof element that is not 32 bytes), ``length`` (too few or too many proof
    hashes for the sizes) or ``root`` (the proof computes another root).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# -- generation ---------------------------------------------------------------------------------------
class _Subtrees:
    """Hashes of every complete aligned subtree: ``levels[h][i]`` covers leaves [i·2^h, (i+1)·2^h)."""

    __slots__ = ("levels",)

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = [[]]

    def append(self, hash_: bytes) -> None:
        levels = self.levels
        levels[0].append(hash_)
        index, height = len(levels[0]) - 1, 0
        while index & 1:  # a right child completes its parent
            row = levels[height]
            parent = _sha256(b"\x01" + row[index - 1] + row[index]).digest()
            height += 1
            if height == len(levels):
                levels.append([])
            levels[height].append(parent)
            index >>= 1

    def range_hash(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end), for ranges that occur in the RFC 6962 decomposition."""
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0:  # complete subtree; in the RFC shape it is always aligned
            height = n.bit_length() - 1
            return self.levels[height][start >> height]
        k = _split(n)
        return node_hash(self.range_hash(start, start + k), self.range_hash(start + k, end))

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """RFC 6962 §2.1.1 PATH(index, D[0:size]), leaf level first."""
        proof: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                proof.append(self.range_hash(start + k, end))
                end = start + k
            else:
                proof.append(self.range_hash(start, start + k))
                start += k
        proof.reverse()
        return proof

    def consistency(self, old_size: int, size: int) -> list[bytes]:
        """RFC 6962 §2.1.2 PROOF(old_size, D[0:size]) for 0 < old_size < size."""
        proof: list[bytes] = []
        start, end, m, whole = 0, size, old_size, True
        while True:
            n = end - start
            if m == n:
                if not whole:
                    proof.append(self.range_hash(start, end))
                break
            k = _split(n)
            if m <= k:
                proof.append(self.range_hash(start + k, end))
                end = start + k
            else:
                proof.append(self.range_hash(start, start + k))
                start, m, whole = start + k, m - k, False
        proof.reverse()
        return proof


def _checked_hashes(leaf_hashes: Iterable[bytes]) -> list[bytes]:
    hashes = [bytes(h) for h in leaf_hashes]
    if any(len(h) != HASH_SIZE for h in hashes):
        raise ValueError(f"leaf hashes must be {HASH_SIZE} bytes each")
    return hashes


def _subtrees(leaf_hashes: Sequence[bytes]) -> _Subtrees:
    tree = _Subtrees()
    for h in _checked_hashes(leaf_hashes):
        tree.append(h)
    return tree


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over ``leaf_hashes`` (already leaf-hashed). Pairing level by level and carrying an odd
    last node up unchanged builds exactly the RFC 6962 left-balanced tree."""
    level = _checked_hashes(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        pairs = [_sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            pairs.append(level[-1])
        level = pairs
    return level[0]


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for leaf ``index`` in the tree over all of ``leaf_hashes``."""
    if not 0 <= index < len(leaf_hashes):
        raise ValueError(f"leaf index {index} is outside a tree of {len(leaf_hashes)} leaves")
    return _subtrees(leaf_hashes).inclusion(index, len(leaf_hashes))


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Proof that the tree over the first ``old_size`` leaves is a prefix of the tree over all of them.

    Sizes 0 and ``len(leaf_hashes)`` give the empty proof (note that :func:`verify_consistency`
    rejects every proof from size 0: it proves nothing).
    """
    if not 0 <= old_size <= len(leaf_hashes):
        raise ValueError(f"old size {old_size} is outside 0..{len(leaf_hashes)}")
    if old_size in (0, len(leaf_hashes)):
        return []
    return _subtrees(leaf_hashes).consistency(old_size, len(leaf_hashes))


# -- verification (untrusted input) -------------------------------------------------------------------
def _size(value: object, what: str, reason: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TREE_SIZE:
        raise ProofError(f"{what} must be an integer in 0..2^64-1", reason)
    return value


def _hash(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash", "hash")
    return bytes(value)


def _path(proof: object) -> list[bytes]:
    if isinstance(proof, (bytes, bytearray, memoryview, str)) or not isinstance(proof, Sequence):
        raise ProofError("a proof is a sequence of hashes", "hash")
    return [_hash(h, f"proof hash {i}") for i, h in enumerate(proof)]


def _inclusion_length(index: int, size: int) -> int:
    """Hashes in the audit path of ``index`` in a tree of ``size``: the levels below the point where
    the paths to ``index`` and ``size - 1`` part, plus one per left sibling above it."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _check_root(computed: bytes, expected: bytes, what: str) -> None:
    if not hmac.compare_digest(computed, expected):
        raise ProofError(f"the proof does not lead to the {what}", "root")


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``
    (RFC 9162 §2.1.3.2). Raises :class:`ProofError`; returns None on success."""
    size = _size(size, "tree size", "size")
    index = _size(index, "leaf index", "index")
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}", "index")
    hash_ = _hash(leaf_hash, "leaf hash")
    root = _hash(root, "root")
    path = _path(proof)
    want = _inclusion_length(index, size)
    if len(path) != want:
        raise ProofError(f"inclusion proof has {len(path)} hashes, {want} expected", "length")
    fn, sn, r = index, size - 1, hash_
    for p in path:
        if sn == 0:  # unreachable after the length check; kept as the RFC states it
            raise ProofError("inclusion proof is too long", "length")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short", "length")
    _check_root(r, root, "tree root")


def _consistency_length(old_size: int, new_size: int) -> int:
    """Hashes in PROOF(old_size, D[new_size]) for 0 < old_size < new_size."""
    shift = ((old_size & -old_size).bit_length()) - 1  # trailing zero bits of old_size
    inner = (((old_size - 1) ^ (new_size - 1)).bit_length()) - shift
    border = ((old_size - 1) >> (inner + shift)).bit_count()
    seed = 0 if old_size == 1 << shift else 1  # the old root itself is left out when it is a full subtree
    return seed + inner + border


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``old_size`` leaves with ``old_root`` is a prefix of the tree of
    ``new_size`` leaves with ``new_root`` (RFC 9162 §2.1.4.2). Raises :class:`ProofError`."""
    old_size = _size(old_size, "old tree size", "size")
    new_size = _size(new_size, "new tree size", "size")
    if old_size > new_size:
        raise ProofError(f"old tree size {old_size} is above new tree size {new_size}", "size")
    if old_size == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing", "size")
    if old_size == new_size:
        if _path(proof):
            raise ProofError("equal tree sizes need an empty consistency proof", "length")
        if not isinstance(old_root, (bytes, bytearray, memoryview)) or not isinstance(
            new_root, (bytes, bytearray, memoryview)
        ):
            raise ProofError("roots must be bytes", "hash")
        _check_root(bytes(old_root), bytes(new_root), "same root at equal sizes")
        return
    old_root = _hash(old_root, "old root")
    new_root = _hash(new_root, "new root")
    path = _path(proof)
    want = _consistency_length(old_size, new_size)
    if len(path) != want:
        raise ProofError(f"consistency proof has {len(path)} hashes, {want} expected", "length")
    if old_size & (old_size - 1) == 0:  # RFC 9162 step 2: a full old tree is its own first node
        path = [old_root, *path]
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # unreachable after the length check
            raise ProofError("consistency proof is too long", "length")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short", "length")
    _check_root(fr, old_root, "old root")
    _check_root(sr, new_root, "new root")


# -- the in-memory log --------------------------------------------------------------------------------
class MerkleTree:
    """An append-only RFC 6962 log in memory: leaf hashes plus every complete subtree hash.

    Roots and proofs are available for every earlier size too (``size=``). Not thread-safe.
    """

    __slots__ = ("_tree",)

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._tree = _Subtrees()
        for data in leaves:
            self.append(data)

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Iterable[bytes]) -> MerkleTree:
        tree = cls()
        for h in leaf_hashes:
            tree.append_leaf_hash(h)
        return tree

    def append(self, leaf_data: bytes) -> int:
        """Append one entry (its leaf hash is taken here); returns its index."""
        self._tree.append(leaf_hash(leaf_data))
        return self.size - 1

    def append_leaf_hash(self, hash_: bytes) -> int:
        """Append an entry by its precomputed leaf hash; returns its index."""
        hash_ = bytes(hash_)
        if len(hash_) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes")
        self._tree.append(hash_)
        return self.size - 1

    @property
    def size(self) -> int:
        return len(self._tree.levels[0])

    def __len__(self) -> int:
        return self.size

    def leaf_hash(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise ValueError(f"leaf index {index} is outside a tree of {self.size} leaves")
        return self._tree.levels[0][index]

    def _size_arg(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is outside 0..{self.size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        """Root of the tree over the first ``size`` leaves (default: all)."""
        return self._tree.range_hash(0, self._size_arg(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self._size_arg(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
        return self._tree.inclusion(index, size)

    def truncate(self, size: int) -> None:
        """Forget every leaf from ``size`` on (to undo appends that were only tried)."""
        size = self._size_arg(size)
        for height, row in enumerate(self._tree.levels):
            del row[size >> height :]

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Proof from ``old_size`` to ``new_size`` (default: now); empty for sizes 0 and equal."""
        new_size = self._size_arg(new_size)
        if not 0 <= old_size <= new_size:
            raise ValueError(f"old size {old_size} is outside 0..{new_size}")
        if old_size in (0, new_size):
            return []
        return self._tree.consistency(old_size, new_size)
