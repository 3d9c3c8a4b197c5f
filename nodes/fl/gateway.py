"""How the ClientApp reaches its node's data and ledger: a small Protocol, two implementations.

- :class:`nodes.fl.grpc_gateway.GrpcGateway` (deployment, and simulations over real
  nodes): the node's ``TrainingService`` over mTLS on loopback, with the node's own
  certificate. The node checks the analyst's signed request, its policy and budget,
  and writes every decision and round to its ledger.
- :class:`nodes.fl.sim_gateway.SyntheticGateway` (simulation of many agencies on one
  machine): seeded synthetic rows per partition, every request granted, rounds kept in
  memory. It exists so Flower's simulation engine can run the same ClientApp for 20
  agencies without 20 node processes; it is never used by a SuperNode.

:func:`nodes.fl.connect.gateway_for` picks one from the SuperNode's ``node_config`` and
the run config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from datafed.fl.spec import RoundEntry, TrainingGrant
from datafed.proto.v1 import common_pb2

__all__ = ["NodeGateway", "Presented", "Receipt", "TrainingData"]

Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TrainingData:
    """A grant and, when asked for, the approved rows (features row-major, labels)."""

    grant: TrainingGrant
    x: Floats | None = None
    y: Floats | None = None


@dataclass(frozen=True)
class Receipt:
    """The node's acknowledgement of a recorded round."""

    entry_index: int
    epsilon_charged: float


class NodeGateway(Protocol):
    """What the ClientApp needs from its node."""

    @property
    def node(self) -> str:
        """The node's name."""
        ...

    def open(self, presented: Presented, *, with_rows: bool) -> TrainingData:
        """Present the analyst's signed request; return the grant (and rows).

        Raises
        ------
        GatewayRefused
            If the node refuses (status name and the node's reason).
        """
        ...

    def record(self, entry: RoundEntry) -> Receipt:
        """Record one round at the node before anything leaves; raise GatewayRefused if refused."""
        ...


@dataclass(frozen=True)
class Presented:
    """What a SuperNode presents to its node: the analyst's signed request and certificate."""

    request: common_pb2.SignedRequest | None
    requester_cert: bytes
