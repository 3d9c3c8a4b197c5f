"""A party's key and certificate files, and the CA's own, as the PKI writes and reads them.

A party's files live under ``<dir>/<role>/<name>.{crt,key,ed25519,csr}``
(:func:`party_paths`); private keys are written readable by their owner only
(:func:`write_private`). The CA is ``ca.crt`` and ``ca.key`` in the CA directory
(:func:`load_ca`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from datafed.errors import PkiError

__all__ = [
    "IssuedFiles",
    "load_ca",
    "load_signing_key",
    "party_paths",
    "pem_private_key",
    "write_private",
]


@dataclass(frozen=True)
class IssuedFiles:
    """Where a party's certificate, TLS key, Ed25519 signing key and request live."""

    cert: Path
    key: Path
    signing_key: Path

    @property
    def csr(self) -> Path:
        """The certificate signing request :func:`request` writes beside the keys."""
        return self.cert.with_suffix(".csr")


def party_paths(pki_dir: Path, role: str, name: str) -> IssuedFiles:
    """Return where the files of ``role``/``name`` live under ``pki_dir``."""
    base = pki_dir / role
    return IssuedFiles(base / f"{name}.crt", base / f"{name}.key", base / f"{name}.ed25519")


def write_private(path: Path, data: bytes) -> None:
    """Write a private key file readable by its owner only (created 0600, never widened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def pem_private_key(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    """The unencrypted PKCS#8 PEM encoding of a private key."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_ca(pki_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Load the CA certificate and key from ``pki_dir``; raise PkiError if there is none."""
    crt, key_path = pki_dir / "ca.crt", pki_dir / "ca.key"
    if not crt.exists() or not key_path.exists():
        raise PkiError(f"no CA in {pki_dir}: run 'datafed pki init' first")
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path} is not an EC private key")
    return cert, key


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """Load a party's Ed25519 signing key (PEM, PKCS#8)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise PkiError(f"signing key not found: {path}") from exc
    except ValueError as exc:
        raise PkiError(f"signing key {path} is not a PEM private key") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PkiError(f"signing key {path} is not an Ed25519 key")
    return key
