"""The CA's register of issued and revoked certificates, and the revocation list it publishes.

Every certificate :func:`datafed.pki.ca.sign` issues is archived as ``issued/<serial>.crt``
in the CA directory; :func:`revoke` records a party's certificates as
``revoked/<serial>`` (the operator's own record, which no copy of a list can roll back),
:func:`list_issued` shows every certificate with its revocation state and
:func:`publish_crl` writes ``crl.pem``: an X.509 v2 CRL (RFC 5280 §5) signed by the CA,
with a CRL number that only grows (``crlnumber``) and a ``nextUpdate`` after which nodes
stop trusting it. Copy ``crl.pem`` to every node (``tls.crl`` in node.toml), where
:mod:`datafed.pki.crl` checks it. See docs/pki.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from datafed.errors import PkiError
from datafed.pki.crl import RevocationList
from datafed.pki.files import load_ca
from datafed.pki.identity import identity_from_pem, split_name

__all__ = [
    "CRL_DAYS",
    "CRL_FILE",
    "IssuedCert",
    "archive",
    "holders",
    "list_issued",
    "publish_crl",
    "revoke",
]

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
    local = split_name(name)[1]
    return [c for c in list_issued(pki_dir) if split_name(c.name)[1] == local and c.valid]


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
