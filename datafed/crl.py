"""Issued certificates and their revocation: the operator's archive and list (X.509 CRL).

Operator side: every certificate :func:`datafed.pki.sign` issues is archived as
``issued/<serial>.crt`` in the CA directory; :func:`revoke` records a party's
certificates as ``revoked/<serial>`` (the operator's own record, which no copy of a list
can roll back), :func:`list_issued` shows every certificate with its revocation state and
:func:`publish_crl` writes ``crl.pem``: an X.509 v2 CRL (RFC 5280 §5) signed by the CA,
with a CRL number that only grows and a ``nextUpdate`` after which nodes stop trusting
it. Copy ``crl.pem`` to every node (``tls.crl`` in node.toml).

Node side: :class:`RevocationList` holds one node's CRL, verified against its CA; it is
re-read whenever the file changes (size, mtime or inode), so a revocation takes effect on
the next request without a restart. A list that fails to verify or has a lower CRL number
than the one in force (a rollback) is ignored with a warning and the last good list stays;
an expired list refuses everyone until a fresh one is published (fail closed).
:func:`check_not_revoked` is what the node's gate calls for every request; it applies
every list registered in this process with :func:`watch_crl` (a CRL is the CA's own
statement, so it holds for every node of that CA). See docs/pki.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from datafed.errors import PkiError
from datafed.pki import identity_from_pem, load_ca

__all__ = [
    "IssuedCert",
    "RevocationList",
    "archive",
    "check_not_revoked",
    "holders",
    "list_issued",
    "publish_crl",
    "revoke",
    "unwatch_crl",
    "watch_crl",
]

log = logging.getLogger("datafed.pki")
CRL_FILE = "crl.pem"
CRL_DAYS = 30


@dataclass(frozen=True)
class IssuedCert:
    """One certificate the CA issued, as ``datafed pki list`` shows it."""

    name: str
    role: str
    serial: int
    not_after: dt.datetime
    revoked_at: dt.datetime | None

    @property
    def valid(self) -> bool:
        """Not revoked and not expired."""
        return self.revoked_at is None and self.not_after > dt.datetime.now(dt.timezone.utc)


def archive(pki_dir: Path, cert: x509.Certificate) -> Path:
    """Keep a copy of an issued certificate under ``issued/``, named by its serial."""
    path = pki_dir / "issued" / f"{cert.serial_number:x}.crt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _read_crl(pki_dir: Path) -> x509.CertificateRevocationList | None:
    path = pki_dir / CRL_FILE
    return x509.load_pem_x509_crl(path.read_bytes()) if path.exists() else None


def _revoked(pki_dir: Path) -> dict[int, dt.datetime]:
    """The operator's record of revocations: serial -> when (UTC)."""
    out = {}
    for path in pki_dir.glob("revoked/*"):
        try:
            out[int(path.name, 16)] = dt.datetime.fromisoformat(path.read_text().strip())
        except ValueError:
            continue
    return out


def _certificates(pki_dir: Path) -> dict[int, x509.Certificate]:
    # The archive, plus certificates issued before it existed (role folders).
    found: dict[int, x509.Certificate] = {}
    for path in sorted(pki_dir.glob("issued/*.crt")) + sorted(pki_dir.glob("*/*.crt")):
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError:
            continue
        found.setdefault(cert.serial_number, cert)
    return found


def list_issued(pki_dir: Path) -> list[IssuedCert]:
    """Every certificate the CA in ``pki_dir`` issued, by name then expiry."""
    ca, _ = load_ca(pki_dir)
    revoked = _revoked(pki_dir)
    out = []
    for serial, cert in _certificates(pki_dir).items():
        if cert.issuer != ca.subject:
            continue
        try:
            ident = identity_from_pem(cert.public_bytes(serialization.Encoding.PEM))
        except PkiError:
            continue
        out.append(
            IssuedCert(
                ident.name, ident.role, serial, cert.not_valid_after_utc, revoked.get(serial)
            )
        )
    return sorted(out, key=lambda c: (c.name, c.not_after, c.serial))


def holders(pki_dir: Path, name: str) -> list[IssuedCert]:
    """The valid (unrevoked, unexpired) certificates issued to ``name``, in any role."""
    return [c for c in list_issued(pki_dir) if c.name == name and c.valid]


def publish_crl(pki_dir: Path, add: tuple[int, ...] = (), *, days: int = CRL_DAYS) -> Path:
    """Record ``add`` as revoked and write ``crl.pem`` with every revocation so far.

    The CRL number (also kept in ``crlnumber``, as openssl's CA does) only grows, so
    nodes accept the new list and refuse an older one put back in its place.
    """
    ca, key = load_ca(pki_dir)
    old = _read_crl(pki_dir)
    now = dt.datetime.now(dt.timezone.utc)
    for serial in add:
        mark = pki_dir / "revoked" / f"{serial:x}"
        mark.parent.mkdir(parents=True, exist_ok=True)
        if not mark.exists():
            mark.write_text(now.isoformat() + "\n")
    revoked = _revoked(pki_dir)
    counter = pki_dir / "crlnumber"
    last = int(counter.read_text()) if counter.exists() else 0
    number = 1 + max(RevocationList.number(old) if old is not None else 0, last)
    counter.write_text(f"{number}\n")
    entries: dict[int, x509.RevokedCertificate] = {r.serial_number: r for r in old or ()}
    for serial, when in revoked.items():
        entries.setdefault(
            serial,
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build(),
        )
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
    )
    for entry in entries.values():
        builder = builder.add_revoked_certificate(entry)
    path = pki_dir / CRL_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    tmp.replace(path)  # atomic: a node never reads half a list
    return path


def revoke(
    pki_dir: Path, name: str, *, serial: int | None = None, days: int = CRL_DAYS
) -> list[int]:
    """Revoke ``name``'s valid certificates (or only ``serial``); publish the new list.

    Raises
    ------
    PkiError
        If ``name`` holds no valid certificate (with that serial).
    """
    found = [c.serial for c in holders(pki_dir, name) if serial is None or c.serial == serial]
    if not found:
        which = f" with serial {serial:x}" if serial is not None else ""
        raise PkiError(f"{name!r} holds no valid certificate{which} to revoke")
    publish_crl(pki_dir, tuple(found), days=days)
    return found


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
