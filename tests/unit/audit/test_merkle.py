from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.errors import InvalidProof, RootMismatchError
from audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    NodeID,
    consistency_proof,
    hash_children,
    hash_leaf,
    inclusion_proof,
    range_nodes,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, literally."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH, literally."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """RFC 9162 §2.1.4.1 SUBPROOF, literally."""
    if m == len(d):
        return [] if b else [mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


class MemStore:
    """Every perfect subtree hash of a list of leaves."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = list(leaves)
        self.reads = 0

    def get_hashes(self, ids: Sequence[NodeID]) -> list[bytes]:
        self.reads += len(ids)
        return [mth(self.leaves[i << lvl : (i + 1) << lvl]) for lvl, i in ids]


def leaves(n: int) -> list[bytes]:
    return [f"leaf {i}".encode() for i in range(n)]


def test_known_roots() -> None:
    assert EMPTY_ROOT.hex() == hashlib.sha256(b"").hexdigest()
    want = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert hash_leaf(b"").hex() == want
    assert hash_children(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


@given(st.integers(0, 70))
def test_compact_range_matches_mth_and_emits_every_node(n: int) -> None:
    d = leaves(n)
    cr = CompactRange()
    emitted: list[tuple[NodeID, bytes]] = []
    for leaf in d:
        cr.append(hash_leaf(leaf), emitted)
    assert cr.root() == mth(d)
    assert root_from_leaf_hashes(hash_leaf(x) for x in d) == (n, mth(d))
    for (lvl, i), h in emitted:
        assert h == mth(d[i << lvl : (i + 1) << lvl])
    assert len(emitted) == n - n.bit_count()
    ids = CompactRange.node_ids(n)
    assert CompactRange(n, MemStore(d).get_hashes(ids)).root() == mth(d)


@given(st.integers(1, 70), st.data())
def test_inclusion_proofs_match_rfc_path(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    m = data.draw(st.integers(0, n - 1))
    store = MemStore(d)
    proof = inclusion_proof(m, n, store)
    assert proof == path(m, d)
    assert store.reads <= 2 * n.bit_length() + 2
    verify_inclusion(hash_leaf(d[m]), m, n, proof, mth(d))
    with pytest.raises(InvalidProof):
        verify_inclusion(hash_leaf(b"other"), m, n, proof, mth(d))
    if proof:
        bad = [*proof]
        bad[0] = bytes(32)
        with pytest.raises(InvalidProof):
            verify_inclusion(hash_leaf(d[m]), m, n, bad, mth(d))
        with pytest.raises(InvalidProof):
            verify_inclusion(hash_leaf(d[m]), m, n, proof[:-1], mth(d))


@given(st.integers(1, 70), st.data())
def test_consistency_proofs_match_rfc_subproof(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    m = data.draw(st.integers(1, n))
    proof = consistency_proof(m, n, MemStore(d))
    assert proof == subproof(m, d, True)
    verify_consistency(m, n, proof, mth(d[:m]), mth(d))
    if m < n:
        with pytest.raises(InvalidProof):
            verify_consistency(m, n, proof, mth([*d[: m - 1], b"x"]), mth(d))
        with pytest.raises(InvalidProof):
            verify_consistency(m, n, proof, mth(d[:m]), mth([*d[:-1], b"x"]))
        with pytest.raises(InvalidProof):
            verify_consistency(m, n, proof[1:], mth(d[:m]), mth(d))


def test_root_mismatch_names_roots() -> None:
    d = leaves(5)
    proof = inclusion_proof(2, 5, MemStore(d))
    with pytest.raises(RootMismatchError) as e:
        verify_inclusion(hash_leaf(d[2]), 2, 5, proof, bytes(32))
    assert e.value.expected == bytes(32) and e.value.computed == mth(d)


def test_range_nodes() -> None:
    assert range_nodes(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert range_nodes(8, 13) == [(2, 2), (0, 12)]
    assert range_nodes(0, 0) == []


@pytest.mark.parametrize(
    ("call", "msg"),
    [
        (lambda s: inclusion_proof(5, 5, s), r"leaf index must be in \[0, 5\), got 5"),
        (lambda s: inclusion_proof(-1, 5, s), r"leaf index must be in"),
        (lambda s: consistency_proof(0, 5, s), "size1 <= size2, got 0 and 5"),
        (lambda s: consistency_proof(6, 5, s), "sizes must satisfy"),
    ],
)
def test_bad_proof_arguments(call: object, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        call(MemStore(leaves(5)))  # type: ignore[operator]


def test_compact_range_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size 3 needs 2 hashes, got 1"):
        CompactRange(3, [bytes(32)])
    with pytest.raises(ValueError, match="size must be >= 0, got -1"):
        CompactRange(-1, [])
