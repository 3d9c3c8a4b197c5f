"""The analyst's client: :class:`Federation` fans queries out to agency nodes."""

from datafed.client.config import FederationConfig, NodeEndpoint, load_federation
from datafed.client.federation import Federation, NodeInfo

__all__ = ["Federation", "FederationConfig", "NodeEndpoint", "NodeInfo", "load_federation"]
