"""Three real node processes on 127.0.0.1 with mTLS: protected queries and every bad input."""

from __future__ import annotations

import sqlite3
import time

import grpc
import pytest

from audit import Ledger
from datafed import pki
from datafed.client import Federation
from datafed.errors import NodeUnavailable, RemoteError
from datafed.local.federation import PURPOSE, LocalFederation
from datafed.pki.ca import load_signing_key, party_paths
from datafed.proto.v1 import common_pb2, modes_pb2, query_pb2, query_pb2_grpc
from tests.integration.raw import signed_query

SQL = "SELECT SUM(bursts), COUNT(*), AVG(repair_hours) FROM pipe_incidents WHERE year = 2024"


def cleartext(fed: LocalFederation, sql: str) -> list[tuple]:
    rows: dict = {}
    for node in fed.nodes:
        with sqlite3.connect(node.config.parent / "data" / "pipe_incidents.sqlite") as db:
            for r in db.execute(sql):
                key, vals = r[:-2], r[-2:]
                acc = rows.setdefault(key, [0, 0])
                acc[0] += vals[0]
                acc[1] += vals[1]
    return sorted((*k, *v) for k, v in rows.items())


def ledger_size(fed: LocalFederation, name: str) -> int:
    info = {i.node: i for i in Federation.from_file(fed.fed_toml).node_info()}
    return info[name].ledger.size


def sizes(fed: LocalFederation) -> dict[str, int]:
    return {i.node: i.ledger.size for i in Federation.from_file(fed.fed_toml).node_info()}


def test_paillier_total_matches_cleartext(local_fed):
    fed = Federation.from_file(local_fed.fed_toml)
    before = sizes(local_fed)
    r = fed.query(SQL, purpose=PURPOSE, protection="paillier")
    ((want_sum, want_count),) = [
        row
        for row in cleartext(
            local_fed, "SELECT SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = 2024"
        )
    ]
    assert r.columns == ("sum(bursts)", "count(*)", "avg(repair_hours)")
    assert r.rows[0][0] == want_sum and r.rows[0][1] == want_count
    assert r.protection == "paillier" and set(r.nodes) == {n.spec.name for n in local_fed.nodes}
    for head in r.ledgers:
        assert head.size == before[head.node] + 2  # approved + released
        assert head.entry_indexes == (before[head.node], before[head.node] + 1)
    # every node's receipt was verified by the client and proves this job's entries
    assert {x.node for x in r.receipts} == set(r.nodes)
    for x in r.receipts:
        assert [rec.decision for rec in x.records] == ["approved", "released"]
        assert all(rec.job_id == r.job_id and rec.requester == "alice" for rec in x.records)


def test_grouped_plain_and_paillier_agree(local_fed):
    fed = Federation.from_file(local_fed.fed_toml)
    sql = "SELECT material, SUM(bursts), COUNT(*) FROM pipe_incidents WHERE month IN (1, 2) GROUP BY material"
    a = fed.query(sql, purpose=PURPOSE, protection="paillier")
    b = fed.query(sql, purpose=PURPOSE, protection="plain")
    want = cleartext(
        local_fed,
        "SELECT material, SUM(bursts), COUNT(*) FROM pipe_incidents WHERE month IN (1, 2) GROUP BY material",
    )
    # paillier reports the declared domain and its remainder (empty here: every material is
    # declared); plain shows each node's own groups, as SQL does
    assert a.rows[-1] == (None, None, 0) and a.remainder == (False,) * 4 + (True,)
    assert [tuple(r) for r in a.rows[:-1]] == [tuple(r) for r in b.rows] == [tuple(w) for w in want]


