"""Partner federations at the node: recognition added and withdrawn, live, recorded.

A node's partners are the trust bundles in ``<state_dir>/partners``
(:class:`datafed.pki.trust.TrustStore`), which ``datafed-node partners add`` and
``remove`` write and delete. The serving node

- accepts TLS client certificates from the home CA and every recognised partner's CA,
  re-read for each new connection (:func:`server_credentials`);
- checks every call's certificate against the CAs recognised *now*
  (:func:`nodes.gate.peer_identity`), so a withdrawal stops every partner request at
  once, on connections already open too;
- records each recognition and withdrawal in its ledger (:func:`record_changes`, run
  every :data:`POLL_S` seconds by :func:`watch`), operation ``partner_added`` or
  ``partner_removed`` by the node itself.

See docs/federation.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import grpc

from datafed.pki.identity import split_name
from datafed.pki.trust import PartnerBundle, TrustStore
from nodes.config import NodeConfig
from nodes.context import NodeContext
from nodes.errors import PermissionDenied

__all__ = [
    "POLL_S",
    "add_partner",
    "check_roster",
    "partners_dir",
    "record_changes",
    "remove_partner",
    "server_credentials",
    "watch",
]

log = logging.getLogger("datafed.node")
#: How often a serving node looks for partner changes to record (the gate sees them at once).
POLL_S = 0.5


def partners_dir(config: NodeConfig) -> Path:
    """Where a node's partner bundles live: ``<state_dir>/partners``."""
    return config.node.state_dir / "partners"


def add_partner(config: NodeConfig, bundle: PartnerBundle) -> Path:
    """Recognise a partner federation at this node (checked first); return the bundle file.

    Raises
    ------
    PkiError
        The bundle cannot be recognised: no home federation name, the home federation's
        own name, a CA that speaks for another federation, a missing CRL file.
    """
    home = TrustStore(config.tls.ca.read_bytes())
    return bundle.check(home.federation).write(partners_dir(config))


def remove_partner(config: NodeConfig, federation: str) -> bool:
    """Withdraw recognition of ``federation``; return whether it was recognised."""
    return PartnerBundle.withdraw(partners_dir(config), federation)


def check_roster(ctx: NodeContext, roster: Sequence[str]) -> None:
    """Refuse a job naming a party of a federation this node does not recognise now.

    A node releases into a job only if it recognises every participant: its home
    federation's nodes and those of partners still recognised (a withdrawn partner's
    node in the roster refuses the whole job here, before anything is read).

    Raises
    ------
    PermissionDenied
        Naming the first participant of an unrecognised federation.
    """
    trust = ctx.trust
    if trust is None:
        return
    known = {trust.federation, *trust.partners()}
    for name in roster:
        federation = split_name(name)[0]
        if federation not in known:
            raise PermissionDenied(
                f"the job's roster names {name!r} of federation {federation!r}, which this "
                "node does not recognise (never added, or withdrawn): it takes no part"
            )


def server_credentials(ctx: NodeContext) -> grpc.ServerCredentials:
    """MTLS credentials whose client roots are the CAs trusted now, re-read per connection."""
    trust = ctx.trust
    assert trust is not None
    key_pair = [(ctx.tls.key, ctx.tls.cert)]
    state = {"roots": trust.tls_roots_pem()}

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        roots = trust.tls_roots_pem()
        if roots == state["roots"]:
            return None  # unchanged: keep the configuration in force
        state["roots"] = roots
        return grpc.ssl_server_certificate_configuration(key_pair, root_certificates=roots)

    first = grpc.ssl_server_certificate_configuration(key_pair, root_certificates=state["roots"])
    return grpc.dynamic_ssl_server_credentials(first, fetch, require_client_authentication=True)


async def record_changes(ctx: NodeContext) -> int:
    """Record every partner recognised or withdrawn since the last call; return how many."""
    trust = ctx.trust
    if trust is None:
        return 0
    trust.refresh()
    changes = trust.drain()
    for change in changes:
        verb = "recognised" if change.event == "added" else "withdrawn"
        await ctx.record(
            caller=ctx.identity,
            header=None,
            dataset="",
            operation=f"partner_{change.event}",
            protection="",
            decision="approved",
            reason=f"partner federation {change.federation!r} {verb}",
            request_digest="",
            details={"federation": change.federation, "ca_sha256": change.fingerprint},
        )
        log.info("partner federation %s %s", change.federation, verb)
    return len(changes)


async def watch(ctx: NodeContext, stop: asyncio.Event) -> None:
    """Record partner changes every :data:`POLL_S` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            await record_changes(ctx)
        except Exception:  # a failed record is retried on the next round
            log.exception("recording partner changes failed")
        try:
            await asyncio.wait_for(stop.wait(), POLL_S)
        except TimeoutError:
            pass
