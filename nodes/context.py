"""Everything a node's servicers share: config, identity, store, ledger, policy engine, caches."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from cryptography.hazmat.primitives.asymmetric import ed25519

from audit import DataUseRecord, Ledger, LedgerHead, ledger_origin
from datafed.errors import ConfigError
from datafed.modes import NodeEnv
from datafed.pki.ca import Identity, load_signing_key
from datafed.pki.tls import TlsMaterial
from datafed.proto.v1 import query_pb2
from datafed.wire.signing import RequestHeader, now_ms
from nodes.config import NodeConfig
from nodes.fair import FairPool
from nodes.metrics import Metrics
from nodes.policy import PolicyEngine
from nodes.query.jobs import JobBinding, JobTable
from nodes.replay import NonceStore
from nodes.stores import DataStore

__all__ = ["NodeContext", "ReloadRefused"]

log = logging.getLogger("datafed.node")


class ReloadRefused(ConfigError):
    """A policy reload the node refused; ``index`` is its ``denied`` ledger entry."""

    def __init__(self, reason: str, index: int) -> None:
        super().__init__(reason)
        self.index = index


@dataclass
class NodeContext:
    """Shared state of one running node."""

    config: NodeConfig
    tls: TlsMaterial
    signing_key: ed25519.Ed25519PrivateKey
    store: DataStore
    ledger: Ledger
    nonces: NonceStore
    #: Admission of every use: rules, sign-offs, job ids and privacy budgets.
    policy: PolicyEngine
    #: Open jobs of stepped protection modes (in memory, bounded, expiring).
    jobs: JobTable = field(default_factory=JobTable)
    #: Threads for the blocking work of calls, shared fairly across requesters.
    fair: FairPool = field(default_factory=FairPool)
    #: Counters and histograms for ``node.metrics_listen`` (:mod:`nodes.metrics`).
    metrics: Metrics = field(default_factory=Metrics)

    @classmethod
    def open(cls, config: NodeConfig) -> NodeContext:
        """Load keys, open datasets, the ledger and the replay cache."""
        tls = TlsMaterial.load(config.tls)
        if tls.identity.role != "node" or tls.identity.name != config.node.name:
            from datafed.errors import PkiError

            raise PkiError(
                f"tls.cert is for {tls.identity}, but this node is node:{config.node.name}"
            )
        key = load_signing_key(config.tls.signing_key)
        state: Path = config.node.state_dir
        state.mkdir(parents=True, exist_ok=True)
        store = DataStore(config.datasets)
        ledger = Ledger.open(
            state / "ledger.sqlite",
            ledger_origin(config.node.name),
            key,
            sign_within_s=config.node.sign_within_s,  # every entry signed soon
        )
        policy = PolicyEngine(
            config, {n: store.columns(n) for n in store.names()}, config.node.name, tls.ca
        )
        policy.replay(ledger)
        nonces = NonceStore(state / "nonces.sqlite")
        return cls(config, tls, key, store, ledger, nonces, policy)

    @property
    def name(self) -> str:
        """This node's name."""
        return self.config.node.name

    @property
    def identity(self) -> Identity:
        """This node's own identity."""
        return self.tls.identity

    async def record(
        self,
        *,
        caller: Identity | None,
        header: RequestHeader | None,
        dataset: str,
        operation: str,
        protection: str,
        decision: str,
        reason: str,
        request_digest: str,
        result_digest: str = "",
        epsilon: float = 0.0,
        details: Mapping[str, str] | None = None,
        private: Mapping[str, str] | None = None,
    ) -> int:
        """Append a data-use record; return its index once it is durable.

        ``details`` are public (an analyst's receipt shows them); ``private`` holds what
        only auditors may read -- data-dependent, per-node facts such as how many groups
        were suppressed -- and enters the leaf only as a salted commitment.
        """
        record = DataUseRecord(
            node=self.name,
            requester=caller.name if caller else "unauthenticated",
            requester_role=caller.role if caller else "",
            dataset=dataset,
            purpose=header.purpose if header else "",
            legal_basis=header.legal_basis if header else "",
            operation=operation,
            protection=protection,
            request_digest=request_digest,
            result_digest=result_digest,
            decision=decision,
            reason=reason[:1000],
            epsilon=epsilon,
            job_id=header.job_id if header else "",
            time_ms=now_ms(),
            details=dict(details or {}),
        )
        index = await self.ledger.append_async(record, private=private)
        self.metrics.record(operation, decision)
        log.info(
            "ledger[%d] %s %s by %s on %r: %s",
            index,
            decision,
            operation,
            record.requester,
            dataset,
            reason,
        )
        return index

    async def reload(self, config: NodeConfig) -> int:
        """Adopt a new configuration's policies without a restart; return the ledger entry.

        Only what the policy engine reads may change -- dataset policies (domains, DP,
        allowlists...) and sign-off grants; a change to the node section, TLS files or
        dataset sources needs a restart and is refused.  The new file must also pass
        exactly what ``check-config`` checks (:func:`nodes.config.preflight.preflight`,
        against the datasets this node has open).  A refusal is recorded as denied and
        raised (:class:`ReloadRefused`, carrying the entry).  The engine is rebuilt and
        replays the ledger, so budgets and used job ids carry over under the new limits;
        requests already admitted finish under the old policy.
        """
        from nodes.config.preflight import preflight

        changed = _policy_changes(self.config, config)
        reason = "policy reloaded: " + (", ".join(changed) or "no change")
        if _sources(self.config) != _sources(config):
            await self.refuse_reload(
                "reload may change policies and sign-off grants only; the node section, "
                "TLS files or dataset sources changed: restart the node"
            )
        stores = {n: self.store.dataset(n) for n in self.store.names()}
        found = await asyncio.to_thread(preflight, config, stores)
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            await self.refuse_reload(found[0] + more)
        policy = PolicyEngine(
            config, {n: self.store.columns(n) for n in self.store.names()}, self.name, self.tls.ca
        )
        policy.replay(self.ledger)
        index = await self._record_reload(
            "approved", reason[:1000], {"config": _policy_digest(config)}
        )
        self.config, self.policy = config, policy
        return index

    async def refuse_reload(self, reason: str) -> NoReturn:
        """Record a refused reload as denied and raise it (:class:`ReloadRefused`)."""
        index = await self._record_reload("denied", reason)
        raise ReloadRefused(reason, index)

    async def _record_reload(
        self, decision: str, reason: str, details: Mapping[str, str] | None = None
    ) -> int:
        """The ledger entry of a policy reload, by this node itself."""
        return await self.record(
            caller=self.identity,
            header=None,
            dataset="",
            operation="policy_reload",
            protection="",
            decision=decision,
            reason=reason,
            request_digest="",
            details=details,
        )

    def mode_env(self, job_id: str, bound: JobBinding) -> NodeEnv:
        """The environment a protection mode runs in for ``job_id``, bound to its statement."""
        return NodeEnv(
            self.name,
            job_id,
            self.signing_key,
            self.tls.ca,
            binding=bound.binding,
            roster=bound.roster,
            min_participants=bound.min_participants,
            required=bound.required,
        )

    def head(self) -> LedgerHead:
        """The ledger's current head."""
        return self.ledger.head()

    def head_proto(self, indexes: Sequence[int] = ()) -> query_pb2.LedgerHead:
        """The ledger's current head on the wire, naming ``indexes`` (the one builder)."""
        head = self.ledger.head()
        return query_pb2.LedgerHead(
            origin=head.origin,
            size=head.size,
            root_hash=head.root_hash,
            entry_indexes=list(indexes),
        )

    def close(self) -> None:
        """Close the ledger, replay cache and data store."""
        self.ledger.close()
        self.nonces.close()
        self.store.close()


def _sources(config: NodeConfig) -> object:
    """What a reload may not change: the node section, TLS files, dataset sources."""
    return (
        config.node.model_dump(),
        config.tls.model_dump(),
        [d.model_dump(exclude={"policy"}) for d in config.datasets],
        config.witness.model_dump() if config.witness else None,
        config.publish.model_dump() if config.publish else None,
    )


def _policy_changes(old: NodeConfig, new: NodeConfig) -> list[str]:
    """Names of the datasets whose policy changed, and ``signoff`` if the grants did."""
    before = {d.name: d.policy for d in old.datasets}
    out = [d.name for d in new.datasets if before.get(d.name) != d.policy]
    if old.signoff != new.signoff:
        out.append("signoff")
    return out


def _policy_digest(config: NodeConfig) -> str:
    """SHA-256 of the policies and grants in force (what the ledger entry names)."""
    body = json.dumps(
        {
            "datasets": {d.name: d.policy.model_dump(mode="json") for d in config.datasets},
            "signoff": [g.model_dump(mode="json") for g in config.signoff],
        },
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()
