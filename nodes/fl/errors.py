"""Errors of the agency's Flower ClientApp.

Hierarchy::

    DatafedError                (datafed.errors)
    └── ClientAppError          the ClientApp cannot take part as asked
        ├── GatewayRefused      the node refused (carries the gRPC status name and reason)
        └── GatewayUnavailable  the node could not be reached on loopback

The ClientApp turns these into Flower error replies or ``refused`` open answers, so the
analyst's run names the node, the status and the node's reason.
"""

from __future__ import annotations

from datafed.errors import DatafedError

__all__ = ["ClientAppError", "GatewayRefused", "GatewayUnavailable"]


class ClientAppError(DatafedError):
    """The ClientApp cannot take part in the job as asked."""


class GatewayRefused(ClientAppError):
    """The node refused a training call.

    Parameters
    ----------
    code : str
        gRPC status name, e.g. ``"PERMISSION_DENIED"``.
    reason : str
        The node's one-line reason.
    """

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


class GatewayUnavailable(GatewayRefused):
    """The node did not answer on loopback."""
