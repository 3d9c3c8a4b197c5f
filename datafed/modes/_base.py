"""The protection-mode interface: one small class per mode, both sides in one file.

A mode turns a node's vector of fixed-point values (groups x components, group-major)
into an opaque payload (node side, :meth:`ProtectionMode.protect`, static: no client
state). The client turns every node's payload into the vector of totals in one of two
ways, hence two kinds of mode (see ``docs/modes.md``):

- :class:`OneShotMode` -- the payloads combine at the client (:meth:`OneShotMode.combine`,
  with the mode's own client state such as a private key): ``plain``, ``paillier``;
- :class:`SteppedMode` -- the payloads start a protocol among the nodes, relayed by the
  client as signed ``Step`` calls (:meth:`SteppedMode.step` at a node,
  :meth:`SteppedMode.finish` at the client, which a mode implements as
  :meth:`SteppedMode.run_steps` over the vector's :class:`~datafed.modes._steps.Totals`):
  ``shares``, ``secagg``, ``ckks``.

Every mode binds what it produces to the job statement's digest (``binding``): masks,
checksums and sealed envelopes derive from it, so nodes that were given different
statements (different specs or rosters) produce garbage or a refusal, never one node's
value. Each mode owns its client options (``[modes.<name>]`` in ``fed.toml``) as a
pydantic model, :attr:`ProtectionMode.Options`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf.message import DecodeError, Message
from pydantic import BaseModel, ConfigDict, ValidationError

from datafed.errors import ConfigError
from datafed.modes._steps import Combined, JobStash, NodeAnswer, StepSession, Totals
from datafed.query.components import Component

__all__ = [
    "ModeContext",
    "ModeOptions",
    "NodeEnv",
    "OneShotMode",
    "ProtectionMode",
    "SteppedMode",
    "check_int64",
    "read_params",
]

_INT64 = 1 << 63
M = TypeVar("M", bound=Message)


class ModeOptions(BaseModel):
    """A mode's client options from ``[modes.<name>]`` (none by default).

    Each field is an argument of the mode's constructor, under the same name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ModeContext:
    """What the client tells a mode about the job it is about to run."""

    job_id: str
    #: Participating nodes (the statement's roster), in fan-out order.
    nodes: tuple[str, ...]
    #: Each participating node's certificate (PEM), as it presented it.
    certificates: Mapping[str, bytes]
    #: Hex digest of the job statement every participant receives (see datafed.wire.statement).
    binding: str = ""

    def certificates_of(self, nodes: Sequence[str]) -> list[bytes]:
        """The certificates of ``nodes``, in that order."""
        return [self.certificates[n] for n in nodes]


@dataclass(frozen=True)
class NodeEnv:
    """What a node hands a mode when protecting its values or running a step."""

    node: str
    job_id: str
    signing_key: ed25519.Ed25519PrivateKey
    ca_pem: bytes
    #: Hex digest of the job statement this node admitted: what payloads are bound to.
    binding: str
    #: The statement's roster: the nodes whose payloads may combine with this one.
    roster: tuple[str, ...] = ()
    #: The component of each value position, in order (modes that scale per component).
    components: tuple[Component, ...] = ()
    fixed_point_bits: int = 0
    #: Where a stepped mode keeps this job's state for its later steps.
    stash: JobStash | None = None
    #: The fewest nodes whose data may make up a released total (dataset policy).
    min_participants: int = 2
    #: Nodes whose data every released total must include (dataset policy): a mode that
    #: survives dropouts releases nothing without any of them.
    required: tuple[str, ...] = ()
    #: Who asked (the authenticated requester): whose quota a cached key counts against.
    requester: str = ""


class ProtectionMode(ABC):
    """One protection mode (``docs/modes.md``): what both sides of every mode share."""

    #: Name on the wire, in policies and on the command line.
    name: ClassVar[str]
    #: One line for ``--help`` and the docs: how it protects and what the analyst learns.
    summary: ClassVar[str]
    #: Whether nodes report a common group domain so the analyst cannot tell which
    #: node had which group.
    hides_groups: ClassVar[bool] = True
    #: Whether only additive components (sum, count, sumsq, bins) are possible.
    additive_only: ClassVar[bool] = True
    #: The client options this mode takes from ``fed.toml``.
    Options: ClassVar[type[ModeOptions]] = ModeOptions

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> ProtectionMode:
        """Build the client side from ``[modes.<name>]`` options; ConfigError if invalid."""
        try:
            opts = cls.Options.model_validate(dict(options or {}))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"modes.{cls.name}.{where}: {first['msg']}") from None
        return cls._from(opts)

    @classmethod
    def _from(cls, options: ModeOptions) -> ProtectionMode:
        """The client side for validated options: each option is a constructor argument."""
        return cls(**dict(options))

    @staticmethod
    def check_params(env: NodeEnv, params: bytes) -> None:
        """Refuse ``params`` that are wrong whatever the data (node side); ValueError.

        A node runs this before admission: what it checks depends only on the request,
        the statement's roster and the certificates, never on a row, so a refusal here
        is charged nothing and says nothing about the data (docs/invisibility.md, the
        release rule). :meth:`protect` checks the same again. Default: nothing to check.
        """
        return None

    @staticmethod
    @abstractmethod
    def protect(env: NodeEnv, params: bytes, values: Sequence[int]) -> bytes:
        """Protect a node's values (node side); raise ValueError on bad params."""

    @abstractmethod
    async def params(self, ctx: ModeContext) -> bytes:
        """Parameters every node needs (client side), e.g. the analyst's public key."""

    def attachment(self, node: str, *, needed: bool = False) -> bytes:
        """What the query to ``node`` carries beside the params (client side).

        Key material the params name by digest (``ckks``: the public context), for a node
        that may not hold it yet; ``needed``: the node said it does not. Default: none.
        """
        return b""

    def answered(self, node: str) -> None:
        """``node`` answered a query of this mode: it holds what the params name."""
        return None


class OneShotMode(ProtectionMode):
    """A mode whose node payloads combine at the client in one step."""

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


class SteppedMode(ProtectionMode):
    """A mode whose node payloads start a protocol of signed steps among the nodes."""

    #: Names of the node-side steps after the Query, rounds 1..n.
    steps: ClassVar[tuple[str, ...]]

    @classmethod
    @abstractmethod
    def step(cls, env: NodeEnv, state: object, round_: int, payload: bytes) -> bytes:
        """Run node-side step ``round_`` of a job on its stashed state; ValueError if bad."""

    async def finish(
        self,
        session: StepSession,
        answers: Sequence[NodeAnswer],
        comps: Sequence[Component],
        n_groups: int,
        bits: int,
    ) -> Combined:
        """Drive the steps through ``session`` and return the totals (client side)."""
        return await self.run_steps(session, answers, Totals(tuple(comps), n_groups, bits))

    @abstractmethod
    async def run_steps(
        self, session: StepSession, answers: Sequence[NodeAnswer], totals: Totals
    ) -> Combined:
        """The mode's client side of :meth:`finish`, for totals laid out as ``totals``."""


def read_params(message_type: type[M], params: bytes, mode: str) -> M:
    """A mode's parameters as the node received them; ValueError if they do not parse."""
    try:
        return message_type.FromString(params)
    except DecodeError as exc:
        raise ValueError(f"malformed {mode} parameters") from exc


def check_int64(values: Sequence[int]) -> None:
    """Refuse values that do not fit a signed 64-bit integer."""
    for v in values:
        if not -_INT64 <= v < _INT64:
            raise OverflowError("aggregate does not fit in 64 bits; lower fixed_point_bits")
