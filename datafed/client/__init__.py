"""The analyst's client: :class:`Federation` fans queries out to agency nodes."""

# The one transport and the one receipt check are public for the other clients
# (datafed.collect).
from datafed.client._receipts import node_receipt
from datafed.client._transport import SignedBody, Transport
from datafed.client.config import FederationConfig, NodeEndpoint, load_federation
from datafed.client.federation import Federation, NodeInfo

__all__ = [
    "Federation",
    "FederationConfig",
    "NodeEndpoint",
    "NodeInfo",
    "SignedBody",
    "Transport",
    "load_federation",
    "node_receipt",
]
