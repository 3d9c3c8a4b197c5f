"""The revocation list: published by the operator, verified and re-read by nodes."""

from __future__ import annotations

import datetime as dt
import os
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from datafed import pki
from datafed.errors import PkiError
from datafed.pki.crl import RevocationList, check_not_revoked, unwatch_crl, watch_crl
from datafed.pki.peers import verify_peer
from datafed.pki.registry import CRL_FILE, list_issued, publish_crl, revoke


@pytest.fixture
def ca(tmp_path):
    d = tmp_path / "ca"
    pki.init_ca(d)
    for role, name in [("analyst", "alice"), ("analyst", "bob"), ("node", "n1")]:
        pki.issue(d, role, name)
    return d


def pem(ca, role, name) -> bytes:
    return pki.party_paths(ca, role, name).cert.read_bytes()


def cert(ca, role, name) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem(ca, role, name))


def touch_later(path):
    st = path.stat()  # make sure a rewrite within one clock tick still looks changed
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_revoke_publishes_a_signed_list_with_growing_numbers(ca):
    publish_crl(ca)
    (bob_serial,) = revoke(ca, "bob")
    crl = x509.load_pem_x509_crl((ca / CRL_FILE).read_bytes())
    ca_cert = x509.load_pem_x509_certificate((ca / "ca.crt").read_bytes())
    assert crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
    assert RevocationList.number(crl) == 2
    assert (
        [r.serial_number for r in crl] == [bob_serial] == [cert(ca, "analyst", "bob").serial_number]
    )
    shown = {c.name: c.revoked_at is not None for c in list_issued(ca)}
    assert shown == {"alice": False, "bob": True, "n1": False}
    with pytest.raises(PkiError, match="holds no valid certificate"):
        revoke(ca, "bob")  # already revoked
    with pytest.raises(PkiError, match="holds no valid certificate"):
        revoke(ca, "nobody")


def test_a_node_refuses_revoked_certificates_and_rereads_the_list(ca, tmp_path):
    node_copy = tmp_path / "node-crl.pem"
    shutil.copy(publish_crl(ca), node_copy)
    lst = RevocationList(node_copy, (ca / "ca.crt").read_bytes())
    lst.check(cert(ca, "analyst", "bob"))  # not revoked yet
    revoke(ca, "bob")
    shutil.copy(ca / CRL_FILE, node_copy)
    touch_later(node_copy)
    with pytest.raises(PkiError, match="has been revoked"):
        lst.check(cert(ca, "analyst", "bob"))  # next request, no restart
    lst.check(cert(ca, "analyst", "alice"))


def test_rollback_corruption_and_foreign_lists_do_not_unrevoke(ca, tmp_path):
    node_copy = tmp_path / "node-crl.pem"
    old = tmp_path / "old.pem"
    shutil.copy(publish_crl(ca), old)
    revoke(ca, "bob")
    shutil.copy(ca / CRL_FILE, node_copy)
    lst = RevocationList(node_copy, (ca / "ca.crt").read_bytes())
    bob = cert(ca, "analyst", "bob")
    # an older list (lower CRL number) copied back: ignored
    shutil.copy(old, node_copy)
    touch_later(node_copy)
    with pytest.raises(PkiError, match="revoked"):
        lst.check(bob)
    # a half-written or garbage file: the last good list stays
    node_copy.write_bytes(b"-----BEGIN X509 CRL-----\ngarbage")
    with pytest.raises(PkiError, match="revoked"):
        lst.check(bob)
    # a list signed by another CA (that revokes nothing): ignored
    rogue = tmp_path / "rogue"
    pki.init_ca(rogue)
    shutil.copy(publish_crl(rogue, days=400), node_copy)
    touch_later(node_copy)
    with pytest.raises(PkiError, match="revoked"):
        lst.check(bob)
    with pytest.raises(PkiError, match="not signed by the federation CA"):
        RevocationList(node_copy, (ca / "ca.crt").read_bytes())
    with pytest.raises(PkiError, match="file not found"):
        RevocationList(tmp_path / "missing.pem", (ca / "ca.crt").read_bytes())


