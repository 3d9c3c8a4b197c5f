"""One hostile analyst with a valid certificate against the resource limits of real nodes.

Each attack of issue 10 is played against three real node processes (mTLS, loopback):
fresh Paillier moduli, a key size the policy does not allow, queries that cost minutes
or do not fit a message, one analyst filling the protocol-job and intersection tables,
and a 12 MB WHERE. Each must be refused with a clear error before admission, recorded
as ``denied`` (no ``approved`` entry, no epsilon), and another analyst (bob) must still
be served. Limits are the defaults of ``[limits]`` (``docs/policy.md``).
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from audit import decode_leaf
from datafed.client import Federation
from datafed.hazmat import HeContext
from datafed.local import synth
from datafed.local.federation import LocalFederation, LocalNode, water_district_specs
from datafed.pki.ca import load_signing_key, party_paths
from datafed.proto.v1 import common_pb2, modes_pb2, protocol_pb2, psi_pb2_grpc, query_pb2
from datafed.psi import IdsColumn, PsiJob, ValuesColumns
from datafed.psi import serde as psi_serde
from datafed.wire.serde import header_to_proto
from datafed.wire.signing import new_header, sign_body
from tests.integration.raw import PURPOSE, query_stub, signed_query

MiB = 1 << 20
PSI_POLICY = (
    'allowed_requesters = ["alice", "bob"]\n'
    f'allowed_purposes = ["{PURPOSE}"]\n'
    'allowed_operations = ["intersection_sum"]\n'
    'identifier_columns = ["person_id"]\n'
    "min_group_size = 3\n"
    "person_level = false\n"
)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """Three water offices (alice and bob allowed); north and east also serve PSI data."""
    specs = water_district_specs(segments=40)
    for spec in specs:
        spec.policy_toml = spec.policy_toml.replace('["alice"]', '["alice", "bob"]')
    specs[0].datasets.append(
        ("taxpayers", synth.TAXPAYER_COLUMNS, synth.taxpayers(seed=7, count=300))
    )
    specs[1].datasets.append(
        ("loans", synth.LOAN_COLUMNS, synth.loans(seed=7, count=150, id_space=300))
    )
    specs[0].dataset_policies["taxpayers"] = PSI_POLICY
    specs[1].dataset_policies["loans"] = PSI_POLICY
    fed = LocalFederation.create(
        tmp_path_factory.mktemp("limits"), specs, analysts=("alice", "bob")
    )
    fed.start()
    fed.write_fed_toml("bob")
    try:
        yield fed
    finally:
        codes = fed.stop()
        assert all(c == 0 for c in codes), f"nodes exited with {codes}"


def bob(fed: LocalFederation) -> Federation:
    return Federation.from_file(fed.root / "fed-bob.toml")


def _ledger(fed: LocalFederation, node: str) -> Path:
    return fed.root / "nodes" / node / "state" / "ledger.sqlite"


def _size(fed: LocalFederation, node: str) -> int:
    with sqlite3.connect(f"file:{_ledger(fed, node)}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])


def _records(fed: LocalFederation, node: str, start: int) -> list:
    with sqlite3.connect(f"file:{_ledger(fed, node)}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT leaf FROM entries WHERE idx >= ? ORDER BY idx", (start,))
        return [decode_leaf(bytes(r[0]))[1] for r in rows]


def _rss(node: LocalNode) -> int:
    """Resident memory of a node process, in bytes (Linux /proc)."""
    assert node.process is not None
    for line in Path(f"/proc/{node.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _certs(fed: LocalFederation) -> list[bytes]:
    return [party_paths(fed.pki_dir, "node", n.spec.name).cert.read_bytes() for n in fed.nodes]


def _modulus(bits: int, seed: int) -> int:
    """An odd number of exactly ``bits`` bits: all a hostile analyst needs to send."""
    return random.Random(seed).getrandbits(bits) | (1 << (bits - 1)) | 1


def _paillier(fed: LocalFederation, n: int) -> query_pb2.Protection:
    params = modes_pb2.PaillierParams(
        n=n.to_bytes((n.bit_length() + 7) // 8, "big"), peer_certificates=_certs(fed), value_bits=64
    )
    return query_pb2.Protection(
        mode="paillier", fixed_point_bits=16, params=params.SerializeToString()
    )


def _refused(
    fed: LocalFederation, node: int, signed: common_pb2.SignedRequest, code: grpc.StatusCode
) -> str:
    """Send ``signed`` to one node; it must be refused with ``code`` and one ``denied`` entry."""
    name = fed.nodes[node].spec.name
    before = _size(fed, name)
    ch, stub = query_stub(fed, node)
    with ch, pytest.raises(grpc.RpcError) as err:
        stub.Query(signed, timeout=60)
    assert err.value.code() == code, err.value.details()
    records = _records(fed, name, before)
    assert [r.decision for r in records] == ["denied"]
    assert records[0].epsilon == 0.0 and records[0].result_digest == ""
    return str(err.value.details())


def _histograms(count: int, bins: int = 64) -> list[query_pb2.Aggregate]:
    """``count`` HISTOGRAMs of ``bins`` bins each, all different (no shared components)."""
    return [
        query_pb2.Aggregate(
            func="histogram", column="bursts", bins=[1000.0 * i + j for j in range(bins + 1)]
        )
        for i in range(count)
    ]


def _domain_protection(mode: str, keys: int, params: bytes = b"") -> query_pb2.Protection:
    p = query_pb2.Protection(mode=mode, fixed_point_bits=16, params=params)
    for i in range(keys):
        p.domain.add().values.add(int_value=i)
    return p


# ------------------------------------------------------------------- Paillier keys
def test_fresh_paillier_moduli_do_not_grow_the_node(fed):
    """Three fresh moduli, each used twice, leave one key's table cached, not three."""
    node = fed.nodes[0]
    sql = "SELECT SUM(bursts) FROM pipe_incidents"
    ch, stub = query_stub(fed, 0)
    before = _rss(node)
    with ch:
        for i in range(3):
            protection = _paillier(fed, _modulus(2048, i))
            for j in range(2):
                s = signed_query(
                    fed, node.spec.name, sql, job_id=f"job-key-{i}-{j}", protection=protection
                )
                stub.Query(s.request, timeout=120)
    growth = _rss(node) - before
    # One 2048-bit DJN table is about 59 MiB (docs/policy.md); three would be 177 MiB.
    assert growth < 130 * MiB, f"node grew by {growth / MiB:.0f} MiB"
    r = bob(fed).query(sql, purpose=PURPOSE, protection="paillier")
    assert r.rows[0][0] > 0


