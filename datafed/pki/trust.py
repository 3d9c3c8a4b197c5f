"""Trust domains: which CAs a party trusts, for which federation, and partner bundles.

A federation is a trust domain (after SPIFFE federation, docs/federation.md): one CA,
one namespace of names. A party trusts its home CA for its home federation and, once its
operator recognises them, *partner* federations through their **trust bundles** -- the
partner's CA certificate, its federation name and, optionally, its revocation list.

:func:`verify_chain` is the one check every certificate passes, at a node's gate and in a
node's checks of its peers (:func:`datafed.pki.peers.verify_peer`):

- issued by one of the trusted CAs (home or a recognised partner), valid now;
- naming the federation of the CA that issued it -- a CA issues names only in its own
  domain, so a partner CA's certificate for ``shanghai:alice`` is refused at Shanghai's
  nodes and everywhere else;
- not on a revocation list this process watches (:mod:`datafed.pki.crl`: the home CRL and
  every recognised partner's).

:class:`TrustStore` is a node's live view: the home CA and the partner bundles in a
folder (``<state_dir>/partners``), re-read whenever the folder changes, so adding or
removing a partner takes effect on the next request without a restart.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from datafed.errors import PkiError
from datafed.pki.crl import check_not_revoked, unwatch_crl, watch_crl
from datafed.pki.identity import (
    DEFAULT_FEDERATION,
    PARSED_CACHE,
    Identity,
    ca_federation,
    check_federation,
    identity_from_pem,
    load_certificate,
)

__all__ = [
    "BUNDLE_SUFFIX",
    "WITHDRAWN",
    "PartnerBundle",
    "TrustChange",
    "TrustStore",
    "fingerprint",
    "load_anchors",
    "verify_chain",
]

log = logging.getLogger("datafed.pki")
#: A partner bundle's file name is ``<federation>.bundle.json``.
BUNDLE_SUFFIX = ".bundle.json"
#: The subfolder of the partners folder that keeps withdrawn partners' bundles.
WITHDRAWN = "withdrawn"


def fingerprint(cert: x509.Certificate) -> str:
    """Hex SHA-256 of a certificate's DER encoding (what operators compare by phone)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def load_anchors(pem: bytes) -> list[x509.Certificate]:
    """Every CA certificate in a PEM bundle (home CA first, then partners)."""
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise PkiError("CA bundle holds no PEM certificate") from exc


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature, ValueError, TypeError: not this CA's
        return False
    return True


@functools.lru_cache(maxsize=PARSED_CACHE)
def _signed_by(pem: bytes, ca: x509.Certificate) -> bool:
    """:func:`_issued_by` for a certificate's PEM, remembered.

    A signature check is a pure function of the two certificates (a node checks its
    callers' on every call); validity dates, revocation and the anchors trusted now are
    checked on every call all the same (:func:`verify_chain`).
    """
    return _issued_by(load_certificate(pem), ca)


