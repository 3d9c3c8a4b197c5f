"""Everything a node's servicers share: config, identity, store, ledger, policy engine, caches."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from audit import DataUseRecord, Ledger, LedgerHead, ledger_origin
from datafed.pki import Identity, load_signing_key
from datafed.signing import RequestHeader, now_ms
from datafed.tls import TlsMaterial
from nodes.config import NodeConfig
from nodes.jobs import JobTable
from nodes.policy import PolicyEngine, ReleaseHistory
from nodes.replay import NonceStore
from nodes.store import DataStore

__all__ = ["NodeContext"]

log = logging.getLogger("datafed.node")


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
    #: Released row sets of exact datasets, for the differencing defence.
    history: ReleaseHistory
    #: Open jobs of stepped protection modes (in memory, bounded, expiring).
    jobs: JobTable = field(default_factory=JobTable)

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
        history = ReleaseHistory(state / "released.sqlite")
        return cls(config, tls, key, store, ledger, nonces, policy, history)

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

    def head(self) -> LedgerHead:
        """The ledger's current head."""
        return self.ledger.head()

    def close(self) -> None:
        """Close the ledger, replay cache and data store."""
        self.ledger.close()
        self.nonces.close()
        self.history.close()
        self.store.close()
