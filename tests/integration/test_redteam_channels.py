"""Issue 17's second red team: channels the first one did not probe.

Written from the documentation (``README.md``, ``docs/``), the public wire format
(``protos/``) and the test helpers only, never the product source. Each test is one
probe of "data available but invisible" against real nodes (mTLS on 127.0.0.1) and
asserts the SAFE behaviour; a test marked ``xfail(strict=True)`` is a finding: it fails
on today's code. Three small federations, one per area the first red team left out:

- **Prio3 live collection** (``docs/collect.md``): two aggregators, a task under
  Laplace noise; the collector (analyst ``alice``) probes windows.
- **intersection-sum** (``docs/invisibility.md``, ``docs/policy.md``): a DP and an
  exact dataset on each side, so a job can mix them.
- **witnesses** (``docs/audit.md``): three nodes cosigning each other's ledgers; an
  operator edits its own ledger and a witness's state.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit import decode_leaf
from datafed.client import Federation
from datafed.collect import Collector
from datafed.errors import RemoteError
from datafed.local import synth
from datafed.local.federation import (
    FINANCE_PURPOSE,
    LocalFederation,
    NodeSpec,
    water_district_specs,
)
from datafed.proto.v1 import collect_pb2

from .collect_harness import (
    HELPER,
    LEADER,
    PURPOSE,
    WINDOW,
    collect_federation,
    make_task,
    party,
    signed,
    upload,
    wait_closed,
)
from .collect_harness import window as w
from .raw import ledger_records
from .test_witness_verify import (
    audit_cli,
    auditor_tls,
    ledger_db,
    policy_for,
    query,
    truncate_ledger,
    witnessed_size,
)

# ---------------------------------------------------------------- Prio3 collection

TASK = "rt-private"
EPS = 1.0
DP_TASK = f'\n[collect.dp]\nmechanism = "laplace"\nepsilon = {EPS}\nbudget_epsilon = 100.0\n'
SCOPE = "rt-scope"  # budget for ONE release, budget_scope left at its default
DP_SCOPE = f'\n[collect.dp]\nmechanism = "laplace"\nepsilon = {EPS}\nbudget_epsilon = {EPS}\n'


@pytest.fixture(scope="module")
def agg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """Two aggregators of one Prio3Count task under Laplace noise (min batch 5).

    Reports: 3 in window 0, none in window 1, 1 in window 2, a tick late in window 4
    that moves the Leader's watermark past windows 0-2 (close_after_s = 30)."""
    tasks = [make_task(TASK, DP_TASK), make_task(SCOPE, DP_SCOPE)]
    collectors = {"alice": [PURPOSE], "bob": [PURPOSE]}
    fed = collect_federation(tmp_path_factory.mktemp("rt-collect"), tasks, collectors=collectors)
    try:
        items = [(1, w(0) + i) for i in range(3)] + [(1, w(2) + 5), (0, w(4) + 50)]
        _, statuses = asyncio.run(upload(fed, TASK, items))
        assert statuses == ["accepted"] * len(items)
        _, statuses = asyncio.run(upload(fed, SCOPE, [(1, w(0) + 1), (0, w(2) + 50)]))
        assert statuses == ["accepted"] * 2
        asyncio.run(wait_closed(fed, TASK, [w(0), w(2)]))
        asyncio.run(wait_closed(fed, SCOPE, [w(0)]))
        yield fed
    finally:
        fed.stop()


def spent(fed: LocalFederation, node: str) -> float:
    return sum(r.epsilon for r in ledger_records(fed, node) if r.dataset == TASK)


async def _listed(fed: LocalFederation) -> list[Any]:
    async with Collector.from_file(fed.fed_toml) as col:
        return list(await col.windows(TASK, purpose=PURPOSE))


async def _get(fed: LocalFederation, start: int) -> Any:
    async with Collector.from_file(fed.fed_toml) as col:
        return await col.get(TASK, start, purpose=PURPOSE)


