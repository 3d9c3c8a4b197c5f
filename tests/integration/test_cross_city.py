"""Two cities, two CAs, real nodes: recognition, cross-city jobs and every attack of issue 19.

Shanghai (three water offices) and Suzhou (two) are two federations with their own CAs
(:class:`datafed.local.cities.TwoCities`); each city's nodes recognise the other's trust
bundle. A Suzhou analyst queries all five nodes in one job and runs an intersection-sum
across the border; every ledger entry names qualified identities. Each attack is refused
with a clear error, recorded as denied where it reached a node, and changes nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.export import ExportDir, export_store
from audit.note import SIG_ED25519, vkey
from audit.records import DataUseRecord, decode_leaf
from audit.vkeys import public_key_of
from datafed import pki
from datafed.client import Federation
from datafed.errors import DatafedError, RemoteError
from datafed.local.cities import CITIES, PARTNER_EPSILON, PURPOSE, SHARED_PURPOSE, TwoCities
from datafed.pki.registry import list_issued, publish_crl

BIN = Path(sys.executable).parent
SQL = "SELECT material, SUM(bursts), COUNT(*) FROM pipe_incidents GROUP BY material"
ALL_NODES = {f"{c}:{n}" for c, names in CITIES.items() for n in names}


@pytest.fixture(scope="module")
def cities(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoCities]:
    c = TwoCities.create(tmp_path_factory.mktemp("cities"), segments=30)
    try:
        c.recognise()
        c.start()
        yield c
    finally:
        c.stop()


def records(cities: TwoCities, city: str, node: str, out: Path) -> list[DataUseRecord]:
    """Every entry of one node's ledger (read from its SQLite file, as an auditor would)."""
    db = cities.cities[city].root / "nodes" / node / "state" / "ledger.sqlite"
    exp = ExportDir(export_store(db, out / f"{city}-{node}-{time.monotonic_ns()}"))
    return [decode_leaf(leaf)[1] for chunk in exp.leaf_chunks(4096) for leaf in chunk]


