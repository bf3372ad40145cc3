"""Merkle tree hashing, proofs and the compact range, as in RFC 9162 §2.1.

The message log's records are the leaves of a Merkle tree hashed as in Certificate Transparency
version 2: a leaf is ``SHA-256(0x00 || entry)``, an interior node ``SHA-256(0x01 || left ||
right)``, and a tree of ``n`` leaves splits at the largest power of two smaller than ``n``
(RFC 9162 §2.1.1). This module computes tree roots, inclusion proofs (§2.1.3) and consistency
proofs (§2.1.4) from leaf hashes, verifies them, and keeps a :class:`CompactRange`: the frontier of
perfect subtrees that lets the log append a leaf and learn the new root in O(log n) without
recomputing the tree.

Proof generation takes the full list of leaf hashes and costs O(n) hashing; callers that prove
over millions of leaves should keep the hashes in order on their side. Verification functions
return ``False`` for any proof that does not verify, including malformed ones; they never raise
for bad input data. Sizes and indices are plain integers; nothing here does IO.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 §2.1.1: the hash of one leaf, ``SHA-256(0x00 || entry)``."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: the hash of an interior node, ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split_point(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (for ``n > 1``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH over leaf hashes; the empty tree's root is SHA-256 of nothing.

    Hashing adjacent pairs level by level and carrying an odd last node up unchanged yields the
    same left-balanced tree as the recursive definition.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[n]): sibling hashes from the leaf up to the root."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} is outside a tree of size {n}")
    path: list[bytes] = []
    lo, hi = 0, n
    while hi - lo > 1:
        k = _split_point(hi - lo)
        if index < lo + k:
            path.append(root(leaf_hashes[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root(leaf_hashes[lo : lo + k]))
            lo += k
    path.reverse()
    return path


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show leaf ``index`` of a tree of ``size`` leaves?"""
    # (1) the index lies in the tree and every hash is a SHA-256 value
    if not 0 <= index < size or not _well_formed(leaf, root_hash, *proof):
        return False
    # (2) fold the path from the leaf upwards, left or right as the index bits say
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    # (3) the path was exactly long enough and ends at the root
    return sn == 0 and r == root_hash


def consistency_proof(m: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(m, D[n]): shows the first ``m`` leaves are a prefix of the tree.

    The proof is empty when ``m`` is 0 or ``n`` (nothing to prove beyond equal roots).
    """
    n = len(leaf_hashes)
    if not 0 <= m <= n:
        raise ValueError(f"old size {m} is outside 0..{n}")
    if m in (0, n):
        return []
    proof: list[bytes] = []
    lo, hi, whole = 0, n, True
    while m != hi - lo:
        k = _split_point(hi - lo)
        if m <= k:
            proof.append(root(leaf_hashes[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(root(leaf_hashes[lo : lo + k]))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        proof.append(root(leaf_hashes[lo:hi]))
    proof.reverse()
    return proof


def verify_consistency(
    m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: does ``proof`` show the tree of size ``m`` is a prefix of size ``n``?"""
    # (1) sizes are ordered and every hash is a SHA-256 value
    if not 0 <= m <= n or not _well_formed(root_m, root_n, *proof):
        return False
    # (2) the trivial cases take an empty proof: equal trees, or the empty tree as prefix
    if m == n:
        return not proof and root_m == root_n
    if m == 0:
        return not proof and root_m == EMPTY_ROOT
    if not proof:
        return False
    # (3) a power-of-two old tree is itself the first node of the path
    path = [root_m, *proof] if m & (m - 1) == 0 else list(proof)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    # (4) rebuild both roots from the path at once
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    # (5) both roots match and the path covered the whole new tree
    return sn == 0 and fr == root_m and sr == root_n


def _well_formed(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


class CompactRange:
    """The right frontier of a Merkle tree: the roots of its perfect subtrees, largest first.

    A tree of ``n`` leaves has one perfect subtree per set bit of ``n``, so the frontier holds at
    most ``log2(n) + 1`` hashes. Appending merges equal-sized subtrees like a binary counter;
    the root folds the frontier from the right (the RFC 9162 tree is left-balanced). Mutable on
    purpose: the message log's writer owns one and copies it to roll back a failed batch.
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._nodes: list[bytes] = []

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Iterable[bytes]) -> CompactRange:
        """Rebuild the frontier by streaming stored leaf hashes in order."""
        compact = cls()
        compact.extend(leaf_hashes)
        return compact

    @classmethod
    def from_frontier(cls, size: int, frontier: Sequence[bytes]) -> CompactRange:
        """Resume from a stored frontier (e.g. after the leaves before ``size`` were archived).

        Raises ValueError unless there is one SHA-256 value per set bit of ``size``.
        """
        if size < 0 or len(frontier) != size.bit_count() or not _well_formed(*frontier):
            raise ValueError(f"not the frontier of a tree of {size} leaves")
        compact = cls()
        compact._size = size
        compact._nodes = list(frontier)
        return compact

    @property
    def size(self) -> int:
        return self._size

    @property
    def frontier(self) -> tuple[bytes, ...]:
        return tuple(self._nodes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash in O(log n)."""
        node, carry = leaf, self._size
        while carry & 1:
            node = node_hash(self._nodes.pop(), node)
            carry >>= 1
        self._nodes.append(node)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for leaf in leaf_hashes:
            self.append(leaf)

    def root(self) -> bytes:
        """MTH of the leaves appended so far, in O(log n)."""
        if not self._nodes:
            return EMPTY_ROOT
        acc = self._nodes[-1]
        for node in reversed(self._nodes[:-1]):
            acc = node_hash(node, acc)
        return acc

    def copy(self) -> CompactRange:
        clone = CompactRange()
        clone._size = self._size
        clone._nodes = list(self._nodes)
        return clone

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"
