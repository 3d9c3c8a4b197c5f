"""Errors raised by the datafed library (the analyst's side).

Hierarchy::

    DatafedError
    ├── ConfigError          a configuration file or value is invalid (names the field)
    ├── PkiError             certificates and keys: missing, malformed, wrong role or CA
    ├── QueryError           the query text or spec is not in the supported subset
    ├── SignatureError       a signed request or statement does not verify (detail-free)
    ├── ProtocolError        a peer sent something that does not fit the protocol
    └── RemoteError          a node refused or failed a request; names the node and status
        └── NodeUnavailable  a node could not be reached in time

Lower-level errors (grpc, cryptography, pydantic) are translated at the boundary with
``raise ... from exc`` so callers only ever handle this tree.
"""

from __future__ import annotations


class DatafedError(Exception):
    """Base class of every error datafed raises on purpose."""


class ConfigError(DatafedError):
    """A configuration file or value is invalid; the message names the field."""


class PkiError(DatafedError):
    """A certificate or key is missing, malformed, of the wrong role or from another CA."""


class QueryError(DatafedError):
    """The query is not in the supported SQL subset or does not fit the spec."""


class SignatureError(DatafedError):
    """A signature did not verify. Carries no detail, to give no oracle."""

    def __init__(self) -> None:
        super().__init__("signature verification failed")


class ProtocolError(DatafedError):
    """A peer sent a message that does not fit the protocol (malformed, out of range)."""


class RemoteError(DatafedError):
    """A node refused or failed a request.

    Parameters
    ----------
    node
        Name of the node that answered (or did not).
    code
        The gRPC status code name, e.g. ``"PERMISSION_DENIED"``.
    message
        The node's one-line explanation.
    """

    def __init__(self, node: str, code: str, message: str) -> None:
        self.node = node
        self.code = code
        self.message = message
        super().__init__(f"node {node!r}: {code}: {message}")


class NodeUnavailable(RemoteError):
    """A node could not be reached before the deadline."""
