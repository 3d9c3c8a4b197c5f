"""One collection task at this node: its parameters, keys, peer and durable state.

Built once at start from a ``[[collect]]`` block (:class:`nodes.config.CollectConfig`):

* the task's public parameters and ID (:class:`datafed.collect.TaskSpec`);
* the other aggregator's identity, from the certificate the block names, checked
  against the CAs the node trusts (:func:`datafed.pki.peers.verify_peer` on
  ``ctx.anchors_pem``: the home CA and recognised partners', so the other aggregator may
  be a node of a partner city, docs/federation.md);
* the **verification key** the two aggregators share and nobody else knows
  (draft-irtf-cfrg-vdaf §9.1: random, secret from clients, fixed before any report):
  HKDF-SHA256 of their X25519 agreement (each side's Ed25519 certificate key mapped to
  X25519, ``datafed/pki/peers.py``), salted with the task ID, so it needs no distribution
  and a changed task gets a new key;
* the Helper's X25519 secret, to open the input shares sealed to it;
* the task's database (:class:`nodes.collect.storage.CollectStore`): its SQLite file, or
  its schema in the PostgreSQL database of ``[collect_service]``.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from datafed.collect import TaskSpec
from datafed.errors import ConfigError
from datafed.pki.ca import Identity
from datafed.pki.peers import shared_secret, verify_peer, x25519_private
from datafed.protocols import CollectTask, Prio3
from nodes.collect.db import open_db
from nodes.collect.storage import SCHEMA, CollectStore
from nodes.config import CollectConfig, NodeConfig
from nodes.context import NodeContext

__all__ = ["TaskRuntime", "close_job_id", "verify_key_of"]

_KEY_INFO = b"datafed/collect/v1/verify-key"


def verify_key_of(own: Any, peer: Identity, task_id: bytes) -> bytes:
    """The VDAF verification key both aggregators derive alike (see module docs)."""
    hkdf = HKDF(hashes.SHA256(), 32, salt=task_id, info=_KEY_INFO)
    return hkdf.derive(shared_secret(own, peer))


def close_job_id(task: str, window: int) -> str:
    """The job id both aggregators record a window's close entry under."""
    return f"collect.{task}.{window}"


@dataclass
class TaskRuntime:
    """A task as this node runs it (see module docs)."""

    config: CollectConfig
    spec: TaskSpec
    task: CollectTask
    role: Literal["leader", "helper"]
    peer: Identity
    leader_pem: bytes
    helper_pem: bytes
    verify_key: bytes
    store: CollectStore
    #: The Helper's X25519 secret (empty at the Leader).
    x25519: bytes = b""
    #: Bytes of an encoded Helper input share (the sealed ciphertext is 16 more).
    helper_share_len: int = 0
    #: One window change at a time per task in this process.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def open(cls, ctx: NodeContext, config: CollectConfig) -> TaskRuntime:
        """Check the peer certificates, derive the keys, open the task's database."""
        return cls.open_parts(ctx.config, ctx.tls, ctx.signing_key, config, ctx.anchors_pem)

    @classmethod
    def open_parts(
        cls,
        node: NodeConfig,
        tls: Any,
        signing_key: Any,
        config: CollectConfig,
        anchors: bytes | None = None,
    ) -> TaskRuntime:
        """:meth:`open` from the node's configuration and keys (a worker has no ledger).

        ``anchors``: the CAs trusted (default: the home CA alone).
        """
        ca = tls.ca if anchors is None else anchors
        spec = config.spec()
        name = node.node.name
        role: Literal["leader", "helper"] = "leader" if config.leader.name == name else "helper"
        pems = {p.name: p.cert.read_bytes() for p in (config.leader, config.helper)}
        for pname, pem in pems.items():
            ident = verify_peer(pem, ca, role="node")
            if ident.name != pname:
                raise ConfigError(
                    f"collect {config.name!r}: {pname}'s certificate is {ident.name}'s"
                )
        own = verify_peer(pems[name], ca, role="node")
        if own.signing_key != tls.identity.signing_key:
            raise ConfigError(
                f"collect {config.name!r}: the certificate named for {name} is not ours"
            )
        other = config.helper.name if role == "leader" else config.leader.name
        peer = verify_peer(pems[other], ca, role="node")
        task = spec.collect_task()
        svc = node.collect_service
        db = open_db(svc.database, svc.password_env, node.node.state_dir, config.name, SCHEMA)
        store = CollectStore(db, spec.task_id, task.vdaf)
        rt = cls(
            config=config,
            spec=spec,
            task=task,
            role=role,
            peer=peer,
            leader_pem=pems[config.leader.name],
            helper_pem=pems[config.helper.name],
            verify_key=verify_key_of(signing_key, peer, spec.task_id),
            store=store,
            x25519=x25519_private(signing_key) if role == "helper" else b"",
            helper_share_len=_helper_share_len(task.vdaf),
        )
        return rt

    @property
    def name(self) -> str:
        """The task's name."""
        return self.config.name

    @property
    def task_id(self) -> bytes:
        """The task's ID."""
        return self.spec.task_id

    @property
    def vdaf(self) -> Prio3[Any, Any]:
        """The task's VDAF."""
        return self.task.vdaf

    def share_digest(self, agg: list[int]) -> str:
        """Hex SHA-256 of an encoded aggregate share (what a window's entry records)."""
        return hashlib.sha256(self.vdaf.encode_agg_share(agg)).hexdigest()


def _helper_share_len(vdaf: Prio3[Any, Any]) -> int:
    """Length of an encoded Helper input share: a seed, and a blind with joint randomness.

    Draft-irtf-cfrg-vdaf-20 §7.2.7: the Helper's share is XOF-derived from its seed.
    """
    return int(vdaf.xof.SEED_SIZE * (2 if vdaf.uses_joint_rand else 1))
