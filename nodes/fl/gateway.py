"""How the ClientApp reaches its node's data and ledger: a small Protocol, two implementations.

- :class:`nodes.fl.grpc_gateway.GrpcGateway` (deployment, and simulations over real
  nodes): the node's ``TrainingService`` over mTLS on loopback, with the node's own
  certificate. The node checks the analyst's signed request, its policy and budget,
  and writes every decision and round to its ledger.
- :class:`nodes.fl.sim_gateway.SyntheticGateway` (simulation of many agencies on one
  machine): seeded synthetic rows per partition, every request granted, rounds kept in
  memory. It exists so Flower's simulation engine can run the same ClientApp for 20
  agencies without 20 node processes; it is never used by a SuperNode.

:func:`gateway_for` picks one from the SuperNode's ``node_config`` and the run config.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from datafed.fl.settings import RunSettings
from datafed.fl.spec import RoundEntry, TrainingGrant
from datafed.proto.v1 import common_pb2
from nodes.fl.errors import ClientAppError

__all__ = [
    "NODE_ADDRESS_KEY",
    "NODE_CONFIG_KEY",
    "NodeGateway",
    "Receipt",
    "TrainingData",
    "gateway_for",
]

#: ``--node-config`` keys a datafed SuperNode is started with.
NODE_CONFIG_KEY = "datafed-node-config"
NODE_ADDRESS_KEY = "datafed-node-address"

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

    def open(
        self,
        request: common_pb2.SignedRequest | None,
        requester_cert: bytes,
        *,
        with_rows: bool,
    ) -> TrainingData:
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


_CACHE: dict[tuple[str, ...], NodeGateway] = {}
_LOCK = threading.Lock()


def _cached(key: tuple[str, ...], make: Any) -> NodeGateway:
    with _LOCK:
        gw = _CACHE.get(key)
        if gw is None:
            gw = _CACHE[key] = make()
        return gw


def gateway_for(node_config: Mapping[str, Any], settings: RunSettings) -> NodeGateway:
    """Choose the gateway for this SuperNode (or simulated partition).

    Parameters
    ----------
    node_config : Mapping[str, Any]
        The SuperNode's ``--node-config``: ``datafed-node-config`` (path of the node's
        ``node.toml``) and optionally ``datafed-node-address``; in simulation Flower
        sets ``partition-id`` and ``num-partitions`` instead.
    settings : RunSettings
        The run's settings (``sim-nodes`` / ``sim-data`` for simulations).

    Raises
    ------
    ClientAppError
        If neither a node nor simulation data is configured.
    """
    if NODE_CONFIG_KEY in node_config:
        path = str(node_config[NODE_CONFIG_KEY])
        address = str(node_config.get(NODE_ADDRESS_KEY, ""))
        return _cached(("grpc", path, address), lambda: _grpc(Path(path), address))
    partition = node_config.get("partition-id")
    if isinstance(partition, int) and settings.sim_nodes:
        entries = json.loads(settings.sim_nodes)
        if not isinstance(entries, list) or not 0 <= partition < len(entries):
            raise ClientAppError(f"sim-nodes has no entry for partition {partition}")
        path, address = str(entries[partition][0]), str(entries[partition][1])
        return _cached(("grpc", path, address), lambda: _grpc(Path(path), address))
    if isinstance(partition, int) and settings.sim_data:
        from nodes.fl.sim_gateway import SyntheticGateway

        count = int(node_config.get("num-partitions", partition + 1))
        spec = settings.sim_data
        return _cached(
            ("sim", spec, str(partition), str(count)),
            lambda: SyntheticGateway.from_spec(spec, partition, count),
        )
    raise ClientAppError(
        f"this SuperNode has no datafed node: start it with --node-config "
        f"'{NODE_CONFIG_KEY}=\"/path/node.toml\"' (see nodes.fl.supernode)"
    )


def _grpc(path: Path, address: str) -> NodeGateway:
    from nodes.fl.grpc_gateway import GrpcGateway

    return GrpcGateway.from_node_config(path, address or None)