def wait_for(cond, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def fed_toml(path, name, cities, cert, files, ca):  # type: ignore[no-untyped-def]
    """A federation file of ``name`` with these certificate files, for Shanghai's nodes."""
    sh = cities.cities["shanghai"]
    partners = f'partners = ["{cities.bundle("shanghai")}"]\n' if ca is not None else ""
    text = (
        f'analyst = "{name}"\ntimeout_s = 10\n{partners}'
        f'[tls]\nca = "{ca or sh.pki_dir / "ca.crt"}"\ncert = "{cert}"\nkey = "{files.key}"\n'
        f'signing_key = "{files.signing_key}"\n'
    )
    for n in sh.nodes:
        text += f'[[nodes]]\nname = "{sh.qname(n.spec.name)}"\naddress = "{n.address}"\n'
    path.write_text(text)
    return path


def analyst(cities: TwoCities, city: str, name: str = "alice") -> Federation:
    fed = cities.cities[city]
    if name == "alice":
        return Federation.from_file(cities.fed_toml(city))
    return Federation.from_file(fed.write_fed_toml(name))


def test_a_cross_city_query_is_one_job_over_both_cities_with_qualified_identities(cities, tmp_path):
    suzhou = analyst(cities, "suzhou")
    shanghai = analyst(cities, "shanghai")
    theirs = suzhou.query(SQL, purpose=SHARED_PURPOSE, protection="paillier")
    ours = shanghai.query(SQL, purpose=SHARED_PURPOSE, protection="paillier")
    assert set(theirs.nodes) == ALL_NODES and theirs.rows == ours.rows
    assert sum(r[1] for r in theirs.rows if r[1] is not None) > 0
    for receipt in theirs.receipts:  # one job statement, every node's entries qualified
        assert receipt.node in ALL_NODES
        for rec in receipt.records:
            assert rec.requester == "suzhou:alice" and rec.node == receipt.node
            assert rec.job_id == theirs.job_id and rec.details["statement"] == theirs.statement
    north = records(cities, "shanghai", "water-north", tmp_path)
    assert {r.operation for r in north if r.operation.startswith("partner_")} == {
        "partner_added"
    }  # recognition is in the ledger
    added = next(r for r in north if r.operation == "partner_added")
    assert added.details["federation"] == "suzhou" and added.requester == "shanghai:water-north"


def test_discovery_lists_both_cities_nodes(cities):
    statuses = analyst(cities, "suzhou").discover()
    assert {s.node for s in statuses} == ALL_NODES and all(s.up for s in statuses)
    north = next(s for s in statuses if s.node == "shanghai:water-north")
    assert north.info is not None and north.info.caller == "analyst:suzhou:alice"
    assert "pipe_incidents" in north.info.described


def test_a_cross_city_intersection_sum(cities):
    fed = analyst(cities, "suzhou")
    result = fed.intersection_sum(
        ("shanghai:water-north", "commuter_accounts", "person_id"),
        ("suzhou:water-wujiang", "commuter_accounts", "person_id", "usage_m3"),
        purpose=SHARED_PURPOSE,
    )
    assert 60 <= result.intersection_size <= 140  # about 100 commuters hold both accounts


def test_a_partner_federation_has_its_own_epsilon_cap_inside_the_dataset_budget(cities):
    suzhou, shanghai = analyst(cities, "suzhou"), analyst(cities, "shanghai")
    ids = ("suzhou:water-wujiang", "commuter_accounts", "person_id")
    values = ("shanghai:water-north", "commuter_accounts", "person_id", "usage_m3")
    runs = 0  # epsilon 1 each at Shanghai's node (an earlier test may have spent some)
    with pytest.raises(RemoteError, match="partner federation 'suzhou''s privacy budget"):
        for _ in range(int(PARTNER_EPSILON) + 1):
            suzhou.intersection_sum(ids, values, purpose=SHARED_PURPOSE)
            runs += 1
    assert 1 <= runs <= PARTNER_EPSILON
    shanghai.intersection_sum(ids, values, purpose=SHARED_PURPOSE)  # the home city's still runs


def test_a_partner_ca_cannot_issue_a_home_name(cities, tmp_path, monkeypatch):
    suzhou = cities.cities["suzhou"]
    agency, rogue = tmp_path / "rogue", tmp_path / "suzhou-ca"
    files = pki.request(agency, "analyst", "alice")
    for name in ("ca.crt", "ca.key"):  # the Suzhou CA's key, used by a rogue operator
        (rogue / name).parent.mkdir(exist_ok=True)
        (rogue / name).write_bytes((suzhou.pki_dir / name).read_bytes())
    # it stamps a certificate with Shanghai's federation
    monkeypatch.setattr("datafed.pki.ca.ca_federation", lambda _ca: "shanghai")
    _, cert = pki.sign(rogue, files.csr.read_bytes(), force=True)
    monkeypatch.undo()
    path = fed_toml(tmp_path / "forged.toml", "shanghai:alice", cities, cert, files, ca=None)
    before = len(records(cities, "shanghai", "water-north", tmp_path))
    with pytest.raises(RemoteError) as refused:
        Federation.from_file(path).query(SQL, purpose=PURPOSE, protection="plain")
    assert refused.value.code == "UNAUTHENTICATED"
    assert "may issue names only in its own trust domain" in refused.value.message
    after = records(cities, "shanghai", "water-north", tmp_path)[before:]
    assert after and all(r.decision == "denied" for r in after)
    assert "own trust domain" in after[-1].reason


def test_a_certificate_of_an_unrecognised_ca_is_refused_and_changes_nothing(cities, tmp_path):
    hangzhou = tmp_path / "hangzhou"
    pki.init_ca(hangzhou, federation="hangzhou")
    pki.issue(hangzhou, "analyst", "alice")
    files = pki.party_paths(hangzhou, "analyst", "alice")
    path = fed_toml(
        tmp_path / "hangzhou.toml", "hangzhou:alice", cities, files.cert, files, hangzhou / "ca.crt"
    )
    before = [len(records(cities, "shanghai", n, tmp_path)) for n in CITIES["shanghai"]]
    with pytest.raises(DatafedError):
        Federation.from_file(path).query(SQL, purpose=PURPOSE, protection="plain")
    after = [len(records(cities, "shanghai", n, tmp_path)) for n in CITIES["shanghai"]]
    assert after == before  # refused in the TLS handshake: no call, no data, no entry


def test_a_revoked_partner_certificate_is_refused(cities, tmp_path):
    suzhou = cities.cities["suzhou"]
    pki.issue(suzhou.pki_dir, "analyst", "bob")
    bob = analyst(cities, "suzhou", "bob")
    serial = next(c.serial for c in list_issued(suzhou.pki_dir) if c.name == "suzhou:bob")
    publish_crl(suzhou.pki_dir, (serial,))
    cities.recognise("shanghai", "suzhou")  # Shanghai's operators take Suzhou's CRL
    wait_for(lambda: any(
        r.operation == "partner_added" and r.time_ms > 0
        for r in records(cities, "shanghai", "water-north", tmp_path)[-3:]
    ))  # fmt: skip
    before = len(records(cities, "shanghai", "water-north", tmp_path))
    with pytest.raises(RemoteError) as refused:
        bob.query(SQL, purpose=SHARED_PURPOSE, protection="paillier")
    assert refused.value.code == "UNAUTHENTICATED" and "has been revoked" in refused.value.message
    after = records(cities, "shanghai", "water-north", tmp_path)[before:]
    assert after and after[-1].decision == "denied" and "revoked" in after[-1].reason
    assert not any(r.decision == "released" for r in after)
    assert analyst(cities, "suzhou").query(SQL, purpose=SHARED_PURPOSE).rows  # alice unaffected


@pytest.mark.parametrize(
    ("purpose", "protection", "message"),
    [
        (PURPOSE, "paillier", "purpose 'service-planning' is not allowed to partner federation"),
        (SHARED_PURPOSE, "plain", "protection 'plain' is not allowed to partner federation"),
    ],
)
def test_a_partner_analyst_naming_a_home_only_purpose_or_protection_is_refused(
    cities, tmp_path, purpose, protection, message
):
    before = len(records(cities, "shanghai", "water-east", tmp_path))
    with pytest.raises(RemoteError) as refused:
        analyst(cities, "suzhou").query(SQL, purpose=purpose, protection=protection)
    assert refused.value.code == "PERMISSION_DENIED" and message in refused.value.message
    after = records(cities, "shanghai", "water-east", tmp_path)[before:]
    assert [r.decision for r in after] == ["denied"] and message in after[0].reason
    assert after[0].requester == "suzhou:alice"


def test_two_alices_are_two_parties(cities, tmp_path):
    suzhou = cities.cities["suzhou"]
    path = tmp_path / "alias.toml"
    text = suzhou.fed_toml.read_text()
    path.write_text(text.replace('analyst = "suzhou:alice"', 'analyst = "shanghai:alice"'))
    before = len(records(cities, "shanghai", "water-south", tmp_path))
    with pytest.raises(RemoteError) as refused:
        Federation.from_file(path).query(SQL, purpose=SHARED_PURPOSE)
    assert refused.value.code == "UNAUTHENTICATED"
    assert "names requester 'shanghai:alice' but the certificate is 'suzhou:alice'" in (
        refused.value.message
    )
    after = records(cities, "shanghai", "water-south", tmp_path)[before:]
    assert [r.decision for r in after] == ["denied"]


def test_a_partner_node_lying_about_its_federation_is_refused(cities, tmp_path):
    suzhou = cities.cities["suzhou"]
    path = tmp_path / "liar.toml"
    text = suzhou.fed_toml.read_text()
    # the federation file (or a relay) presents Suzhou's wujiang node as a Shanghai node
    path.write_text(
        text.replace('name = "suzhou:water-wujiang"', 'name = "shanghai:water-wujiang"')
    )
    before = len(records(cities, "suzhou", "water-wujiang", tmp_path))
    with pytest.raises(DatafedError, match="calls itself 'suzhou:water-wujiang'"):
        Federation.from_file(path).query(SQL, purpose=SHARED_PURPOSE)
    # the client checks every node's name against its certificate before any job is sent
    assert len(records(cities, "suzhou", "water-wujiang", tmp_path)) == before


def test_a_roster_mixing_a_withdrawn_partner_is_refused(cities, tmp_path):
    cities.withdraw("suzhou", "shanghai", nodes=("water-kunshan",))
    try:
        wait_for(lambda: any(
            r.operation == "partner_removed"
            for r in records(cities, "suzhou", "water-kunshan", tmp_path)
        ))  # fmt: skip
        before = len(records(cities, "suzhou", "water-kunshan", tmp_path))
        with pytest.raises(RemoteError) as refused:
            analyst(cities, "suzhou").query(SQL, purpose=SHARED_PURPOSE)
        assert "does not recognise (never added, or withdrawn)" in refused.value.message
        after = records(cities, "suzhou", "water-kunshan", tmp_path)[before:]
        assert [r.decision for r in after] == ["denied"] and "roster names" in after[0].reason
    finally:
        cities.recognise("suzhou", "shanghai")


def test_withdrawing_recognition_stops_every_partner_request_at_once_and_is_recorded(
    cities, tmp_path
):
    fed = analyst(cities, "suzhou")
    assert fed.query(SQL, purpose=SHARED_PURPOSE).rows
    cities.withdraw("shanghai", "suzhou")
    try:
        with pytest.raises(RemoteError) as refused:  # the very next request: no restart
            fed.query(SQL, purpose=SHARED_PURPOSE)
        assert refused.value.code == "UNAUTHENTICATED"
        assert "recognition of partner federation 'suzhou' has been withdrawn" in (
            refused.value.message
        )
        for node in CITIES["shanghai"]:
            wait_for(lambda n=node: any(
                r.operation == "partner_removed" and r.details["federation"] == "suzhou"
                for r in records(cities, "shanghai", n, tmp_path)
            ))  # fmt: skip
        north = records(cities, "shanghai", "water-north", tmp_path)
        denied = [r for r in north if "has been withdrawn" in r.reason]
        assert denied and all(r.decision == "denied" for r in denied)
        # Shanghai's own analyst still reaches every node
        assert all(s.up for s in analyst(cities, "shanghai").discover())
    finally:
        cities.recognise("shanghai", "suzhou")
    wait_for(lambda: records(cities, "shanghai", "water-north", tmp_path)[-1].operation
             in ("partner_added", "query"))  # fmt: skip
    assert fed.query(SQL, purpose=SHARED_PURPOSE).rows  # recognised again


def test_each_citys_auditor_reconciles_the_cross_city_job_with_keys_from_the_partner_bundle(
    cities, tmp_path
):
    job = analyst(cities, "suzhou").query(SQL, purpose=SHARED_PURPOSE).job_id
    for city in CITIES:  # each city's auditor, on exports of all five ledgers
        partner = next(c for c in CITIES if c != city)
        logs, exports = [], []
        for c, names in CITIES.items():
            ca = cities.cities[c].pki_dir / "ca.crt" if c == city else cities.bundle(c)
            for n in names:
                cert = pki.party_paths(cities.cities[c].pki_dir, "node", n).cert
                found = public_key_of(cert.read_bytes(), cert.name, ca=ca)
                assert found.name == f"datafed/ledger/{c}:{n}"
                logs.append(vkey(found.name, SIG_ED25519, found.key))
                db = cities.cities[c].root / "nodes" / n / "state" / "ledger.sqlite"
                exports.append(str(export_store(db, tmp_path / city / f"{c}-{n}")))
        policy = tmp_path / f"{city}-policy.toml"
        policy.write_text(f"quorum = 0\nlogs = {json.dumps(logs)}\nwitnesses = []\n")
        done = subprocess.run(
            [str(BIN / "datafed-audit"), "reconcile", job, *exports, "-p", str(policy),
             "--no-witnesses"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"OK job {job} reconciles across 5 node(s)" in done.stdout
        assert f"{partner}:water" in done.stdout and f"{city}:water" in done.stdout
    # the partner bundle does not vouch for a certificate its CA did not issue
    rogue = pki.party_paths(cities.cities["shanghai"].pki_dir, "node", "water-north").cert
    with pytest.raises(ValueError, match="not issued by the CA"):
        public_key_of(rogue.read_bytes(), rogue.name, ca=cities.bundle("suzhou"))


def test_the_partners_command_lists_and_refuses_a_bundle_of_the_home_federation(cities):
    node = cities.cities["shanghai"].nodes[0].config
    cmd = [str(BIN / "datafed-node"), "partners"]
    done = subprocess.run([*cmd, "add", str(cities.bundle("shanghai")), "-c", str(node)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "cannot be the home federation 'shanghai'" in done.stderr
    listed = subprocess.run([*cmd, "list", "-c", str(node)], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert listed.returncode == 0 and "node shanghai:water-north of federation 'shanghai'" in (
        listed.stdout
    )
    assert "  suzhou  CA sha256 " in listed.stdout
    gone = subprocess.run([*cmd, "remove", "hangzhou", "-c", str(node)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert gone.returncode == 2 and "'hangzhou' is not a partner" in gone.stderr
