"""Conversions between the training domain types and ``training.proto`` messages.

The only module (with the generated code) that touches ``training_pb2`` types: servicers,
the ClientApp and the ServerApp call these functions and nothing else.
"""

from __future__ import annotations

import base64
import binascii

from google.protobuf.message import DecodeError

from datafed.errors import ProtocolError
from datafed.fl.spec import (
    EVALUATION_LOSS_BOUND,
    DpParams,
    RoundEntry,
    TrainingGrant,
    TrainingSpec,
)
from datafed.proto.v1 import common_pb2, training_pb2
from datafed.wire.fields import from_message, to_message

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
    return to_message(training_pb2.DpParams, dp)


def dp_from_proto(msg: training_pb2.DpParams) -> DpParams:
    """Decode DP parameters; raise ValueError on an inconsistent set."""
    return from_message(DpParams, msg)


def spec_to_proto(spec: TrainingSpec) -> training_pb2.TrainingSpec:
    """Encode a training spec."""
    return to_message(training_pb2.TrainingSpec, spec, dp=dp_to_proto(spec.dp))


def spec_from_proto(msg: training_pb2.TrainingSpec) -> TrainingSpec:
    """Decode a training spec; raise ValueError/TypeError if it is invalid."""
    return _spec(msg)


def _spec(msg: training_pb2.TrainingSpec | training_pb2.TrainingGrant) -> TrainingSpec:
    """The training spec a spec message, or a grant (which repeats its fields), holds."""
    return from_message(TrainingSpec, msg, dp=dp_from_proto(msg.dp))


def parse_training_body(
    body: bytes,
) -> tuple[common_pb2.RequestHeader, training_pb2.TrainingRequestBody]:
    """Parse verified body bytes into ``(header, body)`` (for :func:`nodes.gate.open_signed`)."""
    msg = training_pb2.TrainingRequestBody.FromString(body)
    return msg.header, msg


def grant_to_proto(grant: TrainingGrant) -> training_pb2.TrainingGrant:
    """Encode a node's grant (without its ledger head, which the servicer adds)."""
    return to_message(
        training_pb2.TrainingGrant,
        grant.spec,
        node=grant.node,
        job_id=grant.job_id,
        dp=dp_to_proto(grant.spec.dp),
        num_rows=grant.num_rows,
        request_sha256=grant.request_sha256,
        evaluation_refused=grant.evaluation_refused,
        evaluation_loss_bound=grant.evaluation_loss_bound,
    )


def grant_from_proto(msg: training_pb2.TrainingGrant) -> TrainingGrant:
    """Decode a grant; raise :class:`ProtocolError` if the node sent something invalid."""
    try:
        spec = _spec(msg)
        bound = msg.evaluation_loss_bound or EVALUATION_LOSS_BOUND
        return TrainingGrant(
            msg.node,
            msg.job_id,
            spec,
            int(msg.num_rows),
            msg.request_sha256,
            evaluation_refused=msg.evaluation_refused,
            evaluation_loss_bound=bound,
        )
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"invalid training grant: {exc}") from exc


def round_to_proto(entry: RoundEntry) -> training_pb2.RecordRoundRequest:
    """Encode a round entry."""
    return to_message(training_pb2.RecordRoundRequest, entry)


def round_from_proto(msg: training_pb2.RecordRoundRequest) -> RoundEntry:
    """Decode a round entry; raise ValueError if it is invalid."""
    return from_message(RoundEntry, msg)


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