def _raw_window(fed: LocalFederation, node: str, start: int) -> collect_pb2.GetWindowResponse:
    req = collect_pb2.GetWindowRequest(task=TASK, window_start=start)
    return asyncio.run(signed(party(fed, "analyst", "alice", node), node, "GetWindow", req))


def test_a_window_without_reports_is_listed_and_released_like_any_other(agg):
    """Channel: window existence (ListWindows, GetWindow's refusal) on a noisy task.
    Window 1 (no report) lies between windows 0 (3 reports) and 2 (1 report), all past
    the watermark. Safe: which windows close does not depend on the reports -- window 1
    is listed, and its fetch is answered (noised, charged) like window 2's."""
    listed = {x.start for x in asyncio.run(_listed(agg))}
    assert {w(0), w(2)} <= listed
    before = spent(agg, LEADER)
    outcome: dict[int, str] = {}
    for start in (w(1), w(2)):
        try:
            r = asyncio.run(_get(agg, start))
            outcome[start] = f"released, eps {sorted(r.epsilon.values())}"
        except RemoteError as e:
            outcome[start] = f"refused {e.code}: {e}"
    charged = spent(agg, LEADER) - before
    assert w(1) in listed and outcome[w(1)].startswith("released"), (outcome, charged)
    assert outcome[w(2)].startswith("released") and charged == pytest.approx(2 * EPS), outcome


def test_a_dp_window_answer_carries_no_count_checksum_or_share_digest(agg):
    """Channel: the raw GetWindow answer and its close receipt, and ListWindows'
    `releasable`, for a window of ONE report (below min_batch_size 5) at each
    aggregator. Safe: no report or rejected count, no checksum, no digest of the
    un-noised share (a collector could search noise values against it), no count or
    releasability in the close entry's public details, `releasable` true."""
    listed = {x.start: x for x in asyncio.run(_listed(agg))}
    assert listed[w(2)].releasable and listed[w(0)].releasable
    for node in (LEADER, HELPER):
        r = _raw_window(agg, node, w(2))
        assert (r.report_count, r.rejected_count, dict(r.rejected)) == (0, 0, {}), node
        assert not r.checksum and not r.share_digest, node
        assert r.noise == "laplace" and r.epsilon == EPS and r.noise_stddev > 0
        for rec in (decode_leaf(e.leaf)[1] for e in r.close_receipt.entries):
            keys = " ".join(rec.details)
            assert "report" not in keys and "reject" not in keys, dict(rec.details)
            assert "releasable" not in keys and not rec.result_digest, dict(rec.details)


def test_re_collecting_a_window_for_fresh_noise_is_charged_every_time(agg):
    """Channel: collector re-fetching one closed window for fresh noise (averaging k
    answers shrinks the noise by sqrt(k)), at both aggregators and at one alone. Safe:
    every fetch is charged its epsilon at every aggregator asked, and each answer is a
    fresh draw (no cached value to difference against)."""
    lead, helper = spent(agg, LEADER), spent(agg, HELPER)
    results = [asyncio.run(_get(agg, w(0))).result for _ in range(3)]
    assert spent(agg, LEADER) - lead == pytest.approx(3 * EPS)
    assert spent(agg, HELPER) - helper == pytest.approx(3 * EPS)
    shares = {_raw_window(agg, LEADER, w(0)).aggregate_share for _ in range(2)}
    assert spent(agg, LEADER) - lead == pytest.approx(5 * EPS)
    assert spent(agg, HELPER) - helper == pytest.approx(3 * EPS)
    assert len(shares) == 2 or len(set(results)) > 1


