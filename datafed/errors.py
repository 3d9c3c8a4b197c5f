"""The one error tree of datafed (library, node and tools).

Every error datafed raises on purpose derives from :class:`DatafedError`; each package
keeps its own branch in its own ``errors.py``, and names are unique across the tree::

    DatafedError
    ├── ConfigError            a configuration file or value is invalid (names the field)
    ├── PkiError               certificates and keys: missing, malformed, wrong role or CA
    ├── QueryError             the query text or spec is not in the supported SQL subset
    ├── SignatureError         a signed request or statement does not verify (detail-free)
    ├── ProtocolError          a peer sent something that does not fit the protocol
    │   └── InvalidEnvelope        datafed.modes.errors: a sealed envelope does not open
    ├── RemoteError            a node refused or failed a request; names the node and status
    │   └── NodeUnavailable        a node could not be reached in time
    ├── NodeNameMismatch       the node at an address presents another node's certificate
    ├── HazmatError            datafed.hazmat.errors: a primitive's check failed (detail-free)
    ├── MachineError           datafed.protocols.errors: a protocol state machine refused
    ├── PsiError               datafed.psi.errors: intersection-sum
    ├── TrainingError          datafed.fl.errors: a federated training job
    ├── ClientAppError         nodes.fl.errors: the agency's ClientApp
    └── NodeError              nodes.errors: refused at a node, one gRPC status per class

The ledger package ``audit`` keeps a root of its own, :class:`audit.errors.AuditError`,
because it imports nothing from the rest of the repository (the layering rule in
``docs/architecture.md``). Lower-level errors (grpc, cryptography, pydantic) are
translated at the boundary with ``raise ... from exc``; the three command-line tools map
this tree to exit codes through each class's ``exit_code`` (one table,
:class:`audit.errors.ExitCode`).
"""

from __future__ import annotations

from audit.errors import ExitCode


class DatafedError(Exception):
    """Base class of every error datafed raises on purpose."""

    #: The command-line tools exit with this code (:class:`audit.errors.ExitCode`).
    exit_code = ExitCode.USAGE


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

    exit_code = ExitCode.REFUSED

    def __init__(self, node: str, code: str, message: str) -> None:
        self.node = node
        self.code = code
        self.message = message
        super().__init__(f"node {node!r}: {code}: {message}")


class NodeNameMismatch(DatafedError):
    """The node at an address presents another node's certificate (a wrong name or address).

    Parameters
    ----------
    node
        The name the federation file gives.
    message
        What the node's certificate says instead.
    """

    def __init__(self, node: str, message: str) -> None:
        self.node = node
        super().__init__(message)


class NodeUnavailable(RemoteError):
    """A node could not be reached before the deadline."""

    exit_code = ExitCode.UNREACHABLE
