"""Fuzzing every RPC of a real node: clean statuses only, the node lives, its ledger verifies.

Two real node processes (mTLS on loopback; north also witnesses east's log) receive, as
a valid analyst signing everything it sends: queries (specs shaped like the client's with
hostile values, every mode with real or garbage parameters, consistent or mismatched job
statements, byte edits of valid bodies), sign-off requests, protocol steps of open jobs,
intersection-sum steps, training requests (as the node's own SuperNode), ledger reads (as
the auditor) and witness requests (as a peer node). Every answer must be OK or a status
that names a refusal -- never INTERNAL or UNKNOWN (an unhandled exception) or a deadline
(a hang). Afterwards both nodes still answer, and each ledger verifies in full: what was
there before is unchanged, and every refusal was recorded without epsilon or result.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit import decode_leaf, ledger_origin
from audit.checkpoint import log_verifier
from audit.export import ExportDir, export_store
from audit.policy import Policy
from audit.verify import verify_log
from datafed.client import Federation
from datafed.hazmat import HeContext
from datafed.local import synth
from datafed.local.federation import LocalFederation, NodeSpec
from datafed.pki.ca import load_signing_key, party_paths
from datafed.proto.v1 import (
    common_pb2,
    ledger_pb2,
    ledger_pb2_grpc,
    modes_pb2,
    protocol_pb2,
    protocol_pb2_grpc,
    psi_pb2,
    psi_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)
from datafed.psi import IdsColumn, PsiJob, ValuesColumns
from datafed.psi import serde as psi_serde
from datafed.wire.serde import header_to_proto
from datafed.wire.signing import new_header, sign_body
from datafed.wire.statement import sign_job_statement
from tests.fuzz.protos import messages, mutated
from tests.fuzz.settings import fuzz
from tests.fuzz.specs import literals, mostly, specs

PURPOSE = "service-planning"
NODES = ("water-north", "water-east")
#: Statuses that name a refusal. INTERNAL/UNKNOWN (an unhandled exception), a deadline (a
#: hang), CANCELLED or DATA_LOSS are findings.
CLEAN = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
}
POLICY = (
    'allowed_requesters = ["alice"]\n'
    f'allowed_purposes = ["{PURPOSE}"]\n'
    'allowed_aggregates = ["sum", "count", "avg", "var", "min", "max", "histogram"]\n'
    'allowed_protections = ["paillier", "plain", "shares", "secagg", "ckks"]\n'
    'allowed_operations = ["query", "intersection_sum", "training"]\n'
    'identifier_columns = ["segment_id"]\n'
    "min_group_size = 2\n"
    "min_participants = 2\n"
    "person_level = false\n"
    "[datasets.policy.group_domains]\n"
    'material = ["cast_iron", "ductile_iron", "steel", "pvc"]\n'
)


@dataclasses.dataclass
class Site:
    """The running nodes, the channels of each party, what the fuzzer sends from."""

    fed: LocalFederation
    channels: dict[str, grpc.Channel]
    certs: dict[str, bytes]
    key: Any
    leaves: dict[str, list[bytes]]
    open_jobs: list[str]

    def __repr__(self) -> str:
        return f"Site({self.fed.root})"

    def stub(self, party: str, cls: Callable[[grpc.Channel], Any]) -> Any:
        return cls(self.channels[party])

    def sign(self, body: bytes) -> common_pb2.SignedRequest:
        return common_pb2.SignedRequest(body=body, signature=sign_body(body, self.key))


def _channel(fed: LocalFederation, role: str, name: str) -> grpc.Channel:
    files = party_paths(fed.pki_dir, role, name)
    creds = grpc.ssl_channel_credentials(
        (fed.pki_dir / "ca.crt").read_bytes(), files.key.read_bytes(), files.cert.read_bytes()
    )
    north = fed.nodes[0]
    return grpc.secure_channel(
        north.address,
        creds,
        options=[
            ("grpc.ssl_target_name_override", north.spec.name),
            ("grpc.max_send_message_length", 32 << 20),
            ("grpc.max_receive_message_length", 32 << 20),
        ],
    )


def _ledger(fed: LocalFederation, node: str) -> Path:
    return fed.root / "nodes" / node / "state" / "ledger.sqlite"


def _leaves(fed: LocalFederation, node: str) -> list[bytes]:
    with sqlite3.connect(f"file:{_ledger(fed, node)}?mode=ro", uri=True) as db:
        return [bytes(r[0]) for r in db.execute("SELECT leaf FROM entries ORDER BY idx")]


def header(job_id: str | None = None, node: str = "water-north") -> common_pb2.RequestHeader:
    return header_to_proto(new_header("alice", node, job_id or f"job-{uuid.uuid4().hex}", PURPOSE))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    specs_ = []
    for i, name in enumerate(NODES):
        district = name.split("-")[1]
        datasets = [
            (
                "pipe_incidents",
                synth.PIPE_COLUMNS,
                synth.pipe_incidents(district, seed=1, segments=8),
            )
        ]
        if i == 0:
            datasets.append(
                ("taxpayers", synth.TAXPAYER_COLUMNS, synth.taxpayers(seed=1, count=60))
            )
        else:
            datasets.append(
                ("loans", synth.LOAN_COLUMNS, synth.loans(seed=1, count=40, id_space=60))
            )
        psi_policy = POLICY[: POLICY.index("[datasets.policy.group_domains]")].replace(
            '"segment_id"', '"person_id"'
        )
        specs_.append(
            NodeSpec(
                name,
                district.title(),
                datasets,
                policy_toml=POLICY,
                dataset_policies={"taxpayers": psi_policy, "loans": psi_policy},
            )
        )
    fed = LocalFederation.create(
        tmp_path_factory.mktemp("fuzz"), specs_, witnesses=True, publish_interval_s=30.0
    )
    fed.start()
    channels = {
        "alice": _channel(fed, "analyst", "alice"),
        "regulator": _channel(fed, "auditor", "regulator"),
        "supernode": _channel(fed, "node", "water-north"),
        "peer": _channel(fed, "node", "water-east"),
    }
    certs = {n: party_paths(fed.pki_dir, "node", n).cert.read_bytes() for n in NODES}
    key = load_signing_key(party_paths(fed.pki_dir, "analyst", "alice").signing_key)
    s = Site(fed, channels, certs, key, {}, [])
    _open_jobs(s)
    s.leaves = {n: _leaves(fed, n) for n in NODES}
    try:
        yield s
    finally:
        for ch in channels.values():
            ch.close()
        fed.stop()


# ------------------------------------------------------------------ query bodies
CKKS = HeContext.generate().public_bytes()


def _params(draw: st.DrawFn, mode: str, certs: dict[str, bytes]) -> bytes:
    if draw(st.integers(0, 4)) == 4:
        return draw(st.binary(max_size=64))
    listed = draw(
        mostly(
            st.just([certs[n] for n in NODES]),
            st.sampled_from(([certs[NODES[0]]], [b"junk"], [])),
        )
    )
    if mode == "paillier":
        bits = draw(mostly(st.just(2048), st.sampled_from((1024, 4096))))
        n = draw(st.integers(0, (1 << bits) - 1)) | (1 << (bits - 1)) | 1
        return modes_pb2.PaillierParams(
            n=n.to_bytes(bits // 8, "big"),
            peer_certificates=listed,
            value_bits=draw(mostly(st.just(64), st.sampled_from((0, 32)))),
        ).SerializeToString()
    if mode == "shares":
        return protocol_pb2.SharesParams(
            aggregator_certificates=listed, participant_certificates=listed
        ).SerializeToString()
    if mode == "secagg":
        return protocol_pb2.SecAggParams(
            participant_certificates=listed, threshold=draw(mostly(st.just(2), st.integers(0, 3)))
        ).SerializeToString()
    if mode == "ckks":
        return protocol_pb2.CkksParams(
            public_context=draw(mostly(st.just(CKKS), st.sampled_from((CKKS[:1000], b"")))),
            aggregator_certificate=listed[0] if listed else b"",
            participant_certificates=listed,
        ).SerializeToString()
    return b""


MODE_NAMES = ("plain", "plain", "plain", "plain", "paillier", "shares", "secagg", "ckks")


@st.composite
def query_bodies(draw: st.DrawFn, site: Site) -> bytes:
    """A query as the client would build it -- spec, protection, statement -- mostly valid."""
    spec = draw(specs())
    mode = draw(mostly(st.sampled_from(MODE_NAMES), st.just("x")))
    protection = query_pb2.Protection(
        mode=mode,
        fixed_point_bits=draw(mostly(st.just(16), st.sampled_from((0, 32, 33, (1 << 32) - 1)))),
        params=_params(draw, mode, site.certs),
    )
    if mode in ("paillier", "shares", "secagg", "ckks") or draw(st.integers(0, 3)) == 3:
        width = draw(mostly(st.just(len(spec.group_by)), st.sampled_from((0, 1, 5))))
        for _ in range(draw(st.integers(1, 5))):
            key = draw(st.lists(literals(), min_size=width, max_size=width))
            protection.domain.add().values.extend(key)
    h = header()
    body = query_pb2.QueryRequestBody(header=h, spec=spec, protection=protection)
    if draw(st.integers(0, 9)) < 9:
        roster = draw(
            mostly(st.just(list(NODES)), st.sampled_from(([NODES[0]], ["ghost", *NODES])))
        )
        statement = sign_job_statement(
            site.key,
            job_id=h.job_id,
            requester="alice",
            purpose=draw(mostly(st.just(PURPOSE), st.just("other"))),
            operation="query",
            dataset=spec.dataset,
            spec=spec,
            protection=mode,
            protection_msg=protection,
            roster=roster,
            lifetime_ms=60_000,
        )
        body.statement.CopyFrom(statement.to_proto())
    else:
        body.statement.CopyFrom(draw(messages(common_pb2.SignedStatement, depth=1)))
    if draw(st.integers(0, 9)) == 9:
        body.sign_offs.extend(draw(st.lists(messages(query_pb2.SignOff, depth=1), max_size=3)))
    return body.SerializeToString()


def clean(thunk: Callable[[], Any]) -> Any:
    """Run one RPC: its answer, or None after a refusal with a clean status."""
    try:
        return thunk()
    except grpc.RpcError as exc:
        assert exc.code() in CLEAN, f"{exc.code()}: {exc.details()}"
        return None


def _query(site: Site, body: bytes) -> None:
    stub = site.stub("alice", query_pb2_grpc.QueryServiceStub)
    answer = clean(lambda: stub.Query(site.sign(body), timeout=60))
    if answer is not None:
        assert answer.node == "water-north" and answer.receipt.checkpoint


@fuzz(120)
@given(st.data())
def test_queries(site: Site, data: st.DataObject) -> None:
    _query(site, data.draw(query_bodies(site)))


@fuzz(40)
@given(st.data())
def test_edited_query_bodies(site: Site, data: st.DataObject) -> None:
    body = data.draw(query_bodies(site))
    _query(site, data.draw(mutated(body)))


@fuzz(30)
@given(messages(query_pb2.SignOffRequestBody, depth=2), st.booleans())
def test_signoff_requests(site: Site, body: query_pb2.SignOffRequestBody, keep: bool) -> None:
    if keep:
        body.header.CopyFrom(header())
    stub = site.stub("alice", query_pb2_grpc.QueryServiceStub)
    clean(lambda: stub.GrantSignOff(site.sign(body.SerializeToString()), timeout=30))


def _plain(site: Site, spec: query_pb2.QuerySpec) -> bytes:
    """A well-formed plain query of ``spec`` with its statement."""
    h = header()
    protection = query_pb2.Protection(mode="plain", fixed_point_bits=16)
    statement = sign_job_statement(
        site.key,
        job_id=h.job_id,
        requester="alice",
        purpose=PURPOSE,
        operation="query",
        dataset=spec.dataset,
        spec=spec,
        protection="plain",
        protection_msg=protection,
        roster=NODES,
        lifetime_ms=60_000,
    )
    return query_pb2.QueryRequestBody(
        header=h, spec=spec, protection=protection, statement=statement.to_proto()
    ).SerializeToString()


def test_findings_stay_fixed(site: Site) -> None:
    """What the fuzzer found, replayed: each is a clean refusal, not INTERNAL."""
    lit = common_pb2.Literal
    wheres = [
        query_pb2.Predicate(),  # a predicate with no kind
        query_pb2.Predicate(  # 'steel' against a REAL column
            comparison=query_pb2.Comparison(
                column="repair_hours", op="=", value=lit(string_value="steel")
            )
        ),
        query_pb2.Predicate(  # an order on a boolean: repair_hours < true
            comparison=query_pb2.Comparison(
                column="repair_hours", op="<", value=lit(bool_value=True)
            )
        ),
        query_pb2.Predicate(  # True, then 33, in one IN list
            in_list=query_pb2.InList(
                column="year", values=[lit(bool_value=True), lit(int_value=33)]
            )
        ),
    ]
    for where in wheres:
        spec = query_pb2.QuerySpec(
            dataset="pipe_incidents", aggregates=[query_pb2.Aggregate(func="count", column="*")]
        )
        spec.where.CopyFrom(where)
        _query(site, _plain(site, spec))
    # MIN over a text column
    spec = query_pb2.QuerySpec(
        dataset="pipe_incidents", aggregates=[query_pb2.Aggregate(func="min", column="material")]
    )
    _query(site, _plain(site, spec))


# -------------------------------------------------------------- protocol steps
def _open_jobs(site: Site) -> None:
    """Open a shares, secagg and ckks job at north (its aggregator), for steps to hit."""
    stub = site.stub("alice", query_pb2_grpc.QueryServiceStub)
    certs = [site.certs[n] for n in NODES]
    params = {
        "shares": protocol_pb2.SharesParams(
            aggregator_certificates=certs, participant_certificates=certs
        ),
        "secagg": protocol_pb2.SecAggParams(participant_certificates=certs, threshold=2),
        "ckks": protocol_pb2.CkksParams(
            public_context=CKKS, aggregator_certificate=certs[0], participant_certificates=certs
        ),
    }
    spec = query_pb2.QuerySpec(
        dataset="pipe_incidents", aggregates=[query_pb2.Aggregate(func="count", column="*")]
    )
    for mode, p in params.items():
        h = header()
        protection = query_pb2.Protection(
            mode=mode, fixed_point_bits=16, params=p.SerializeToString()
        )
        st_ = sign_job_statement(
            site.key,
            job_id=h.job_id,
            requester="alice",
            purpose=PURPOSE,
            operation="query",
            dataset="pipe_incidents",
            spec=spec,
            protection=mode,
            protection_msg=protection,
            roster=NODES,
            lifetime_ms=600_000,
        )
        body = query_pb2.QueryRequestBody(
            header=h, spec=spec, protection=protection, statement=st_.to_proto()
        )
        stub.Query(site.sign(body.SerializeToString()), timeout=60)
        site.open_jobs.append(h.job_id)


@fuzz(60)
@given(st.data())
def test_protocol_steps(site: Site, data: st.DataObject) -> None:
    job = data.draw(st.sampled_from([*site.open_jobs, "job-none"]))
    body = protocol_pb2.StepRequestBody(
        header=header(job),
        mode=data.draw(st.sampled_from(("shares", "secagg", "ckks", "plain", ""))),
        round=data.draw(st.integers(-1, 5).map(lambda r: r & 0xFFFFFFFF)),
        payload=data.draw(
            st.one_of(
                st.binary(max_size=200),
                messages(protocol_pb2.SealedBundle, depth=2).map(lambda m: m.SerializeToString()),
            )
        ),
    )
    raw = body.SerializeToString()
    raw = data.draw(st.one_of(st.just(raw), mutated(raw)))
    stub = site.stub("alice", protocol_pb2_grpc.ProtocolServiceStub)
    clean(lambda: stub.Step(site.sign(raw), timeout=60))


# --------------------------------------------------------------- intersection-sum
@st.composite
def psi_bodies(draw: st.DrawFn, cls: type) -> bytes:
    msg = draw(messages(cls, depth=3))
    if draw(st.booleans()):
        msg.header.CopyFrom(header())
        job = PsiJob(
            msg.header.job_id,
            IdsColumn("water-north", "taxpayers", "person_id"),
            ValuesColumns("water-east", "loans", "person_id", "amount"),
            draw(st.integers(1 << 2047, (1 << 2048) - 1)) | 1,
        )
        msg.job.CopyFrom(psi_serde.job_to_proto(job))
    raw = msg.SerializeToString()
    return draw(st.one_of(st.just(raw), mutated(raw)))


@fuzz(25)
@given(st.data())
def test_psi_blind(site: Site, data: st.DataObject) -> None:
    stub = site.stub("alice", psi_pb2_grpc.PsiServiceStub)
    signed = site.sign(data.draw(psi_bodies(psi_pb2.PsiBlindRequest)))
    clean(lambda: list(stub.Blind(signed, timeout=60)))


@fuzz(30)
@given(st.data(), st.sampled_from(("Exchange", "Intersect")))
def test_psi_relayed_steps(site: Site, data: st.DataObject, rpc: str) -> None:
    cls = psi_pb2.PsiExchangeRequest if rpc == "Exchange" else psi_pb2.PsiIntersectRequest
    frames = [psi_pb2.PsiUpload(request=site.sign(data.draw(psi_bodies(cls))))]
    for chunk in data.draw(st.lists(st.binary(max_size=100), max_size=2)):
        frames.append(psi_pb2.PsiUpload(chunk=chunk))
    if data.draw(st.integers(0, 9)) == 0:
        frames.reverse()  # chunks before the request
    stub = site.stub("alice", psi_pb2_grpc.PsiServiceStub)
    if rpc == "Exchange":
        clean(lambda: list(stub.Exchange(iter(frames), timeout=60)))
    else:
        clean(lambda: stub.Intersect(iter(frames), timeout=60))


# ------------------------------------------------------------------ training
@fuzz(30)
@given(messages(training_pb2.TrainingRequestBody, depth=3), st.data())
def test_open_training(
    site: Site, body: training_pb2.TrainingRequestBody, data: st.DataObject
) -> None:
    if data.draw(st.booleans()):
        body.header.CopyFrom(header())
    alice_cert = party_paths(site.fed.pki_dir, "analyst", "alice").cert.read_bytes()
    request = training_pb2.OpenTrainingRequest(
        requester_cert=data.draw(
            st.sampled_from((alice_cert, alice_cert[:200], b"", site.certs["water-east"]))
        ),
        request=site.sign(body.SerializeToString()),
    )
    stub = site.stub("supernode", training_pb2_grpc.TrainingServiceStub)
    clean(lambda: list(stub.OpenTraining(request, timeout=60)))


@fuzz(20)
@given(messages(training_pb2.RecordRoundRequest, depth=2))
def test_record_round(site: Site, request: training_pb2.RecordRoundRequest) -> None:
    stub = site.stub("supernode", training_pb2_grpc.TrainingServiceStub)
    clean(lambda: stub.RecordRound(request, timeout=30))


# ------------------------------------------------------------- ledger, witness
@fuzz(30)
@given(st.integers(0, 6), st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1))
def test_ledger_reads(site: Site, rpc: int, a: int, b: int) -> None:
    a, b = (a, b) if rpc % 2 else (a % 40, b % 40)
    stub = site.stub("regulator", ledger_pb2_grpc.LedgerServiceStub)
    calls = {
        0: lambda: stub.GetEntries(ledger_pb2.GetEntriesRequest(start=a, end=b), timeout=30),
        1: lambda: stub.GetEntries(ledger_pb2.GetEntriesRequest(start=a, end=b), timeout=30),
        2: lambda: stub.GetInclusionProof(
            ledger_pb2.GetInclusionProofRequest(index=a, tree_size=b), timeout=30
        ),
        3: lambda: stub.GetInclusionProof(
            ledger_pb2.GetInclusionProofRequest(index=a, tree_size=b), timeout=30
        ),
        4: lambda: stub.GetConsistencyProof(
            ledger_pb2.GetConsistencyProofRequest(size1=a, size2=b), timeout=30
        ),
        5: lambda: stub.GetConsistencyProof(
            ledger_pb2.GetConsistencyProofRequest(size1=a, size2=b), timeout=30
        ),
        6: lambda: stub.GetCheckpoint(ledger_pb2.GetCheckpointRequest(), timeout=30),
    }
    clean(calls[rpc])


@pytest.fixture(scope="module")
def east_checkpoint(site: Site) -> bytes:
    """East's signed checkpoint, as east itself would present it to its witness (north)."""
    east = site.fed.nodes[1]
    files = party_paths(site.fed.pki_dir, "auditor", "regulator")
    creds = grpc.ssl_channel_credentials(
        (site.fed.pki_dir / "ca.crt").read_bytes(), files.key.read_bytes(), files.cert.read_bytes()
    )
    with grpc.secure_channel(
        east.address, creds, options=[("grpc.ssl_target_name_override", east.spec.name)]
    ) as ch:
        cp = ledger_pb2_grpc.LedgerServiceStub(ch).GetCheckpoint(
            ledger_pb2.GetCheckpointRequest(), timeout=30
        )
    return bytes(cp.note)