@pytest.mark.parametrize("offset", [1, WINDOW // 2, -1])
def test_a_window_start_off_the_grid_is_refused_before_admission(agg, offset):
    """Channel: window boundaries. A collector asking for a window that overlaps a
    closed one (start not on the task's grid) must not get a second, differently
    bounded aggregate of the same reports. Safe: refused INVALID_ARGUMENT, nothing
    charged at either aggregator."""
    before = spent(agg, LEADER), spent(agg, HELPER)
    with pytest.raises(RemoteError) as info:
        asyncio.run(_get(agg, w(2) + offset))
    assert info.value.code == "INVALID_ARGUMENT", str(info.value)
    assert (spent(agg, LEADER), spent(agg, HELPER)) == before


def test_a_second_collector_does_not_get_a_fresh_budget_for_the_same_window(agg):
    """Channel: collection budgets and colluding collectors. `alice` and `bob` may both
    collect a task whose budget holds ONE release (budget_scope left at its default,
    documented as one budget for every collector). Each re-fetch of a window is a fresh
    noise draw; with a budget per collector, k colluders average k draws. Safe: bob is
    refused (RESOURCE_EXHAUSTED) once alice spent the task's budget."""

    async def get(fed_toml: Path) -> Any:
        async with Collector.from_file(fed_toml) as col:
            return await col.get(SCOPE, w(0), purpose=PURPOSE)

    first = asyncio.run(get(agg.fed_toml))
    assert first.epsilon == {LEADER: EPS, HELPER: EPS}
    with pytest.raises(RemoteError) as info:
        asyncio.run(get(agg.write_fed_toml("bob")))
    assert info.value.code == "RESOURCE_EXHAUSTED", str(info.value)


def test_the_collect_cli_prints_no_count_under_dp(agg):
    """Channel: `datafed collect get --json` and `datafed collect windows`, the
    collector's CLI output, for the one-report window (below min_batch_size 5). Safe:
    no report or rejection count, checksum or share digest in what is printed; the
    window listed releasable like any other."""
    import json

    from typer.testing import CliRunner

    from datafed.cli.app import app

    runner = CliRunner()
    base = ["-f", str(agg.fed_toml), "-t", TASK, "--purpose", PURPOSE]
    got = runner.invoke(app, ["collect", "get", *base, "-w", str(w(2)), "--json"])
    assert got.exit_code == 0, got.output
    out = json.loads(got.output)
    flat = json.dumps(out)
    for key in ("report_count", "rejected_count"):
        assert out.get(key, 0) in (0, None), (key, out.get(key))
    assert not out.get("rejected"), out.get("rejected")
    assert not out.get("checksum") and not out.get("share_digest"), flat[:600]
    listed = runner.invoke(app, ["collect", "windows", *base])
    assert listed.exit_code == 0, listed.output
    assert str(w(2)) in listed.output and "not releasable" not in listed.output, listed.output


# ---------------------------------------------------------------- intersection-sum

PSI_HEAD = (
    'allowed_requesters = ["alice"]\n'
    f'allowed_purposes = ["{FINANCE_PURPOSE}"]\n'
    'allowed_operations = ["query", "intersection_sum"]\n'
    'identifier_columns = ["person_id"]\n'
    'allowed_protections = ["paillier"]\n'
    "min_group_size = 5\n"
)
PSI_DP = {
    "tax-dp": "epsilon_per_query = 0.5\nbudget_epsilon = 100.0\n",
    "bank-dp": "epsilon_per_query = 1.0\nbudget_epsilon = 100.0\n"
    "bounds = { amount = [0, 1000000.0] }\n",
}
TAX = {
    "tax-dp": ("tax-dp", "taxpayers", "person_id"),
    "tax-exact": ("tax-exact", "taxpayers", "person_id"),
}
BANK = {
    "bank-dp": ("bank-dp", "loans", "person_id", "amount"),
    "bank-exact": ("bank-exact", "loans", "person_id", "amount"),
}


@pytest.fixture(scope="module")
def psi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """The same taxpayers and loans, each once under DP and once exact (data about
    things, `person_level = false`), so that one job can mix the two."""
    tax = synth.taxpayers(seed=7, count=200)
    bank = synth.loans(seed=7, count=100, id_space=200)

    def spec(name: str, table: str, cols: Any, rows: Any) -> NodeSpec:
        policy = PSI_HEAD + (
            "[datasets.policy.dp]\n" + PSI_DP[name] if name in PSI_DP else "person_level = false\n"
        )
        return NodeSpec(name=name, agency=name, datasets=[(table, cols, rows)], policy_toml=policy)

    specs = [
        spec("tax-dp", "taxpayers", synth.TAXPAYER_COLUMNS, tax),
        spec("tax-exact", "taxpayers", synth.TAXPAYER_COLUMNS, tax),
        spec("bank-dp", "loans", synth.LOAN_COLUMNS, bank),
        spec("bank-exact", "loans", synth.LOAN_COLUMNS, bank),
    ]
    fed = LocalFederation.create(tmp_path_factory.mktemp("rt-psi"), specs)
    fed.start()
    try:
        yield fed
    finally:
        fed.stop()


def psi_spent(fed: LocalFederation, node: str) -> float:
    return sum(r.epsilon for r in ledger_records(fed, node))


def _psi_twice(fed: LocalFederation, ids: tuple[str, ...], values: tuple[str, ...]) -> list[Any]:
    client = Federation.from_file(fed.fed_toml)
    out = []
    for _ in range(2):
        try:
            out.append(client.intersection_sum(ids, values, purpose=FINANCE_PURPOSE))  # type: ignore[arg-type]
        except RemoteError as e:  # a refusal is safe too
            out.append(e)
    return out


def _noised_or_refused(results: list[Any]) -> str:
    """'' if every result is a refusal or noisy (fresh draws); else what leaked."""
    answers = [r for r in results if not isinstance(r, RemoteError)]
    if not answers:
        return ""
    sums = {r.sum_fixed for r in answers}
    sizes = {r.intersection_size for r in answers}
    noise = [(r.noise_stddev, r.size_noise_stddev) for r in answers]
    # Two noised sums never agree by chance (their noise's deviation is in the millions);
    # two noised sizes do, about one pair in ten at a deviation of 2.8 (a discrete
    # Gaussian's collision probability, ~1/(2·sqrt(pi)·sigma)), so a repeated size alone is
    # no leak: an un-noised size shows as a zero deviation below.
    if len(answers) == 2 and len(sums) == 1:
        return f"the same sum twice: sums {sums}, sizes {sizes}, noise {noise}"
    if any(n <= 0 or s <= 0 for n, s in noise):
        return f"no noise: {noise}"
    return ""


def test_a_dp_values_side_joined_with_an_exact_ids_side_is_noised_and_charged(psi):
    """Channel: intersection-sum with a mixed job. The values side (`bank-dp`) is
    person-level under DP, the ids side exact; if only a DP ids side noised the sum,
    the analyst would read the exact sum of a DP dataset's amounts over the join.
    Safe: refused, or noised (fresh each job) and charged at the DP side."""
    before = psi_spent(psi, "bank-dp")
    results = _psi_twice(psi, TAX["tax-exact"], BANK["bank-dp"])
    assert not _noised_or_refused(results), _noised_or_refused(results)
    answered = sum(not isinstance(r, RemoteError) for r in results)
    assert psi_spent(psi, "bank-dp") - before >= answered * 1.0


def test_a_dp_ids_side_joined_with_an_exact_values_side_is_noised_and_charged(psi):
    """Channel: the mirror image. The ids side (`tax-dp`) is under DP; its rows decide
    the intersection size and which amounts enter the sum (a membership test of its
    persons). Safe: refused, or size AND sum noised and charged at the ids side."""
    before = psi_spent(psi, "tax-dp")
    results = _psi_twice(psi, TAX["tax-dp"], BANK["bank-exact"])
    assert not _noised_or_refused(results), _noised_or_refused(results)
    answered = sum(not isinstance(r, RemoteError) for r in results)
    assert psi_spent(psi, "tax-dp") - before >= answered * 0.5


def test_a_blind_step_never_followed_is_charged_at_the_ids_side(psi, monkeypatch):
    """Channel: the Blind step's payload (the ids side's blinded set: its size is the
    exact number of distinct ids, accepted in invisibility.md). An analyst who stops
    after Blind, job after job, must pay for each: safe when every Blind is charged its
    epsilon at admission, even though Exchange and Intersect never run."""
    from datafed.proto.v1 import psi_pb2_grpc

    orig = psi_pb2_grpc.PsiServiceStub

    class StopAfterBlind:
        def __init__(self, ch: Any) -> None:
            self.stub = orig(ch)
            self.Blind = self.stub.Blind

        def Exchange(self, it: Any, **kw: Any) -> Any:  # noqa: N802
            raise RuntimeError("the analyst stops here")

        def Intersect(self, it: Any, **kw: Any) -> Any:  # noqa: N802
            raise RuntimeError("the analyst stops here")

    monkeypatch.setattr(psi_pb2_grpc, "PsiServiceStub", StopAfterBlind)
    client = Federation.from_file(psi.fed_toml)
    before = psi_spent(psi, "tax-dp"), psi_spent(psi, "bank-dp")
    for _ in range(2):
        with pytest.raises(Exception):  # noqa: B017
            client.intersection_sum(TAX["tax-dp"], BANK["bank-dp"], purpose=FINANCE_PURPOSE)  # type: ignore[arg-type]
    assert psi_spent(psi, "tax-dp") - before[0] == pytest.approx(2 * 0.5)


# ---------------------------------------------------------------- witnesses


@pytest.fixture(scope="module")
def wfed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """Three nodes witnessing each other's ledgers (publishing every 0.5 s)."""
    specs = water_district_specs(segments=20)
    root = tmp_path_factory.mktemp("rt-witness")
    with LocalFederation.create(root, specs, witnesses=True, publish_interval_s=0.5) as fed:
        fed.start()
        yield fed


def _export_states(fed: LocalFederation, victim: Any, out: Path) -> tuple[Path, Path]:
    """Each other node's witness state, one online and one from its database."""
    a, b = (n for n in fed.nodes if n is not victim)
    tls = ["--server-name", a.spec.name, *auditor_tls(fed)]
    done = audit_cli("witness-export", str(out / "a.json"), "--node", a.address, *tls)
    assert done.returncode == 0, done.stdout + done.stderr
    db = b.config.parent / "state" / "witness.sqlite"
    done = audit_cli("witness-export", str(out / "b.json"), "--db", str(db))
    assert done.returncode == 0, done.stdout + done.stderr
    return out / "a.json", out / "b.json"


def _verify(fed: LocalFederation, victim: Any, out: Path, quorum: int, *states: Path) -> Any:
    export = out / f"export-{time.monotonic_ns()}"
    done = audit_cli("export", str(export), "--db", str(ledger_db(victim)))
    assert done.returncode == 0, done.stdout + done.stderr
    policy = policy_for(fed, victim, out / f"policy-{quorum}.toml")
    policy.write_text(policy.read_text().replace("quorum = 2", f"quorum = {quorum}"))
    flags = [x for s in states for x in ("--witness-state", str(s))]
    return audit_cli("verify", str(export), "-p", str(policy), *flags)


def test_one_witness_state_given_twice_counts_once_toward_the_quorum(wfed, tmp_path):
    """Channel: `verify --witness-state` and the quorum. The operator under audit hands
    over (or the auditor mistakenly takes) the same witness's state twice, the second
    under another file name, for a quorum of 2 of 2. Safe: the quorum counts distinct
    witnesses -- 1 of 2, `witness-unavailable`, verify fails."""
    victim = wfed.nodes[0]
    query(wfed)
    witnessed_size(wfed, victim)
    a, _ = _export_states(wfed, victim, tmp_path)
    copy = tmp_path / "a-copy.json"
    copy.write_bytes(a.read_bytes())
    done = _verify(wfed, victim, tmp_path, 2, a, copy)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "witness-unavailable" in done.stdout, done.stdout


def test_a_forged_witness_state_file_is_refused(wfed, tmp_path):
    """Channel: a witness-state file edited by the operator under audit (it claims the
    witness holds a smaller, older checkpoint of its log). Safe: the file is refused
    (`witness-state-invalid`), never believed, and the quorum is not met with it."""
    import json

    victim = wfed.nodes[0]
    query(wfed)
    witnessed_size(wfed, victim)
    a, b = _export_states(wfed, victim, tmp_path)
    data = json.loads(b.read_text())
    origin = f"datafed/ledger/{victim.spec.name}"
    lines = data["checkpoints"][origin].split("\n")
    lines[1] = str(int(lines[1]) - 1)  # the size line of the note
    data["checkpoints"][origin] = "\n".join(lines)
    forged = tmp_path / "b-forged.json"
    forged.write_text(json.dumps(data))
    done = _verify(wfed, victim, tmp_path, 2, a, forged)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "witness-state-invalid" in done.stdout or "witness-unavailable" in done.stdout


def _backup(src: Path, dst: Path) -> None:
    with sqlite3.connect(src) as s, sqlite3.connect(dst) as d:
        s.backup(d)


def test_a_witness_operator_rolling_back_its_state_does_not_pass_a_truncated_log(wfed, tmp_path):
    """Channel: a witness's own database. The victim's operator truncates its log back to
    size `seen`; a colluding witness operator restores an old copy of its witness.sqlite
    (it then holds `seen` again, and cosigns the cut log). Safe: the other, honest
    witness's newest checkpoint fails verify -- with quorum 2, and with quorum 1 where
    the rolled-back witness alone would meet it."""
    victim, colluder = wfed.nodes[2], wfed.nodes[0]
    query(wfed)
    seen = witnessed_size(wfed, victim)
    wdb = colluder.config.parent / "state" / "witness.sqlite"
    old = tmp_path / "witness-old.sqlite"
    _backup(wdb, old)
    query(wfed, 2)
    newest = witnessed_size(wfed, victim)
    assert newest > seen
    wfed.stop_node(victim)
    truncate_ledger(ledger_db(victim), seen)
    wfed.start_node(victim)
    wfed.stop_node(colluder)
    for suffix in ("-wal", "-shm"):
        Path(str(wdb) + suffix).unlink(missing_ok=True)
    shutil.copyfile(old, wdb)
    wfed.start_node(colluder)
    time.sleep(2)  # a few publications: the cut log is offered to both witnesses
    rolled, honest_state = _export_states(wfed, victim, tmp_path)  # colluder first
    for quorum in (2, 1):
        done = _verify(wfed, victim, tmp_path, quorum, honest_state, rolled)
        assert done.returncode == 1, (quorum, done.stdout + done.stderr)
        assert "log-behind-witness" in done.stdout, done.stdout
    alone = _verify(wfed, victim, tmp_path, 1, rolled)
    print("rolled-back witness alone, quorum 1:", alone.returncode, alone.stdout[-600:])


# ---------------------------------------------------------------- federated training


@pytest.fixture(scope="module")
def flood(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """Three flood offices under the DP policy of `test_fl_dp` (budget 20, 0.5 a
    release); only `flood-coastal` allows evaluation."""
    from datafed.fl.local import flood_node_specs

    from .test_fl_dp import EVALUATES, POLICY

    specs = flood_node_specs(3)
    for s in specs:
        s.policy_toml = POLICY + ("allow_evaluation = true\n" if s.name == EVALUATES else "")
    fed = LocalFederation.create(tmp_path_factory.mktemp("rt-flood"), specs)
    fed.start()
    try:
        yield fed
    finally:
        fed.stop()


def test_evaluations_beyond_the_admitted_rounds_are_each_charged(flood):
    """Channel: training evaluation, rounds vs charge. A job admitted for ONE round has
    the analyst's own ServerApp ask the evaluating office for evaluations of rounds 1, 1,
    2 and 7 with the same hand-made weights (each a fresh noisy row count, loss sum and
    correct count). Safe: every evaluation that leaves is charged its epsilon (recorded
    released with epsilon > 0), or refused."""
    import numpy as np
    from flwr.app.message_type import MessageType

    from datafed.fl.spec import DpParams, TrainingSpec
    from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE

    from .test_fl_dp import EVALUATES, LOGISTIC, analyst, records

    spec = TrainingSpec(
        FLOOD_TABLE,
        FLOOD_FEATURES,
        FLOOD_LABEL,
        rounds=1,
        model=LOGISTIC,
        dp=DpParams.local(0.5, 1e-5, 1.0),
        secagg=False,
    )
    who, opened = analyst(flood, spec)
    assert who.names and not opened["refusals"]
    weights = [np.zeros((1, len(FLOOD_FEATURES)), np.float32), np.ones(1, np.float32)]
    answered = 0
    for rnd in (1, 1, 2, 7):
        reply = who.send(MessageType.EVALUATE, weights, rnd)[EVALUATES]
        answered += not reply.has_error()
    evals = [r for r in records(flood, EVALUATES, who.job) if r.operation == "fl_evaluate"]
    charged = [r for r in evals if r.decision == "released" and r.epsilon > 0]
    assert len(charged) >= answered, [(r.decision, r.epsilon) for r in evals]


def test_a_job_whose_rounds_exceed_the_budget_is_refused_before_admission(flood):
    """Channel: budget accounting of training. 41 rounds x 0.5 = 20.5 > the budget of 20
    (each round's delta 2e-6, the job's 8.2e-5 within max_delta_per_job 1e-4). Safe:
    refused before admission at every node, nothing charged."""
    from datafed.fl.spec import DpParams, TrainingSpec
    from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE

    from .test_fl_dp import LOGISTIC, analyst, records

    spec = TrainingSpec(
        FLOOD_TABLE,
        FLOOD_FEATURES,
        FLOOD_LABEL,
        rounds=41,
        model=LOGISTIC,
        dp=DpParams.local(0.5, 2e-6, 1.0),
        secagg=False,
    )
    who, opened = analyst(flood, spec)
    assert not who.names, opened
    for node in opened["refusals"]:  # type: ignore[attr-defined]
        assert [r.epsilon for r in records(flood, node, who.job)] == [0.0]


def _blind_payload_bytes(fed: LocalFederation, ids: tuple[str, ...], monkeypatch: Any) -> int:
    """Run one intersection-sum as the analyst, stopping after Blind; the size in bytes
    of the blinded set the ids node sent (as relayed through the analyst)."""
    from datafed.proto.v1 import psi_pb2_grpc

    orig = psi_pb2_grpc.PsiServiceStub
    seen: list[int] = []

    class Spy:
        def __init__(self, ch: Any) -> None:
            self.stub = orig(ch)

        def Blind(self, req: Any, **kw: Any) -> Any:  # noqa: N802
            call = self.stub.Blind(req, **kw)

            async def frames() -> Any:
                async for frame in call:
                    if frame.HasField("reply"):
                        seen.append(frame.reply.payload.size)
                    yield frame

            return frames()

        def Exchange(self, it: Any, **kw: Any) -> Any:  # noqa: N802
            raise RuntimeError("the analyst stops here")

    monkeypatch.setattr(psi_pb2_grpc, "PsiServiceStub", Spy)
    client = Federation.from_file(fed.fed_toml)
    with pytest.raises(Exception):  # noqa: B017
        client.intersection_sum(ids, BANK["bank-dp"], purpose=FINANCE_PURPOSE)  # type: ignore[arg-type]
    monkeypatch.setattr(psi_pb2_grpc, "PsiServiceStub", orig)
    return sum(seen)


def _distinct(fed: LocalFederation, node: str, column: str) -> int:
    path = fed.root / "nodes" / node / "data" / "taxpayers.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute(f"SELECT COUNT(DISTINCT {column}) FROM taxpayers").fetchone()[0])


def test_an_intersection_sum_id_column_must_be_an_identifier(psi, monkeypatch):
    """Finding 2 (fixed: policy identifier_columns). Channel: intersection-sum set sizes. `invisibility.md` accepts that the analyst
    learns |V|, the number of identifiers, from the payload size. Here the analyst names
    other columns of the DP taxpayers as "identifier" (`declared_revenue`, `district`,
    `compliant`) and reads each Blind payload's size (`PsiStepReply.payload.size`, 32
    bytes a point; the REAL column is refused, the TEXT and INTEGER ones are blinded). Safe: a column that is not the
    dataset's identifier is refused before admission (or the set padded), so no exact
    distinct count of an arbitrary column leaves."""
    per_point: set[float] = set()
    leaked: dict[str, tuple[int, int]] = {}
    for column in ("person_id", "declared_revenue", "district", "compliant"):
        try:
            size = _blind_payload_bytes(psi, ("tax-dp", "taxpayers", column), monkeypatch)
        except Exception:  # refused: safe for that column
            continue
        exact = _distinct(psi, "tax-dp", column)
        if size and exact:
            per_point.add(size / exact)
            if column != "person_id":
                leaked[column] = (size, exact)
    # one fixed point size: size / exact distinct count is the same for every column
    assert not (leaked and len(per_point) == 1), (
        f"payload bytes / exact COUNT(DISTINCT) = {per_point} for {leaked}"
    )


def _exchange_payload_bytes(fed: LocalFederation, values: tuple[str, ...], monkeypatch: Any) -> int:
    """One intersection-sum stopped before Intersect; the Exchange payload's size."""
    from datafed.proto.v1 import psi_pb2_grpc

    orig = psi_pb2_grpc.PsiServiceStub
    seen: list[int] = []

    class Spy:
        def __init__(self, ch: Any) -> None:
            self.stub = orig(ch)
            self.Blind = self.stub.Blind

        def Exchange(self, it: Any, **kw: Any) -> Any:  # noqa: N802
            call = self.stub.Exchange(it, **kw)

            async def frames() -> Any:
                async for frame in call:
                    if frame.HasField("reply"):
                        seen.append(frame.reply.payload.size)
                    yield frame

            return frames()

        def Intersect(self, it: Any, **kw: Any) -> Any:  # noqa: N802
            raise RuntimeError("the analyst stops here")

    monkeypatch.setattr(psi_pb2_grpc, "PsiServiceStub", Spy)
    client = Federation.from_file(fed.fed_toml)
    with pytest.raises(Exception):  # noqa: B017
        client.intersection_sum(TAX["tax-dp"], values, purpose=FINANCE_PURPOSE)  # type: ignore[arg-type]
    monkeypatch.setattr(psi_pb2_grpc, "PsiServiceStub", orig)
    return sum(seen)


def test_an_intersection_sum_values_id_column_must_be_an_identifier(psi, monkeypatch):
    """Finding 2b (fixed: policy identifier_columns). Channel: the values side's set size |W|. The analyst names `sector` and
    `term_months` of the DP loans as the values side's identifier, and reads the
    Exchange payload's size (relayed through it). Safe: refused before admission, or a
    size that does not follow the column's exact distinct count."""
    path = psi.root / "nodes" / "bank-dp" / "data" / "loans.sqlite"

    def distinct(column: str) -> int:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return int(db.execute(f"SELECT COUNT(DISTINCT {column}) FROM loans").fetchone()[0])

    points: dict[str, tuple[int, int]] = {}
    for column in ("person_id", "sector", "term_months"):
        try:
            size = _exchange_payload_bytes(psi, ("bank-dp", "loans", column, "amount"), monkeypatch)
        except Exception:  # refused: safe for that column
            continue
        if size:
            points[column] = (distinct(column), size)
    (n1, s1), *rest = sorted(points.values())
    affine = False
    if len(rest) >= 2 and rest[-1][0] != n1:
        per = (rest[-1][1] - s1) / (rest[-1][0] - n1)
        affine = all(s == s1 + per * (n - n1) for n, s in rest)
    assert not affine, f"(exact distinct, payload bytes) per column: {points}"
