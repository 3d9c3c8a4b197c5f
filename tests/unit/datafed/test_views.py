"""What each party receives, per mode: two federations, different nodes, the same total.

Federation F1 has node values (0, 10^6, 7) and F2 (10^6, 0, 7) in every position: the
same totals, different contributions. For every protection mode we record every byte the
analyst receives (each node's answer, every step reply) and what each node receives from
its peers, over many jobs (each job a fresh statement, so fresh masks and keys), and show
that the analyst's view of F1 and of F2 has the same distribution -- uniformly random
numbers -- or carries only the total. ``plain`` is the documented exception: it shows
every node's values (visible data only). ``docs/invisibility.md`` has the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from datafed.modes import (
    CkksMode,
    OneShotMode,
    PaillierMode,
    PlainMode,
    ProtectionMode,
    SecAggMode,
    SharesMode,
)
from datafed.modes._envelope import open_sealed, peers
from datafed.modes.errors import InvalidEnvelope
from datafed.proto.v1 import modes_pb2, protocol_pb2
from tests.unit.datafed.mode_harness import COMPS, NODES, Harness, Run
from tests.unit.datafed.mode_harness import mode_pki as _mode_pki

mode_pki = _mode_pki  # the fixture
A, B, C = NODES
#: Two groups x (sum, count): node values of F1 and F2, equal totals.
F1 = {A: [0, 5, 0, 5], B: [10**6, 5, 10**6, 5], C: [7, 5, 7, 5]}
F2 = {A: [10**6, 5, 10**6, 5], B: [0, 5, 0, 5], C: [7, 5, 7, 5]}
RUNS = 24
BINS = 8
#: Chi-square survival at 41 for 7 degrees of freedom is 8.1e-7.
CHI2_7_P1E6 = 41.0


def _homogeneous(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sample chi-square statistic of values in [0, 1) over BINS equal bins."""
    a = np.histogram(x, bins=BINS, range=(0, 1))[0].astype(float)
    b = np.histogram(y, bins=BINS, range=(0, 1))[0].astype(float)
    stat = 0.0
    for obs, n in ((a, len(x)), (b, len(y))):
        expected = (a + b) * n / (len(x) + len(y))
        stat += float(np.sum((obs - expected) ** 2 / np.maximum(expected, 1e-9)))
    return stat


def _uniform(x: Sequence[float]) -> float:
    counts = np.histogram(x, bins=BINS, range=(0, 1))[0].astype(float)
    expected = len(x) / BINS
    return float(np.sum((counts - expected) ** 2 / expected))


def _u64(raw: bytes) -> list[float]:
    words = np.frombuffer(raw, dtype="<u8").astype(np.float64)
    return list(words / 2.0**64)


def _runs(
    mode_pki, make: Callable[[], ProtectionMode], values, runs: int = RUNS
) -> list[tuple[Harness, Run]]:
    """``runs`` jobs, each under its own statement (fresh masks, seeds and keys)."""
    out = []
    for i in range(runs):
        h = Harness(mode_pki, job_id=f"job-view-{i}")
        mode = make()
        out.append(
            (h, h.protect(mode, values) if isinstance(mode, OneShotMode) else h.run(mode, values))
        )
    return out


def _assert_same_distribution(view1: list[float], view2: list[float]) -> None:
    assert len(view1) == len(view2) >= 48
    assert _uniform(view1) < CHI2_7_P1E6 and _uniform(view2) < CHI2_7_P1E6
    assert _homogeneous(view1, view2) < CHI2_7_P1E6


@pytest.fixture(scope="module")
def paillier_mode() -> PaillierMode:
    return PaillierMode(2048)  # one key pair for every run: the analyst's


def test_paillier_analyst_decrypts_uniform_node_values_and_the_total(mode_pki, paillier_mode):
    views, totals = [], []
    for values in (F1, F2):
        view = []
        for _, run in _runs(mode_pki, lambda: paillier_mode, values):
            pub, priv = paillier_mode._keys  # type: ignore[misc]
            for answer in run.answers:  # every byte the analyst receives: one payload per node
                for ct in modes_pb2.PaillierPayload.FromString(answer.payload).ciphertexts:
                    plain = priv.decrypt(pub.ciphertext_from_bytes(ct))
                    view.append(plain / pub.n)
            totals.append(paillier_mode.combine([a.payload for a in run.answers], COMPS, 2))
        views.append(view)
    _assert_same_distribution(*views)
    assert all(t == [10**6 + 7, 15, 10**6 + 7, 15] for t in totals)


def test_shares_analyst_and_aggregators_see_uniform_shares(mode_pki):
    analyst, aggregators = [], []
    for values in (F1, F2):
        seen, opened = [], []
        for h, run in _runs(mode_pki, SharesMode, values):
            assert run.combined.values == [10**6 + 7, 15, 10**6 + 7, 15]
            ids = {p.name: p for p in peers(h.env(A), [h.pki.certs[n] for n in NODES], "p")}
            for r in run.session.log:
                seen += _u64(protocol_pb2.ShareSum.FromString(r.reply).vector)
                for item in protocol_pb2.SealedBundle.FromString(r.request).items:
                    with pytest.raises(InvalidEnvelope):  # sealed to the aggregator alone
                        open_sealed(h.env(C), "shares", ids, item)
                    _, body = open_sealed(h.env(r.node), "shares", ids, item)
                    share = protocol_pb2.ShareBody.FromString(body)
                    if share.WhichOneof("share") == "vector":
                        opened += _u64(share.vector)
        analyst.append(seen)
        aggregators.append(opened)
    _assert_same_distribution(*analyst)
    _assert_same_distribution(*aggregators)


def test_secagg_analyst_sees_uniform_masked_inputs(mode_pki):
    views = []
    for values in (F1, F2):
        view = []
        for _, run in _runs(mode_pki, SecAggMode, values):
            assert run.combined.values == [10**6 + 7, 15, 10**6 + 7, 15]
            for r in run.session.log:
                if r.round == 2:
                    view += _u64(protocol_pb2.SecAggMasked.FromString(r.reply).masked)
        views.append(view)
    _assert_same_distribution(*views)


def test_ckks_analyst_opens_only_the_total(mode_pki):
    totals = []
    for values in (F1, F2):
        for _, run in _runs(mode_pki, CkksMode, values, runs=2):
            for answer in run.answers:  # one sealed box per node, to the aggregator only
                items = protocol_pb2.SealedBundle.FromString(answer.payload).items
                assert [i.recipient for i in items] == [A]
            (step,) = run.session.log  # the only other thing the analyst gets: the sum
            assert step.node == A
            got = np.asarray(run.combined.values, dtype=float)
            assert np.max(np.abs(got - [10**6 + 7, 15, 10**6 + 7, 15])) <= 1
            totals.append(tuple(run.combined.values))
    assert len(set(totals)) == 1


def test_plain_shows_every_nodes_values(mode_pki):
    """The documented exception: ``plain`` is for visible data; the views differ."""
    got = []
    for values in (F1, F2):
        h = Harness(mode_pki)
        run = h.protect(PlainMode(), values)
        got.append([list(modes_pb2.PlainPayload.FromString(a.payload).values) for a in run.answers])
    assert got[0] != got[1] and got[0][0] == F1[A]
