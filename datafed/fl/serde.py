"""Conversions between the training domain types and ``training.proto`` messages.

The only module (with the generated code) that touches ``training_pb2`` types: servicers,
the ClientApp and the ServerApp call these functions and nothing else.
"""

from __future__ import annotations

import base64
import binascii

from google.protobuf.message import DecodeError

from datafed.errors import ProtocolError
from datafed.fl.spec import DpParams, RoundEntry, TrainingGrant, TrainingSpec
from datafed.proto.v1 import common_pb2, training_pb2

__all__ = [
    "bundle_from_text",
    "bundle_to_text",
    "dp_from_proto",
    "dp_to_proto",
    "grant_from_proto",
    "grant_to_proto",
    "parse_training_body",
    "round_from_proto",
    "round_to_proto",
    "spec_from_proto",
    "spec_to_proto",
]

MAX_BUNDLE_BYTES = 1 << 20


def dp_to_proto(dp: DpParams) -> training_pb2.DpParams:
    """Encode DP parameters."""
    return training_pb2.DpParams(
        enabled=dp.enabled,
        epsilon_per_round=dp.epsilon_per_round,
        delta=dp.delta,
        clipping_norm=dp.clipping_norm,
    )


def dp_from_proto(msg: training_pb2.DpParams) -> DpParams:
    """Decode DP parameters; raise ValueError on an inconsistent set."""
    return DpParams(msg.enabled, msg.epsilon_per_round, msg.delta, msg.clipping_norm)


def spec_to_proto(spec: TrainingSpec) -> training_pb2.TrainingSpec:
    """Encode a training spec."""
    return training_pb2.TrainingSpec(
        dataset=spec.dataset,
        feature_columns=list(spec.feature_columns),
        label_column=spec.label_column,
        rounds=spec.rounds,
        dp=dp_to_proto(spec.dp),
        model=spec.model,
        secagg=spec.secagg,
    )


def spec_from_proto(msg: training_pb2.TrainingSpec) -> TrainingSpec:
    """Decode a training spec; raise ValueError/TypeError if it is invalid."""
    return TrainingSpec(
        dataset=msg.dataset,
        feature_columns=tuple(msg.feature_columns),
        label_column=msg.label_column,
        rounds=int(msg.rounds),
        dp=dp_from_proto(msg.dp),
        model=msg.model,
        secagg=msg.secagg,
    )


def parse_training_body(
    body: bytes,
) -> tuple[common_pb2.RequestHeader, training_pb2.TrainingRequestBody]:
    """Parse verified body bytes into ``(header, body)`` (for :func:`nodes.gate.open_signed`)."""
    msg = training_pb2.TrainingRequestBody.FromString(body)
    return msg.header, msg


def grant_to_proto(grant: TrainingGrant) -> training_pb2.TrainingGrant:
    """Encode a node's grant (without its ledger head, which the servicer adds)."""
    s = grant.spec
    return training_pb2.TrainingGrant(
        node=grant.node,
        job_id=grant.job_id,
        dataset=s.dataset,
        feature_columns=list(s.feature_columns),
        label_column=s.label_column,
        rounds=s.rounds,
        dp=dp_to_proto(s.dp),
        num_rows=grant.num_rows,
        request_sha256=grant.request_sha256,
        model=s.model,
        secagg=s.secagg,
    )


def grant_from_proto(msg: training_pb2.TrainingGrant) -> TrainingGrant:
    """Decode a grant; raise :class:`ProtocolError` if the node sent something invalid."""
    try:
        spec = TrainingSpec(
            dataset=msg.dataset,
            feature_columns=tuple(msg.feature_columns),
            label_column=msg.label_column,
            rounds=int(msg.rounds),
            dp=dp_from_proto(msg.dp),
            model=msg.model,
            secagg=msg.secagg,
        )
        return TrainingGrant(msg.node, msg.job_id, spec, int(msg.num_rows), msg.request_sha256)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"invalid training grant: {exc}") from exc


def round_to_proto(entry: RoundEntry) -> training_pb2.RecordRoundRequest:
    """Encode a round entry."""
    return training_pb2.RecordRoundRequest(
        job_id=entry.job_id,
        round=entry.round,
        phase=entry.phase,
        model_in_sha256=entry.model_in_sha256,
        update_out_sha256=entry.update_out_sha256,
        num_examples=entry.num_examples,
        secagg=entry.secagg,
    )


def round_from_proto(msg: training_pb2.RecordRoundRequest) -> RoundEntry:
    """Decode a round entry; raise ValueError if it is invalid."""
    return RoundEntry(
        job_id=msg.job_id,
        round=int(msg.round),
        phase=msg.phase,
        model_in_sha256=msg.model_in_sha256,
        update_out_sha256=msg.update_out_sha256,
        num_examples=int(msg.num_examples),
        secagg=msg.secagg,
    )


def bundle_to_text(
    job_id: str, requests: dict[str, common_pb2.SignedRequest], requester_cert: bytes = b""
) -> str:
    """Encode a job's signed per-node requests as base64 text for the Flower run config."""
    msg = training_pb2.TrainingBundle(job_id=job_id, requester_cert=requester_cert)
    for node, signed in sorted(requests.items()):
        msg.requests[node].CopyFrom(signed)
    return base64.b64encode(msg.SerializeToString(deterministic=True)).decode("ascii")


def bundle_from_text(text: str) -> training_pb2.TrainingBundle:
    """Decode :func:`bundle_to_text` output; raise :class:`ProtocolError` if malformed."""
    if len(text) > MAX_BUNDLE_BYTES * 4 // 3 + 4:
        raise ProtocolError("training bundle is too large")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        return training_pb2.TrainingBundle.FromString(raw)
    except (binascii.Error, UnicodeEncodeError, DecodeError) as exc:
        raise ProtocolError("training bundle is not valid") from exc
