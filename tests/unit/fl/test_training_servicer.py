"""The node's TrainingService over real mTLS on 127.0.0.1: grants, rounds, budget, refusals."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from datafed import pki
from datafed.client.config import FederationConfig, NodeEndpoint
from datafed.fl.requests import sign_training_bundle
from datafed.fl.serde import bundle_from_text
from datafed.fl.spec import DpParams, RoundEntry, TrainingSpec
from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE
from datafed.pki.tls import PartyFiles
from datafed.proto.v1 import common_pb2
from datafed.wire.statement import new_job_id
from nodes.fl.errors import GatewayRefused
from nodes.fl.gateway import Presented
from nodes.fl.grpc_gateway import GrpcGateway
from nodes.policy.budget import LedgerBudget

from .conftest import PURPOSE, node_tls

SPEC = TrainingSpec(FLOOD_TABLE, FLOOD_FEATURES, FLOOD_LABEL, rounds=2)
H = "ab" * 32


def fed_config(fed, analyst: str = "alice", pki_dir=None) -> FederationConfig:
    d = pki_dir or fed.pki_dir
    files = pki.party_paths(d, "analyst", analyst)
    return FederationConfig(
        analyst=analyst,
        tls=PartyFiles(
            ca=d / "ca.crt", cert=files.cert, key=files.key, signing_key=files.signing_key
        ),
        nodes=[NodeEndpoint(name=n.spec.name, address="127.0.0.1:1") for n in fed.nodes],
    )


def request_for(fed, node, spec=SPEC, purpose=PURPOSE, analyst="alice", job_id=None, pki_dir=None):
    text = sign_training_bundle(
        fed_config(fed, analyst, pki_dir),
        spec,
        purpose=purpose,
        job_id=job_id or new_job_id("fl"),
        nodes=[node.name],
    )
    bundle = bundle_from_text(text)
    return bundle.requests[node.name], bundle.requester_cert, bundle.job_id


def gateway(fed, node, caller: str | None = None) -> GrpcGateway:
    return GrpcGateway(node.name, node.address, node_tls(fed, caller or node.name))


def records(node, start: int):
    led = node.ctx.ledger
    return [led.get_record(i) for i in range(start, led.head().size)]


@pytest.fixture
def coastal(flood_fed, runner):
    return runner.start(flood_fed.nodes[0].config)


def test_open_streams_rows_and_records_one_approval(flood_fed, coastal):
    start = coastal.ctx.ledger.head().size
    req, cert, job = request_for(flood_fed, coastal)
    gw = gateway(flood_fed, coastal)
    data = gw.open(Presented(req, cert), with_rows=True)
    assert data.grant.node == coastal.name and data.grant.job_id == job
    assert data.x.shape == (900, len(FLOOD_FEATURES)) and data.y.shape == (900,)
    assert set(data.y.tolist()) <= {0.0, 1.0}
    (rec,) = records(coastal, start)
    assert (rec.operation, rec.decision, rec.requester, rec.job_id) == (
        "fl_train",
        "approved",
        "alice",
        job,
    )
    assert rec.request_digest == hashlib.sha256(req.body).hexdigest()
    assert rec.protection == "fl-secagg" and rec.details["rounds"] == "2"
    # The same signed request again (each round's ClientApp) is the same use: no new entry.
    again = gw.open(Presented(req, cert), with_rows=False)
    assert again.grant == data.grant and again.x is None
    assert coastal.ctx.ledger.head().size == start + 1


def test_rounds_are_recorded_bounded_and_charged(flood_fed, runner):
    node = runner.start(flood_fed.nodes[1].config)
    # A budget of 1.5, whatever earlier tests spent on this session's ledger.
    node.ctx.policy.budget = LedgerBudget(lambda ds: (1.5, 1e-4))
    spec = replace(SPEC, dp=DpParams.local(0.5, 1e-5, 1.0))
    req, cert, job = request_for(flood_fed, node, spec)
    gw = gateway(flood_fed, node)
    gw.open(Presented(req, cert), with_rows=False)
    start = node.ctx.ledger.head().size
    r1 = gw.record(RoundEntry(job, 1, "fit", H, "cd" * 32, 500, True))
    assert r1.epsilon_charged == 0.5 and r1.entry_index == start
    # an evaluation of a DP job is noised by the ClientApp and charged like a round
    assert (
        gw.record(RoundEntry(job, 1, "evaluate", "cd" * 32, "ef" * 32, 500, True)).epsilon_charged
        == 0.5
    )
    with pytest.raises(GatewayRefused, match="approved with SecAgg"):  # sent unmasked
        gw.record(RoundEntry(job, 2, "fit", H, "cd" * 32, 500, False))
    gw.record(RoundEntry(job, 2, "fit", H, "cd" * 32, 500, True))
    fit1, ev1, _denied, fit2 = records(node, start)
    assert (fit1.operation, fit1.decision, fit1.epsilon) == ("fl_round", "released", 0.5)
    assert fit1.result_digest == "cd" * 32 and fit1.details["model_in"] == H
    assert fit1.details["round"] == "1" and fit1.details["phase"] == "fit"
    assert ev1.operation == "fl_evaluate" and ev1.epsilon == 0.5
    assert fit1.details["delta"] == "1e-05" and "delta" not in ev1.details
    # under DP the exact row count is in the private part only (500 rows at this office)
    assert node.ctx.ledger.get_private(start) == {"rows": "500"}
    assert fit2.request_digest == fit1.request_digest == hashlib.sha256(req.body).hexdigest()
    for bad, why in [
        (RoundEntry(job, 3, "fit", H, H, 10, True), "outside the 2 round"),
        (RoundEntry(job, 2, "fit", H, H, 10, True), "already recorded"),
        (RoundEntry("fl-nope", 1, "fit", H, H, 10, True), "no open training job"),
    ]:
        size = node.ctx.ledger.head().size
        with pytest.raises(GatewayRefused, match=why):
            gw.record(bad)
        (denied,) = records(node, size)
        assert denied.decision == "denied" and denied.epsilon == 0
    # The budget (1.5) is now spent: a new DP job is refused before any data is read.
    req2, cert2, _ = request_for(flood_fed, node, spec)
    size = node.ctx.ledger.head().size
    with pytest.raises(GatewayRefused) as info:
        gw.open(Presented(req2, cert2), with_rows=True)
    assert info.value.code == "RESOURCE_EXHAUSTED"
    (denied,) = records(node, size)
    assert (denied.operation, denied.decision) == ("fl_train", "denied")


@pytest.mark.parametrize(
    ("change", "code", "why"),
    [
        ({"purpose": "marketing"}, "PERMISSION_DENIED", "purpose 'marketing'"),
        ({"analyst": "bob"}, "PERMISSION_DENIED", "requester 'bob'"),
        ({"spec": replace(SPEC, dataset="tax_records")}, "NOT_FOUND", "unknown dataset"),
        ({"spec": replace(SPEC, label_column="postcode")}, "INVALID_ARGUMENT", "postcode"),
    ],
)
def test_policy_refusals_are_recorded(flood_fed, coastal, change, code, why):
    start = coastal.ctx.ledger.head().size
    req, cert, job = request_for(flood_fed, coastal, **change)
    with pytest.raises(GatewayRefused, match=why) as info:
        gateway(flood_fed, coastal).open(Presented(req, cert), with_rows=True)
    assert info.value.code == code
    (rec,) = records(coastal, start)
    assert (rec.operation, rec.decision, rec.job_id) == ("fl_train", "denied", job)
    assert rec.reason.startswith(code)


def test_only_the_nodes_own_supernode_is_served(flood_fed, coastal):
    req, cert, _ = request_for(flood_fed, coastal)
    other = flood_fed.nodes[1].spec.name
    with pytest.raises(GatewayRefused, match="own SuperNode") as info:
        gateway(flood_fed, coastal, caller=other).open(Presented(req, cert), with_rows=True)
    assert info.value.code == "PERMISSION_DENIED"


def test_tampered_replayed_and_foreign_requests_are_unauthenticated(flood_fed, coastal, tmp_path):
    gw = gateway(flood_fed, coastal)
    req, cert, _ = request_for(flood_fed, coastal)
    bad = common_pb2.SignedRequest(body=req.body, signature=bytes(64))
    with pytest.raises(GatewayRefused, match="signature") as info:
        gw.open(Presented(bad, cert), with_rows=False)
    assert info.value.code == "UNAUTHENTICATED"
    # A foreign CA's analyst named alice: the certificate does not chain to our CA.
    pki.init_ca(tmp_path)
    pki.issue(tmp_path, "analyst", "alice")
    freq, fcert, _ = request_for(flood_fed, coastal, pki_dir=tmp_path)
    with pytest.raises(GatewayRefused, match="not issued by the federation CA"):
        gw.open(Presented(freq, fcert), with_rows=False)
    # Someone else's certificate with alice's request: signature does not verify.
    bob_cert = pki.party_paths(flood_fed.pki_dir, "analyst", "bob").cert.read_bytes()
    with pytest.raises(GatewayRefused) as info:
        gw.open(Presented(req, bob_cert), with_rows=False)
    assert info.value.code == "UNAUTHENTICATED"


def test_dataset_without_training_operation_refuses(tmp_path, runner):
    from datafed.local.federation import LocalFederation

    from .conftest import POLICY, flood_specs

    no_training = POLICY.replace('"query", "training"', '"query"')
    assert no_training != POLICY
    fed = LocalFederation.create(tmp_path, flood_specs(1, policy=no_training))
    node = runner.start(fed.nodes[0].config)
    req, cert, _ = request_for(fed, node)
    with pytest.raises(GatewayRefused, match="does not allow federated training") as info:
        gateway(fed, node).open(Presented(req, cert), with_rows=True)
    assert info.value.code == "PERMISSION_DENIED"


def test_dp_policy_requires_dp_and_charges_the_nodes_own_budget(tmp_path, runner):
    from datafed.local.federation import LocalFederation

    from .conftest import POLICY, flood_specs

    dp_policy = (
        POLICY.replace("person_level = false", "person_level = true")
        + "\n[datasets.policy.dp]\nepsilon_per_query = 0.5\nbudget_epsilon = 1.5\n"
        + "budget_delta = 1e-4\n"
    )
    fed = LocalFederation.create(tmp_path, flood_specs(1, policy=dp_policy))
    node = runner.start(fed.nodes[0].config)
    gw = gateway(fed, node)
    req, cert, _ = request_for(fed, node)
    with pytest.raises(GatewayRefused, match="requires differential privacy") as info:
        gw.open(Presented(req, cert), with_rows=False)
    assert info.value.code == "PERMISSION_DENIED"
    too_much = replace(SPEC, rounds=4, dp=DpParams.local(0.5))  # 2.0 > the 1.5 budget
    req, cert, _ = request_for(fed, node, too_much)
    with pytest.raises(GatewayRefused) as info:
        gw.open(Presented(req, cert), with_rows=False)
    assert info.value.code == "RESOURCE_EXHAUSTED"
    spec = replace(SPEC, dp=DpParams.local(0.5))
    req, cert, job = request_for(fed, node, spec)
    gw.open(Presented(req, cert), with_rows=False)
    gw.record(RoundEntry(job, 1, "fit", H, H, 10, True))
    # The node's one budget (shared with queries) saw the charge.
    assert node.ctx.policy.budget.spent("alice", FLOOD_TABLE) == 0.5


def test_one_analyst_cannot_push_out_anothers_training_jobs(tmp_path, runner):
    """Open jobs are bounded per requester: alice's flood evicts only alice's own jobs."""
    from datafed.fl.local import flood_policy
    from datafed.local.federation import LocalFederation
    from nodes.config import LimitsSection

    from .conftest import flood_specs

    flood_fed = LocalFederation.create(
        tmp_path,
        flood_specs(1, policy=flood_policy(requesters=("alice", "bob"))),
        analysts=("alice", "bob"),
    )
    node = runner.start(flood_fed.nodes[0].config)
    node.ctx.config.limits = LimitsSection(max_open_jobs=3, max_open_jobs_per_requester=2)
    gw = gateway(flood_fed, node)
    bob_req, bob_cert, bob_job = request_for(flood_fed, node, analyst="bob")
    gw.open(Presented(bob_req, bob_cert), with_rows=False)
    alice_jobs = []
    for _ in range(4):  # twice alice's quota
        req, cert, job = request_for(flood_fed, node)
        gw.open(Presented(req, cert), with_rows=False)
        alice_jobs.append(job)
    held = {j.header.job_id for j in node.servicer._jobs.values()}
    assert held == {bob_job, *alice_jobs[-2:]}  # alice's oldest gave way, bob's stayed
    with pytest.raises(GatewayRefused, match="no open training job"):
        gw.record(RoundEntry(alice_jobs[0], 1, "fit", H, H, 10, True))
    gw.record(RoundEntry(bob_job, 1, "fit", H, H, 10, True))
    carol_req, carol_cert, _ = request_for(flood_fed, node, analyst="bob")
    node.ctx.config.limits = LimitsSection(max_open_jobs=3, max_open_jobs_per_requester=3)
    with pytest.raises(GatewayRefused) as info:  # the table is full: refused, nobody evicted
        gw.open(Presented(carol_req, carol_cert), with_rows=False)
    assert info.value.code == "UNAVAILABLE"
    assert {j.header.job_id for j in node.servicer._jobs.values()} == held


def test_a_null_feature_is_refused_naming_its_column(tmp_path, runner):
    """Exact training uses every row: a NULL in a feature is refused, naming the column,
    and recorded as denied; nothing leaves."""
    from datafed.fl.synthetic import FLOOD_COLUMNS
    from datafed.local.federation import LocalFederation

    from .conftest import flood_specs

    (spec,) = flood_specs(1)
    rows = spec.datasets[0][2]
    at = [c for c, _ in FLOOD_COLUMNS].index("tide_m")
    rows[17] = tuple(None if k == at else v for k, v in enumerate(rows[17]))
    fed = LocalFederation.create(tmp_path, [spec])
    node = runner.start(fed.nodes[0].config)
    start = node.ctx.ledger.head().size
    req, cert, _ = request_for(fed, node)
    with pytest.raises(GatewayRefused) as info:
        gateway(fed, node).open(Presented(req, cert), with_rows=True)
    assert info.value.code == "INVALID_ARGUMENT"
    assert "training column 'tide_m' of 'flood_readings' holds a NULL" in str(info.value)
    assert [r.decision for r in records(node, start)][-1] == "denied"