def test_paillier_key_size_outside_the_policy_is_refused_before_admission(fed):
    protection = _paillier(fed, _modulus(8192, 99))
    s = signed_query(
        fed,
        fed.nodes[0].spec.name,
        "SELECT SUM(bursts) FROM pipe_incidents",
        job_id="job-8192",
        protection=protection,
    )
    message = _refused(fed, 0, s.request, grpc.StatusCode.PERMISSION_DENIED)
    assert "8192" in message and "paillier_bits" in message


# -------------------------------------------------------------------------- cost
def test_costly_queries_are_refused_before_admission(fed):
    name = fed.nodes[0].spec.name
    # 32 HISTOGRAMs x 64 bins: 2048 values per group (SQLite returns at most 2000 columns).
    wide = query_pb2.QuerySpec(dataset="pipe_incidents", aggregates=_histograms(32))
    s = signed_query(fed, name, spec=wide, job_id="job-wide")
    assert "max_components" in _refused(fed, 0, s.request, grpc.StatusCode.INVALID_ARGUMENT)
    # A 10,000-key domain x 7 HISTOGRAMs x 64 bins was 4.5 million values (minutes of
    # Paillier): the analyst no longer sizes the domain -- the node reports its own declared
    # one, and refuses any other before admission (issue 17). The value and message limits
    # on a declared domain are tested on the estimate (tests/unit/nodes/test_limits.py).
    grouped = query_pb2.QuerySpec(
        dataset="pipe_incidents", group_by=["year"], aggregates=_histograms(7)
    )
    protection = _paillier(fed, _modulus(2048, 1))
    domain = _domain_protection("paillier", 10_000, protection.params)
    s = signed_query(fed, name, spec=grouped, job_id="job-heavy", protection=domain)
    assert "declared one" in _refused(fed, 0, s.request, grpc.StatusCode.INVALID_ARGUMENT)
    # And CKKS ciphertexts for such a domain would not fit one gRPC message: the same.
    small = query_pb2.QuerySpec(
        dataset="pipe_incidents", group_by=["year"], aggregates=_histograms(1, bins=8)
    )
    certs = _certs(fed)
    params = protocol_pb2.CkksParams(
        public_context=HeContext.generate().public_bytes(),
        aggregator_certificate=certs[0],
        participant_certificates=certs,
    )
    ckks = _domain_protection("ckks", 10_000, params.SerializeToString())
    s = signed_query(fed, name, spec=small, job_id="job-big-answer", protection=ckks)
    assert "declared one" in _refused(fed, 0, s.request, grpc.StatusCode.INVALID_ARGUMENT)
    r = bob(fed).query(
        "SELECT year, COUNT(*) FROM pipe_incidents GROUP BY year",
        purpose=PURPOSE,
        protection="paillier",
    )
    assert len(r.rows) == 4  # the three declared years and the remainder


