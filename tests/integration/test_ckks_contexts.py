"""``ckks`` contexts sent once: three node processes, mTLS, loopback.

The client names its public context by digest and sends it beside the params only on its
first query to a node; a node keeps it per requester (``datafed/modes/_ckks_contexts.py``).
A warm query carries no context; a restarted node asks for it before admission (charged
nothing, recorded ``denied``) and the client resends; another analyst naming the digest is
asked for the context, never given it; concurrent queries of one analyst are correct.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator

import grpc
import pytest

from datafed.client import Federation
from datafed.client._transport import Transport
from datafed.local.federation import PURPOSE, LocalFederation, water_district_specs
from datafed.pki.ca import party_paths
from datafed.proto.v1 import protocol_pb2, query_pb2
from tests.integration.raw import ledger_records, query_stub, signed_query

TOTAL = "SELECT SUM(repair_hours), COUNT(*) FROM pipe_incidents WHERE year = 2024"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    specs = water_district_specs()
    for s in specs:
        s.policy_toml, n = re.subn(
            r"allowed_protections = \[[^\]]*\]",
            'allowed_protections = ["plain", "ckks"]',
            s.policy_toml,
        )
        assert n == 1
    f = LocalFederation.create(
        tmp_path_factory.mktemp("fed-ckks"), specs, analysts=("alice", "bob")
    )
    f.start()
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture(scope="module")
def plain(fed) -> tuple:
    (row,) = (
        Federation.from_file(fed.fed_toml).query(TOTAL, purpose=PURPOSE, protection="plain").rows
    )
    return row


def spy(monkeypatch) -> list[tuple[str, int, int]]:
    """Every Query the client signs: (node, context bytes beside the params, body bytes)."""
    seen: list[tuple[str, int, int]] = []
    real = Transport.sign

    def sign(self, body):
        signed = real(self, body)
        if isinstance(body, query_pb2.QueryRequestBody):
            seen.append((body.header.node, len(body.public_context), len(signed.request.body)))
        return signed

    monkeypatch.setattr(Transport, "sign", sign)
    return seen


def check(result, plain_row) -> None:
    (got,) = result.rows
    assert abs(got[0] - plain_row[0]) <= result.error_bound and got[1] == plain_row[1]


def names(fed: LocalFederation) -> list[str]:
    return [n.spec.name for n in fed.nodes]


def test_a_warm_query_sends_no_context(fed, plain, monkeypatch):
    seen = spy(monkeypatch)
    client = Federation.from_file(fed.fed_toml)
    check(client.query(TOTAL, purpose=PURPOSE, protection="ckks"), plain)
    first, seen[:] = list(seen), []
    check(client.query(TOTAL, purpose=PURPOSE, protection="ckks"), plain)
    assert sorted(n for n, _, _ in first) == sorted(names(fed))
    assert all(ctx > 300_000 and size > ctx for _, ctx, size in first)  # sent once
    assert sorted(n for n, _, _ in seen) == sorted(names(fed))  # no resend
    assert all(ctx == 0 and size < 20_000 for _, ctx, size in seen), seen


def test_a_restarted_node_asks_for_the_context_and_the_client_resends(fed, plain, monkeypatch):
    client = Federation.from_file(fed.fed_toml)
    check(client.query(TOTAL, purpose=PURPOSE, protection="ckks"), plain)
    node = fed.nodes[1]
    fed.stop_node(node)
    fed.start_node(node)  # an empty cache (and a new port)
    fed.write_fed_toml()
    again = Federation.from_file(fed.fed_toml)
    again._modes["ckks"] = client._modes["ckks"]  # the same analyst session's context
    seen = spy(monkeypatch)
    result = again.query(TOTAL, purpose=PURPOSE, protection="ckks")
    check(result, plain)
    b = node.spec.name
    assert [(n, ctx > 0) for n, ctx, _ in seen if n == b] == [(b, False), (b, True)]
    assert sorted(n for n, _, _ in seen if n != b) == sorted(set(names(fed)) - {b})
    job = [r for r in ledger_records(fed, b) if r.job_id == result.job_id]
    assert [r.decision for r in job] == ["denied", "approved", "released"]
    assert job[0].reason.startswith("FAILED_PRECONDITION") and job[0].epsilon == 0


def _ckks_params(fed: LocalFederation, digest: bytes, length: int) -> query_pb2.Protection:
    certs = [party_paths(fed.pki_dir, "node", n).cert.read_bytes() for n in names(fed)]
    params = protocol_pb2.CkksParams(
        public_context_digest=digest,
        public_context_bytes=length,
        aggregator_certificate=certs[0],
        participant_certificates=certs,
    )
    return query_pb2.Protection(mode="ckks", fixed_point_bits=16, params=params.SerializeToString())


def test_another_analyst_naming_the_digest_is_asked_for_the_context(fed, plain):
    alice = Federation.from_file(fed.fed_toml)
    check(alice.query(TOTAL, purpose=PURPOSE, protection="ckks"), plain)
    public = alice._modes["ckks"]._public  # type: ignore[attr-defined]
    protection = _ckks_params(fed, hashlib.sha256(public).digest(), len(public))
    node = names(fed)[0]
    ch, stub = query_stub(fed, 0, analyst="bob")
    with ch:
        with pytest.raises(grpc.RpcError) as info:
            stub.Query(
                signed_query(
                    fed,
                    node,
                    TOTAL,
                    analyst="bob",
                    job_id="bob-names-alices",
                    protection=protection,
                ).request
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "send the context" in (info.value.details() or "")
        # Another body under alice's digest is refused too, before admission.
        with pytest.raises(grpc.RpcError) as info:
            stub.Query(
                signed_query(
                    fed,
                    node,
                    TOTAL,
                    analyst="bob",
                    job_id="bob-wrong-body",
                    protection=protection,
                    public_context=public[:-1] + b"x",
                ).request
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "does not match its digest" in (info.value.details() or "")
    records = {r.job_id: r for r in ledger_records(fed, node) if r.job_id.startswith("bob-")}
    assert {j: r.decision for j, r in records.items()} == {
        "bob-names-alices": "denied",
        "bob-wrong-body": "denied",
    }


def test_concurrent_ckks_queries_of_one_analyst_are_correct(fed, plain):
    client = Federation.from_file(fed.fed_toml)

    async def many() -> list:
        cold = await asyncio.gather(
            *(client.aquery(TOTAL, purpose=PURPOSE, protection="ckks") for _ in range(3))
        )
        warm = await asyncio.gather(
            *(client.aquery(TOTAL, purpose=PURPOSE, protection="ckks") for _ in range(4))
        )
        return [*cold, *warm]

    results = asyncio.run(many())
    assert len({r.job_id for r in results}) == 7
    for r in results:
        check(r, plain)
