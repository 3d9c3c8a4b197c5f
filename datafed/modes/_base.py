"""The protection-mode interface: one small class per mode, both sides in one file.

A mode turns a node's vector of fixed-point values (groups x components, group-major)
into an opaque payload (node side, :meth:`ProtectionMode.protect`, static: no client
state), and combines the payloads of all nodes into the vector of totals (client side,
:meth:`ProtectionMode.combine`, with the mode's own client state such as a private key).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.errors import ProtocolError
from datafed.query.components import Component
from datafed.query.modes._steps import Combined, JobStash, NodeAnswer, StepSession

__all__ = ["ModeContext", "NodeEnv", "ProtectionMode", "check_int64"]

_INT64 = 1 << 63


@dataclass(frozen=True)
class ModeContext:
    """What the client tells a mode about the query it is about to run."""

    job_id: str
    #: Participating nodes, in fan-out order.
    nodes: tuple[str, ...]
    #: Each participating node's certificate (PEM), as it presented it.
    certificates: Mapping[str, bytes]


@dataclass(frozen=True)
class NodeEnv:
    """What a node hands a mode when protecting its values."""

    node: str
    job_id: str
    signing_key: ed25519.Ed25519PrivateKey
    ca_pem: bytes
    #: The component of each value position, in order (modes that scale per component).
    components: tuple[Component, ...] = ()
    fixed_point_bits: int = 0
    #: Where a multi-step mode keeps this job's state for its later steps.
    stash: JobStash | None = None


class ProtectionMode(ABC):
    """One protection mode (DESIGN §3)."""

    #: Name on the wire and in policies.
    name: ClassVar[str]
    #: Whether nodes report a common group domain so the analyst cannot tell which
    #: node had which group.
    hides_groups: ClassVar[bool] = True
    #: Whether only additive components (sum, count, sumsq) are possible.
    additive_only: ClassVar[bool] = True

    @staticmethod
    @abstractmethod
    def protect(env: NodeEnv, params: bytes, values: Sequence[int]) -> bytes:
        """Protect a node's values (node side); raise ValueError on bad params."""

    #: Whether :meth:`params` needs the nodes' certificates in its context.
    needs_certificates: ClassVar[bool] = False

    @abstractmethod
    async def params(self, ctx: ModeContext) -> bytes:
        """Parameters every node needs (client side), e.g. the analyst's public key."""

    #: Names of the node-side steps after the Query, rounds 1..n (multi-step modes);
    #: for them :meth:`finish` replaces :meth:`combine`.
    steps: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def step(cls, env: NodeEnv, state: object, round_: int, payload: bytes) -> bytes:
        """Run node-side step ``round_`` of a job on its stashed state; ValueError if bad."""
        raise ValueError(f"protection {cls.name!r} has no steps")

    async def finish(
        self,
        session: StepSession,
        answers: Sequence[NodeAnswer],
        comps: Sequence[Component],
        n_groups: int,
        bits: int,
    ) -> Combined:
        """Drive the steps through ``session`` and return the totals (multi-step modes)."""
        raise ProtocolError(f"protection {self.name!r} has no steps")

    @abstractmethod
    def combine(
        self, payloads: Sequence[bytes], comps: Sequence[Component], n_groups: int
    ) -> list[int]:
        """Combine every node's payload into the totals (client side).

        Raises
        ------
        ProtocolError
            If a payload is malformed or out of range.
        """


def check_int64(values: Sequence[int]) -> None:
    """Refuse values that do not fit a signed 64-bit integer."""
    for v in values:
        if not -_INT64 <= v < _INT64:
            raise OverflowError("aggregate does not fit in 64 bits; lower fixed_point_bits")
