"""Every inclusion and consistency vector in tests/vectors/merkle (vendored), positive and negative.

Missing vectors fail the collection (they are part of the contract), they are never skipped.
"""

from __future__ import annotations

import pytest

from audit.errors import InvalidProof
from audit.merkle import verify_consistency, verify_inclusion

from .merkle_loader import (
    ConsistencyVector,
    InclusionVector,
    consistency_vectors,
    inclusion_vectors,
)

INCLUSION = inclusion_vectors()
CONSISTENCY = consistency_vectors()


def test_vector_set_is_complete() -> None:
    assert len(INCLUSION) >= 90 and len(CONSISTENCY) >= 90
    assert sum(not v.want_err for v in INCLUSION) >= 5
    assert sum(not v.want_err for v in CONSISTENCY) >= 5


@pytest.mark.parametrize("v", INCLUSION, ids=[v.name for v in INCLUSION])
def test_inclusion_vector(v: InclusionVector) -> None:
    def run() -> None:
        verify_inclusion(v.leaf_hash, v.leaf_index, v.tree_size, v.proof, v.root)

    if v.want_err:
        with pytest.raises(InvalidProof):
            run()
    else:
        run()


@pytest.mark.parametrize("v", CONSISTENCY, ids=[v.name for v in CONSISTENCY])
def test_consistency_vector(v: ConsistencyVector) -> None:
    def run() -> None:
        verify_consistency(v.size1, v.size2, v.proof, v.root1, v.root2)

    if v.want_err:
        with pytest.raises(InvalidProof):
            run()
    else:
        run()
