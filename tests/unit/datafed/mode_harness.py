"""In-memory harness for multi-step protection modes: real certificates, no network.

Each node gets a real CA-issued certificate and signing key; ``run`` calls every node's
``protect``, then the mode's client ``finish`` with a :class:`LocalSession` that routes
each step to the named node's ``step`` and records the bytes every party receives.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed import pki
from datafed.errors import NodeUnavailable
from datafed.modes import (
    Combined,
    ModeContext,
    NodeAnswer,
    NodeEnv,
    ProtectionMode,
    hold_context,
)
from datafed.query.components import Component

NODES = ("water-north", "water-east", "water-south")
COMPS = (Component("sum", "x"), Component("count", "*"))
BITS = 16


@dataclass
class Pki:
    ca_pem: bytes
    certs: dict[str, bytes]
    keys: dict[str, ed25519.Ed25519PrivateKey]
    other_ca_certs: dict[str, bytes]
    analyst_cert: bytes


def make_pki(root: Path) -> Pki:
    pki.init_ca(root / "a")
    pki.init_ca(root / "b")
    certs, keys, other = {}, {}, {}
    for name in (*NODES, "water-west"):
        files = pki.issue(root / "a", "node", name)
        certs[name] = files.cert.read_bytes()
        keys[name] = pki.load_signing_key(files.signing_key)
        other[name] = pki.issue(root / "b", "node", name).cert.read_bytes()
    analyst = pki.issue(root / "a", "analyst", "alice").cert.read_bytes()
    return Pki((root / "a" / "ca.crt").read_bytes(), certs, keys, other, analyst)


@pytest.fixture(scope="session")
def mode_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("modes-pki"))


class ListStash:
    def __init__(self) -> None:
        self.states: list[object] = []

    def put(self, state: object) -> None:
        self.states.append(state)


@dataclass
class Received:
    """What one step carried: (node, round, request payload, reply payload)."""

    node: str
    round: int
    request: bytes
    reply: bytes


@dataclass
class LocalSession:
    mode: type[ProtectionMode]
    job_id: str
    binding: str
    envs: Mapping[str, NodeEnv]
    states: Mapping[str, object]
    #: node -> first round it no longer answers (a dropout)
    drop_at: dict[str, int] = field(default_factory=dict)
    #: rewrite a request before the node sees it: (node, round, payload) -> payload
    tamper_request: Callable[[str, int, bytes], bytes] | None = None
    #: rewrite a reply before the analyst sees it
    tamper_reply: Callable[[str, int, bytes], bytes] | None = None
    log: list[Received] = field(default_factory=list)

    async def step(self, node: str, round_: int, payload: bytes) -> bytes:
        if round_ >= self.drop_at.get(node, 1 << 30):
            raise NodeUnavailable(node, "UNAVAILABLE", "dropped")
        if self.tamper_request is not None:
            payload = self.tamper_request(node, round_, payload)
        reply = self.mode.step(self.envs[node], self.states.get(node), round_, payload)  # type: ignore[attr-defined]
        if self.tamper_reply is not None:
            reply = self.tamper_reply(node, round_, reply)
        self.log.append(Received(node, round_, payload, reply))
        return reply


@dataclass
class Run:
    answers: list[NodeAnswer]
    session: LocalSession
    combined: Combined | None = None


class Harness:
    """Three (or more) nodes with real certificates, one job."""

    def __init__(self, p: Pki, job_id: str = "job-test", nodes: Sequence[str] = NODES) -> None:
        self.pki = p
        self.job_id = job_id
        self.nodes = tuple(nodes)
        self.stashes = {n: ListStash() for n in self.nodes}
        #: Stands in for the job statement's digest (the same for every node of the job).
        self.binding = binding_of(job_id)
        #: Nodes every released total must include (the dataset's consortium or
        #: ``required_participants``, as the node's JobBinding carries them).
        self.required: tuple[str, ...] = ()

    def env(
        self,
        node: str,
        job_id: str | None = None,
        comps: Sequence[Component] = COMPS,
        binding: str | None = None,
    ) -> NodeEnv:
        return NodeEnv(
            node,
            job_id or self.job_id,
            self.pki.keys[node],
            self.pki.ca_pem,
            binding=binding or (binding_of(job_id) if job_id else self.binding),
            roster=self.nodes,
            components=tuple(comps),
            fixed_point_bits=BITS,
            stash=self.stashes[node],
            required=self.required,
        )

    def ctx(self) -> ModeContext:
        return ModeContext(
            job_id=self.job_id,
            nodes=self.nodes,
            certificates={n: self.pki.certs[n] for n in self.nodes},
            binding=self.binding,
        )

    def admit(self, mode: ProtectionMode, params: bytes) -> None:
        """What each node does before admission: ckks holds the context for the job."""
        if mode.name == "ckks":
            for n in self.nodes:
                hold_context("", self.job_id, params, mode.attachment(n), 60.0)

    def protect(self, mode: ProtectionMode, values: Mapping[str, Sequence[int]]) -> Run:
        params = asyncio.run(mode.params(self.ctx()))
        self.admit(mode, params)
        answers = [
            NodeAnswer(n, type(mode).protect(self.env(n), params, values[n])) for n in self.nodes
        ]
        states = {n: s.states[-1] for n, s in self.stashes.items() if s.states}
        envs = {n: self.env(n) for n in self.nodes}
        return Run(answers, LocalSession(type(mode), self.job_id, self.binding, envs, states))

    def finish(self, mode: ProtectionMode, run: Run, n_groups: int) -> Combined:
        run.combined = asyncio.run(
            mode.finish(run.session, run.answers, COMPS, n_groups, BITS)  # type: ignore[attr-defined]
        )
        return run.combined

    def run(
        self, mode: ProtectionMode, values: Mapping[str, Sequence[int]], **session: object
    ) -> Run:
        run = self.protect(mode, values)
        for k, v in session.items():
            setattr(run.session, k, v)
        n_groups = len(next(iter(values.values()))) // len(COMPS)
        self.finish(mode, run, n_groups)
        return run


def binding_of(job_id: str) -> str:
    """A stand-in statement digest for a job id."""
    return hashlib.sha256(f"statement of {job_id}".encode()).hexdigest()


def plain_total(
    values: Mapping[str, Sequence[int]], nodes: Sequence[str] | None = None
) -> list[int]:
    picked = [values[n] for n in (nodes or values)]
    return [sum(col) for col in zip(*picked, strict=True)]


def chi_square_nibbles(samples: Sequence[int]) -> float:
    """Chi-square statistic of the top 4 bits of 64-bit samples against uniform."""
    counts = [0] * 16
    for s in samples:
        counts[(s >> 60) & 0xF] += 1
    expected = len(samples) / 16
    return sum((c - expected) ** 2 / expected for c in counts)


#: Chi-square critical value for 15 degrees of freedom, p < 1e-6 (survival at 57 is
#: 8.2e-7): a uniform sample exceeds it less than once in a million runs; a constant or
#: skewed one exceeds it at once.
CHI2_15_P1E6 = 57.0