@pytest.mark.parametrize(
    ("sql", "purpose", "code", "fragment"),
    [
        ("SELECT SUM(bursts) FROM salaries", PURPOSE, "NOT_FOUND", "unknown dataset 'salaries'"),
        (
            "SELECT SUM(salary) FROM pipe_incidents",
            PURPOSE,
            "INVALID_ARGUMENT",
            "unknown column 'salary'",
        ),
        (SQL, "marketing", "PERMISSION_DENIED", "purpose 'marketing' is not allowed"),
    ],
)
def test_refusals_are_recorded_and_release_nothing(local_fed, sql, purpose, code, fragment):
    before = sizes(local_fed)
    with pytest.raises(RemoteError) as info:
        Federation.from_file(local_fed.fed_toml).query(sql, purpose=purpose)
    assert info.value.code == code and fragment in info.value.message
    after = sizes(local_fed)
    assert all(after[n] == before[n] + 1 for n in before)  # exactly one 'denied' entry each


def test_disallowed_requester_is_denied(local_fed):
    before = sizes(local_fed)
    bob = Federation.from_file(local_fed.root / "fed-bob.toml")
    with pytest.raises(RemoteError, match="requester 'bob' is not allowed") as info:
        bob.query(SQL, purpose=PURPOSE)
    assert info.value.code == "PERMISSION_DENIED"
    assert all(v == before[k] + 1 for k, v in sizes(local_fed).items())


def _stub_for(
    fed: LocalFederation, node_index: int, ca: bytes, cert: bytes | None, key: bytes | None
):
    node = fed.nodes[node_index]
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    ch = grpc.secure_channel(
        node.address, creds, options=[("grpc.ssl_target_name_override", node.spec.name)]
    )
    return ch, query_pb2_grpc.QueryServiceStub(ch)


def _alice_stub(fed: LocalFederation, i: int = 0):
    files = party_paths(fed.pki_dir, "analyst", "alice")
    return _stub_for(
        fed,
        i,
        (fed.pki_dir / "ca.crt").read_bytes(),
        files.cert.read_bytes(),
        files.key.read_bytes(),
    )


def _signed(
    fed: LocalFederation, node: str, *, lifetime_ms: int = 60_000, header=None, tamper: bool = False
):
    signed = signed_query(fed, node, lifetime_ms=lifetime_ms, header=header)
    req = signed.request
    if tamper:
        body = req.body[:-1] + bytes([req.body[-1] ^ 1])
        req = common_pb2.SignedRequest(body=body, signature=req.signature)
    return req, signed.header


