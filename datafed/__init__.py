"""datafed: privacy-preserving data exchange across agencies.

Data stays with its owner ("available but invisible"): analysts run protected
aggregate queries and federated training across agency nodes, and every use of
data is recorded in each node's verifiable ledger.

This module stays light: importing :mod:`datafed` pulls in no torch, tenseal or
flwr.  The analyst's entry point is :class:`datafed.client.Federation`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
