"""RFC 9162 §2.1 Merkle tree math: hashes, compact ranges, proofs and their verification.

Pure: no I/O, no logging.  Proof *generation* reads stored subtree hashes through an
injected :class:`HashReader`; every complete (perfect, aligned) subtree is addressed by a
:data:`NodeID` ``(level, index)`` covering leaves ``[index * 2**level, (index+1) * 2**level)``.
A log appends with a :class:`CompactRange` (O(log n) per leaf, emitting each newly
completed subtree for storage), so proofs never rehash more than O(log n) stored nodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

from audit.errors import InvalidProof, RootMismatchError

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "HashReader",
    "NodeID",
    "consistency_proof",
    "hash_children",
    "hash_leaf",
    "inclusion_proof",
    "perfect_root",
    "range_nodes",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

NodeID = tuple[int, int]
"""A complete subtree ``(level, index)``: leaves ``[index << level, (index + 1) << level)``."""

_sha256 = hashlib.sha256
#: MTH({}) = SHA-256() — RFC 9162 §2.1.1.
EMPTY_ROOT = _sha256(b"").digest()
_LEAF = b"\x00"  # RFC 9162 §2.1.1 leaf domain byte
_NODE = b"\x01"  # RFC 9162 §2.1.1 interior-node domain byte
HASH_SIZE = 32


def hash_leaf(data: bytes) -> bytes:
    """Return ``SHA-256(0x00 || data)``, the leaf hash of RFC 9162 §2.1.1."""
    return _sha256(_LEAF + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """Return ``SHA-256(0x01 || left || right)``, the interior hash of RFC 9162 §2.1.1."""
    return _sha256(_NODE + left + right).digest()


class HashReader(Protocol):
    """Storage of complete-subtree hashes, injected into proof generation."""

    def get_hashes(self, ids: Sequence[NodeID]) -> list[bytes]:
        """Return the hash of each complete subtree in ``ids``, in order."""
        ...


class CompactRange:
    """The right edge of a tree: hashes of the perfect subtrees of its size's binary form.

    Parameters
    ----------
    size : int
        Number of leaves covered.
    hashes : Sequence[bytes]
        Hashes of the perfect subtrees that make up ``[0, size)``, largest first
        (one per set bit of ``size``).
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        if len(hashes) != size.bit_count():
            raise ValueError(f"size {size} needs {size.bit_count()} hashes, got {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    def copy(self) -> CompactRange:
        """Return an independent copy."""
        return CompactRange(self.size, self.hashes)

    def append(self, leaf_hash: bytes, out: list[tuple[NodeID, bytes]] | None = None) -> None:
        """Append one leaf hash; record each newly completed interior node in ``out``."""
        hashes = self.hashes
        index = self.size
        h = leaf_hash
        level = 0
        while index & 1:  # merge while the right edge has a sibling of equal size
            h = _sha256(_NODE + hashes.pop() + h).digest()
            level += 1
            index >>= 1
            if out is not None:
                out.append(((level, index), h))
        hashes.append(h)
        self.size += 1

    def append_subtree(self, level: int, subtree_hash: bytes) -> None:
        """Append a perfect subtree of ``2**level`` leaves; ``size`` must be aligned to it."""
        if self.size & ((1 << level) - 1):
            raise ValueError(f"size {self.size} is not aligned to a subtree of level {level}")
        hashes = self.hashes
        index = self.size >> level
        h = subtree_hash
        while index & 1:
            h = _sha256(_NODE + hashes.pop() + h).digest()
            index >>= 1
        hashes.append(h)
        self.size += 1 << level

    def root(self) -> bytes:
        """Return the RFC 9162 tree head MTH over ``[0, size)``."""
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = _sha256(_NODE + left + h).digest()
        return h

    @staticmethod
    def node_ids(size: int) -> list[NodeID]:
        """Return the ids of the perfect subtrees making up ``[0, size)``, largest first."""
        return range_nodes(0, size)


def root_from_leaf_hashes(leaf_hashes: Iterable[bytes]) -> tuple[int, bytes]:
    """Return ``(size, MTH)`` of a tree from all its leaf hashes (O(n) time, O(log n) memory)."""
    cr = CompactRange()
    for h in leaf_hashes:
        cr.append(h)
    return cr.size, cr.root()


def perfect_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the root of a perfect subtree (a power-of-two number of leaf hashes)."""
    level = list(leaf_hashes)
    if not level or len(level) & (len(level) - 1):
        raise ValueError(f"need a power-of-two number of hashes, got {len(level)}")
    sha, node = _sha256, _NODE
    while len(level) > 1:
        level = [sha(node + a + b).digest() for a, b in zip(level[::2], level[1::2], strict=True)]
    return level[0]


def range_nodes(lo: int, hi: int) -> list[NodeID]:
    """Decompose ``[lo, hi)`` into aligned perfect subtrees, largest (leftmost) first."""
    out: list[NodeID] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo:
            level = min(level, (lo & -lo).bit_length() - 1)
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def _fold(hashes: Sequence[bytes]) -> bytes:
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = hash_children(left, h)
    return h


def _largest_pow2_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Subtrees of RFC 9162 §2.1.3.1 PATH(index, D[size]), leaf level first."""
    out = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _largest_pow2_below(hi - lo)
        if index - lo < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def _consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Subtrees of RFC 9162 §2.1.4.1 SUBPROOF(size1, D[size2], true), leaf level first."""
    out = []
    lo, hi, whole = 0, size2, True
    while True:
        m, n = size1 - lo, hi - lo
        if m == n:
            if not whole:
                out.append((lo, hi))
            break
        k = _largest_pow2_below(n)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
            whole = False
    out.reverse()
    return out


def _resolve(ranges: list[tuple[int, int]], store: HashReader) -> list[bytes]:
    groups = [range_nodes(lo, hi) for lo, hi in ranges]
    flat = [node for g in groups for node in g]
    hashes = store.get_hashes(flat) if flat else []
    if len(hashes) != len(flat):
        raise ValueError(f"store returned {len(hashes)} hashes for {len(flat)} nodes")
    proof, pos = [], 0
    for g in groups:
        proof.append(_fold(hashes[pos : pos + len(g)]))
        pos += len(g)
    return proof


def inclusion_proof(index: int, size: int, store: HashReader) -> list[bytes]:
    """Return the RFC 9162 §2.1.3.1 inclusion proof of leaf ``index`` in the tree of ``size``."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index must be in [0, {size}), got {index}")
    return _resolve(_inclusion_ranges(index, size), store)


