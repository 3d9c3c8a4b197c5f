"""PSI wire serde (jobs, frames, chunked payloads), row encodings, and the node's job table."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import datafed.psi
from datafed.pki.ca import Identity
from datafed.proto.v1 import common_pb2, psi_pb2
from datafed.psi import (
    IdsColumn,
    PsiJob,
    Statement,
    ValuesColumns,
    encode_identifier,
    identifier_set,
    value_pairs,
)
from datafed.psi import serde as psi_serde
from nodes.config import DatasetConfig, DatasetPolicy, DpPolicy, NodeConfig, NodeSection
from nodes.errors import InvalidRequest, NotFound, PermissionDenied, Unavailable
from nodes.policy import Use
from nodes.policy.rules import check
from nodes.psi.jobs import PendingJob, PendingJobs

N = (1 << 2047) + 1
names = st.from_regex(r"[a-z0-9][a-z0-9-]{0,12}", fullmatch=True)
idents = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)


@given(
    job_id=st.from_regex(r"[A-Za-z0-9._:-]{1,30}", fullmatch=True),
    ids=st.builds(IdsColumn, names.map(lambda s: "a" + s), idents, idents),
    values=st.builds(ValuesColumns, names.map(lambda s: "b" + s), idents, idents, idents),
    extra=st.integers(0, 2**2040).map(lambda k: 2 * k),
    bits=st.integers(0, 32),
)
def test_job_round_trips(job_id, ids, values, extra, bits) -> None:
    job = PsiJob(job_id, ids, values, N + extra, bits)
    assert psi_serde.job_from_proto(job_to_wire(job)) == job


def job_to_wire(job: PsiJob) -> psi_pb2.PsiJob:
    return psi_pb2.PsiJob.FromString(psi_serde.job_to_proto(job).SerializeToString())


def _job() -> PsiJob:
    return PsiJob(
        "job-1",
        IdsColumn("tax-bureau", "taxpayers", "person_id"),
        ValuesColumns("city-bank", "loans", "person_id", "amount"),
        N,
    )


def test_malformed_jobs_from_the_wire_say_what_is_wrong() -> None:
    msg = psi_serde.job_to_proto(_job())
    msg.ids.value_column = "amount"
    with pytest.raises(ValueError, match="the ids side names no value column"):
        psi_serde.job_from_proto(msg)
    msg = psi_serde.job_to_proto(_job())
    msg.values.dataset = "loans; --"
    with pytest.raises(ValueError, match="invalid identifier 'loans; --'"):
        psi_serde.job_from_proto(msg)
    msg = psi_serde.job_to_proto(_job())
    msg.paillier_n = b"\x01" * 64
    with pytest.raises(ValueError, match="got 505 bits"):
        psi_serde.job_from_proto(msg)


def test_step_requests_round_trip_and_need_their_parts() -> None:
    header = common_pb2.RequestHeader(requester="alice", node="city-bank", job_id="job-1")
    peer = Statement(b"cert", b"body", b"sig")
    body = psi_serde.relay_body("exchange", header, _job(), peer, b"\x01" * 64)
    step = psi_serde.step_from_proto(psi_pb2.PsiExchangeRequest.FromString(body))
    assert step.job == _job() and step.peer == peer
    assert step.payload == psi_serde.PayloadInfo.of(b"\x01" * 64)
    blind = psi_pb2.PsiBlindRequest.FromString(psi_serde.blind_body(header, _job()))
    assert psi_serde.step_from_proto(blind).peer is None
    bare = psi_pb2.PsiIntersectRequest(header=header, job=psi_serde.job_to_proto(_job()))
    with pytest.raises(ValueError, match="relays no peer statement or payload description"):
        psi_serde.step_from_proto(bare)
    with pytest.raises(ValueError, match="step must be 'exchange' or 'intersect', got 'blind'"):
        psi_serde.relay_body("blind", header, _job(), peer, b"")


@given(st.binary(max_size=3 * 1024), st.lists(st.integers(1, 700), min_size=1))
def test_receiver_reassembles_any_chunking(data: bytes, cuts: list[int]) -> None:
    recv = psi_serde.Receiver(psi_serde.PayloadInfo.of(data), limit=len(data))
    pos, i = 0, 0
    while pos < len(data):
        recv.add(data[pos : pos + cuts[i % len(cuts)]])
        pos += cuts[i % len(cuts)]
        i += 1
    assert recv.finish() == data


def test_receiver_refuses_long_short_tampered_and_oversize_payloads() -> None:
    info = psi_serde.PayloadInfo.of(b"abcdef")
    with pytest.raises(ValueError, match="payload of 6 bytes exceeds the limit of 5"):
        psi_serde.Receiver(info, limit=5)
    recv = psi_serde.Receiver(info, limit=6)
    recv.add(b"abc")
    with pytest.raises(ValueError, match="payload is 3 bytes, the request declared 6"):
        recv.finish()
    with pytest.raises(ValueError, match="longer than the declared 6 bytes"):
        recv.add(b"defg")
    recv.add(b"deX")
    with pytest.raises(ValueError, match="does not match its declared SHA-256"):
        recv.finish()


def test_frames_chunk_the_payload() -> None:
    payload = bytes(range(256)) * (psi_serde.CHUNK_BYTES // 128 + 3)
    frames = list(psi_serde.upload_frames(common_pb2.SignedRequest(body=b"b"), payload))
    assert frames[0].WhichOneof("frame") == "request"
    assert all(len(f.chunk) <= psi_serde.CHUNK_BYTES for f in frames[1:])
    assert b"".join(f.chunk for f in frames[1:]) == payload and len(frames) == 4
    down = list(
        psi_serde.download_frames("n", "j", Statement(b"c", b"b", b"s"), None, payload)  # type: ignore[arg-type]
    )
    st_, info = psi_serde.reply_from_proto(down[0].reply)
    assert st_ == Statement(b"c", b"b", b"s") and info == psi_serde.PayloadInfo.of(payload)


@given(st.integers(-(2**70), 2**70))
def test_integer_and_text_identifiers_match(i: int) -> None:
    assert encode_identifier(i) == encode_identifier(str(i))


def test_identifier_and_value_encodings() -> None:
    assert identifier_set(["a", None, "a", 7, b"\xff"]) == [b"a", b"7", b"\xff"]
    with pytest.raises(TypeError, match="identifiers must be text, integers or bytes, got float"):
        identifier_set([1.5])
    rows = [("a", 1.5), ("b", None), ("a", 2), (None, 99)]
    assert value_pairs(rows, 16) == [(b"a", (3 << 16) + (1 << 15)), (b"b", 0)]
    with pytest.raises(TypeError, match="values must be numbers, got str"):
        value_pairs([("a", "12")], 16)
    with pytest.raises(ValueError, match="non-finite"):
        value_pairs([("a", float("nan"))], 16)


def _all_sorted_key(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_psi_all_is_sorted_and_complete() -> None:
    names_ = datafed.psi.__all__
    assert names_ == sorted(names_, key=_all_sorted_key)
    public = {
        n
        for n, v in vars(datafed.psi).items()
        if not n.startswith("_") and type(v).__name__ != "module" and n != "annotations"
    }
    assert public == set(names_)


# ---------------------------------------------------------------- node policy and jobs
def _config(tmp_path, **policy) -> NodeConfig:
    return NodeConfig(
        node=NodeSection(name="tax-bureau"),
        tls={"ca": tmp_path, "cert": tmp_path, "key": tmp_path, "signing_key": tmp_path},
        datasets=[DatasetConfig(name="taxpayers", path=tmp_path, policy=DatasetPolicy(**policy))],
    )


ALICE = Identity("analyst", "alice", None)  # type: ignore[arg-type]
ALLOW = {
    "allowed_requesters": ["alice"],
    "allowed_purposes": ["research"],
    "allowed_operations": ["intersection_sum"],
    "identifier_columns": ["person_id"],
    "person_level": False,
}


@pytest.mark.parametrize(
    ("policy", "who", "purpose", "dataset", "columns", "error", "message"),
    [
        (ALLOW, ALICE, "research", "taxpayers", ["person_id"], None, ""),
        # DP is honoured now (noise at the ids node, budget charged at each DP node)
        (
            {**ALLOW, "dp": DpPolicy(epsilon_per_query=1, budget_epsilon=5)},
            ALICE,
            "research",
            "taxpayers",
            ["person_id"],
            None,
            "",
        ),
        (
            {**ALLOW, "allowed_operations": ["query"], "consortium": ["tax-bureau"]},
            ALICE,
            "research",
            "taxpayers",
            ["person_id"],
            PermissionDenied,
            "dataset 'taxpayers' does not allow intersection_sum",
        ),
        ({}, ALICE, "research", "taxpayers", ["person_id"], PermissionDenied, "does not allow"),
        (
            ALLOW,
            Identity("node", "city-bank", None),
            "research",
            "taxpayers",
            ["person_id"],  # type: ignore[arg-type]
            PermissionDenied,
            "role 'node' may not run intersection-sums",
        ),
        (
            ALLOW,
            Identity("analyst", "bob", None),
            "research",
            "taxpayers",
            ["person_id"],  # type: ignore[arg-type]
            PermissionDenied,
            "requester 'bob' is not allowed",
        ),
        (
            ALLOW,
            ALICE,
            "marketing",
            "taxpayers",
            ["person_id"],
            PermissionDenied,
            "purpose 'marketing' is not allowed",
        ),
        (
            ALLOW,
            ALICE,
            "research",
            "salaries",
            ["person_id"],
            NotFound,
            "unknown dataset 'salaries'",
        ),
        (ALLOW, ALICE, "research", "taxpayers", ["ssn"], InvalidRequest, "unknown column 'ssn'"),
        (
            {**ALLOW, "required_signoff": ["regulator-node"]},
            ALICE,
            "research",
            "taxpayers",
            ["person_id"],
            PermissionDenied,
            "requires sign-off by regulator-node; intersection_sum carries no sign-offs",
        ),
        (
            {**ALLOW, "allowed_columns": ["district"]},
            ALICE,
            "research",
            "taxpayers",
            ["person_id"],
            PermissionDenied,
            "column 'person_id' of 'taxpayers' is not allowed",
        ),
    ],
)
def test_check_psi(tmp_path, policy, who, purpose, dataset, columns, error, message) -> None:
    from datafed.wire.signing import new_header

    config = _config(tmp_path, **policy)
    exposed = ["person_id", "district"] if dataset == "taxpayers" else None
    use = Use(
        operation="intersection_sum",
        requester=who,
        header=new_header(who.name, "tax-bureau", "job-1", purpose),
        dataset=dataset,
        columns=frozenset(columns),
    )
    if error is None:
        assert check(use, config, exposed)
        return
    with pytest.raises(error, match=message):
        check(use, config, exposed)


def test_pending_jobs_are_bounded_single_use_and_expire() -> None:
    jobs = PendingJobs(limit=2, per_requester=2)
    mk = lambda who: PendingJob(None, who, "p", b"", 0)  # type: ignore[arg-type]  # noqa: E731
    jobs.put("j1", mk("alice"))
    with pytest.raises(InvalidRequest, match="job 'j1' is already in progress"):
        jobs.put("j1", mk("alice"))
    jobs.put("j1", mk("bob"))  # another requester's job of the same name
    with pytest.raises(Unavailable, match="2 intersection-sum jobs are in progress"):
        jobs.ensure_room("alice", "j2")
    assert jobs.pop("alice", "j1").requester == "alice"
    with pytest.raises(NotFound, match="no intersection-sum job 'j1' in progress"):
        jobs.pop("alice", "j1")
    late = mk("carol")
    late.expires = time.monotonic() - 1
    jobs.put("j3", late)
    with pytest.raises(NotFound):
        jobs.pop("carol", "j3")
    assert len(jobs) == 1
