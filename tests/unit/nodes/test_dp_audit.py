"""Statistical DP tests of every non-query channel's release function (``tests/dp_audit.py``).

Each test runs the node-side release function -- the code the node runs, in process --
thousands of times on two neighbouring datasets (differing in one person), and checks
``P[S|D] <= e^eps P[S|D'] + delta`` for a family of events with exact confidence bounds.
Each has a negative twin: the same release with a realistic mistake (no clipping, epsilon
not split over components, half the noise) must be flagged, so the test can fail.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from datafed.collect import DpSpec, TaskSpec
from datafed.fl.spec import DpParams
from datafed.hazmat import sample_discrete_laplace
from datafed.psi import DpNoise
from nodes.config import DatasetPolicy, DpPolicy
from nodes.release import training
from nodes.release.collect import release_share
from nodes.release.psi import draw, noise_for, values_side
from nodes.release.training import clip_update, release_evaluation, release_update
from tests.dp_audit import Seeded, audit, clopper_pearson, corner, norm_sum

EPS = 0.5


# ----------------------------------------------------------------- the harness itself
def test_clopper_pearson_matches_known_intervals() -> None:
    assert clopper_pearson(5, 100, 0.025) == pytest.approx((0.016432, 0.112835), abs=1e-6)
    assert clopper_pearson(0, 100, 0.025) == pytest.approx((0.0, 0.036217), abs=1e-6)
    assert clopper_pearson(100, 100, 0.025) == pytest.approx((0.963783, 1.0), abs=1e-6)


def counting_query(scale_factor: float = 1.0):
    """A COUNT with discrete Laplace noise at scale ``factor / EPS`` (the query pattern)."""

    def release(rows: int, rng: Seeded) -> int:
        return rows + sample_discrete_laplace(Fraction(repr(scale_factor / EPS)), rng.source)

    return release


@pytest.mark.parametrize(("factor", "private"), [(1.0, True), (1 / 3, False)])
def test_the_audit_passes_enough_noise_and_flags_too_little(factor, private) -> None:
    """How a query's release is audited (the lead's query tests reuse this pattern)."""
    result = audit(counting_query(factor), 100, 101, {"count": float}, epsilon=EPS, delta=0)
    assert (not result.violations) is private, result
    if not private:
        assert max(v.epsilon_lower for v in result.violations) > EPS


# ----------------------------------------------------------------- training: update
@pytest.fixture(scope="module")
def updates():
    """One agency's local training on D and on D' = D + one outlier person (real torch)."""
    from datafed.fl.model import LocalTraining, build_model, get_weights, train_model

    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    out = []
    for xs, ys in ((x, y), (np.vstack([x, np.full((1, 6), 40.0, np.float32)]), np.append(y, 0))):
        net = build_model(6, "mlp:", 0)
        received = get_weights(net)
        train_model(net, xs, ys.astype(np.float32), LocalTraining(1, 16, 1.0), 0)
        out.append(get_weights(net))
    return received, out[0], out[1]


def _flat(arrays) -> np.ndarray:
    return np.concatenate([np.ravel(a) for a in arrays])


def _audit_update(updates):
    received, d, d_prime = updates
    dp = DpParams.local(EPS, 1e-5, 0.05)
    base = _flat(received)
    raw = _flat(d_prime) - _flat(d)
    clipped = _flat(clip_update(received, d_prime, 0.05)) - _flat(clip_update(received, d, 0.05))
    units = {"clipped": clipped / np.linalg.norm(clipped), "raw": raw / np.linalg.norm(raw)}
    stats = {  # projections on the two datasets' difference: the likelihood-ratio direction
        name: (lambda out, v=v: float((_flat(out) - base) @ v)) for name, v in units.items()
    }
    mech = lambda data, rng: release_update(received, data, dp, rng.numpy)  # noqa: E731
    return audit(mech, d, d_prime, stats, epsilon=EPS, delta=1e-5)


def test_a_training_update_is_dp(updates) -> None:
    _audit_update(updates).assert_private()


def test_a_training_update_without_clipping_is_flagged(updates, monkeypatch) -> None:
    monkeypatch.setattr(training, "clip_update", lambda r, t, c: clip_update(r, t, math.inf))
    assert _audit_update(updates).violations


# ------------------------------------------------------------- training: evaluation
@pytest.fixture(scope="module")
def evaluations():
    """Per-row loss and correctness of the analyst's hand-made model on D; D' adds the
    row that moves the three released sums most (loss at the bound, classified right)."""
    import torch

    from datafed.fl.model import build_model, evaluate_rows, set_weights

    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (rng.random(300) < 0.6).astype(np.float32)
    net = build_model(6, "mlp:", 0)
    set_weights(net, [np.zeros((1, 6), np.float32), np.ones(1, np.float32)])  # the attack
    with torch.no_grad():
        losses, right = evaluate_rows(net, x, y)
    bound = 2.0
    return bound, (losses, right), (np.append(losses, bound), np.append(right, True))


def _audit_evaluation(evaluations):
    bound, d, d_prime = evaluations
    n, total = len(d[0]), float(np.rint(np.clip(d[0], 0, bound) * 2**16).sum()) / 2**16
    parts = lambda out: (out.rows, out.loss_sum, out.right)  # noqa: E731
    scale = (1.0, bound, 1.0)
    stats = {
        "rows": lambda out: out.rows,
        "loss_sum": lambda out: out.loss_sum,
        "right": lambda out: out.right,
        "all": norm_sum(parts, scale),
        "corner": corner(parts, (n, total, int(np.sum(d[1]))), scale),
    }
    mech = lambda data, rng: release_evaluation(*data, EPS, bound, rng.source)  # noqa: E731
    return audit(mech, d, d_prime, stats, epsilon=EPS, delta=0, trials=4000)


def test_an_evaluation_is_dp_whatever_the_weights(evaluations) -> None:
    _audit_evaluation(evaluations).assert_private()


def test_an_evaluation_without_epsilon_split_over_its_sums_is_flagged(
    evaluations, monkeypatch
) -> None:
    monkeypatch.setattr(training, "_COMPONENTS", 1)
    assert _audit_evaluation(evaluations).violations


# ------------------------------------------------------------------ intersection-sum
BITS = 16
POLICY = DatasetPolicy(
    dp=DpPolicy(epsilon_per_query=1.0, budget_epsilon=10.0, bounds={"amount": (0.0, 100.0)})
)


def _audit_intersection():
    ids = {f"p{i}".encode() for i in range(60)}
    d = [(f"p{i}".encode(), 3_000 << BITS) for i in range(20, 80)]  # clamped to 100
    d_prime = [*d, (b"p7", 50_000 << BITS)]  # one more person, in the intersection
    clamped = [values_side(data, POLICY, "amount", BITS) for data in (d, d_prime)]
    stated = clamped[0][1]
    # the ids node's own epsilon 0.5 is the smaller: the release is 0.5-DP
    ids_dp = DpPolicy(epsilon_per_query=EPS, budget_epsilon=10.0)
    noise = noise_for(ids_dp, stated["dp_sensitivity"], stated["dp_epsilon"], "taxpayers")
    assert noise is not None and clamped[0][2] == 0  # no minimum intersection under DP

    def mech(pairs, rng):
        hits = [v for w, v in pairs if w in ids]
        release = draw(noise, rng.source)
        return sum(hits) + release.sum_noise, release.size(len(hits))

    hits = [v for w, v in clamped[0][0] if w in ids]
    parts = lambda out: out  # noqa: E731
    scale = (stated["dp_sensitivity"], 1)
    stats = {
        "sum": lambda out: out[0],
        "size": lambda out: out[1],
        "corner": corner(parts, (sum(hits), len(hits)), scale),
    }
    return audit(mech, clamped[0][0], clamped[1][0], stats, epsilon=EPS, delta=0)


def test_an_intersection_sum_is_dp() -> None:
    _audit_intersection().assert_private()


def test_an_intersection_sum_with_half_the_noise_is_flagged(monkeypatch) -> None:
    half = property(lambda self: Fraction(self.sensitivity) / Fraction(self.epsilon))
    monkeypatch.setattr(DpNoise, "sum_scale", half)
    monkeypatch.setattr(DpNoise, "size_scale", property(lambda self: 1 / Fraction(self.epsilon)))
    assert _audit_intersection().violations


# ------------------------------------------------------------------------ collection
def _task(dp: DpSpec) -> TaskSpec:
    return TaskSpec("meters", "histogram", "lead", "help", 60, 1, length=3, dp=dp)


def _audit_window(spec: TaskSpec, epsilon: float, delta: float, trials: int = 6000):
    vdaf = spec.make_vdaf()
    p = vdaf.field.MODULUS
    c = spec.dp.contributions if spec.dp is not None else 1
    d, d_prime = [10, 4, 7], [10 + c, 4, 7]  # one device's reports, all in bucket 0

    def mech(agg, rng):  # the other aggregator adds nothing: this draw must do it all
        share = vdaf.decode_agg_share(release_share(spec, vdaf, list(agg), rng.source))
        return [x - p if x > p // 2 else x for x in share]

    stats = {f"bucket{i}": (lambda out, i=i: out[i]) for i in range(3)}
    stats["corner"] = corner(lambda out: out, d, (c, 1, 1))
    return audit(mech, d, d_prime, stats, epsilon=epsilon, delta=delta, trials=trials)


def test_a_collection_window_is_dp() -> None:
    _audit_window(_task(DpSpec("laplace", epsilon=EPS, contributions=2)), EPS, 0).assert_private()


def test_a_gaussian_collection_window_is_dp_at_its_charged_epsilon_and_delta() -> None:
    dp = DpSpec("gaussian", rho=0.05, delta=1e-6, contributions=2)
    _audit_window(_task(dp), dp.epsilon_charged, dp.delta, trials=3000).assert_private()


def test_a_collection_window_with_half_the_noise_is_flagged(monkeypatch) -> None:
    spec = _task(DpSpec("laplace", epsilon=EPS, contributions=2))
    monkeypatch.setattr(TaskSpec, "noise_scale", lambda self: ("laplace", Fraction(2)))  # not 4
    assert _audit_window(spec, EPS, 0).violations


# ----------------------------------------------------------------------- query
def _query_release(tmp_path, noise: float = 1.0):
    """The query rule of ``nodes/release/query.py`` over a real store: aggregate, lay on the
    declared domain and its remainder, noise every group (``noise`` scales the noise)."""
    from datafed.local import synth
    from datafed.query.components import components
    from datafed.query.domain import declared_domain
    from datafed.query.sql import parse_sql
    from nodes.config import DatasetConfig
    from nodes.release.query import local_vector
    from nodes.stores import DataStore

    people = synth.residents("north", seed=4, count=40)
    outlier = (10_000, "north", 60, 9, 400_000.0)  # the one person D' adds: the maximum income
    stores = []
    for i, rows in enumerate((people, [*people, outlier])):
        path = tmp_path / f"d{i}.sqlite"
        synth.write_table(path, "residents", synth.RESIDENT_COLUMNS, rows)
        stores.append(DataStore([DatasetConfig(name="residents", path=path)]))
    spec = parse_sql("SELECT district, COUNT(*), SUM(income) FROM residents GROUP BY district")
    comps = components(spec)
    dp = DpPolicy(epsilon_per_query=EPS, budget_epsilon=10, bounds={"income": (0, 400_000)})
    domain = stores[0].typed_keys(spec, declared_domain(spec.group_by, {"district": ["north"]}))
    scaled = dp.model_copy(update={"epsilon_per_query": EPS / noise})
    from nodes.policy.dp import add_noise

    def release(store, rng: Seeded) -> list[int]:
        groups = store.aggregate(spec, comps, 16, dp.bounds)
        _, flat = local_vector(groups, len(comps), domain)
        return add_noise(flat, comps, scaled, 16, rng.source)[0]

    # sensitivities in fixed point: 1 per count, the bound per sum (the group of the person)
    units = [1.0 if c.kind == "count" else 400_000.0 * 2**16 for c in comps]
    parts = lambda out: [float(v) for v in out[: len(comps)]]  # noqa: E731  (group "north")
    stats = {c.label: (lambda out, i=i: float(out[i])) for i, c in enumerate(comps)}
    stats["joint"] = norm_sum(parts, units)
    return release, stores, stats


@pytest.mark.parametrize(("noise", "private"), [(1.0, True), (1 / 4, False)])
def test_a_query_release_is_dp(tmp_path, noise, private) -> None:
    """The query's release on a person-level dataset: every group of the node's own domain
    noised at the policy's epsilon (issue 17: the analyst picks no key or multiplicity)."""
    release, (d, d_prime), stats = _query_release(tmp_path, noise)
    result = audit(release, d, d_prime, stats, epsilon=EPS, delta=0, trials=3000)
    assert (not result.violations) is private, result
