"""Sign-off by another agency: granted, recorded by both, required, refused, not forgeable."""

from __future__ import annotations

import grpc
import pytest

from audit import Ledger
from datafed.client import Federation
from datafed.errors import RemoteError
from datafed.local.federation import PURPOSE, LocalFederation, water_district_specs
from datafed.pki.ca import load_signing_key, party_paths
from datafed.proto.v1 import query_pb2
from tests.integration.raw import query_stub, signed_query

SQL = "SELECT COUNT(*) FROM pipe_incidents"


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    specs = water_district_specs(segments=20)
    _, east, south = specs
    for s in specs:
        s.policy_toml = s.policy_toml.replace('["alice"]', '["alice", "bob"]')
    south.policy_toml = south.policy_toml.replace(
        "min_group_size = 3\n", 'min_group_size = 3\nrequired_signoff = ["water-east"]\n'
    )
    east.policy_toml += (
        '\n[[signoff]]\nnode = "water-south"\ndatasets = ["pipe_incidents"]\n'
        f'requesters = ["alice"]\npurposes = ["{PURPOSE}"]\n'
    )
    lf = LocalFederation.create(
        tmp_path_factory.mktemp("signoff"), specs, analysts=("alice", "bob")
    )
    lf.start()
    lf.write_fed_toml("bob")
    try:
        yield lf
    finally:
        lf.stop()


def records(lf: LocalFederation, name: str):
    node = next(n for n in lf.nodes if n.spec.name == name)
    lf.stop_node(node)
    try:
        key = load_signing_key(party_paths(lf.pki_dir, "node", name).signing_key)
        with Ledger.open(
            node.config.parent / "state" / "ledger.sqlite", f"datafed/ledger/{name}", key
        ) as led:
            return [led.get_record(i) for i in range(led.head().size)]
    finally:
        lf.start_node(node)
        lf.write_fed_toml()
        lf.write_fed_toml("bob")


def test_signoff_granted_and_recorded_by_both(fed):
    r = Federation.from_file(fed.fed_toml).query(SQL, purpose=PURPOSE, protection="plain")
    assert r.rows[0][0] == 3 * 20 * 36
    south = records(fed, "water-south")
    approved = [x for x in south if x.decision == "approved" and x.job_id == r.job_id]
    assert approved and "signoff:water-east" in approved[0].details
    east = records(fed, "water-east")
    grants = [x for x in east if x.operation == "sign_off" and x.job_id == r.job_id]
    assert [g.decision for g in grants] == ["approved"] and grants[
        0
    ].dataset == "water-south/pipe_incidents"
    assert grants[0].result_digest == approved[0].details["signoff:water-east"]


def test_approver_refuses_and_records(fed):
    with pytest.raises(RemoteError) as info:
        Federation.from_file(fed.root / "fed-bob.toml").query(
            SQL, purpose=PURPOSE, protection="plain"
        )
    assert info.value.node == "water-east" and info.value.code == "PERMISSION_DENIED"
    assert "does not sign off 'bob'" in info.value.message
    east = records(fed, "water-east")
    assert any(
        x.operation == "sign_off" and x.decision == "denied" and x.requester == "bob" for x in east
    )


def _query_south(fed, sign_offs, job="job-forged"):
    index = next(i for i, n in enumerate(fed.nodes) if n.spec.name == "water-south")
    signed = signed_query(fed, "water-south", SQL, job_id=job, sign_offs=sign_offs)
    ch, stub = query_stub(fed, index)
    with ch:
        return stub.Query(signed.request, timeout=10)


def test_missing_or_forged_signoff_refused(fed):
    with pytest.raises(grpc.RpcError) as err:
        _query_south(fed, [], job="job-unsigned")
    assert (
        err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        and "needs sign-off by water-east" in err.value.details()
    )
    # a statement "signed" by the analyst itself, claiming to be water-east
    from datafed.wire.signoff import sign_signoff

    files = party_paths(fed.pki_dir, "analyst", "alice")
    forged = sign_signoff(
        query_pb2.SignOffStatement(
            approver="water-east",
            target_node="water-south",
            dataset="pipe_incidents",
            requester="alice",
            purpose=PURPOSE,
            job_id="job-forged",
            expires_at_ms=2**62,
        ),
        load_signing_key(files.signing_key),
        files.cert.read_bytes(),
    )
    with pytest.raises(grpc.RpcError) as err:
        _query_south(fed, [forged])
    assert (
        err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        and "does not verify" in err.value.details()
    )


def test_signoff_is_bound_to_one_statement_and_used_once(fed, monkeypatch):
    """A sign-off approves one job statement, and the node admits that job once."""
    from datafed.client import federation

    captured = {}
    real_sign = federation.sign_job_statement
    real_signoffs = Federation._signoffs

    def sign(*args, **kwargs):
        captured["statement"] = real_sign(*args, **kwargs)
        return captured["statement"]

    async def signoffs(self, transport, job, infos):
        captured["signoffs"] = await real_signoffs(self, transport, job, infos)
        return captured["signoffs"]

    monkeypatch.setattr(federation, "sign_job_statement", sign)
    monkeypatch.setattr(Federation, "_signoffs", signoffs)
    r = Federation.from_file(fed.fed_toml).query(SQL, purpose=PURPOSE, protection="plain")
    (approval,) = captured["signoffs"]["water-south"]
    statement = captured["statement"]
    assert statement.digest == r.statement
    # the same approval for another job (another statement): refused
    with pytest.raises(grpc.RpcError) as err:
        _query_south(fed, [approval], job="job-reuse")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "for another use" in err.value.details()
    # the same statement and approval again (a replayed job): refused
    index = next(i for i, n in enumerate(fed.nodes) if n.spec.name == "water-south")
    again = signed_query(
        fed, "water-south", SQL, job_id=r.job_id, statement=statement, sign_offs=[approval]
    )
    ch, stub = query_stub(fed, index)
    with ch, pytest.raises(grpc.RpcError) as err:
        stub.Query(again.request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "was already used" in err.value.details()
