"""``[node]``, ``[tls]`` and ``[[signoff]]``: the node's identity, address, keys and grants."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from datafed.config.load import HostPort, ResolvedPath, Strict
from datafed.pki.tls import PartyFiles
from nodes.config.names import Ident, PartyName

__all__ = ["NodeSection", "NodeTlsFiles", "SignOffGrant"]


class NodeSection(Strict):
    """Identity and listening address of the node."""

    #: The node's name: the CN of its certificate and its ledger origin.
    name: PartyName
    #: The agency's human-readable name, shown to analysts.
    agency: str = ""
    #: ``host:port`` of the mTLS gRPC server (port 0: any free port).
    listen: HostPort = "127.0.0.1:50051"
    #: Folder of the ledger, the replay cache and the witness and collection state.
    state_dir: ResolvedPath = Path("state")
    #: Largest gRPC message accepted or sent, in bytes.
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: Requests served at once; more wait or are refused (RESOURCE_EXHAUSTED).
    max_concurrent_requests: int = Field(default=64, ge=1)
    #: Sign a ledger checkpoint at most this many seconds after any entry (docs/ledger.md).
    sign_within_s: float = Field(default=1.0, gt=0, le=3600)
    #: Optional plaintext gRPC health endpoint for orchestrators (health service only, no
    #: client certificate), e.g. ``"127.0.0.1:50052"``; unset: health only over mTLS.
    health_listen: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class NodeTlsFiles(PartyFiles):
    """``[tls]``: the node's CA, certificate, keys and, optionally, the CA's revocation list."""

    #: The federation's revocation list (``datafed pki revoke`` publishes ``crl.pem``);
    #: checked on every request and re-read when the file changes.
    crl: ResolvedPath | None = None


class SignOffGrant(Strict):
    """Uses of another agency's dataset that this node approves when asked."""

    #: The agency node whose dataset use this node approves.
    node: PartyName
    #: That node's datasets the approval covers.
    datasets: list[Ident] = Field(min_length=1)
    #: Analysts the approval covers.
    requesters: list[PartyName] = Field(min_length=1)
    #: Purposes the approval covers.
    purposes: list[str] = Field(min_length=1)
