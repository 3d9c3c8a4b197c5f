"""The analyst's relay: regroup the envelopes nodes sealed to their aggregators."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import DecodeError

from datafed.errors import ProtocolError
from datafed.modes._steps import NodeAnswer
from datafed.proto.v1 import protocol_pb2

__all__ = ["collect_sealed"]


def collect_sealed(answers: Sequence[NodeAnswer]) -> dict[str, protocol_pb2.SealedBundle]:
    """Per recipient, one envelope from each answering node, in answer order.

    Raises
    ------
    ProtocolError
        If a payload is malformed, or the nodes do not all address the same recipients
        exactly once each.
    """
    if not answers:
        raise ProtocolError("no node answered")
    out: dict[str, protocol_pb2.SealedBundle] = {}
    expected: list[str] | None = None
    for answer in answers:
        try:
            items = list(protocol_pb2.SealedBundle.FromString(answer.payload).items)
        except DecodeError as exc:
            raise ProtocolError(f"node {answer.node!r} sent a malformed payload") from exc
        recipients = [i.recipient for i in items]
        if len(set(recipients)) != len(recipients) or not recipients:
            raise ProtocolError(f"node {answer.node!r} addressed an aggregator twice or none")
        if expected is None:
            expected = recipients
        elif sorted(recipients) != sorted(expected):
            raise ProtocolError(f"node {answer.node!r} addressed other aggregators")
        for item in items:
            out.setdefault(item.recipient, protocol_pb2.SealedBundle()).items.append(item)
    return out
