"""``datafed pki show``: the operator inspects a signing request before signing it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed import pki
from datafed.pki.csr import read_request

from .test_pki_request import _forged, _renamed

BIN = Path(sys.executable).parent


def show(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "datafed"), "pki", "show", str(path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_show_prints_what_the_request_binds_and_that_it_checks_out(tmp_path: Path) -> None:
    files = pki.request(tmp_path / "agency", "node", "water-north", hosts=("water-north.city",))
    got = show(files.csr)
    assert got.returncode == 0, got.stdout + got.stderr
    req = read_request(files.csr.read_bytes())
    raw = req.signing_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    spki = req.tls_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    lines = got.stdout
    assert "subject      O=datafed,OU=node,CN=water-north" in lines
    assert "role, name   node:water-north" in lines
    assert "hosts        water-north.city, localhost, 127.0.0.1" in lines
    assert f"TLS key      ECDSA secp256r1, SHA-256 {hashlib.sha256(spki).hexdigest()}" in lines
    assert f"signing key  Ed25519, SHA-256 {hashlib.sha256(raw).hexdigest()}" in lines
    assert lines.count("  OK   ") == 3 and "FAIL" not in lines
    assert f"the CA would sign it: datafed pki sign {files.csr}" in lines
    assert not (tmp_path / "agency" / "node" / "water-north.crt").exists()  # nothing signed


def test_show_flags_a_tampered_or_forged_request(tmp_path: Path) -> None:
    files = pki.request(tmp_path / "alice", "analyst", "alice")
    renamed = tmp_path / "renamed.csr"
    renamed.write_bytes(_renamed(files.csr.read_bytes()))
    got = show(renamed)
    assert got.returncode == 1, got.stdout + got.stderr
    assert "FAIL PKCS#10 signature (the TLS key is held)" in got.stdout
    assert "role, name   analyst:alicf" in got.stdout and "do not sign" in got.stdout

    raw = read_request(files.csr.read_bytes()).signing_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    forged = tmp_path / "forged.csr"  # mallory binds alice's signing key to its own name
    forged.write_bytes(_forged("analyst", "mallory", raw, ed25519.Ed25519PrivateKey.generate()
                               .sign(b"anything")))  # fmt: skip
    got = show(forged)
    assert got.returncode == 1
    assert "OK   PKCS#10 signature" in got.stdout
    assert "FAIL Ed25519 proof of possession (the signing key is held)" in got.stdout
    assert "does not prove possession of its Ed25519 signing key" in got.stdout

    junk = tmp_path / "junk.csr"
    junk.write_bytes(b"junk")
    got = show(junk)
    assert got.returncode == 2 and "not a PEM certificate signing request" in got.stderr
    assert x509  # the forged requests above are real PKCS#10 objects