def verify_chain(pem: bytes, anchors: list[x509.Certificate]) -> Identity:
    """The identity of a certificate issued by one of ``anchors`` in its own trust domain.

    Raises
    ------
    PkiError
        Not issued by a trusted CA, expired, revoked, or naming another federation than
        its issuer's (each with a message that says which).
    """
    pem = bytes(pem)
    try:
        cert = load_certificate(pem)
    except ValueError as exc:
        raise PkiError("certificate is not a datafed party certificate") from exc
    identity = identity_from_pem(pem)
    issuer = next((ca for ca in anchors if _signed_by(pem, ca)), None)
    if issuer is None:
        raise PkiError(
            f"certificate of {identity} (federation {identity.federation!r}) is not issued "
            "by the federation CA nor a recognised partner's: its CA is not recognised here"
        )
    domain = ca_federation(issuer)
    if identity.federation != domain:
        raise PkiError(
            f"certificate names federation {identity.federation!r} but was issued by the CA "
            f"of federation {domain!r}: a CA may issue names only in its own trust domain"
        )
    now = dt.datetime.now(dt.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PkiError(f"certificate of {identity} is expired or not yet valid")
    try:
        check_not_revoked(pem)
    except PkiError as exc:
        raise PkiError(f"certificate of {identity} is refused: {exc}") from exc
    return identity


@dataclass(frozen=True)
class PartnerBundle:
    """A partner federation's trust bundle: its name, CA certificate and revocation list."""

    federation: str
    ca_pem: bytes
    #: The partner's CRL file as fetched by this operator (PEM or DER); ``None``: none.
    crl: Path | None = None

    @property
    def ca(self) -> x509.Certificate:
        """The partner CA certificate."""
        return x509.load_pem_x509_certificate(self.ca_pem)

    @property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the partner CA certificate."""
        return fingerprint(self.ca)

    def check(self, home_federation: str) -> PartnerBundle:
        """Return the bundle if it can be recognised by ``home_federation``; raise otherwise."""
        check_federation(self.federation)
        try:
            ca = self.ca
        except ValueError as exc:
            raise PkiError(f"bundle of {self.federation!r}: ca is not a PEM certificate") from exc
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not bc.ca:
            raise PkiError(f"bundle of {self.federation!r}: the certificate is not a CA")
        named = ca_federation(ca)
        if named != self.federation:
            raise PkiError(
                f"bundle says federation {self.federation!r} but its CA speaks for {named!r}"
            )
        if home_federation == DEFAULT_FEDERATION:
            raise PkiError(
                "this party's federation has no name: make the CA with a federation name "
                "(datafed pki init --federation NAME) before recognising partners"
            )
        if self.federation == home_federation:
            raise PkiError(
                f"a partner cannot be the home federation {home_federation!r}: "
                "its CA would issue names in this trust domain"
            )
        if self.crl is not None and not self.crl.exists():
            raise PkiError(f"bundle of {self.federation!r}: CRL file not found: {self.crl}")
        return self

    @staticmethod
    def withdraw(folder: Path, federation: str) -> bool:
        """Move ``federation``'s bundle to ``folder/withdrawn``; return whether it was there.

        The node keeps the withdrawn CA so that its parties' calls reach the gate and are
        refused there, with a clear error and a ledger entry, instead of failing in TLS.
        """
        path = folder / f"{check_federation(federation)}{BUNDLE_SUFFIX}"
        if not path.exists():
            return False
        (folder / WITHDRAWN).mkdir(exist_ok=True)
        os.replace(path, folder / WITHDRAWN / path.name)
        return True

    def to_json(self) -> str:
        """The bundle file's text."""
        body = {
            "federation": self.federation,
            "ca": self.ca_pem.decode(),
            "ca_sha256": self.fingerprint,
            "crl": str(self.crl) if self.crl else None,
        }
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> PartnerBundle:
        """Read a bundle file (what ``datafed pki bundle`` writes)."""
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            crl = body.get("crl")
            return cls(
                str(body["federation"]), str(body["ca"]).encode(), Path(crl) if crl else None
            )
        except FileNotFoundError as exc:
            raise PkiError(f"trust bundle not found: {path}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PkiError(f"{path} is not a datafed trust bundle") from exc

    def write(self, folder: Path) -> Path:
        """Write the bundle into ``folder`` atomically; return its path.

        A withdrawn copy of the same federation (``folder/withdrawn``) is removed.
        """
        folder.mkdir(parents=True, exist_ok=True)
        (folder / WITHDRAWN / f"{self.federation}{BUNDLE_SUFFIX}").unlink(missing_ok=True)
        target = folder / f"{self.federation}{BUNDLE_SUFFIX}"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, target)
        return target


@dataclass(frozen=True)
class TrustChange:
    """A partner recognised (``added``) or withdrawn (``removed``), as a node saw it."""

    event: str
    federation: str
    fingerprint: str


class TrustStore:
    """A party's live trust: the home CA and the partner bundles in ``partners_dir``.

    Parameters
    ----------
    home_ca_pem : bytes
        The home federation's CA certificate.
    partners_dir : Path | None
        Folder of ``<federation>.bundle.json`` files (``datafed-node partners add``);
        ``None``: no partners.
    """

    def __init__(self, home_ca_pem: bytes, partners_dir: Path | None = None) -> None:
        self.home_pem = home_ca_pem
        self.home = x509.load_pem_x509_certificate(home_ca_pem)
        self.federation = ca_federation(self.home)
        self.partners_dir = partners_dir
        self._lock = threading.Lock()
        self._stamp: object = None
        self._partners: dict[str, PartnerBundle] = {}
        self._withdrawn: dict[str, PartnerBundle] = {}
        self._changes: list[TrustChange] = []
        self.refresh()

    def _stat(self) -> object:
        folder = self.partners_dir
        if folder is None or not folder.is_dir():
            return None
        files = [*folder.glob(f"*{BUNDLE_SUFFIX}"), *folder.glob(f"{WITHDRAWN}/*{BUNDLE_SUFFIX}")]
        return tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))

    def _read(self, folder: Path | None) -> dict[str, PartnerBundle]:
        found: dict[str, PartnerBundle] = {}
        if folder is None or not folder.is_dir():
            return found
        for path in sorted(folder.glob(f"*{BUNDLE_SUFFIX}")):
            try:
                bundle = PartnerBundle.read(path).check(self.federation)
            except PkiError as exc:
                log.warning("partner bundle %s ignored: %s", path, exc)
                continue
            found[bundle.federation] = bundle
        return found

    def refresh(self) -> None:
        """Re-read the partners folder if it changed; queue what was added or removed."""
        with self._lock:
            try:
                stamp = self._stat()
            except OSError:
                stamp = None
            if stamp == self._stamp:
                return
            self._stamp = stamp
            fresh = self._read(self.partners_dir)
            if self.partners_dir is not None:
                self._withdrawn = self._read(self.partners_dir / WITHDRAWN)
            old, kept = self._partners, {}
            for fed, b in old.items():
                if fed in fresh and fresh[fed] == b:
                    kept[fed] = b
                    continue
                self._changes.append(TrustChange("removed", fed, b.fingerprint))
                if b.crl is not None:
                    unwatch_crl(b.crl)
            for fed, b in fresh.items():
                if fed in kept:
                    continue
                if b.crl is not None:
                    try:
                        watch_crl(b.crl, b.ca_pem)
                    except PkiError as exc:
                        log.warning("partner %s refused: %s", fed, exc)
                        continue
                kept[fed] = b
                self._changes.append(TrustChange("added", fed, b.fingerprint))
            self._partners = kept

    def close(self) -> None:
        """Stop watching the partners' revocation lists."""
        with self._lock:
            for b in self._partners.values():
                if b.crl is not None:
                    unwatch_crl(b.crl)
            self._partners = {}

    def partners(self) -> dict[str, PartnerBundle]:
        """The partner bundles in force now (re-read if the folder changed)."""
        self.refresh()
        return dict(self._partners)

    def drain(self) -> list[TrustChange]:
        """The changes seen since the last call (what the node records in its ledger)."""
        with self._lock:
            out, self._changes = self._changes, []
            return out

    def anchors(self) -> list[x509.Certificate]:
        """The CAs trusted now: home first, then every recognised partner's."""
        return [self.home, *(b.ca for b in self.partners().values())]

    def anchors_pem(self) -> bytes:
        """:meth:`anchors` as one PEM bundle (peers' checks in protocol modes)."""
        return self.home_pem + b"".join(b.ca_pem for b in self.partners().values())

    def tls_roots_pem(self) -> bytes:
        """The TLS client roots: :meth:`anchors_pem` and withdrawn partners' CAs.

        A withdrawn partner's connection is let through TLS so that the gate refuses its
        calls with a clear error, recorded as denied (:meth:`identify`).
        """
        partners = self.partners()
        extra = [b.ca_pem for f, b in self._withdrawn.items() if f not in partners]
        return self.anchors_pem() + b"".join(extra)

    def identify(self, pem: bytes) -> Identity:
        """:func:`verify_chain` against the CAs trusted now (withdrawn partners named)."""
        try:
            return verify_chain(pem, self.anchors())
        except PkiError:
            cert = x509.load_pem_x509_certificate(pem)
            for fed, bundle in self._withdrawn.items():
                if fed not in self._partners and _issued_by(cert, bundle.ca):
                    raise PkiError(
                        f"recognition of partner federation {fed!r} has been withdrawn at "
                        "this node: its parties are refused"
                    ) from None
            raise