def test_tampered_signature_is_unauthenticated_and_recorded(local_fed):
    node = local_fed.nodes[0].spec.name
    before = ledger_size(local_fed, node)
    ch, stub = _alice_stub(local_fed)
    with ch, pytest.raises(grpc.RpcError) as info:
        stub.Query(_signed(local_fed, node, tamper=True)[0], timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "signature does not verify" in info.value.details()
    assert ledger_size(local_fed, node) == before + 1


def test_replayed_request_is_refused(local_fed):
    node = local_fed.nodes[0].spec.name
    signed, _ = _signed(local_fed, node)
    ch, stub = _alice_stub(local_fed)
    with ch:
        reply = stub.Query(signed, timeout=10)
        assert modes_pb2.PlainPayload.FromString(reply.payload).values[0] == 300 * 36
        with pytest.raises(grpc.RpcError) as info:
            stub.Query(signed, timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "replayed" in info.value.details()


def test_expired_request_is_refused(local_fed):
    node = local_fed.nodes[0].spec.name
    signed, _ = _signed(local_fed, node, lifetime_ms=1)
    time.sleep(0.05)
    ch, stub = _alice_stub(local_fed)
    with ch, pytest.raises(grpc.RpcError) as info:
        stub.Query(signed, timeout=10)
    assert (
        info.value.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in info.value.details()
    )


def test_request_for_another_node_is_refused(local_fed):
    signed, _ = _signed(local_fed, local_fed.nodes[1].spec.name)
    ch, stub = _alice_stub(local_fed, 0)
    with ch, pytest.raises(grpc.RpcError) as info:
        stub.Query(signed, timeout=10)
    assert (
        info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "addressed to node" in info.value.details()
    )


def test_client_without_certificate_cannot_connect(local_fed):
    before = sizes(local_fed)
    ch, stub = _stub_for(local_fed, 0, (local_fed.pki_dir / "ca.crt").read_bytes(), None, None)
    with ch, pytest.raises(grpc.RpcError) as info:
        stub.NodeInfo(query_pb2.NodeInfoRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert sizes(local_fed) == before


def test_certificate_from_another_ca_cannot_connect(local_fed, tmp_path):
    pki.init_ca(tmp_path, "rogue CA")
    files = pki.issue(tmp_path, "analyst", "alice")  # same name, wrong CA
    ch, stub = _stub_for(
        local_fed,
        0,
        (local_fed.pki_dir / "ca.crt").read_bytes(),
        files.cert.read_bytes(),
        files.key.read_bytes(),
    )
    with ch, pytest.raises(grpc.RpcError) as info:
        stub.NodeInfo(query_pb2.NodeInfoRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_node_down_names_the_node(local_fed, tmp_path):
    cfg = Federation.from_file(local_fed.fed_toml).config
    dead = cfg.model_copy(deep=True)
    dead.nodes[1].address = "127.0.0.1:9"  # discard port: nothing listens
    dead.timeout_s = 3
    with pytest.raises(NodeUnavailable) as info:
        Federation(dead).query(SQL, purpose=PURPOSE, protection="plain")
    assert info.value.node == cfg.nodes[1].name


def test_every_request_is_in_the_ledger(local_fed, tmp_path):
    """Stop one node and read its ledger: approvals precede releases, denials carry reasons."""
    node = local_fed.nodes[2]
    local_fed.stop_node(node)
    try:
        key = load_signing_key(party_paths(local_fed.pki_dir, "node", node.spec.name).signing_key)
        with Ledger.open(
            node.config.parent / "state" / "ledger.sqlite", f"datafed/ledger/{node.spec.name}", key
        ) as ledger:
            records = [ledger.get_record(i) for i in range(ledger.head().size)]
    finally:
        local_fed.start_node(node)
        local_fed.write_fed_toml()
        local_fed.write_fed_toml("bob")
    decisions = [r.decision for r in records]
    assert decisions.count("released") >= 3 and decisions.count("denied") >= 4
    for i, r in enumerate(records):
        assert r.node == node.spec.name and len(r.request_digest) == 64
        if r.decision == "released":
            assert records[i - 1].decision == "approved"
            assert records[i - 1].request_digest == r.request_digest and len(r.result_digest) == 64
        if r.decision == "denied":
            assert r.reason and r.result_digest == ""
    assert {r.requester for r in records} >= {"alice", "bob"}


def test_histogram_matches_cleartext_in_two_modes(local_fed):
    fed = Federation.from_file(local_fed.fed_toml)
    sql = "SELECT material, HISTOGRAM(repair_hours, 0, 1, 5, 100) FROM pipe_incidents WHERE year = 2023 GROUP BY material"
    a = fed.query(sql, purpose=PURPOSE, protection="paillier")
    b = fed.query(sql, purpose=PURPOSE, protection="plain")
    assert a.columns[1:] == (
        "histogram(repair_hours)[0,1)",
        "histogram(repair_hours)[1,5)",
        "histogram(repair_hours)[5,100]",
    )
    want: dict = {}
    for node in local_fed.nodes:
        with sqlite3.connect(node.config.parent / "data" / "pipe_incidents.sqlite") as db:
            for m, h in db.execute(
                "SELECT material, repair_hours FROM pipe_incidents WHERE year = 2023"
            ):
                counts = want.setdefault(m, [0, 0, 0])
                counts[0 if h < 1 else 1 if h < 5 else 2] += 1
    assert a.rows[-1] == (None, 0, 0, 0)  # the remainder: no NULL or undeclared material
    assert {r[0]: list(r[1:]) for r in a.rows[:-1]} == want
    assert a.rows[:-1] == b.rows
