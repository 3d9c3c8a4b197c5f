"""Hand-built signed queries, for tests that play a client the library would never be.

A hostile analyst holds a valid certificate and its signing key, so it can sign any
request and any job statement it likes: :func:`signed_query` builds one exactly as the
client does, with every part overridable (the statement's roster, spec or protection can
differ from the body's, the spec can differ per node), and :func:`query_stub` opens an
mTLS channel as that analyst.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from audit import DataUseRecord, decode_leaf
from audit.remote import LedgerClient, mtls_channel
from datafed.local import synth
from datafed.local.federation import LocalFederation, NodeSpec
from datafed.pki.ca import load_signing_key, party_paths
from datafed.proto.v1 import common_pb2, protocol_pb2, query_pb2, query_pb2_grpc
from datafed.query.sql import parse_sql
from datafed.wire.serde import header_to_proto, spec_to_proto
from datafed.wire.signing import RequestHeader, new_header, sign_body
from datafed.wire.statement import SignedJobStatement, sign_job_statement

PURPOSE = "service-planning"


@dataclass
class Signed:
    """A signed query, its header and the statement inside it."""

    request: common_pb2.SignedRequest
    header: RequestHeader
    statement: SignedJobStatement


def signed_query(
    fed: LocalFederation,
    node: str,
    sql: str = "SELECT COUNT(*) FROM pipe_incidents",
    *,
    analyst: str = "alice",
    purpose: str = PURPOSE,
    job_id: str = "job-manual",
    roster: Sequence[str] | None = None,
    protection: query_pb2.Protection | None = None,
    statement_sql: str | None = None,
    statement_protection: query_pb2.Protection | None = None,
    header: RequestHeader | None = None,
    lifetime_ms: int = 60_000,
    sign_offs: Sequence[query_pb2.SignOff] = (),
    statement: SignedJobStatement | None = None,
    spec: query_pb2.QuerySpec | None = None,
    public_context: bytes = b"",
) -> Signed:
    """A query for ``node`` signed by ``analyst``, with its own job statement.

    ``statement_sql``/``statement_protection``: what the statement says, when it should
    differ from what the body carries; ``roster`` defaults to every node of ``fed``;
    ``spec``: a hand-built spec to send instead of ``sql``'s (one the front end refuses);
    ``public_context``: a CKKS context sent beside params that name it by digest.
    """
    key = load_signing_key(party_paths(fed.pki_dir, "analyst", analyst).signing_key)
    spec = spec if spec is not None else spec_to_proto(parse_sql(sql))
    pmsg = protection or query_pb2.Protection(mode="plain", fixed_point_bits=16)
    h = header or new_header(analyst, node, job_id, purpose, lifetime_ms=lifetime_ms)
    st = statement or sign_job_statement(
        key,
        job_id=h.job_id,
        requester=analyst,
        purpose=h.purpose,
        operation="query",
        dataset=spec.dataset,
        spec=spec_to_proto(parse_sql(statement_sql)) if statement_sql else spec,
        protection=(statement_protection or pmsg).mode,
        protection_msg=statement_protection or pmsg,
        roster=tuple(roster or [n.spec.name for n in fed.nodes]),
        lifetime_ms=lifetime_ms,
        legal_basis=h.legal_basis,
    )
    body = query_pb2.QueryRequestBody(
        header=header_to_proto(h),
        spec=spec,
        protection=pmsg,
        sign_offs=list(sign_offs),
        statement=st.to_proto(),
        public_context=public_context,
    ).SerializeToString()
    return Signed(common_pb2.SignedRequest(body=body, signature=sign_body(body, key)), h, st)


def district_specs(
    districts: Sequence[str], exact: str, dp: str, *, seed: int, segments: int, residents: int
) -> list[NodeSpec]:
    """One water office per district: exact ``pipe_incidents`` and DP ``residents``."""
    return [
        NodeSpec(
            name=f"water-{d}",
            agency=f"{d.title()} District Office",
            datasets=[
                (
                    "pipe_incidents",
                    synth.PIPE_COLUMNS,
                    synth.pipe_incidents(d, seed=seed, segments=segments),
                ),
                (
                    "residents",
                    synth.RESIDENT_COLUMNS,
                    synth.residents(d, seed=seed, count=residents),
                ),
            ],
            policy_toml=exact,
            dataset_policies={"residents": dp},
        )
        for d in districts
    ]


def failing_after_admission(fed: LocalFederation) -> query_pb2.Protection:
    """CKKS parameters that pass every check before admission and fail after it.

    The participants are the federation's nodes, the first aggregating; the public HE
    context is garbage. A node bounds the context's size before admission and parses it
    only when it encrypts (loading a context is the costly part), so the query is admitted
    and then fails -- the same way at every node, whatever its rows.
    """
    certs = [party_paths(fed.pki_dir, "node", n.spec.name).cert.read_bytes() for n in fed.nodes]
    params = protocol_pb2.CkksParams(
        public_context=b"not a TenSEAL context",
        aggregator_certificate=certs[0],
        participant_certificates=certs,
    )
    return query_pb2.Protection(mode="ckks", fixed_point_bits=16, params=params.SerializeToString())


def query_stub(
    fed: LocalFederation, node_index: int = 0, analyst: str = "alice"
) -> tuple[grpc.Channel, query_pb2_grpc.QueryServiceStub]:
    """A blocking mTLS channel to one node, as ``analyst``."""
    node = fed.nodes[node_index]
    files = party_paths(fed.pki_dir, "analyst", analyst)
    creds = grpc.ssl_channel_credentials(
        root_certificates=(fed.pki_dir / "ca.crt").read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )
    ch = grpc.secure_channel(
        node.address, creds, options=[("grpc.ssl_target_name_override", node.spec.name)]
    )
    return ch, query_pb2_grpc.QueryServiceStub(ch)


def ledger_records(fed: LocalFederation, node: str) -> list[DataUseRecord]:
    """Every entry of ``node``'s ledger, read as the federation's auditor would."""
    endpoint = next(n for n in fed.nodes if n.spec.name == node)
    files = party_paths(fed.pki_dir, "auditor", "regulator")

    async def fetch() -> list[bytes]:
        ca = fed.pki_dir / "ca.crt"
        async with mtls_channel(endpoint.address, ca, files.cert, files.key, node) as ch:
            client = LedgerClient(ch, 30)
            size = int((await client.checkpoint()).split("\n")[1])
            return await client.entries(0, size)

    return [decode_leaf(leaf)[1] for leaf in asyncio.run(fetch())]
