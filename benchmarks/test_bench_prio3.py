"""Prio3 (draft-irtf-cfrg-vdaf-20) vs plain additive sharing of the same measurement.

Rows (one op = one report, one core, pure Python):

* ``prio3.shard``: a client shards one measurement for two aggregators.  Baseline:
  :func:`datafed.hazmat.split_additive` of the same encoded measurement into two
  shares (one AES-CTR seed share, one explicit share): what the client pays
  without a proof.
* ``prio3.verify``: both aggregators verify one report and add its output share to
  their aggregate share (verify_init at each, the verifier message, verify_next at
  each, agg_update).  Baseline: both aggregators of plain additive sharing expand
  and add their share.  ``ratio`` < 1: its inverse is the price of verifiability.
* ``prio3.verify`` (``path=batch``): the same, for a whole batch of reports at once
  (:mod:`datafed.protocols._prio3_batch`: columns of field elements, one pass of every
  step over all reports); ``prio3.verify.pool`` the batch split over a process pool of
  two (one per core of the development machine), timed by the CPU time of the slower
  worker plus the parent's (what two idle cores would take); ``prio3.verify.scalar``
  report by report.
* ``prio3.field``: element-wise products of 4096 field elements, the vectorised
  kernel (numpy ``uint64`` for Field64, numpy ``object`` for Field128) vs a list
  comprehension over Python ints.

See docs/prio3.md for the numbers, the profile and the published Rust anchors.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import numpy as np
import pytest
from sizes import size

from datafed.hazmat import Field64, Field128, mul64, reconstruct_additive, split_additive
from datafed.protocols import (
    Prio3,
    Prio3Count,
    Prio3Histogram,
    Prio3Sum,
    Prio3SumVec,
)

CTX = b"datafed bench"
KEY = bytes(range(32))

# name -> (instance, measurement, reports per benchmark call)
CASES: dict[str, tuple[Prio3[Any, Any], Any, int]] = {
    "count": (Prio3Count(), 1, size(200, 2)),
    "sum8": (Prio3Sum(255), 173, size(100, 2)),
    "histogram100": (Prio3Histogram(100), 42, size(20, 2)),
    "sumvec1000x1": (Prio3SumVec(1000, 1), [i % 2 for i in range(1000)], size(4, 1)),
}
#: Reports per batch for the batched rows: one aggregation job of the service (its
#: ``job_size``, 1,000 by default) where memory allows; a batch's fixed cost (numpy calls,
#: the circuit's constants) is shared by its reports, so smaller batches cost more each.
BATCH = {"count": 2000, "sum8": 1000, "histogram100": 1000, "sumvec1000x1": 16}
IDS = list(CASES)
PLAIN = "additive sharing (datafed.hazmat split_additive, Z_2^64)"


def _params(name: str) -> dict[str, Any]:
    vdaf = CASES[name][0]
    params: dict[str, Any] = {"case": name, "shares": 2, "vdaf_id": vdaf.ID}
    if hasattr(vdaf, "chunk_length"):
        params["chunk_length"] = vdaf.chunk_length
    return params


def _plain_vector(name: str) -> np.ndarray:
    vdaf, m, _ = CASES[name]
    # The same measurement as the FLP encodes it before proving (one-hot, bits, ...).
    return np.array(vdaf.flp.encode(m), dtype=np.uint64)


def _reports(name: str, count: int | None = None) -> list[tuple[bytes, Any, Any]]:
    vdaf, m, default = CASES[name]
    count = count or default
    out = []
    for _ in range(count):
        nonce = os.urandom(16)
        public, shares = vdaf.shard(CTX, m, nonce, os.urandom(vdaf.RAND_SIZE))
        out.append((nonce, public, shares))
    return out


@pytest.mark.parametrize("name", IDS)
def test_shard_plain_baseline(benchmark, bench_row, name):  # type: ignore[no-untyped-def]
    count = CASES[name][2]
    bench_row(
        "prio3.shard",
        role="baseline",
        unit="ops/s",
        per_call=count,
        params=_params(name),
        baseline_name=PLAIN,
    )
    x = _plain_vector(name)
    out = benchmark.pedantic(
        lambda: [split_additive(x, 2) for _ in range(count)], rounds=5, iterations=1
    )
    assert np.array_equal(reconstruct_additive(out[0]), x)


@pytest.mark.parametrize("name", IDS)
def test_shard_ours(benchmark, bench_row, name):  # type: ignore[no-untyped-def]
    vdaf, m, count = CASES[name]
    bench_row(
        "prio3.shard",
        role="ours",
        unit="ops/s",
        per_call=count,
        params=_params(name),
        baseline_name=PLAIN,
        op="one report",
    )
    nonces = [os.urandom(16) for _ in range(count)]
    rands = [os.urandom(vdaf.RAND_SIZE) for _ in range(count)]

    def shard_all() -> list[Any]:
        return [vdaf.shard(CTX, m, n, r) for n, r in zip(nonces, rands, strict=True)]

    out = benchmark.pedantic(shard_all, rounds=5, iterations=1)
    assert len(out) == count


@pytest.mark.parametrize("name", IDS)
def test_verify_plain_baseline(benchmark, bench_row, name):  # type: ignore[no-untyped-def]
    count = CASES[name][2]
    bench_row(
        "prio3.verify",
        role="baseline",
        unit="ops/s",
        per_call=count,
        params=_params(name),
        baseline_name=PLAIN,
        pair=f"prio3.verify|{name}",
    )
    x = _plain_vector(name)
    reports = [split_additive(x, 2) for _ in range(count)]

    def aggregate_all() -> list[np.ndarray]:
        aggs = [np.zeros(x.shape, dtype=np.uint64), np.zeros(x.shape, dtype=np.uint64)]
        for shares in reports:
            for j in range(2):
                np.add(aggs[j], shares[j].expand(), out=aggs[j])
        return aggs

    aggs = benchmark.pedantic(aggregate_all, rounds=5, iterations=1)
    assert np.array_equal(aggs[0] + aggs[1], x * np.uint64(count))


def _expected(name: str, m: Any, count: int) -> Any:
    if name == "histogram100":
        return [count if i == m else 0 for i in range(100)]
    if isinstance(m, list):
        return [x * count for x in m]
    return m * count


def batch_verify(name: str, encoded: list[tuple[bytes, bytes, bytes, bytes]]) -> list[list[int]]:
    """Both aggregators verify a batch; their aggregate shares (also a pool task)."""
    from datafed.protocols._prio3_batch import (
        aggregate_out_shares,
        decode_verifier_shares,
        encode_verifier_shares,
        verifier_messages,
        verify_init_batch,
        verify_next_batch,
    )

    vdaf = CASES[name][0]
    nonces, publics, s0, s1 = (list(c) for c in zip(*encoded, strict=True))
    b0 = verify_init_batch(vdaf, KEY, CTX, 0, nonces, publics, s0)
    b1 = verify_init_batch(vdaf, KEY, CTX, 1, nonces, publics, s1)
    v0, p0, decoded = decode_verifier_shares(vdaf, encode_verifier_shares(vdaf, b0))
    ok, msgs = verifier_messages(vdaf, CTX, [(v0, p0), (b1.verifiers, b1.parts)], len(nonces))
    ok &= decoded & b0.ok & b1.ok & verify_next_batch(b0, msgs) & verify_next_batch(b1, msgs)
    return [aggregate_out_shares(vdaf, b, ok) for b in (b0, b1)]


def _encoded(name: str) -> list[tuple[bytes, bytes, bytes, bytes]]:
    vdaf = CASES[name][0]
    return [
        (nonce, vdaf.encode_public_share(pub), *(vdaf.encode_input_share(s) for s in shares))
        for nonce, pub, shares in _reports(name, BATCH[name])
    ]


@pytest.mark.parametrize("name", IDS)
def test_verify_batched(benchmark, bench_row, name):  # type: ignore[no-untyped-def]
    vdaf, m, _ = CASES[name]
    count = BATCH[name]
    bench_row(
        "prio3.verify",
        role="ours",
        unit="ops/s",
        per_call=count,
        params=_params(name),
        baseline_name=PLAIN,
        pair=f"prio3.verify|{name}",
        op="one report at both aggregators, batched",
        path="batch",
    )
    encoded = _encoded(name)
    aggs = benchmark.pedantic(lambda: batch_verify(name, encoded), rounds=3, iterations=1)
    assert vdaf.unshard(aggs, count) == _expected(name, m, count)


def _timed_batch(name: str, part: list[tuple[bytes, bytes, bytes, bytes]]) -> tuple[Any, float]:
    """A pool task: :func:`batch_verify` and the CPU seconds it took in its worker."""
    start = time.process_time()
    aggs = batch_verify(name, part)
    return aggs, time.process_time() - start


@pytest.mark.parametrize("name", IDS)
def test_verify_pool(benchmark, bench_row, name):  # type: ignore[no-untyped-def]
    from concurrent.futures import ProcessPoolExecutor

    vdaf, m, _ = CASES[name]
    count, workers = BATCH[name], 2
    row = bench_row(
        "prio3.verify.pool",
        role="ours",
        unit="ops/s",
        per_call=count,
        params=_params(name),
        baseline_name=PLAIN,
        pair=f"prio3.verify|{name}",
        op="one report at both aggregators, batch split over a process pool",
        processes=workers,
        clock="CPU time of the slower worker plus the parent's (pickling), per batch",
    )
    encoded = _encoded(name)
    half = (count + workers - 1) // workers
    parts = [encoded[i : i + half] for i in range(0, count, half)]
    cpu: list[float] = []
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(batch_verify, [name] * len(parts), [parts[0][:2]] * len(parts)))  # warm

        def run() -> list[list[int]]:
            start = time.process_time()
            outs = list(pool.map(_timed_batch, [name] * len(parts), parts))
            cpu.append(max(t for _, t in outs) + time.process_time() - start)
            return [vdaf.merge([o[j] for o, _ in outs]) for j in range(2)]

        aggs = benchmark.pedantic(run, rounds=3, iterations=1)
    # A wall clock on a shared machine counts the other sessions' load; the parent's CPU
    # clock counts none of the workers' work: the row is the busiest process's CPU time.
    row.value_override = sum(cpu) / len(cpu)
    assert vdaf.unshard(aggs, count) == _expected(name, m, count)


@pytest.mark.parametrize("name", IDS)
def test_verify_ours(benchmark, bench_row, name):  # type: ignore[no-untyped-def]
    vdaf, m, count = CASES[name]
    bench_row(
        "prio3.verify.scalar",
        role="ours",
        unit="ops/s",
        per_call=count,
        params=_params(name),
        baseline_name=PLAIN,
        pair=f"prio3.verify|{name}",
        op="one report at both aggregators, one at a time",
    )
    reports = _reports(name)

    def verify_all() -> list[list[int]]:
        aggs = [vdaf.agg_init(), vdaf.agg_init()]
        for nonce, public, shares in reports:
            s0, v0 = vdaf.verify_init(KEY, CTX, 0, nonce, public, shares[0])
            s1, v1 = vdaf.verify_init(KEY, CTX, 1, nonce, public, shares[1])
            message = vdaf.verifier_shares_to_message(CTX, [v0, v1])
            aggs[0] = vdaf.agg_update(aggs[0], vdaf.verify_next(CTX, s0, message))
            aggs[1] = vdaf.agg_update(aggs[1], vdaf.verify_next(CTX, s1, message))
        return aggs

    aggs = benchmark.pedantic(verify_all, rounds=5, iterations=1)
    # Five rounds over the same reports: the aggregate is of the last round only.
    assert vdaf.unshard(aggs, count) == _expected(name, m, count)


FIELD_N = size(4096, 64)


def _field_inputs(field: Any) -> tuple[list[int], list[int]]:
    rng = random.Random(5)
    return (
        [rng.randrange(field.MODULUS) for _ in range(FIELD_N)],
        [rng.randrange(field.MODULUS) for _ in range(FIELD_N)],
    )


@pytest.mark.parametrize("field", [Field64, Field128], ids=repr)
def test_field_mul_python_baseline(benchmark, bench_row, field):  # type: ignore[no-untyped-def]
    bench_row(
        "prio3.field",
        role="baseline",
        unit="values/s",
        per_call=FIELD_N,
        params={"field": repr(field), "op": "mul", "n": FIELD_N},
        baseline_name="list comprehension over Python ints",
    )
    a, b = _field_inputs(field)
    p = field.MODULUS
    out = benchmark.pedantic(
        lambda: [x * y % p for x, y in zip(a, b, strict=True)], rounds=20, iterations=1
    )
    assert out[0] == a[0] * b[0] % p


@pytest.mark.parametrize("field", [Field64, Field128], ids=repr)
def test_field_mul_vectorised(benchmark, bench_row, field):  # type: ignore[no-untyped-def]
    kernel = (
        "numpy uint64, 32-bit limbs + Goldilocks reduction"
        if field is Field64
        else "numpy object array of Python ints"
    )
    bench_row(
        "prio3.field",
        role="ours",
        unit="values/s",
        per_call=FIELD_N,
        params={"field": repr(field), "op": "mul", "n": FIELD_N},
        baseline_name="list comprehension over Python ints",
        kernel=kernel,
    )
    a, b = _field_inputs(field)
    p = field.MODULUS
    if field is Field64:
        na, nb = np.array(a, dtype=np.uint64), np.array(b, dtype=np.uint64)
        out = benchmark.pedantic(lambda: mul64(na, nb), rounds=20, iterations=1)
    else:
        oa, ob = np.array(a, dtype=object), np.array(b, dtype=object)
        out = benchmark.pedantic(lambda: oa * ob % p, rounds=20, iterations=1)
    assert int(out[0]) == a[0] * b[0] % p


def _best(fn: Any, n: int) -> float:
    """Best of 5 runs of ``n`` calls, CPU time per call in microseconds."""
    runs = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            fn()
        runs.append((time.process_time() - start) / n)
    return min(runs) * 1e6


def _phases_of(name: str, vdaf: Prio3[Any, Any], m: Any, n: int) -> str:
    nonce, rand = os.urandom(16), os.urandom(vdaf.RAND_SIZE)
    public, shares = vdaf.shard(CTX, m, nonce, rand)
    size = vdaf.xof.SEED_SIZE
    seeds = [rand[i : i + size] for i in range(0, vdaf.RAND_SIZE, size)]
    meas = vdaf.flp.encode(m)
    jr = vdaf.uses_joint_rand
    parts_seed = vdaf.joint_rand_seed(CTX, list(public)) if jr else b""

    def xof_shard() -> None:
        helper_meas = vdaf.helper_meas_share(CTX, 1, seeds[0])
        vdaf.helper_proofs_share(CTX, 1, seeds[0])
        vdaf.prove_rands(CTX, seeds[-1])
        if jr:
            p1 = vdaf.joint_rand_part(CTX, 1, seeds[1], helper_meas, nonce)
            p0 = vdaf.joint_rand_part(CTX, 0, seeds[2], meas, nonce)
            vdaf.joint_rands(CTX, vdaf.joint_rand_seed(CTX, [p0, p1]))

    prove_rand = vdaf.prove_rands(CTX, seeds[-1])
    joint = vdaf.joint_rands(CTX, parts_seed) if jr else []
    expanded = [vdaf.expand_input_share(CTX, j, s) for j, s in enumerate(shares)]

    def verify_both() -> None:
        s0, v0 = vdaf.verify_init(KEY, CTX, 0, nonce, public, shares[0])
        s1, v1 = vdaf.verify_init(KEY, CTX, 1, nonce, public, shares[1])
        message = vdaf.verifier_shares_to_message(CTX, [v0, v1])
        vdaf.verify_next(CTX, s0, message)
        vdaf.verify_next(CTX, s1, message)

    def xof_verify() -> None:
        vdaf.expand_input_share(CTX, 1, shares[1])
        vdaf.query_rands(KEY, CTX, nonce)
        vdaf.query_rands(KEY, CTX, nonce)
        if jr:
            for j, (ms, _, blind) in enumerate(expanded):
                assert blind is not None
                vdaf.joint_rand_part(CTX, j, blind, ms, nonce)
                vdaf.joint_rands(CTX, vdaf.joint_rand_seed(CTX, list(public)))

    query_rand = vdaf.query_rands(KEY, CTX, nonce)

    def queries() -> list[list[int]]:
        return [vdaf.flp.query(ms, pf, query_rand, joint, 2) for ms, pf, _ in expanded]

    p = vdaf.field.MODULUS
    verifier = [(a + b) % p for a, b in zip(*queries(), strict=True)]
    shard = _best(lambda: vdaf.shard(CTX, m, nonce, rand), n)
    enc = _best(lambda: vdaf.flp.encode(m), n)
    xs = _best(xof_shard, n)
    prove = _best(lambda: vdaf.flp.prove(meas, prove_rand, joint), n)
    verify = _best(verify_both, n)
    xv = _best(xof_verify, n)
    q = _best(queries, n)
    dec = _best(lambda: vdaf.flp.decide(verifier), n)
    return (
        f"{name}: shard {shard:.0f} us (XOF {xs:.0f}, encode {enc:.0f}, prove {prove:.0f}, "
        f"rest {shard - xs - enc - prove:.0f}); verify {verify:.0f} us (XOF {xv:.0f}, "
        f"2 x query {q:.0f}, decide {dec:.0f}, rest {verify - xv - q - dec:.0f})"
    )


if __name__ == "__main__":
    # Where the time goes, per report (docs/prio3.md): python benchmarks/test_bench_prio3.py
    for case, (instance, measurement, count) in CASES.items():
        print(_phases_of(case, instance, measurement, max(count, 5)))