def consistency_proof(size1: int, size2: int, store: HashReader) -> list[bytes]:
    """Return the RFC 9162 §2.1.4.1 consistency proof between tree sizes ``size1`` and ``size2``."""
    if not 0 < size1 <= size2:
        raise ValueError(f"sizes must satisfy 0 < size1 <= size2, got {size1} and {size2}")
    return _resolve(_consistency_ranges(size1, size2), store)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify an inclusion proof per RFC 9162 §2.1.3.2.

    Raises
    ------
    InvalidProof
        If the proof is malformed or leads to another root (:class:`RootMismatchError`).
    """
    if (
        not 0 <= index < size
        or len(leaf_hash) != HASH_SIZE
        or any(len(p) != HASH_SIZE for p in proof)
    ):
        raise InvalidProof("invalid inclusion proof")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise InvalidProof("invalid inclusion proof")
        if fn & 1 or fn == sn:
            r = _sha256(_NODE + p + r).digest()
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(_NODE + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("invalid inclusion proof")
    if r != root:
        raise RootMismatchError(root, r)


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Verify a consistency proof per RFC 9162 §2.1.4.2.

    A tree of size 0 has no meaningful consistency proof and is refused; equal sizes need
    an empty proof and equal roots.

    Raises
    ------
    InvalidProof
        If the proof is malformed or does not link the two roots.
    """
    if not 0 < size1 <= size2 or any(len(p) != HASH_SIZE for p in proof):
        raise InvalidProof("invalid consistency proof")
    if size1 == size2:
        if proof:
            raise InvalidProof("invalid consistency proof")
        if root1 != root2:
            raise RootMismatchError(root1, root2)
        return
    if not proof:
        raise InvalidProof("invalid consistency proof")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is an exact power of 2
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProof("invalid consistency proof")
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE + c + fr).digest()
            sr = _sha256(_NODE + c + sr).digest()
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(_NODE + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("invalid consistency proof")
    if fr != root1:
        raise RootMismatchError(root1, fr)
    if sr != root2:
        raise RootMismatchError(root2, sr)
