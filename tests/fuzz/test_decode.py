"""Fuzzing what a node decodes from the wire, function by function: only documented errors.

Each decoder gets random bytes, random messages of its type (:mod:`tests.fuzz.protos`)
and edits of a valid message; it must return or raise what it documents -- the datafed
error tree or ``ValueError``/``TypeError`` where the caller maps them -- never anything
else, and never loop. ``tests/fuzz/test_rpc.py`` sends the same through real nodes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from datafed.errors import DatafedError, ProtocolError, QueryError, SignatureError
from datafed.fl import serde as fl_serde
from datafed.modes import MODES, NodeEnv, SteppedMode
from datafed.pki.ca import identity_from_pem, load_signing_key, party_paths
from datafed.proto.v1 import common_pb2, protocol_pb2, psi_pb2, query_pb2, training_pb2
from datafed.psi import serde as psi_serde
from datafed.query.sql import parse_sql
from datafed.wire.serde import header_to_proto, spec_from_proto, spec_to_proto
from datafed.wire.signing import new_header, sign_body
from datafed.wire.signoff import verify_signoff
from datafed.wire.statement import STATEMENT_CONTEXT, JobStatement, open_job_statement
from nodes.errors import NodeError
from nodes.gate import open_signed
from nodes.policy.signoff import parse_signoff_request
from nodes.query.job import parse_query
from nodes.replay import NonceStore
from tests.fuzz.protos import messages, mutated
from tests.fuzz.settings import fuzz

SPEC = spec_to_proto(
    parse_sql(
        "SELECT material, SUM(bursts), HISTOGRAM(repair_hours, 0, 1, 2) FROM pipe_incidents "
        "WHERE year IN (2023, 2024) AND NOT (month BETWEEN 1 AND 3 OR material = 'pvc') "
        "GROUP BY material"
    )
).SerializeToString()


def _same_on_the_wire(a: query_pb2.QuerySpec, b: query_pb2.QuerySpec) -> bool:
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def _spec(msg: query_pb2.QuerySpec) -> None:
    try:
        spec = spec_from_proto(msg)
    except (QueryError, ProtocolError):  # both documented (datafed.wire.serde)
        return
    again = spec_to_proto(spec)
    assert _same_on_the_wire(again, spec_to_proto(spec_from_proto(again)))


@fuzz(150)
@given(st.one_of(st.binary(max_size=300), mutated(SPEC)))
def test_spec_from_bytes(data: bytes) -> None:
    try:
        msg = query_pb2.QuerySpec.FromString(data)
    except DecodeError:
        return
    _spec(msg)


@fuzz(150)
@given(messages(query_pb2.QuerySpec, depth=6))
def test_spec_from_messages(msg: query_pb2.QuerySpec) -> None:
    _spec(msg)


# ---------------------------------------------------------------- job statement
@pytest.fixture(scope="module")
def alice(pki_dir: Path):  # type: ignore[no-untyped-def]
    files = party_paths(pki_dir, "analyst", "alice")
    return load_signing_key(files.signing_key), identity_from_pem(files.cert.read_bytes())


@fuzz(150)
@given(
    st.one_of(
        st.binary(max_size=200),
        messages(common_pb2.JobStatement).map(lambda m: m.SerializeToString()),
    )
)
def test_job_statement(alice, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    key, identity = alice
    signed = common_pb2.SignedStatement(statement=raw, signature=key.sign(STATEMENT_CONTEXT + raw))
    try:
        st_ = open_job_statement(signed, identity.signing_key)
    except ValueError:
        return
    assert JobStatement.from_proto(st_.statement.to_proto()) == st_.statement
    with pytest.raises(SignatureError):
        open_job_statement(
            common_pb2.SignedStatement(statement=raw + b"\x00", signature=signed.signature),
            identity.signing_key,
        )


# ---------------------------------------------------------- the gate, any body
BODIES = (
    ("query", parse_query, query_pb2.QueryRequestBody),
    ("step", lambda b: _parse(protocol_pb2.StepRequestBody, b), protocol_pb2.StepRequestBody),
    ("sign-off", parse_signoff_request, query_pb2.SignOffRequestBody),
    ("blind", lambda b: _parse(psi_pb2.PsiBlindRequest, b), psi_pb2.PsiBlindRequest),
    ("training", fl_serde.parse_training_body, training_pb2.TrainingRequestBody),
)


def _parse(cls, body: bytes):  # type: ignore[no-untyped-def]
    msg = cls.FromString(body)
    return msg.header, msg


@st.composite
def bodies(draw: st.DrawFn, cls) -> bytes:  # type: ignore[no-untyped-def]
    """A body of ``cls``: random, or with a valid header (so the gate parses further)."""
    msg = draw(messages(cls, depth=3))
    if draw(st.booleans()):
        h = new_header("alice", "water-north", draw(st.sampled_from(("job-1", "j" * 200))), "p")
        msg.header.CopyFrom(header_to_proto(h))
    data = msg.SerializeToString()
    return draw(st.one_of(st.just(data), mutated(data)))


@pytest.fixture(scope="module")
def nonces(tmp_path_factory: pytest.TempPathFactory) -> NonceStore:
    return NonceStore(tmp_path_factory.mktemp("nonces") / "nonces.sqlite")


@fuzz(60)
@given(st.sampled_from(BODIES).flatmap(lambda b: st.tuples(st.just(b), bodies(b[2]))))
def test_open_signed_any_body(alice, nonces, case) -> None:  # type: ignore[no-untyped-def]
    (_, parse, _cls), body = case
    key, identity = alice
    signed = common_pb2.SignedRequest(body=body, signature=sign_body(body, key))
    from datafed.wire.signing import now_ms

    try:
        open_signed(signed, identity, "water-north", nonces, now_ms(), parse)
    except NodeError:
        pass


# -------------------------------------------------------- decoders behind the gate
@fuzz(80)
@given(
    st.sampled_from(
        (psi_pb2.PsiBlindRequest, psi_pb2.PsiExchangeRequest, psi_pb2.PsiIntersectRequest)
    ).flatmap(lambda c: messages(c, depth=4))
)
def test_psi_step_requests(msg) -> None:  # type: ignore[no-untyped-def]
    try:
        psi_serde.step_from_proto(msg)
    except (ValueError, TypeError):  # what PsiServicer._open maps to INVALID_ARGUMENT
        pass


@fuzz(80)
@given(messages(training_pb2.TrainingSpec, depth=3))
def test_training_spec(msg: training_pb2.TrainingSpec) -> None:
    try:
        fl_serde.spec_from_proto(msg)
    except (ValueError, TypeError):  # what TrainingServicer maps to INVALID_ARGUMENT
        pass


@fuzz(60)
@given(messages(training_pb2.RecordRoundRequest, depth=2))
def test_training_rounds(msg: training_pb2.RecordRoundRequest) -> None:
    try:
        fl_serde.round_from_proto(msg)
    except (ValueError, TypeError):
        pass


@fuzz(60)
@given(messages(query_pb2.SignOff, depth=2))
def test_signoffs(pki_dir: Path, msg: query_pb2.SignOff) -> None:
    ca = (pki_dir / "ca.crt").read_bytes()
    try:
        verify_signoff(msg, ca)
    except SignatureError:
        pass


# -------------------------------------------------- protection modes, node side
@pytest.fixture(scope="module")
def env(pki_dir: Path) -> NodeEnv:
    files = party_paths(pki_dir, "node", "water-north")
    return NodeEnv(
        "water-north",
        "job-1",
        load_signing_key(files.signing_key),
        (pki_dir / "ca.crt").read_bytes(),
        binding="ab" * 32,
        roster=("water-north", "water-east"),
    )


PARAMS = {
    "paillier": None,
    "plain": None,
    "shares": protocol_pb2.SharesParams,
    "secagg": protocol_pb2.SecAggParams,
    "ckks": protocol_pb2.CkksParams,
}


@fuzz(80)
@given(
    st.sampled_from(sorted(MODES)),
    st.binary(max_size=120),
    st.lists(st.integers(-(1 << 64), 1 << 64), max_size=5),
)
def test_mode_protect_with_any_params(env: NodeEnv, mode: str, params: bytes, values) -> None:  # type: ignore[no-untyped-def]
    cls = MODES[mode]
    try:
        cls.protect(env, params, values)
    except (ValueError, OverflowError):  # what the node maps to INVALID_ARGUMENT
        pass


@fuzz(60)
@given(
    st.sampled_from([m for m in sorted(MODES) if issubclass(MODES[m], SteppedMode)]),
    st.integers(-2, 5),
    st.binary(max_size=120),
    st.sampled_from((None, object(), 0, b"")),
)
def test_mode_steps_with_any_payload(env: NodeEnv, mode, round_, payload, state) -> None:  # type: ignore[no-untyped-def]
    cls = MODES[mode]
    assert issubclass(cls, SteppedMode)
    try:
        cls.step(env, state, round_, payload)
    except (ValueError, ProtocolError):  # what ProtocolServicer maps to INVALID_ARGUMENT
        pass
    except DatafedError as exc:  # pragma: no cover - reported as a finding
        raise AssertionError(f"undocumented {type(exc).__name__}: {exc}") from exc