# ------------------------------------------------------------------ protocol jobs
def _shares(fed: LocalFederation) -> query_pb2.Protection:
    certs = _certs(fed)
    params = protocol_pb2.SharesParams(
        aggregator_certificates=certs[:2], participant_certificates=certs
    )
    return query_pb2.Protection(
        mode="shares", fixed_point_bits=16, params=params.SerializeToString()
    )


def test_one_analyst_cannot_fill_the_protocol_job_table(fed):
    """Unfinished shares jobs: 16 per requester; bob still runs his."""
    name = fed.nodes[0].spec.name
    ch, stub = query_stub(fed, 0)
    with ch:
        for i in range(16):
            s = signed_query(fed, name, job_id=f"job-open-{i}", protection=_shares(fed))
            stub.Query(s.request, timeout=30)
    s = signed_query(fed, name, job_id="job-open-16", protection=_shares(fed))
    message = _refused(fed, 0, s.request, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "max_open_jobs_per_requester" in message
    r = bob(fed).query("SELECT COUNT(*) FROM pipe_incidents", purpose=PURPOSE, protection="shares")
    assert r.rows[0][0] == 3 * 40 * 36


def _psi_job(job_id: str, bits: int = 2048) -> PsiJob:
    return PsiJob(
        job_id,
        IdsColumn("water-north", "taxpayers", "person_id"),
        ValuesColumns("water-east", "loans", "person_id", "amount"),
        _modulus(bits, 5),
    )


def _psi_stub(fed: LocalFederation, analyst: str, node: int) -> tuple[grpc.Channel, Any]:
    files = party_paths(fed.pki_dir, "analyst", analyst)
    creds = grpc.ssl_channel_credentials(
        (fed.pki_dir / "ca.crt").read_bytes(), files.key.read_bytes(), files.cert.read_bytes()
    )
    target = fed.nodes[node]
    ch = grpc.secure_channel(
        target.address, creds, options=[("grpc.ssl_target_name_override", target.spec.name)]
    )
    return ch, psi_pb2_grpc.PsiServiceStub(ch)


def _psi_sign(fed: LocalFederation, analyst: str, data: bytes) -> common_pb2.SignedRequest:
    key = load_signing_key(party_paths(fed.pki_dir, "analyst", analyst).signing_key)
    return common_pb2.SignedRequest(body=data, signature=sign_body(data, key))


def _blind(fed: LocalFederation, analyst: str, job_id: str, bits: int = 2048) -> list:
    job = _psi_job(job_id, bits)
    header = header_to_proto(new_header(analyst, "water-north", job_id, PURPOSE))
    signed = _psi_sign(fed, analyst, psi_serde.blind_body(header, job))
    ch, stub = _psi_stub(fed, analyst, 0)
    with ch:
        return list(stub.Blind(signed, timeout=60))


def test_one_analyst_cannot_fill_the_intersection_table(fed):
    """Blinded jobs that never finish: 8 per requester; bob's intersection-sum still runs."""
    for i in range(8):
        assert _blind(fed, "alice", f"job-psi-{i}")
    before = _size(fed, "water-north")
    with pytest.raises(grpc.RpcError) as err:
        _blind(fed, "alice", "job-psi-8")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_pending_intersections_per_requester" in err.value.details()
    assert [r.decision for r in _records(fed, "water-north", before)] == ["denied"]
    r = bob(fed).intersection_sum(
        ("water-north", "taxpayers", "person_id"),
        ("water-east", "loans", "person_id", "amount"),
        purpose=PURPOSE,
    )
    assert r.intersection_size > 0


# ------------------------------------------------------------------- request size
def _huge_where(width: int) -> query_pb2.QuerySpec:
    """63 x ``width`` IN lists of 1000 literals, within the depth and width limits."""
    in_list = query_pb2.Predicate()
    in_list.in_list.column = "year"
    in_list.in_list.values.extend(common_pb2.Literal(int_value=100_000 + i) for i in range(1000))
    any_of = query_pb2.Predicate()
    for _ in range(width):
        any_of.any_of.items.add().CopyFrom(in_list)
    spec = query_pb2.QuerySpec(
        dataset="pipe_incidents", aggregates=[query_pb2.Aggregate(func="count", column="*")]
    )
    for _ in range(63):
        spec.where.all_of.items.add().CopyFrom(any_of)
    return spec


def _where(*items: query_pb2.Predicate) -> query_pb2.QuerySpec:
    spec = query_pb2.QuerySpec(
        dataset="pipe_incidents", aggregates=[query_pb2.Aggregate(func="count", column="*")]
    )
    spec.where.all_of.items.extend(items)
    return spec


def test_huge_where_is_refused_cleanly_while_others_are_served(fed):
    """2 million IN literals (12 MB); 321 small conditions; 5,000 literals in 30 kB."""
    huge = _huge_where(32)
    assert 10 * MiB < huge.ByteSize() < 16 * MiB
    year = query_pb2.Predicate(
        comparison=query_pb2.Comparison(
            column="year", op="=", value=common_pb2.Literal(int_value=1)
        )
    )
    either = query_pb2.Predicate()
    either.any_of.items.extend([year] * 4)
    many = _where(*[either] * 64)
    in_list = query_pb2.Predicate()
    in_list.in_list.column = "year"
    in_list.in_list.values.extend(common_pb2.Literal(int_value=i) for i in range(1000))
    literals = _where(*[in_list] * 5)
    name = fed.nodes[0].spec.name
    hostile = [
        signed_query(fed, name, spec=spec, job_id=f"job-where-{i}")
        for i, spec in enumerate((huge, many, literals))
    ]
    before = _size(fed, name)
    errors: list[grpc.RpcError] = []

    def send(s: common_pb2.SignedRequest) -> None:
        ch, stub = query_stub(fed, 0)
        with ch:
            try:
                stub.Query(s, timeout=60)
            except grpc.RpcError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=send, args=(h.request,)) for h in hostile]
    for t in threads:
        t.start()
    r = bob(fed).query("SELECT COUNT(*) FROM pipe_incidents", purpose=PURPOSE, protection="plain")
    for t in threads:
        t.join()
    assert r.rows[0][0] == 3 * 40 * 36
    assert [e.code() for e in errors] == [grpc.StatusCode.INVALID_ARGUMENT] * 3
    assert sorted(e.details().rsplit("(", 1)[1] for e in errors) == [
        "limits.max_predicate_nodes)",
        "limits.max_spec_bytes)",
        "limits.max_where_values)",
    ]
    decisions = [
        rec.decision
        for rec in _records(fed, name, before)
        if rec.request_digest in {_digest(h.request) for h in hostile}
    ]
    assert decisions == ["denied"] * 3


def _digest(signed: common_pb2.SignedRequest) -> str:
    import hashlib

    return hashlib.sha256(signed.body).hexdigest()


def test_intersection_key_size_outside_the_policy_is_refused_before_admission(fed):
    """The values node encrypts under the analyst's key: only the policy's key sizes."""
    job = _psi_job("job-psi-8192", bits=8192)
    frames = _blind(fed, "bob", job.job_id, bits=8192)  # the ids side encrypts nothing
    peer, _ = psi_serde.reply_from_proto(frames[0].reply)
    points = b"".join(f.chunk for f in frames[1:])
    header = header_to_proto(new_header("bob", "water-east", job.job_id, PURPOSE))
    signed = _psi_sign(fed, "bob", psi_serde.relay_body("exchange", header, job, peer, points))
    before = _size(fed, "water-east")
    ch, stub = _psi_stub(fed, "bob", 1)
    with ch, pytest.raises(grpc.RpcError) as err:
        list(stub.Exchange(psi_serde.upload_frames(signed, points), timeout=60))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "8192 bits" in err.value.details() and "paillier_bits" in err.value.details()
    assert [r.decision for r in _records(fed, "water-east", before)] == ["denied"]
