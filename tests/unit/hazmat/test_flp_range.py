"""The range-check FLP query over columns, and the Lagrange primitives it rests on.

:func:`query_range_checked` must give, report by report, exactly the verifier share of
the scalar :meth:`FlpBBCGGI19.query` (and flag where the scalar query raises); the DFT
form of the Lagrange basis must equal :func:`lagrange_coeffs` at every point, the nodes
included.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from datafed.hazmat import Field64, Field128, NttField
from datafed.hazmat._flp import FlpBBCGGI19
from datafed.hazmat._flp_batch import query_columns
from datafed.hazmat._flp_circuits import CountCircuit, SumCircuit
from datafed.hazmat._flp_range import is_range_checked, query_range_checked
from datafed.hazmat._flp_vec_circuits import (
    HistogramCircuit,
    MultihotCountVecCircuit,
    SumVecCircuit,
)
from datafed.hazmat._lagrange import (
    lagrange_coeffs,
    lagrange_columns,
    lagrange_columns_scaled,
    powers_columns,
)
from datafed.hazmat.errors import InvalidShare

CIRCUITS = {
    "histogram100": lambda: HistogramCircuit(Field128, 100, 7),
    "histogram10-chunk3": lambda: HistogramCircuit(Field128, 10, 3),
    "histogram1": lambda: HistogramCircuit(Field128, 1, 1),
    "sumvec": lambda: SumVecCircuit(Field128, 5, 3, 2),
    "sumvec-field64": lambda: SumVecCircuit(Field64, 3, 1, 2),
    "sumvec-one-call": lambda: SumVecCircuit(Field128, 4, 1, 4),
    "multihot": lambda: MultihotCountVecCircuit(Field128, 6, 3, 2),
    # A chunk longer than Histogram(100)'s 7, and a last call shorter than the others.
    "sumvec-long-chunks": lambda: SumVecCircuit(Field128, 23, 1, 10),
    # More calls than the limbs sum at once: the wires go on Python integers.
    "sumvec-many-calls": lambda: SumVecCircuit(Field128, 130, 1, 1),
}


def _rows(field: NttField, length: int, n: int, rng: random.Random) -> list[Any]:
    return [
        np.array([rng.randrange(field.MODULUS) for _ in range(n)], dtype=object)
        for _ in range(length)
    ]


def _scalar(flp: FlpBBCGGI19[Any, Any], inputs: list[list[Any]], j: int, shares: int) -> Any:
    meas, proof, qr, jr = ([int(r[j]) for r in rows] for rows in inputs)
    try:
        return flp.query(meas, proof, qr, jr, shares)
    except InvalidShare:
        return None


@pytest.mark.parametrize("name", list(CIRCUITS))
@pytest.mark.parametrize("shares", [2, 3])
def test_query_equals_the_scalar_query(name: str, shares: int) -> None:
    flp = FlpBBCGGI19(CIRCUITS[name]())
    assert is_range_checked(flp)
    field, rng, n = flp.field, random.Random(name), 12
    lengths = (flp.MEAS_LEN, flp.PROOF_LEN, flp.QUERY_RAND_LEN, flp.JOINT_RAND_LEN)
    inputs = [_rows(field, length, n, rng) for length in lengths]
    # Report 0: a valid measurement and its proof, split in `shares` shares (share 0 here).
    meas = flp.encode(0 if name.startswith("histogram") else [0] * flp.valid.length)
    if name == "multihot":
        meas = flp.encode([True, False, True, False, False, False])
    prove_rand = [rng.randrange(field.MODULUS) for _ in range(flp.PROVE_RAND_LEN)]
    jr = [int(x[0]) for x in inputs[3]]
    proof = flp.prove(meas, prove_rand, jr)
    for i, x in enumerate(meas):
        inputs[0][i][0] = x
    for i, x in enumerate(proof):
        inputs[1][i][0] = x
    # Test points on the nodes: a wire node (the scalar query raises), a node of the
    # gadget polynomial's coset (it does not), zero and one.
    wlen = flp.layout[0][2]
    t_row = inputs[2][-1]
    t_row[1] = field.nth_root_powers(wlen)[-1]
    t_row[2] = field.nth_root_powers(2 * wlen)[1]
    t_row[3], t_row[4] = 0, 1
    verifier, ok = query_range_checked(flp, *inputs, shares, n)
    assert len(verifier) == flp.VERIFIER_LEN
    for j in range(n):
        want = _scalar(flp, inputs, j, shares)
        assert bool(ok[j]) == (want is not None), j
        if want is not None:
            assert [int(np.broadcast_to(v, (n,))[j]) for v in verifier] == want, j
    assert not ok[1] and not ok[4] and ok[2]
    # query_columns dispatches here.
    again, ok2 = query_columns(flp, *inputs, shares, n)
    assert np.array_equal(ok, ok2)
    assert all(np.array_equal(a, b) for a, b in zip(verifier, again, strict=True))


def test_a_valid_proof_is_accepted_and_a_bad_one_rejected() -> None:
    flp = FlpBBCGGI19(HistogramCircuit(Field128, 100, 7))
    field, rng, n = flp.field, random.Random(3), 4
    p = field.MODULUS
    meas = flp.encode(42)
    jr = [rng.randrange(p) for _ in range(flp.JOINT_RAND_LEN)]
    proof = flp.prove(meas, [rng.randrange(p) for _ in range(flp.PROVE_RAND_LEN)], jr)
    bad_meas = list(meas)
    bad_meas[7] = 1  # two-hot
    bad_proof = list(proof)
    bad_proof[20] = (bad_proof[20] + 1) % p  # a gadget polynomial value
    cases = [
        (meas, proof),
        (bad_meas, proof),
        (meas, bad_proof),
        (bad_meas, flp.prove(bad_meas, [1] * flp.PROVE_RAND_LEN, jr)),
    ]
    qr = [rng.randrange(p) for _ in range(flp.QUERY_RAND_LEN)]

    def col(vectors: list[list[int]]) -> list[Any]:
        return [np.array(v, dtype=object) for v in zip(*vectors, strict=True)]

    # One share holds everything, the other zeros (num_shares = 1 is the unsplit check).
    verifier, ok = query_range_checked(
        flp,
        col([m for m, _ in cases]),
        col([pr for _, pr in cases]),
        col([qr] * n),
        col([jr] * n),
        1,
        n,
    )
    assert ok.all()
    decisions = [flp.decide([int(np.broadcast_to(v, (n,))[j]) for v in verifier]) for j in range(n)]
    assert decisions == [True, False, False, False]


@pytest.mark.parametrize("circuit", [CountCircuit(Field64), SumCircuit(Field64, 255)])
def test_other_circuits_keep_the_general_query(circuit: Any) -> None:
    assert not is_range_checked(FlpBBCGGI19(circuit))


@pytest.mark.parametrize("field", [Field64, Field128], ids=repr)
@pytest.mark.parametrize("n", [1, 2, 4, 16, 32])
def test_lagrange_columns_equal_the_coefficients_everywhere(field: NttField, n: int) -> None:
    rng = random.Random(n)
    points = [rng.randrange(field.MODULUS) for _ in range(6)]
    points += [*field.nth_root_powers(n), *field.nth_root_powers(2 * n), 0, 1, field.MODULUS - 1]
    basis = lagrange_columns(field, n, np.array(points, dtype=object))
    assert basis.shape == (n, len(points))
    for j, t in enumerate(points):
        assert [int(x) for x in basis[:, j]] == lagrange_coeffs(field, n, t), (n, t)
    # Unreduced and scaled by n: the same modulo p.
    scaled = lagrange_columns_scaled(field, powers_columns(field, points[0], n))
    want = [c * n % field.MODULUS for c in lagrange_coeffs(field, n, points[0])]
    assert [int(x) % field.MODULUS for x in scaled] == want


def test_lagrange_columns_refuse_a_length_not_a_power_of_two() -> None:
    with pytest.raises(ValueError):
        lagrange_columns_scaled(Field128, powers_columns(Field128, 5, 3))


def test_powers_columns_known_answer() -> None:
    p = Field64.MODULUS
    assert [int(x) for x in powers_columns(Field64, 3, 5)] == [1, 3, 9, 27, 81]
    assert [int(x) for x in powers_columns(Field64, 3, 3, scale=p + 2)] == [2, 6, 18]
    assert [int(x) for x in powers_columns(Field64, p - 1, 3)] == [1, p - 1, 1]


def test_query_refuses_another_circuit() -> None:
    flp = FlpBBCGGI19(SumCircuit(Field64, 255))
    with pytest.raises(ValueError, match="range-check"):
        query_range_checked(flp, [], [], [], [], 2, 0)
