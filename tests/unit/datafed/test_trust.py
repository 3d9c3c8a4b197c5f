"""Trust domains: qualified names, one CA per domain, partner bundles, the live trust store."""

from __future__ import annotations

from pathlib import Path

import pytest

from datafed import pki
from datafed.errors import PkiError
from datafed.pki.peers import verify_peer
from datafed.pki.trust import PartnerBundle, TrustStore, verify_chain


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cas")
    out = {}
    for fed in ("shanghai", "suzhou", "datafed"):
        out[fed] = root / fed
        pki.init_ca(out[fed], federation=fed)
        pki.issue(out[fed], "analyst", "alice")
        pki.issue(out[fed], "node", "water-1")
    return out


def cert(cas: dict[str, Path], fed: str, role: str = "analyst", name: str = "alice") -> bytes:
    return pki.party_paths(cas[fed], role, name).cert.read_bytes()


def ca(cas: dict[str, Path], fed: str) -> bytes:
    return (cas[fed] / "ca.crt").read_bytes()


def test_names_are_qualified_in_a_named_federation_and_bare_in_the_default(cas):
    sh = pki.identity_from_pem(cert(cas, "shanghai"))
    assert (sh.name, sh.federation, sh.local_name) == ("shanghai:alice", "shanghai", "alice")
    old = pki.identity_from_pem(cert(cas, "datafed"))
    assert (old.name, old.federation) == ("alice", "datafed")


def test_a_ca_can_issue_names_only_in_its_own_domain(cas, tmp_path, monkeypatch):
    files = pki.request(tmp_path / "agency", "analyst", "mallory")
    rogue = tmp_path / "rogue"
    rogue.mkdir()
    for name in ("ca.crt", "ca.key"):
        (rogue / name).write_bytes((cas["suzhou"] / name).read_bytes())
    monkeypatch.setattr("datafed.pki.ca.ca_federation", lambda _ca: "shanghai")
    _, forged = pki.sign(rogue, files.csr.read_bytes())
    monkeypatch.undo()
    pem = forged.read_bytes()
    both = ca(cas, "shanghai") + ca(cas, "suzhou")
    with pytest.raises(PkiError, match="may issue names only in its own trust domain"):
        verify_peer(pem, both, role="analyst")
    assert verify_peer(cert(cas, "suzhou"), both, role="analyst").name == "suzhou:alice"
    with pytest.raises(PkiError, match="not issued by the federation CA nor a recognised"):
        verify_peer(cert(cas, "suzhou"), ca(cas, "shanghai"), role="analyst")


def test_a_bundle_is_refused_for_the_home_domain_an_unnamed_home_or_a_lying_name(cas):
    good = PartnerBundle("suzhou", ca(cas, "suzhou"))
    assert good.check("shanghai") is good
    with pytest.raises(PkiError, match="cannot be the home federation"):
        good.check("suzhou")
    with pytest.raises(PkiError, match="has no name"):
        good.check("datafed")
    with pytest.raises(PkiError, match="bundle says federation 'hangzhou' but its CA speaks"):
        PartnerBundle("hangzhou", ca(cas, "suzhou")).check("shanghai")


def test_the_trust_store_follows_the_partners_folder_and_names_a_withdrawn_partner(cas, tmp_path):
    folder = tmp_path / "partners"
    store = TrustStore(ca(cas, "shanghai"), folder)
    try:
        with pytest.raises(PkiError, match="not recognised here"):
            store.identify(cert(cas, "suzhou"))
        PartnerBundle("suzhou", ca(cas, "suzhou")).write(folder)
        assert store.identify(cert(cas, "suzhou")).name == "suzhou:alice"
        assert [(c.event, c.federation) for c in store.drain()] == [("added", "suzhou")]
        assert PartnerBundle.withdraw(folder, "suzhou")
        with pytest.raises(PkiError, match="'suzhou' has been withdrawn"):
            store.identify(cert(cas, "suzhou"))
        assert [(c.event, c.federation) for c in store.drain()] == [("removed", "suzhou")]
        assert ca(cas, "suzhou") in store.tls_roots_pem()  # so the gate can say why
        assert ca(cas, "suzhou") not in store.anchors_pem()
        assert store.identify(cert(cas, "shanghai")).name == "shanghai:alice"
    finally:
        store.close()


def test_verify_chain_checks_validity_and_home_domain(cas):
    from cryptography import x509

    anchors = [x509.load_pem_x509_certificate(ca(cas, "shanghai"))]
    assert verify_chain(cert(cas, "shanghai", "node", "water-1"), anchors).name == (
        "shanghai:water-1"
    )
