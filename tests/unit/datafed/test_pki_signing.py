import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed import pki
from datafed.errors import PkiError, SignatureError
from datafed.wire.signing import MAX_LIFETIME_MS, new_header, sign_body, verify_body


def test_issued_certificate_carries_role_name_and_signing_key(pki_dir):
    files = pki.party_paths(pki_dir, "analyst", "alice")
    ident = pki.identity_from_pem(files.cert.read_bytes())
    assert (ident.role, ident.name, str(ident)) == ("analyst", "alice", "analyst:alice")
    key = pki.load_signing_key(files.signing_key)
    sig = key.sign(b"m")
    ident.signing_key.verify(sig, b"m")  # the bound key is the one in the key file
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.not_valid_after_utc > dt.datetime.now(dt.timezone.utc)


def test_node_certificate_covers_loopback(pki_dir):
    cert = x509.load_pem_x509_certificate(
        pki.party_paths(pki_dir, "node", "water-north").cert.read_bytes()
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "water-north" in san.get_values_for_type(x509.DNSName)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "datafed:node:water-north" in san.get_values_for_type(x509.UniformResourceIdentifier)


@pytest.mark.parametrize(
    ("role", "name", "msg"),
    [
        ("admin", "x", "unknown role"),
        ("node", "Bad Name", "invalid party name"),
        ("node", "../x", "invalid party name"),
    ],
)
def test_issue_refuses_bad_arguments(pki_dir, role, name, msg):
    with pytest.raises(PkiError, match=msg):
        pki.issue(pki_dir, role, name)


def test_issue_without_ca(tmp_path):
    with pytest.raises(PkiError, match="run 'datafed pki init' first"):
        pki.issue(tmp_path, "node", "n1")


def test_init_refuses_to_overwrite(pki_dir):
    with pytest.raises(PkiError, match="already exists"):
        pki.init_ca(pki_dir)


def test_non_datafed_certificate_refused(pki_dir):
    with pytest.raises(PkiError):
        pki.identity_from_pem((pki_dir / "ca.crt").read_bytes())
    with pytest.raises(PkiError):
        pki.identity_from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_signing_key_loader_refuses_wrong_files(pki_dir, tmp_path):
    with pytest.raises(PkiError, match="not an Ed25519 key"):
        pki.load_signing_key(pki.party_paths(pki_dir, "analyst", "alice").key)
    with pytest.raises(PkiError, match="not found"):
        pki.load_signing_key(tmp_path / "missing")


def test_sign_verify_and_every_tamper():
    key = ed25519.Ed25519PrivateKey.generate()
    body = b"request body bytes"
    sig = sign_body(body, key)
    verify_body(body, sig, key.public_key())
    flipped = bytes([body[0] ^ 1]) + body[1:]
    for b, s, k in [
        (flipped, sig, key.public_key()),
        (body, sig[:-1] + bytes([sig[-1] ^ 1]), key.public_key()),
        (body, sig, ed25519.Ed25519PrivateKey.generate().public_key()),
        (body, b"", key.public_key()),
    ]:
        with pytest.raises(SignatureError):
            verify_body(b, s, k)
    # a bare signature over the body (no domain tag) is not accepted
    with pytest.raises(SignatureError):
        verify_body(body, key.sign(body), key.public_key())


def test_header_has_fresh_nonce_and_bounded_lifetime():
    a, b = new_header("alice", "n", "j", "p"), new_header("alice", "n", "j", "p")
    assert a.nonce != b.nonce and len(a.nonce) == 16
    assert a.expires_at_ms > a.issued_at_ms
    with pytest.raises(ValueError, match="lifetime_ms"):
        new_header("alice", "n", "j", "p", lifetime_ms=MAX_LIFETIME_MS + 1)
