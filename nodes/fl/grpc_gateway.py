"""The ClientApp's line to its own node: ``TrainingService`` over mTLS on loopback.

The SuperNode's ClientApp presents the node's *own* certificate (role ``node``, the
node's name): the node serves training rows to nobody else. gRPC status codes become
:class:`nodes.fl.errors.GatewayRefused` with the node's reason.

Rows a job was granted are kept for that job while this process lives (a simulation
worker serves many rounds; a SuperNode's ClientApp process serves one message), so later
rounds do not stream them again; every round is still recorded at the node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np

from datafed.errors import ProtocolError
from datafed.fl.serde import grant_from_proto, round_to_proto
from datafed.fl.spec import RoundEntry
from datafed.pki.tls import TlsMaterial, channel_credentials
from datafed.proto.v1 import training_pb2, training_pb2_grpc
from nodes.config import load_node_config
from nodes.fl.errors import GatewayRefused, GatewayUnavailable
from nodes.fl.gateway import Presented, Receipt, TrainingData

__all__ = ["GrpcGateway"]

T = TypeVar("T")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _loopback(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):
        host = "127.0.0.1"
    return f"{host}:{port}"


class GrpcGateway:
    """Talk to one node's TrainingService with that node's own mTLS identity.

    Parameters
    ----------
    node : str
        The node's name (must match its certificate).
    address : str
        ``host:port`` of the node's gRPC server.
    tls : TlsMaterial
        The node's CA, certificate and key.
    timeout_s : float
        Deadline of each call.
    """

    def __init__(self, node: str, address: str, tls: TlsMaterial, timeout_s: float = 120.0) -> None:
        self._node = node
        self.address = address
        self.timeout_s = timeout_s
        self._channel = grpc.secure_channel(
            address,
            channel_credentials(tls),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._stub = training_pb2_grpc.TrainingServiceStub(self._channel)
        self._rows: dict[bytes, TrainingData] = {}

    @classmethod
    def from_node_config(cls, path: Path, address: str | None = None) -> GrpcGateway:
        """Build from the node's ``node.toml`` (``address`` overrides its listen address)."""
        cfg = load_node_config(path)
        tls = TlsMaterial.load(cfg.tls)
        return cls(cfg.node.name, address or _loopback(cfg.node.listen), tls)

    @property
    def node(self) -> str:
        """The node's name."""
        return self._node

    def _refused(self, exc: grpc.RpcError) -> GatewayRefused:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = (exc.details() if hasattr(exc, "details") else "") or ""
        if code in _UNAVAILABLE:
            return GatewayUnavailable(
                code.name, f"node {self._node!r} at {self.address}: {details}"
            )
        return GatewayRefused(code.name, details)

    def open(self, presented: Presented, *, with_rows: bool) -> TrainingData:
        """Present the analyst's request; return the grant and, if asked, the rows."""
        request = presented.request
        if request is None:
            raise GatewayRefused("INVALID_ARGUMENT", "no signed training request for this node")
        key = hashlib.sha256(request.body + b"\x00" + request.signature).digest()
        if with_rows and key in self._rows:
            return self._rows[key]
        call = self._stub.OpenTraining(
            training_pb2.OpenTrainingRequest(
                request=request, requester_cert=presented.requester_cert
            ),
            timeout=self.timeout_s,
        )
        try:
            data = self._read(call, with_rows)
        except grpc.RpcError as exc:
            raise self._refused(exc) from exc
        finally:
            call.cancel()
        if with_rows:
            self._rows = {key: data}  # one job at a time per node and process
        return data

    def _read(self, call: Iterator[training_pb2.TrainingData], with_rows: bool) -> TrainingData:
        first = next(call, None)
        if first is None or first.WhichOneof("kind") != "grant":
            raise ProtocolError("the node's training stream did not start with a grant")
        grant = grant_from_proto(first.grant)
        if not with_rows:
            return TrainingData(grant)
        width = len(grant.spec.feature_columns)
        feats: list[np.ndarray[tuple[int], np.dtype[np.float64]]] = []
        labels: list[np.ndarray[tuple[int], np.dtype[np.float64]]] = []
        for msg in call:
            if msg.WhichOneof("kind") != "rows":
                raise ProtocolError("unexpected message in the node's training stream")
            feats.append(np.asarray(msg.rows.features, dtype=np.float64))
            labels.append(np.asarray(msg.rows.labels, dtype=np.float64))
        x = np.concatenate(feats) if feats else np.zeros(0)
        y = np.concatenate(labels) if labels else np.zeros(0)
        if x.size != y.size * width or y.size != grant.num_rows:
            raise ProtocolError("the node's training rows do not match its grant")
        return TrainingData(grant, x.reshape(-1, width).astype(np.float32), y.astype(np.float32))

    def record(self, entry: RoundEntry) -> Receipt:
        """Record one round at the node; raise GatewayRefused if the node refuses."""
        try:
            res = self._stub.RecordRound(round_to_proto(entry), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise self._refused(exc) from exc
        return Receipt(int(res.entry_index), float(res.epsilon_charged))

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
