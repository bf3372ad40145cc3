"""Merkle math against an independent, literal transcription of RFC 9162 §2.1."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.messagelog.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

# --- RFC 9162 §2.1 written out recursively, over the entries themselves ------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return _h(b"")
    if len(d) == 1:
        return _h(b"\x00" + d[0])
    k = _k(len(d))
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


ENTRIES = [f"entry {i}".encode() for i in range(64)]
LEAVES = [leaf_hash(e) for e in ENTRIES]


def test_hash_prefixes() -> None:
    assert leaf_hash(b"abc") == _h(b"\x00abc")
    assert node_hash(b"l" * 32, b"r" * 32) == _h(b"\x01" + b"l" * 32 + b"r" * 32)
    assert root([]) == EMPTY_ROOT == _h(b"")


def test_known_answer_ct_test_vector() -> None:
    # The RFC 6962 test tree used by Certificate Transparency implementations (same hashing).
    leaves = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ]
    assert root([leaf_hash(x) for x in leaves]).hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )


@pytest.mark.parametrize("n", range(0, 65))
def test_root_matches_reference(n: int) -> None:
    assert root(LEAVES[:n]) == ref_mth(ENTRIES[:n])


@pytest.mark.parametrize("n", range(1, 65))
def test_inclusion_all_indices(n: int) -> None:
    tree_root = ref_mth(ENTRIES[:n])
    for i in range(n):
        proof = inclusion_proof(i, LEAVES[:n])
        assert proof == ref_path(i, ENTRIES[:n])
        assert verify_inclusion(i, n, LEAVES[i], proof, tree_root)
        if n > 1:
            assert not verify_inclusion((i + 1) % n, n, LEAVES[i], proof, tree_root)


@pytest.mark.parametrize("n", range(1, 65))
def test_consistency_all_prefixes(n: int) -> None:
    root_n = ref_mth(ENTRIES[:n])
    for m in range(0, n + 1):
        root_m = ref_mth(ENTRIES[:m])
        proof = consistency_proof(m, LEAVES[:n])
        expected = [] if m in (0, n) else ref_proof(m, ENTRIES[:n])
        assert proof == expected
        assert verify_consistency(m, n, root_m, root_n, proof)
        if 0 < m < n:
            assert not verify_consistency(m, n, root_n, root_m, proof)
            assert not verify_consistency(m, n, root_m, root_n, [])


@pytest.mark.parametrize(
    ("m", "n", "proof_len"),
    [
        pytest.param(3, 2, 0, id="old-larger-than-new"),
        pytest.param(2, 2, 1, id="equal-sizes-nonempty-proof"),
        pytest.param(0, 2, 1, id="empty-old-nonempty-proof"),
    ],
)
def test_consistency_rejects_malformed(m: int, n: int, proof_len: int) -> None:
    r = root(LEAVES[:2])
    assert not verify_consistency(m, n, r, r, [r] * proof_len)


def test_consistency_rejects_different_equal_size_roots() -> None:
    assert not verify_consistency(4, 4, root(LEAVES[:4]), root(LEAVES[1:5]), [])
    assert not verify_consistency(0, 4, root(LEAVES[:1]), root(LEAVES[:4]), [])


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"", id="empty-hash"),
        pytest.param(b"\x00" * 31, id="short-hash"),
        pytest.param("a" * 32, id="str-not-bytes"),
    ],
)
def test_malformed_hashes_fail_not_raise(bad: object) -> None:
    proof = inclusion_proof(1, LEAVES[:4])
    r = root(LEAVES[:4])
    assert not verify_inclusion(1, 4, LEAVES[1], [bad, *proof[1:]], r)  # type: ignore[list-item]
    assert not verify_inclusion(1, 4, bad, proof, r)  # type: ignore[arg-type]
    assert not verify_consistency(1, 4, LEAVES[0], r, [bad])  # type: ignore[list-item]


def test_proof_arguments_out_of_range() -> None:
    with pytest.raises(ValueError):
        inclusion_proof(4, LEAVES[:4])
    with pytest.raises(ValueError):
        consistency_proof(5, LEAVES[:4])
    assert not verify_inclusion(-1, 4, LEAVES[0], [], root(LEAVES[:4]))
    assert not verify_inclusion(0, 0, LEAVES[0], [], EMPTY_ROOT)


def test_compact_range_every_prefix() -> None:
    compact = CompactRange()
    assert compact.root() == EMPTY_ROOT
    for n in range(1, 65):
        compact.append(LEAVES[n - 1])
        assert compact.size == n
        assert compact.root() == ref_mth(ENTRIES[:n])
        assert len(compact.frontier) == bin(n).count("1")


def test_compact_range_copy_is_independent() -> None:
    compact = CompactRange.from_leaf_hashes(LEAVES[:5])
    snapshot = compact.copy()
    compact.extend(LEAVES[5:9])
    assert snapshot.size == 5 and snapshot.root() == root(LEAVES[:5])
    assert compact.root() == root(LEAVES[:9])


# --- property tests ---------------------------------------------------------------------------

leaf_lists = st.lists(st.binary(max_size=40), min_size=1, max_size=300)


def _flip(data: bytes, position: int, bit: int) -> bytes:
    i = position % len(data)
    return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]


@given(entries=leaf_lists, pick=st.integers(min_value=0), data=st.data())
def test_inclusion_property(entries: list[bytes], pick: int, data: st.DataObject) -> None:
    leaves = [leaf_hash(e) for e in entries]
    index = pick % len(leaves)
    tree_root = CompactRange.from_leaf_hashes(leaves).root()
    assert tree_root == root(leaves)
    proof = inclusion_proof(index, leaves)
    assert verify_inclusion(index, len(leaves), leaves[index], proof, tree_root)

    pos = data.draw(st.integers(min_value=0, max_value=10_000))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    assert not verify_inclusion(
        index, len(leaves), _flip(leaves[index], pos, bit), proof, tree_root
    )
    assert not verify_inclusion(
        index, len(leaves), leaves[index], proof, _flip(tree_root, pos, bit)
    )
    if proof:
        j = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        forged = [*proof[:j], _flip(proof[j], pos, bit), *proof[j + 1 :]]
        assert not verify_inclusion(index, len(leaves), leaves[index], forged, tree_root)
        assert not verify_inclusion(index, len(leaves), leaves[index], proof[:-1], tree_root)


@given(entries=leaf_lists, pick=st.integers(min_value=0), data=st.data())
def test_consistency_property(entries: list[bytes], pick: int, data: st.DataObject) -> None:
    leaves = [leaf_hash(e) for e in entries]
    n = len(leaves)
    m = pick % (n + 1)
    root_m, root_n = root(leaves[:m]), root(leaves)
    proof = consistency_proof(m, leaves)
    assert verify_consistency(m, n, root_m, root_n, proof)

    pos = data.draw(st.integers(min_value=0, max_value=10_000))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    assert not verify_consistency(m, n, _flip(root_m, pos, bit), root_n, proof)
    if m > 0:
        assert not verify_consistency(m, n, root_m, _flip(root_n, pos, bit), proof)
    if proof:
        j = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        forged = [*proof[:j], _flip(proof[j], pos, bit), *proof[j + 1 :]]
        assert not verify_consistency(m, n, root_m, root_n, forged)


@given(entries=leaf_lists, cut=st.integers(min_value=0))
def test_compact_range_restores_mid_stream(entries: list[bytes], cut: int) -> None:
    leaves = [leaf_hash(e) for e in entries]
    k = cut % (len(leaves) + 1)
    restored = CompactRange.from_leaf_hashes(leaves[:k])
    restored.extend(leaves[k:])
    assert restored.root() == root(leaves)
