"""Errors raised inside an agency node, each mapped to one gRPC status code.

Hierarchy (status code in brackets)::

    NodeError                         [INTERNAL]  (a datafed.errors.DatafedError)
    ├── InvalidRequest                [INVALID_ARGUMENT]  malformed request, unknown column
    │   └── RequestFault              [INVALID_ARGUMENT]  the request's own fault, shown
    │                                                     even after admission
    ├── NotFound                      [NOT_FOUND]         unknown dataset
    ├── Unauthenticated               [UNAUTHENTICATED]   bad signature, expired, replayed
    ├── PermissionDenied              [PERMISSION_DENIED] policy refuses requester/purpose/...
    ├── BudgetExhausted               [RESOURCE_EXHAUSTED] privacy budget would be exceeded
    ├── QuotaExceeded                 [RESOURCE_EXHAUSTED] a requester's share of jobs is used
    └── Unavailable                   [UNAVAILABLE]       the node is shutting down

:func:`status_of` is the single place where errors become status codes.

After a use is admitted a refusal could tell the caller something about the data, so
:mod:`nodes.rpc` sends one fixed text instead (:data:`AFTER_ADMISSION`) and keeps the
real reason in the ledger entry's private part -- except for a :class:`RequestFault`,
whose text depends only on the request.
"""

from __future__ import annotations

import grpc

from datafed.errors import DatafedError

__all__ = [
    "AFTER_ADMISSION",
    "BudgetExhausted",
    "InvalidRequest",
    "NodeError",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "RequestFault",
    "Unauthenticated",
    "Unavailable",
    "status_of",
]


class NodeError(DatafedError):
    """Base of node errors; the message is safe to send to the caller before admission."""

    code = grpc.StatusCode.INTERNAL
    #: Whether the text may reach the caller after the use was admitted (module docs).
    shown_after_admission = False


#: What a caller reads when its use failed after admission, whatever the reason.
AFTER_ADMISSION = (
    grpc.StatusCode.ABORTED,
    "the job failed at this node after it was admitted; what it was admitted with is spent "
    "(the reason is in the node's ledger, for its auditors)",
)


class InvalidRequest(NodeError):
    """The request is malformed or names something that does not exist in the dataset."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class RequestFault(InvalidRequest):
    """The request's own fault, found only while it runs, and said without the data.

    Its text may reach the caller even after admission (a literal that does not bind to
    its column's type; more groups than a mode that shows every group may carry).
    """

    shown_after_admission = True


class NotFound(NodeError):
    """The request names a dataset this node does not serve."""

    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(NodeError):
    """The caller or the request signature could not be authenticated."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(NodeError):
    """The node's policy refuses the request."""

    code = grpc.StatusCode.PERMISSION_DENIED


class BudgetExhausted(NodeError):
    """The privacy budget would be exceeded."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class QuotaExceeded(NodeError):
    """A requester used up its share of a node resource (open jobs, pending jobs)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(NodeError):
    """The node cannot serve right now."""

    code = grpc.StatusCode.UNAVAILABLE


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Return the status code and caller-safe message for ``exc``."""
    if isinstance(exc, NodeError):
        return exc.code, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error"
