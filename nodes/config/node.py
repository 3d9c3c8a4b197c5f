"""``[node]``, ``[tls]`` and ``[[signoff]]``: the node's identity, address, keys and grants."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

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
    #: Analysts' calls in flight at once, from their headers to their last byte, calls
    #: whose request is still arriving included; more wait their turn (docs/policy.md#limits).
    max_concurrent_requests: int = Field(default=64, ge=1, le=100_000)
    #: Calls one requester (certificate) may have in flight at once, counted apart for the
    #: analysts' calls and the reserved ones; also the calls one connection may carry.
    max_requests_per_requester: int = Field(default=8, ge=1, le=10_000)
    #: Calls of one requester that may wait for a place; one more is refused at once
    #: (RESOURCE_EXHAUSTED, recorded as denied).
    max_waiting_per_requester: int = Field(default=64, ge=0, le=100_000)
    #: Calls kept for auditors, witnesses and other nodes -- ledger reads, witnessing,
    #: health checks -- which analysts' calls never take.
    reserved_requests: int = Field(default=16, ge=1, le=10_000)
    #: Seconds a call's request may take to arrive once the call has its place (for a
    #: stream, each message after the last); a call still waiting for it is cut
    #: (DEADLINE_EXCEEDED, recorded).
    request_timeout_s: float = Field(default=10.0, gt=0, le=600)
    #: Seconds any call may take at this node from its headers, its wait for a place
    #: included, whatever deadline its caller set; then it is cut (DEADLINE_EXCEEDED,
    #: recorded).
    call_timeout_s: float = Field(default=900.0, gt=0, le=86_400)
    #: Sign a ledger checkpoint at most this many seconds after any entry (docs/ledger.md).
    sign_within_s: float = Field(default=1.0, gt=0, le=3600)
    #: Optional plaintext gRPC health endpoint for orchestrators (health service only, no
    #: client certificate), e.g. ``"127.0.0.1:50052"``; unset: health only over mTLS.
    health_listen: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
    #: Optional Prometheus endpoint, plain HTTP ``GET /metrics``, e.g. ``"127.0.0.1:9464"``:
    #: calls, decisions, latencies, ledger size and signing lag, budgets left, open jobs,
    #: key-cache bytes (docs/operator.md).  For the operator's monitoring only: keep it on
    #: loopback or a private network (check-config warns otherwise).
    metrics_listen: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")

    @model_validator(mode="after")
    def _capacity(self) -> NodeSection:
        if self.max_requests_per_requester > self.max_concurrent_requests:
            raise ValueError("max_requests_per_requester must not exceed max_concurrent_requests")
        if self.request_timeout_s > self.call_timeout_s:
            raise ValueError("request_timeout_s must not exceed call_timeout_s")
        return self


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
