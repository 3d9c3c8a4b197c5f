"""Secure aggregation, 10 clients, 2 dropping after sharing keys, vs an unprotected numpy sum."""

from __future__ import annotations

import numpy as np
from sizes import size

from datafed.protocols import SecAggClient, SecAggServer

N, T, LENGTH = size(10, 5), size(6, 3), size(10_000, 100)
PARAMS = {"clients": N, "threshold": T, "length": LENGTH, "dropouts": 2}


def _inputs() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(4)
    return {i: rng.integers(0, 2**64, LENGTH, dtype=np.uint64) for i in range(1, N + 1)}


def _secagg(xs: dict[int, np.ndarray]) -> np.ndarray:
    clients = {i: SecAggClient(i, threshold=T, vector_length=LENGTH) for i in xs}
    server = SecAggServer(threshold=T, vector_length=LENGTH)
    for c in clients.values():
        server.receive_advertise(c.advertise_keys())
    roster = server.roster()
    for c in clients.values():
        server.receive_shares(c.share_keys(roster))
    fwd = server.forward()
    for i in sorted(xs)[2:]:  # clients 1 and 2 drop before sending masked inputs
        server.receive_masked(clients[i].masked_input(fwd[i], xs[i]))
    survivors = server.survivors()
    for i in survivors.clients:
        clients[i].consistency(survivors)
    for i in survivors.clients:
        server.receive_unmask(clients[i].unmask(survivors, survivors.clients))
    return server.result()


def test_secagg_sum_plain_baseline(benchmark, bench_row):  # type: ignore[no-untyped-def]
    bench_row(
        "secagg.sum",
        role="baseline",
        unit="s",
        params=PARAMS,
        baseline_name="numpy sum, no protection",
    )
    xs = _inputs()
    benchmark.pedantic(
        lambda: np.sum([xs[i] for i in sorted(xs)[2:]], axis=0, dtype=np.uint64),
        rounds=5,
        iterations=1,
    )


def test_secagg_sum_ours(benchmark, bench_row):  # type: ignore[no-untyped-def]
    bench_row(
        "secagg.sum", role="ours", unit="s", params=PARAMS, baseline_name="numpy sum, no protection"
    )
    xs = _inputs()
    out = benchmark.pedantic(_secagg, args=(xs,), rounds=3, iterations=1)
    assert np.array_equal(out, np.sum([xs[i] for i in sorted(xs)[2:]], axis=0, dtype=np.uint64))
