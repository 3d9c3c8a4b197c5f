"""Who answers at an address: the name in a node's TLS certificate, read in a handshake.

``datafed init`` names the nodes of a new ``fed.toml`` this way, and a call that fails
because the node's certificate is for another name says so (instead of "cannot reach").
The handshake verifies the certificate against the federation CA (any name), presents the
analyst's own certificate (nodes require mutual TLS), reads the peer certificate and
closes: no request is sent, nothing is recorded.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
from pathlib import Path

from datafed.errors import NodeUnavailable, PkiError
from datafed.pki.identity import Identity
from datafed.pki.peers import verify_peer
from datafed.pki.tls import TlsMaterial

__all__ = ["peer_identity", "split_host_port"]


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as ``(host, port)``; ValueError if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def _context(tls: TlsMaterial) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the name is what we are asking for; the CA is checked
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=tls.ca.decode("ascii"))
    with tempfile.TemporaryDirectory(prefix="datafed-probe-") as tmp:
        cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert.write_bytes(tls.cert)
        key.write_bytes(tls.key)
        key.chmod(0o600)
        ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])  # what a gRPC server expects
    return ctx


def peer_identity(address: str, tls: TlsMaterial, timeout_s: float = 10.0) -> Identity:
    """The identity (role, name) of the certificate the server at ``address`` presents.

    Raises
    ------
    NodeUnavailable
        If nothing answers there, or the TLS handshake fails.
    PkiError
        If the certificate is not one the federation CA issued.
    """
    host, port = split_host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            with _context(tls).wrap_socket(raw, server_hostname=host) as conn:
                der = conn.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        raise PkiError(f"{address}: its certificate is not from the federation CA: "
                       f"{exc.verify_message}") from exc  # fmt: skip
    except (OSError, ssl.SSLError) as exc:
        raise NodeUnavailable(address, "UNAVAILABLE", f"cannot reach {address}: {exc}") from exc
    if not der:
        raise NodeUnavailable(address, "UNAVAILABLE", f"{address} presented no certificate")
    return verify_peer(ssl.DER_cert_to_PEM_cert(der).encode("ascii"), tls.ca, role="node")
