"""Types of multi-step modes: node-side job state, the client's step session, the result.

A multi-step mode (``shares``, ``secagg``, ``ckks``) answers the Query with a first
payload, keeps per-job state at the node (:class:`JobStash`), and then exchanges signed
``Step`` calls with named nodes through the client (:class:`StepSession`) until it can
produce the totals (:class:`Combined`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from datafed.query.components import Component

__all__ = ["Combined", "JobStash", "NodeAnswer", "StepSession", "Totals"]


class JobStash(Protocol):
    """Where a node keeps one job's mode state between its Query and its steps.

    The node binds the stash to the job, the requester and the dataset; the mode only
    hands over its state.  :meth:`put` raises ValueError when the node cannot hold
    another job or already holds state for this one.
    """

    def put(self, state: object) -> None:
        """Keep ``state`` for the later steps of this job."""


class StepSession(Protocol):
    """The client's channel to the nodes of one job: signed ``Step`` calls.

    Raises :class:`~datafed.errors.NodeUnavailable` for a node that cannot be reached
    (a dropout) and :class:`~datafed.errors.RemoteError` for a node that refuses.
    """

    #: The job these steps belong to.
    job_id: str
    #: Hex digest of the job's statement (what the nodes bound their payloads to).
    binding: str

    async def step(self, node: str, round_: int, payload: bytes) -> bytes:
        """Send one step of this job's mode to ``node`` and return its reply payload."""


@dataclass(frozen=True)
class NodeAnswer:
    """One node's answer to the Query: its name and its mode payload."""

    node: str
    payload: bytes


@dataclass(frozen=True)
class Combined:
    """The totals a multi-step mode produced.

    Attributes
    ----------
    values
        Fixed-point totals, groups x components, group-major.
    nodes
        The nodes whose data the totals include (``secagg``: the survivors).
    error_bound
        Bound on the absolute error of every SUM and COUNT (approximate modes only).
    """

    values: list[int]
    nodes: tuple[str, ...]
    error_bound: float | None = None


@dataclass(frozen=True)
class Totals:
    """How a job's totals lie in one vector: groups x components, then one integrity value.

    Attributes
    ----------
    comps
        The components of every group, in order.
    n_groups
        Groups the vector holds, group-major.
    bits
        Fractional bits of the fixed-point components.
    """

    comps: tuple[Component, ...]
    n_groups: int
    bits: int

    @property
    def length(self) -> int:
        """Values in the vector: every group's components and the integrity value after them."""
        return self.n_groups * len(self.comps) + 1