@fuzz(40)
@given(st.data())
def test_witness_checkpoints(site: Site, east_checkpoint: bytes, data: st.DataObject) -> None:
    note = data.draw(
        st.one_of(mutated(east_checkpoint), st.binary(max_size=300), st.just(east_checkpoint))
    )
    request = ledger_pb2.AddCheckpointRequest(
        old_size=data.draw(st.sampled_from((0, 1, 5, (1 << 64) - 1))),
        consistency_proof=data.draw(st.lists(st.binary(min_size=0, max_size=40), max_size=3)),
        checkpoint=note,
    )
    stub = site.stub("peer", ledger_pb2_grpc.LedgerServiceStub)
    clean(lambda: stub.AddCheckpoint(request, timeout=30))


# ---------------------------------------------------------------- afterwards
def test_zz_nodes_answer_and_ledgers_verify(site: Site) -> None:
    """Run last: the nodes still answer; each ledger verifies; nothing before changed."""
    fed = site.fed
    assert all(n.process is not None and n.process.poll() is None for n in fed.nodes)
    r = Federation.from_file(fed.fed_toml).query(
        "SELECT COUNT(*) FROM pipe_incidents", purpose=PURPOSE, protection="plain"
    )
    assert r.rows[0][0] == 2 * 8 * 36
    fed.stop()
    for name in NODES:
        leaves = _leaves(fed, name)
        before = site.leaves[name]
        assert leaves[: len(before)] == before  # nothing recorded before was changed
        records = [decode_leaf(leaf)[1] for leaf in leaves[len(before) :]]
        assert records, f"{name} recorded nothing"
        for rec in records:
            assert rec.decision in {"approved", "released", "denied"}
            if rec.decision == "denied":
                assert rec.epsilon == 0.0 and rec.result_digest == ""
        key = load_signing_key(party_paths(fed.pki_dir, "node", name).signing_key)
        out = export_store(_ledger(fed, name), fed.root / f"export-{name}")
        report = verify_log(
            ExportDir(out),
            Policy({ledger_origin(name): log_verifier(ledger_origin(name), key)}),
            deep=True,
        )
        assert report.ok, report.findings
