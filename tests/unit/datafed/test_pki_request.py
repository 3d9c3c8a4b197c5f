"""Certificate requests at the agency, signing at the operator: what is bound, what is refused."""

from __future__ import annotations

import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from datafed import pki
from datafed.errors import PkiError
from datafed.pki.csr import POSSESSION_OID, build_request, read_request
from datafed.pki.registry import list_issued, revoke


@pytest.fixture
def ca(tmp_path):
    pki.init_ca(tmp_path / "operator")
    return tmp_path / "operator"


def test_request_and_sign_bind_the_agencys_own_keys(ca, tmp_path):
    agency = tmp_path / "agency"
    files = pki.request(agency, "node", "water-north", hosts=("10.0.0.7", "water.example"))
    for key in (files.key, files.signing_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE" not in files.csr.read_bytes()  # only the request travels
    ident, cert_path = pki.sign(ca, files.csr.read_bytes())
    assert (str(ident), cert_path) == (
        "node:water-north",
        pki.party_paths(ca, "node", "water-north").cert,
    )
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate((ca / "ca.crt").read_bytes()))
    bound = pki.identity_from_pem(cert_path.read_bytes())
    key = pki.load_signing_key(files.signing_key)
    bound.signing_key.verify(key.sign(b"m"), b"m")  # the agency's signing key is bound
    tls_key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    assert cert.public_key() == tls_key.public_key()  # ...and its TLS key
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"water-north", "water.example", "localhost"} <= set(
        san.get_values_for_type(x509.DNSName)
    )
    assert "10.0.0.7" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    with pytest.raises(x509.ExtensionNotFound):  # the proof is for the CA, not in the cert
        cert.extensions.get_extension_for_oid(POSSESSION_OID)
    with pytest.raises(PkiError, match="already exist"):  # the agency's keys are not clobbered
        pki.request(agency, "node", "water-north")


def _forged(role: str, name: str, signing_pub: bytes, proof: bytes) -> bytes:
    tls = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.UnrecognizedExtension(pki.SIGNING_KEY_OID, signing_pub), False)
        .add_extension(x509.UnrecognizedExtension(POSSESSION_OID, proof), False)
        .sign(tls, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def test_a_request_binding_someone_elses_signing_key_is_refused(ca, tmp_path):
    # Mallory wants the CA to bind alice's public signing key to mallory's name.
    alice = pki.request(tmp_path / "alice", "analyst", "alice")
    alice_req = read_request(alice.csr.read_bytes())
    raw = alice_req.signing_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    own = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(PkiError, match="does not prove possession"):
        pki.sign(ca, _forged("analyst", "mallory", raw, own.sign(b"anything")))
    # ...nor by replaying alice's genuine proof onto another TLS key
    proof = x509.load_pem_x509_csr(alice.csr.read_bytes()).extensions.get_extension_for_oid(
        POSSESSION_OID
    )
    with pytest.raises(PkiError, match="does not prove possession"):
        pki.sign(ca, _forged("analyst", "alice", raw, proof.value.value))
    assert list_issued(ca) == []


def _renamed(pem: bytes) -> bytes:
    """The same request with its name changed after signing (alice -> alicf)."""
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    tampered = x509.load_der_x509_csr(der.replace(b"alice", b"alicf"))
    return tampered.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_renamed, "signature does not verify"),
        (lambda pem: b"junk", "not a PEM certificate signing request"),
        (lambda pem: pem * 40, "too large"),
    ],
)
def test_tampered_or_malformed_requests_are_refused(ca, tmp_path, mutate, message):
    files = pki.request(tmp_path / "a", "analyst", "alice")
    with pytest.raises(PkiError, match=message):
        pki.sign(ca, mutate(files.csr.read_bytes()))


def test_requests_for_unknown_roles_bad_names_or_foreign_sans_are_refused(ca):
    tls, sign = ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(PkiError, match="unknown role 'admin'"):
        read_request(build_request("admin", "eve", (), tls, sign))
    with pytest.raises(PkiError, match="invalid party name"):
        read_request(build_request("node", "Eve Node", (), tls, sign))
    good = x509.load_pem_x509_csr(build_request("node", "eve", (), tls, sign))
    swapped = x509.CertificateSigningRequestBuilder().subject_name(good.subject)
    for ext in good.extensions:
        value = ext.value
        if isinstance(value, x509.SubjectAlternativeName):  # claim another party's URI
            value = x509.SubjectAlternativeName([x509.UniformResourceIdentifier("datafed:node:x")])
        swapped = swapped.add_extension(value, ext.critical)
    pem = swapped.sign(tls, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(PkiError, match="SAN URI does not match"):
        read_request(pem)


def test_a_held_name_needs_force_in_any_role_and_a_revoked_one_does_not(ca, tmp_path):
    pki.sign(ca, pki.request(tmp_path / "a", "analyst", "alice").csr.read_bytes())
    impostor = pki.request(tmp_path / "b", "node", "alice").csr.read_bytes()
    with pytest.raises(PkiError, match="'alice' already holds a valid certificate: analyst:alice"):
        pki.sign(ca, impostor)
    with pytest.raises(PkiError, match="already holds"):
        pki.issue(ca, "analyst", "alice")
    again = pki.request(tmp_path / "c", "analyst", "alice").csr.read_bytes()
    pki.sign(ca, again, force=True)
    assert [c.valid for c in list_issued(ca) if c.name == "alice"] == [True, True]
    assert len(revoke(ca, "alice")) == 2  # both, until the operator says otherwise
    pki.sign(ca, pki.request(tmp_path / "d", "analyst", "alice").csr.read_bytes())  # no force


def test_superlink_role_and_the_one_step_issue(ca):
    files = pki.issue(ca, "superlink", "superlink")
    ident = pki.identity_from_pem(files.cert.read_bytes())
    assert str(ident) == "superlink:superlink"
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)  # a server, like nodes
    assert [(c.name, c.role) for c in list_issued(ca)] == [("superlink", "superlink")]
