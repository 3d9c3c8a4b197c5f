"""Hostile and heavy use of real nodes: injection in every string field, oversize
messages, wrong-role certificates, and 50 concurrent queries from several analysts."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from datafed import pki
from datafed.client import Federation
from datafed.errors import QueryError, RemoteError
from datafed.local.federation import PURPOSE
from datafed.pki.ca import load_signing_key, party_paths
from datafed.proto.v1 import common_pb2, query_pb2, query_pb2_grpc
from datafed.query.sql import parse_sql
from datafed.wire.serde import header_to_proto, spec_to_proto
from datafed.wire.signing import new_header, sign_body
from datafed.wire.statement import sign_job_statement

INJECTIONS = [
    "x'; DROP TABLE pipe_incidents; --",
    'a" OR 1=1 --',
    "\x00\x01",
    "../../etc/passwd",
    "ﾠ" * 100,
]


def sizes(fed) -> dict[str, int]:
    return {i.node: i.ledger.size for i in Federation.from_file(fed.fed_toml).node_info()}


def _raw_call(fed, role: str, name: str, body: bytes, key_role: str | None = None):
    """Call node 0 directly with any certificate and any (signed) body."""
    node = fed.nodes[0]
    files = party_paths(fed.pki_dir, role, name)
    creds = grpc.ssl_channel_credentials(
        (fed.pki_dir / "ca.crt").read_bytes(), files.key.read_bytes(), files.cert.read_bytes()
    )
    key = load_signing_key(party_paths(fed.pki_dir, key_role or role, name).signing_key)
    with grpc.secure_channel(
        node.address, creds, options=[("grpc.ssl_target_name_override", node.spec.name)]
    ) as ch:
        stub = query_pb2_grpc.QueryServiceStub(ch)
        return stub.Query(
            common_pb2.SignedRequest(body=body, signature=sign_body(body, key)), timeout=10
        )


def _body(
    fed, node: str, requester: str, *, role="analyst", purpose=PURPOSE, spec=None, job="job-x"
) -> bytes:
    """A query body with its job statement, both as ``requester`` would sign them."""
    key = load_signing_key(party_paths(fed.pki_dir, role, requester).signing_key)
    h = new_header(requester, node, job, purpose)
    spec = spec or spec_to_proto(parse_sql("SELECT COUNT(*) FROM pipe_incidents"))
    protection = query_pb2.Protection(mode="plain", fixed_point_bits=16)
    statement = sign_job_statement(
        key,
        job_id=job,
        requester=requester,
        purpose=purpose,
        operation="query",
        dataset=spec.dataset,
        spec=spec,
        protection="plain",
        protection_msg=protection,
        roster=[n.spec.name for n in fed.nodes],
        lifetime_ms=60_000,
    )
    return query_pb2.QueryRequestBody(
        header=header_to_proto(h), spec=spec, protection=protection, statement=statement.to_proto()
    ).SerializeToString()


@pytest.mark.parametrize("evil", INJECTIONS)
def test_injection_in_string_fields_changes_nothing(local_fed, evil):
    fed = Federation.from_file(local_fed.fed_toml)
    before = sizes(local_fed)
    # as a literal: a harmless filter value (bound parameter), the table is intact
    r = fed.query(
        f"SELECT COUNT(*) FROM pipe_incidents WHERE material = '{evil.replace(chr(39), chr(39) * 2)}'",
        purpose=PURPOSE,
        protection="plain",
    )
    assert r.rows[0][0] == 0
    # as a purpose: refused by policy and recorded
    with pytest.raises(RemoteError) as info:
        fed.query("SELECT COUNT(*) FROM pipe_incidents", purpose=evil, protection="plain")
    assert info.value.code in {"PERMISSION_DENIED", "INVALID_ARGUMENT"}
    # as an identifier: refused before anything is sent
    with pytest.raises(QueryError):
        fed.query(f'SELECT COUNT(*) FROM "{evil}"', purpose=PURPOSE)
    # as a job id or dataset on the wire (bypassing the client's checks)
    node = local_fed.nodes[0].spec.name
    spec = query_pb2.QuerySpec(
        dataset=evil, aggregates=[query_pb2.Aggregate(func="count", column="*")]
    )
    for body in (
        _body(local_fed, node, "alice", spec=spec),
        _body(local_fed, node, "alice", job=evil),
    ):
        with pytest.raises(grpc.RpcError) as err:
            _raw_call(local_fed, "analyst", "alice", body)
        assert err.value.code() in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    after = sizes(local_fed)
    assert (
        after[node] == before[node] + 2 + 1 + 2
    )  # released pair, purpose denial, two wire denials
    total = Federation.from_file(local_fed.fed_toml).query(
        "SELECT COUNT(*) FROM pipe_incidents", purpose=PURPOSE, protection="plain"
    )
    assert total.rows[0][0] == 3 * 300 * 36  # every row still there


def test_wrong_role_certificate_is_denied_and_recorded(local_fed):
    node = local_fed.nodes[0]
    before = sizes(local_fed)[node.spec.name]
    # another node's certificate signing a query: a node may not run queries
    other = local_fed.nodes[1].spec.name
    with pytest.raises(grpc.RpcError) as err:
        _raw_call(local_fed, "node", other, _body(local_fed, node.spec.name, other, role="node"))
    assert (
        err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        and "role 'node'" in err.value.details()
    )
    # the auditor's certificate likewise
    with pytest.raises(grpc.RpcError) as err:
        _raw_call(
            local_fed,
            "auditor",
            "regulator",
            _body(local_fed, node.spec.name, "regulator", role="auditor"),
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert sizes(local_fed)[node.spec.name] == before + 2


def test_oversize_message_is_refused(local_fed):
    node = local_fed.nodes[0].spec.name
    spec = spec_to_proto(parse_sql("SELECT COUNT(*) FROM pipe_incidents"))
    big = _body(local_fed, node, "alice", spec=spec)  # a valid body...
    huge = query_pb2.QueryRequestBody.FromString(big)
    huge.header.legal_basis = "x" * (17 * 1024 * 1024)  # ...made larger than the node accepts
    with pytest.raises(grpc.RpcError) as err:
        _raw_call(local_fed, "analyst", "alice", huge.SerializeToString())
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_fifty_concurrent_queries_from_several_analysts(local_fed):
    pki.issue(local_fed.pki_dir, "analyst", "carol") if not party_paths(
        local_fed.pki_dir, "analyst", "carol"
    ).cert.exists() else None
    alice = Federation.from_file(local_fed.fed_toml)
    bob = Federation.from_file(local_fed.root / "fed-bob.toml")
    before = sizes(local_fed)

    async def run() -> list:
        jobs = []
        for i in range(50):
            if i % 5 == 4:  # bob is not allowed: denied, recorded, nothing released
                jobs.append(
                    bob.aquery(
                        "SELECT COUNT(*) FROM pipe_incidents",
                        purpose=PURPOSE,
                        protection="plain",
                        job_id=f"conc-{i}",
                    )
                )
            else:
                jobs.append(
                    alice.aquery(
                        "SELECT SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = 2024",
                        purpose=PURPOSE,
                        protection="plain" if i % 2 else "paillier",
                        job_id=f"conc-{i}",
                    )
                )
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(run())
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, RemoteError)]
    assert len(ok) == 40 and len(refused) == 10, [
        r for r in results if isinstance(r, BaseException) and not isinstance(r, RemoteError)
    ]
    assert len({r.rows for r in ok}) == 1  # every protected total is the same exact total
    after = sizes(local_fed)
    assert all(after[n] == before[n] + 40 * 2 + 10 for n in before)  # exact ledgers
    assert {r.job_id for r in ok} == {f"conc-{i}" for i in range(50) if i % 5 != 4}


def test_a_near_duplicate_is_answered_as_sql_would(local_fed):
    """S and S minus one segment-month: each is SQL's answer, recorded like any other.

    Earlier the second release repeated the first's numbers (the differencing defence), so
    answers silently changed; exact data now claims no row protection
    (docs/invisibility.md) and answers tell the truth.
    """
    fed = Federation.from_file(local_fed.fed_toml)
    base = "SELECT SUM(repair_hours), COUNT(*) FROM pipe_incidents WHERE year = 2022"
    first = fed.query(base, purpose=PURPOSE, protection="plain")
    victim = "(segment_id IN ('north-0007', 'east-0007', 'south-0007') AND month = 3)"
    truth = fed.query(f"{base} AND {victim}", purpose=PURPOSE, protection="plain")
    assert truth.rows[0][1] == 3 and truth.suppressed == (False,)  # 3 rows = k: shown
    before = sizes(local_fed)
    probe = fed.query(f"{base} AND NOT {victim}", purpose=PURPOSE, protection="plain")
    assert probe.rows[0][1] == first.rows[0][1] - 3
    assert probe.rows[0][0] == pytest.approx(first.rows[0][0] - truth.rows[0][0], abs=1e-6)
    assert all(v == before[k] + 2 for k, v in sizes(local_fed).items())  # approved, released
