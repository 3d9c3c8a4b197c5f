"""Which gateway a ClientApp uses to reach its node (:mod:`nodes.fl.gateway`).

:func:`gateway_for` picks the gRPC gateway of a real node (deployment, or a simulation
over real nodes) or the synthetic one (a simulation of many agencies on one machine),
from the SuperNode's ``node_config`` and the run config; one gateway per node and
process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datafed.fl.settings import RunSettings
from nodes.fl.errors import ClientAppError
from nodes.fl.gateway import NodeGateway

__all__ = ["NODE_ADDRESS_KEY", "NODE_CONFIG_KEY", "gateway_for"]

#: ``--node-config`` keys a datafed SuperNode is started with.
NODE_CONFIG_KEY = "datafed-node-config"
NODE_ADDRESS_KEY = "datafed-node-address"

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
