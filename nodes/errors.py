"""Errors raised inside an agency node, each mapped to one gRPC status code.

Hierarchy (status code in brackets)::

    NodeError                         [INTERNAL]  (a datafed.errors.DatafedError)
    ├── InvalidRequest                [INVALID_ARGUMENT]  malformed request, unknown column
    │   ├── RequestFault              [INVALID_ARGUMENT]  the request's own fault, found
    │   │                                                 while a release runs
    │   └── ContextMissing            [FAILED_PRECONDITION] send the key material the
    │                                                     params name by digest (ckks)
    ├── ReleaseFailed                 [ABORTED]           a release failed: one fixed text
    ├── NotFound                      [NOT_FOUND]         unknown dataset
    ├── Unauthenticated               [UNAUTHENTICATED]   bad signature, expired, replayed
    ├── PermissionDenied              [PERMISSION_DENIED] policy refuses requester/purpose/...
    ├── BudgetExhausted               [RESOURCE_EXHAUSTED] privacy budget would be exceeded
    ├── QuotaExceeded                 [RESOURCE_EXHAUSTED] a requester's share is used up
    ├── DeadlineExceeded              [DEADLINE_EXCEEDED] a request or call ran past its time
    └── Unavailable                   [UNAVAILABLE]       the node is shutting down

:func:`status_of` is the single place where errors become status codes.

Only the release gate (``nodes/release/``) reads data, so only its failures can depend
on the data: the gate turns every failure but a :class:`RequestFault` (the request's own,
said without the data) into :class:`ReleaseFailed`, whose text is fixed; the real reason
goes to the ledger entry's private part (:mod:`nodes.rpc`).
"""

from __future__ import annotations

import grpc

from datafed.errors import DatafedError

__all__ = [
    "BudgetExhausted",
    "ContextMissing",
    "DeadlineExceeded",
    "InvalidRequest",
    "NodeError",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "ReleaseFailed",
    "RequestFault",
    "Unauthenticated",
    "Unavailable",
    "status_of",
]


class NodeError(DatafedError):
    """Base of node errors; the message is safe to send to the caller before admission."""

    code = grpc.StatusCode.INTERNAL


class ReleaseFailed(NodeError):
    """A release failed after admission; the caller reads one fixed text (module docs)."""

    code = grpc.StatusCode.ABORTED

    def __init__(self, private_reason: str) -> None:
        super().__init__(
            "the job failed at this node after it was admitted; what it was admitted with is "
            "spent (the reason is in the node's ledger, for its auditors)"
        )
        #: What went wrong, for the ledger entry's private part only.
        self.private_reason = private_reason


class InvalidRequest(NodeError):
    """The request is malformed or names something that does not exist in the dataset."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class RequestFault(InvalidRequest):
    """The request's own fault, found only while it runs, and said without the data.

    Its text reaches the caller (a literal that does not bind to its column's type; more
    groups than a mode that shows every group may carry).
    """


class ContextMissing(InvalidRequest):
    """A public context named by digest that this node does not hold for the requester.

    Refused before admission, charged nothing; the client resends the query with it.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION


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
    """A requester used up its share of a node resource (open jobs, calls in flight)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(NodeError):
    """A call's request did not arrive in time, or the call ran past the node's limit."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(NodeError):
    """The node cannot serve right now."""

    code = grpc.StatusCode.UNAVAILABLE


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Return the status code and caller-safe message for ``exc``."""
    if isinstance(exc, NodeError):
        return exc.code, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error"