def test_an_expired_list_refuses_everyone(ca, tmp_path):
    ca_cert, key = pki.load_ca(ca)
    now = dt.datetime.now(dt.timezone.utc)
    stale = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(days=10))
        .next_update(now - dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(1), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "stale.pem"
    path.write_bytes(stale.public_bytes(serialization.Encoding.PEM))
    lst = RevocationList(path, (ca / "ca.crt").read_bytes())
    with pytest.raises(PkiError, match="revocation list expired"):
        lst.check(cert(ca, "analyst", "alice"))


def test_watched_lists_apply_to_their_own_ca_only(ca, tmp_path):
    rogue = tmp_path / "rogue"
    pki.init_ca(rogue)  # same default CA name, different key
    pki.issue(rogue, "analyst", "bob")
    revoke(ca, "bob")
    path = ca / CRL_FILE
    assert check_not_revoked(pem(ca, "analyst", "bob"))  # nothing watched: no opinion
    watch_crl(path, (ca / "ca.crt").read_bytes())
    watch_crl(path, (ca / "ca.crt").read_bytes())  # a second node of the same process
    try:
        with pytest.raises(PkiError, match="revoked"):
            check_not_revoked(pem(ca, "analyst", "bob"))
        with pytest.raises(PkiError, match="revoked"):  # certificates relayed to a node too
            verify_peer(pem(ca, "analyst", "bob"), (ca / "ca.crt").read_bytes(), role="analyst")
        assert check_not_revoked(pem(ca, "analyst", "alice"))
        assert check_not_revoked(pem(rogue, "analyst", "bob"))  # another CA's certificate
        unwatch_crl(path)
        with pytest.raises(PkiError, match="revoked"):  # still watched once
            check_not_revoked(pem(ca, "analyst", "bob"))
    finally:
        unwatch_crl(path)
    assert check_not_revoked(pem(ca, "analyst", "bob"))


def test_the_operators_record_survives_an_old_list_put_back(ca, tmp_path):
    old = tmp_path / "old.pem"
    shutil.copy(publish_crl(ca), old)
    (bob_serial,) = revoke(ca, "bob")
    shutil.copy(old, ca / CRL_FILE)  # e.g. a backup restored over the published list
    assert {c.name for c in list_issued(ca) if c.revoked_at} == {"bob"}
    fresh = x509.load_pem_x509_crl(publish_crl(ca).read_bytes())
    assert [r.serial_number for r in fresh] == [bob_serial]
    assert RevocationList.number(fresh) == 3  # above every list published before


def test_a_remembered_certificate_check_still_sees_a_later_revocation(ca, tmp_path):
    """The parse and signature check of a certificate are remembered (a node checks its
    callers' on every call); revocation, validity and the trusted CAs are not."""
    from datafed.pki.trust import _signed_by

    bob, home = pem(ca, "analyst", "bob"), (ca / "ca.crt").read_bytes()
    rogue = tmp_path / "rogue"
    pki.init_ca(rogue)  # same default CA name, different key
    first = verify_peer(bob, home, role="analyst")
    hits = _signed_by.cache_info().hits
    assert verify_peer(bob, home, role="analyst") == first  # the second check is remembered
    assert _signed_by.cache_info().hits == hits + 1
    with pytest.raises(PkiError, match="not issued by the federation CA"):
        verify_peer(bob, (rogue / "ca.crt").read_bytes(), role="analyst")  # other anchors
    publish_crl(ca)
    revoke(ca, "bob")
    watch_crl(ca / CRL_FILE, home)
    try:
        with pytest.raises(PkiError, match="revoked"):
            verify_peer(bob, home, role="analyst")
    finally:
        unwatch_crl(ca / CRL_FILE)
    assert verify_peer(bob, home, role="analyst") == first
