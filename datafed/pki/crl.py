"""Revocation at the node: the federation CA's X.509 CRL, checked on every request.

:class:`RevocationList` holds one node's CRL (``tls.crl`` in node.toml), verified against
its CA; it is re-read whenever the file changes (size, mtime or inode), so a revocation
takes effect on the next request without a restart. A list that fails to verify or has a
lower CRL number than the one in force (a rollback) is ignored with a warning and the last
good list stays; an expired list refuses everyone until a fresh one is published (fail
closed). :func:`check_not_revoked` is what the node's gate (``nodes.gate.peer_identity``)
and :func:`datafed.pki.peers.verify_peer` call; it applies every list registered in this
process with :func:`watch_crl` (a CRL is the CA's own statement, so it holds for every
node of that CA). The operator's side is :mod:`datafed.pki.registry`; see docs/pki.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path

from cryptography import x509

from datafed.errors import PkiError

__all__ = ["RevocationList", "check_not_revoked", "unwatch_crl", "watch_crl"]

log = logging.getLogger("datafed.pki")


class RevocationList:
    """One node's view of the CA's revocation list, re-read when the file changes.

    Parameters
    ----------
    path : Path
        The CRL file (PEM or DER), e.g. ``tls.crl`` of node.toml.
    ca_pem : bytes
        The federation CA certificate that must have signed it.

    Raises
    ------
    PkiError
        If the file is missing or does not verify when first loaded.
    """

    def __init__(self, path: Path, ca_pem: bytes) -> None:
        self.path = path
        self.ca = x509.load_pem_x509_certificate(ca_pem)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self.crl = self._load()
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int, int]:
        st = self.path.stat()
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> x509.CertificateRevocationList:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError as exc:
            raise PkiError(f"tls.crl: file not found: {self.path}") from exc
        try:
            crl = (
                x509.load_pem_x509_crl(data)
                if data.lstrip().startswith(b"-----")
                else x509.load_der_x509_crl(data)
            )
        except ValueError as exc:
            raise PkiError(f"tls.crl: {self.path} is not an X.509 CRL") from exc
        if crl.issuer != self.ca.subject or not crl.is_signature_valid(self.ca.public_key()):  # type: ignore[arg-type]
            raise PkiError(f"tls.crl: {self.path} is not signed by the federation CA")
        return crl

    @staticmethod
    def number(crl: x509.CertificateRevocationList) -> int:
        """The CRL number (RFC 5280 §5.2.3); 0 if absent."""
        try:
            return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        except x509.ExtensionNotFound:
            return 0

    def refresh(self) -> None:
        """Re-read the file if it changed; keep the current list if the new one is bad."""
        with self._lock:
            try:
                stamp = self._stat()
                if stamp == self._stamp:
                    return
                self._stamp = stamp
                fresh = self._load()
            except (OSError, PkiError) as exc:
                log.warning("revocation list not updated: %s", exc)
                return
            if self.number(fresh) < self.number(self.crl):
                log.warning(
                    "revocation list %s has CRL number %d below %d in force: ignored (rollback?)",
                    self.path, self.number(fresh), self.number(self.crl),
                )  # fmt: skip
                return
            self.crl = fresh

    def covers(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` was issued by this list's CA."""
        if cert.issuer != self.ca.subject:
            return False
        try:
            cert.verify_directly_issued_by(self.ca)
        except Exception:  # InvalidSignature, ValueError, TypeError: not this CA's
            return False
        return True

    def check(self, cert: x509.Certificate) -> None:
        """Raise :class:`PkiError` if ``cert`` is revoked or the list has expired."""
        self.refresh()
        crl = self.crl
        next_update = crl.next_update_utc
        if next_update is not None and next_update < dt.datetime.now(dt.timezone.utc):
            raise PkiError(
                f"the revocation list expired at {next_update:%Y-%m-%d %H:%M}Z: "
                "the federation operator must publish a fresh one (datafed pki crl)"
            )
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise PkiError(f"certificate {cert.serial_number:x} has been revoked")


_WATCHED: dict[Path, tuple[RevocationList, int]] = {}
_WATCH_LOCK = threading.Lock()


def watch_crl(path: Path, ca_pem: bytes) -> RevocationList:
    """Apply the CRL at ``path`` to every peer this process checks (counted per path)."""
    key = path.resolve()
    with _WATCH_LOCK:
        current = _WATCHED.get(key)
        lst = current[0] if current else RevocationList(key, ca_pem)
        _WATCHED[key] = (lst, (current[1] if current else 0) + 1)
        return lst


def unwatch_crl(path: Path) -> None:
    """Undo one :func:`watch_crl` of ``path``."""
    key = path.resolve()
    with _WATCH_LOCK:
        current = _WATCHED.get(key)
        if current is None:
            return
        if current[1] <= 1:
            del _WATCHED[key]
        else:
            _WATCHED[key] = (current[0], current[1] - 1)


def check_not_revoked(pem: bytes) -> bytes:
    """Return ``pem`` unless a watched revocation list of its CA refuses it.

    Raises
    ------
    PkiError
        If the certificate is revoked, or its CA's list has expired.
    """
    with _WATCH_LOCK:
        lists = [entry[0] for entry in _WATCHED.values()]
    if not lists:
        return pem
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PkiError("certificate is not a datafed party certificate") from exc
    for lst in lists:
        if lst.covers(cert):
            lst.check(cert)
    return pem
