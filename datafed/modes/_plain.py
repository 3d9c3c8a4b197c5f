"""``plain``: fixed-point aggregates in the clear, for data the policy marks as visible.

Who learns what: the analyst receives every node's groups and values and combines them
itself, so it learns each node's contribution, not only the total. Use it only where a
dataset's policy allows ``plain`` ("visible data available for use").
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import DecodeError

from datafed.errors import ProtocolError
from datafed.modes._base import ModeContext, NodeEnv, OneShotMode, check_int64
from datafed.proto.v1 import modes_pb2
from datafed.query.components import Component

__all__ = ["PlainMode"]


class PlainMode(OneShotMode):
    """Cleartext totals; MIN and MAX allowed; each node's groups and values are visible."""

    name = "plain"
    summary = "cleartext: the analyst sees each node's aggregates (visible data only)"
    hides_groups = False
    additive_only = False

    @staticmethod
    def protect(env: NodeEnv, params: bytes, values: Sequence[int]) -> bytes:
        """Send the values as they are."""
        check_int64(values)
        return modes_pb2.PlainPayload(values=list(values)).SerializeToString()

    async def params(self, ctx: ModeContext) -> bytes:
        """Plain mode needs no parameters."""
        return b""

    def combine(
        self, payloads: Sequence[bytes], comps: Sequence[Component], n_groups: int
    ) -> list[int]:
        """Add (or take MIN/MAX of) each value across nodes."""
        vectors = []
        for raw in payloads:
            try:
                values = list(modes_pb2.PlainPayload.FromString(raw).values)
            except DecodeError as exc:
                raise ProtocolError("malformed plain payload") from exc
            if len(values) != n_groups * len(comps):
                raise ProtocolError("plain payload has the wrong number of values")
            vectors.append(values)
        out = []
        for i, column in enumerate(zip(*vectors, strict=True)):
            kind = comps[i % len(comps)].kind
            out.append(
                min(column) if kind == "min" else max(column) if kind == "max" else sum(column)
            )
        return out
