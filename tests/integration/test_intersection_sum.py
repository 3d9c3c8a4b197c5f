"""Intersection-sum between two real node processes (tax bureau, city bank) over mTLS.

The analyst's client relays every step; the tests record the bytes each node receives,
check the answer against the cleartext join, and send every kind of bad input, each of
which must be refused, recorded as denied, and release nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from audit import decode_leaf
from datafed.client import Federation
from datafed.client import psi as client_psi
from datafed.client._transport import Transport
from datafed.errors import QueryError, RemoteError
from datafed.hazmat import generate_paillier_keypair, hash_to_group
from datafed.local.federation import FINANCE_PURPOSE, LocalFederation, finance_specs
from datafed.pki.ca import load_signing_key, party_paths
from datafed.proto.v1 import common_pb2, psi_pb2_grpc
from datafed.psi import IdsColumn, PsiJob, StatementBody, ValuesColumns, sign_statement
from datafed.psi import serde as psi_serde
from datafed.wire.serde import header_to_proto
from datafed.wire.signing import new_header, sign_body
from nodes.psi.servicer import MAX_SET_SIZE

IDS = ("tax-bureau", "taxpayers", "person_id")
VALUES = ("city-bank", "loans", "person_id", "amount")


@pytest.fixture(scope="module")
def fin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """The tax bureau and the city bank as real node processes.

    The tax bureau also declares ``district`` an identifier column (exact data about
    things, in this test only), so that an intersection can be empty.
    """
    root = tmp_path_factory.mktemp("finance")
    specs = finance_specs(taxpayers=300, loans=150, exact=True)
    specs[0].policy_toml = specs[0].policy_toml.replace(
        'identifier_columns = ["person_id"]', 'identifier_columns = ["person_id", "district"]'
    )
    fed = LocalFederation.create(root, specs)
    fed.start()
    try:
        yield fed
    finally:
        codes = fed.stop()
        assert all(c == 0 for c in codes), f"nodes exited with {codes}"


def _rows(fed: LocalFederation, node: str, sql: str) -> list[tuple]:
    table = "taxpayers" if node == "tax-bureau" else "loans"
    with sqlite3.connect(fed.root / "nodes" / node / "data" / f"{table}.sqlite") as db:
        return db.execute(sql).fetchall()


def _cleartext(fed: LocalFederation) -> tuple[int, int]:
    tax = {r[0] for r in _rows(fed, "tax-bureau", "SELECT person_id FROM taxpayers")}
    sums: dict[str, int] = {}
    for pid, amount in _rows(fed, "city-bank", "SELECT person_id, amount FROM loans"):
        sums[pid] = sums.get(pid, 0) + round(amount * 65536)
    joined = [v for pid, v in sums.items() if pid in tax]
    return len(joined), sum(joined)


def _sizes(fed: LocalFederation) -> dict[str, int]:
    return {i.node: i.ledger.size for i in Federation.from_file(fed.fed_toml).node_info()}


def _records(fed: LocalFederation, node: str, start: int) -> list:
    """Read a running node's ledger entries from ``start`` on (read-only SQLite)."""
    path = fed.root / "nodes" / node / "state" / "ledger.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT leaf FROM entries WHERE idx >= ? ORDER BY idx", (start,))
        return [decode_leaf(bytes(r[0]))[1] for r in rows]


def _frames(sink: bytearray, it):  # type: ignore[no-untyped-def]
    for m in it:
        sink.extend(m.SerializeToString())
        yield m


# grpc.aio files an interceptor under one kind only, so one class per kind.
class _TapUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, sink: bytearray) -> None:
        self.sink = sink

    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        self.sink.extend(request.SerializeToString())
        return await continuation(details, request)


class _TapStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, sink: bytearray) -> None:
        self.sink = sink

    async def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(details, _frames(self.sink, request_iterator))


class _TapStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, sink: bytearray) -> None:
        self.sink = sink

    async def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(details, _frames(self.sink, request_iterator))


def test_size_and_sum_match_the_cleartext_join_and_nodes_see_no_ids(fin, monkeypatch):
    received: dict[str, bytearray] = {"tax-bureau": bytearray(), "city-bank": bytearray()}

    def tapped(self, endpoint, creds):  # type: ignore[no-untyped-def]
        options = [("grpc.ssl_target_name_override", endpoint.name)]
        sink = received[endpoint.name]
        taps = [_TapUnaryStream(sink), _TapStreamStream(sink), _TapStreamUnary(sink)]
        return grpc.aio.secure_channel(endpoint.address, creds, options=options, interceptors=taps)

    monkeypatch.setattr(Transport, "open_channel", tapped)
    before = _sizes(fin)
    r = Federation.from_file(fin.fed_toml).intersection_sum(IDS, VALUES, purpose=FINANCE_PURPOSE)
    size, total = _cleartext(fin)
    assert 20 < size < 150
    assert (r.intersection_size, r.sum_fixed, r.fixed_point_bits) == (size, total, 16)
    assert r.sum == pytest.approx(total / 65536)
    # both ledgers: approved then released, for this job, in the verified receipts too
    for head, receipt in zip(r.ledgers, r.receipts, strict=True):
        assert head.entry_indexes == (before[head.node], before[head.node] + 1)
        assert [x.decision for x in receipt.records] == ["approved", "released"]
        assert all(
            x.operation == "intersection_sum" and x.job_id == r.job_id for x in receipt.records
        )
    assert r.receipts[0].records[1].details["intersection_size"] == str(size)
    # the bytes each node received hold none of the other side's IDs, raw or hashed
    tax_ids = [
        row[0].encode() for row in _rows(fin, "tax-bureau", "SELECT person_id FROM taxpayers")
    ]
    bank_ids = [row[0].encode() for row in _rows(fin, "city-bank", "SELECT person_id FROM loans")]
    assert len(received["city-bank"]) > 32 * len(tax_ids)  # the blinded points went there
    assert len(received["tax-bureau"]) > 512 * len(bank_ids)  # and the sealed pairs here
    for ids, other in ((tax_ids, "city-bank"), (bank_ids, "tax-bureau")):
        seen = bytes(received[other])
        assert not any(i in seen or hash_to_group(i) in seen for i in ids)


def test_the_analyst_cannot_open_single_values(fin, monkeypatch):
    """What the analyst relays to the ids node holds no ciphertext it could decrypt."""
    boxes: list[bytes] = []
    real = psi_serde.upload_frames

    def spy(signed, payload):  # type: ignore[no-untyped-def]
        boxes.append(payload)
        return real(signed, payload)

    monkeypatch.setattr(client_psi.psi_serde, "upload_frames", spy)
    fed = Federation.from_file(fin.fed_toml)
    r = fed.intersection_sum(IDS, VALUES, purpose=FINANCE_PURPOSE)
    pub, priv = client_psi._KEYS[fed]
    sealed = boxes[1]
    width = pub.ciphertext_bytes
    n_ids = len(_rows(fin, "tax-bureau", "SELECT DISTINCT person_id FROM taxpayers"))
    loans = _rows(fin, "city-bank", "SELECT DISTINCT person_id FROM loans")
    amounts = {round(a * 65536) for (a,) in _rows(fin, "city-bank", "SELECT amount FROM loans")}
    for start in (0, 48):  # where the ciphertexts would lie were the box not sealed
        base = start + 32 * (n_ids + len(loans))
        assert len(sealed) >= base + len(loans) * width
        for j in range(len(loans)):
            chunk = sealed[base + j * width : base + (j + 1) * width]
            try:
                value = priv.decrypt(pub.ciphertext_from_bytes(chunk))
            except Exception:
                continue
            assert value not in amounts
    assert r.intersection_size > 0


def test_cli_prints_the_same_result(fin):
    exe = Path(sys.executable).parent / "datafed"
    out = subprocess.run(
        [
            str(exe),
            "intersection-sum",
            "--federation",
            str(fin.fed_toml),
            "--ids",
            ":".join(IDS),
            "--values",
            ":".join(VALUES),
            "--purpose",
            FINANCE_PURPOSE,
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    got = json.loads(out.stdout)
    size, total = _cleartext(fin)
    assert (got["intersection_size"], int(got["sum_fixed"])) == (size, total)
    assert [h["node"] for h in got["ledgers"]] == ["tax-bureau", "city-bank"]
    # a live line per node and step on stderr (issue 14), none with --quiet
    assert "tax-bureau: blind ✓ · intersect ✓" in out.stderr
    assert "city-bank: exchange ✓" in out.stderr and "analyst: paillier key ✓" in out.stderr
    bad = subprocess.run(
        [
            str(exe),
            "intersection-sum",
            "-f",
            str(fin.fed_toml),
            "--ids",
            "tax-bureau:taxpayers",
            "--values",
            ":".join(VALUES),
            "--purpose",
            FINANCE_PURPOSE,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "expected node:dataset:id_column" in bad.stderr
    quiet = subprocess.run(
        [str(exe), "intersection-sum", "-f", str(fin.fed_toml), "--ids", ":".join(IDS),
         "--values", ":".join(VALUES), "--purpose", FINANCE_PURPOSE, "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert quiet.returncode == 0 and quiet.stderr == "" and "intersection size" in quiet.stdout


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    ("kwargs", "node", "code", "fragment"),
    [
        ({"purpose": "marketing"}, "tax-bureau", "PERMISSION_DENIED", "purpose 'marketing'"),
        (
            {"ids": ("tax-bureau", "taxpayers", "ssn")},
            "tax-bureau",
            "INVALID_ARGUMENT",
            "unknown column 'ssn'",
        ),
        (
            {"ids": ("tax-bureau", "salaries", "person_id")},
            "tax-bureau",
            "NOT_FOUND",
            "unknown dataset 'salaries'",
        ),
        (
            {"values": ("city-bank", "loans", "person_id", "pin")},
            "city-bank",
            "INVALID_ARGUMENT",
            "unknown column 'pin'",
        ),
    ],
)
def test_policy_refusals_are_recorded_and_release_nothing(fin, kwargs, node, code, fragment):
    before = _sizes(fin)
    args = {"ids": IDS, "values": VALUES, "purpose": FINANCE_PURPOSE, **kwargs}
    with pytest.raises(RemoteError) as info:
        Federation.from_file(fin.fed_toml).intersection_sum(**args)
    assert (info.value.node, info.value.code) == (node, code) and fragment in info.value.message
    records = _records(fin, node, before[node])
    if node == "tax-bureau":
        assert [x.decision for x in records] == ["denied"]
    else:  # step 1 at the tax bureau was approved; its job expires unanswered
        assert [x.decision for x in records] == ["denied"]
        assert [x.decision for x in _records(fin, "tax-bureau", before["tax-bureau"])] == [
            "approved"
        ]
    assert records[0].operation == "intersection_sum" and code in records[0].reason


def test_a_column_that_is_not_an_identifier_is_refused_before_admission(fin):
    """The set size of any other column would be its exact distinct count (red team 2)."""
    before = _sizes(fin)
    with pytest.raises(RemoteError, match="not an identifier column") as info:
        Federation.from_file(fin.fed_toml).intersection_sum(
            ("tax-bureau", "taxpayers", "sector"), VALUES, purpose=FINANCE_PURPOSE
        )
    assert info.value.code == "PERMISSION_DENIED"
    tax = _records(fin, "tax-bureau", before["tax-bureau"])
    assert [x.decision for x in tax] == ["denied"]


def test_a_small_intersection_releases_no_sum(fin):
    """District codes never match person IDs: |J| = 0 < k = 5, so the tax bureau refuses."""
    before = _sizes(fin)
    with pytest.raises(RemoteError, match="fewer than 5 identifiers; no sum is released") as info:
        Federation.from_file(fin.fed_toml).intersection_sum(
            ("tax-bureau", "taxpayers", "district"), VALUES, purpose=FINANCE_PURPOSE
        )
    assert info.value.code == "PERMISSION_DENIED"
    tax = _records(fin, "tax-bureau", before["tax-bureau"])
    assert [x.decision for x in tax] == ["approved", "denied"] and tax[1].result_digest == ""


def test_unknown_node_is_a_client_error(fin):
    with pytest.raises(QueryError, match="node 'tax-office' is not in the federation file"):
        Federation.from_file(fin.fed_toml).intersection_sum(
            ("tax-office", "taxpayers", "person_id"), VALUES, purpose=FINANCE_PURPOSE
        )


# ---------------------------------------------------- hand-made requests (bad input)
@dataclasses.dataclass
class _Client:
    fed: LocalFederation
    role: str
    name: str

    def stub(self, node: str) -> psi_pb2_grpc.PsiServiceStub:
        files = party_paths(self.fed.pki_dir, self.role, self.name)
        creds = grpc.ssl_channel_credentials(
            (self.fed.pki_dir / "ca.crt").read_bytes(),
            files.key.read_bytes(),
            files.cert.read_bytes(),
        )
        address = next(n.address for n in self.fed.nodes if n.spec.name == node)
        ch = grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", node)])
        return psi_pb2_grpc.PsiServiceStub(ch)

    def sign(self, node: str, job: PsiJob, body) -> common_pb2.SignedRequest:  # type: ignore[no-untyped-def]
        key = load_signing_key(party_paths(self.fed.pki_dir, self.role, self.name).signing_key)
        header = header_to_proto(new_header(self.name, node, job.job_id, FINANCE_PURPOSE))
        data = body(header)
        return common_pb2.SignedRequest(body=data, signature=sign_body(data, key))


@pytest.fixture(scope="module")
def n() -> int:
    return generate_paillier_keypair(2048)[0].n


def _job(n: int, name: str) -> PsiJob:
    return PsiJob(name, IdsColumn(*IDS), ValuesColumns(*VALUES), n)


def _node_statement(fed: LocalFederation, node: str, body: StatementBody):  # type: ignore[no-untyped-def]
    files = party_paths(fed.pki_dir, "node", node)
    return sign_statement(body, files.cert.read_bytes(), load_signing_key(files.signing_key))


def _blind(client: _Client, job: PsiJob):  # type: ignore[no-untyped-def]
    signed = client.sign("tax-bureau", job, lambda h: psi_serde.blind_body(h, job))
    frames = list(client.stub("tax-bureau").Blind(signed))
    st, _ = psi_serde.reply_from_proto(frames[0].reply)
    return signed, st, b"".join(f.chunk for f in frames[1:])


def _exchange(client: _Client, job: PsiJob, peer, points: bytes, declared: bytes | None = None):  # type: ignore[no-untyped-def]
    body = lambda h: psi_serde.relay_body("exchange", h, job, peer, declared or points)  # noqa: E731
    signed = client.sign("city-bank", job, body)
    return list(client.stub("city-bank").Exchange(psi_serde.upload_frames(signed, points)))


def _refused(fin, node: str, code: grpc.StatusCode, fragment: str, call, decisions=("denied",)):  # type: ignore[no-untyped-def]
    before = _sizes(fin)
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code and fragment in info.value.details()
    records = _records(fin, node, before[node])
    assert [x.decision for x in records] == list(decisions)
    assert all(x.result_digest == "" for x in records)


def test_wrong_role_certificate_is_denied(fin, n):
    bank = _Client(fin, "node", "city-bank")
    job = _job(n, "job-wrong-role")
    _refused(
        fin,
        "tax-bureau",
        grpc.StatusCode.PERMISSION_DENIED,
        "role 'node' may not run intersection-sums",
        lambda: _blind(bank, job),
    )


def test_replayed_step_is_denied(fin, n):
    alice = _Client(fin, "analyst", "alice")
    job = _job(n, "job-replay")
    signed, _, _ = _blind(alice, job)
    _refused(
        fin,
        "tax-bureau",
        grpc.StatusCode.UNAUTHENTICATED,
        "replayed",
        lambda: list(alice.stub("tax-bureau").Blind(signed)),
    )


def test_tampered_points_wrong_sizes_and_oversize_sets_are_denied(fin, n):
    alice = _Client(fin, "analyst", "alice")
    job = _job(n, "job-tamper")
    _, st, points = _blind(alice, job)
    flipped = bytes([points[0] ^ 1]) + points[1:]
    _refused(
        fin,
        "city-bank",
        grpc.StatusCode.INVALID_ARGUMENT,
        "does not match the ids node's statement",
        lambda: _exchange(alice, job, st, flipped),
    )
    _refused(
        fin,
        "city-bank",
        grpc.StatusCode.INVALID_ARGUMENT,
        f"payload must be {len(points)} bytes for this job, got {len(points) - 32}",
        lambda: _exchange(alice, job, st, points[:-32]),
    )
    _refused(
        fin,
        "city-bank",
        grpc.StatusCode.INVALID_ARGUMENT,
        "longer than the declared",
        lambda: _exchange(alice, job, st, points + b"x" * 32, declared=points),
    )
    body = StatementBody.decode(st.body)
    huge = _node_statement(fin, "tax-bureau", dataclasses.replace(body, count=MAX_SET_SIZE + 1))
    _refused(
        fin,
        "city-bank",
        grpc.StatusCode.INVALID_ARGUMENT,
        f"set of {MAX_SET_SIZE + 1} exceeds the limit",
        lambda: _exchange(alice, job, huge, points),
    )
    forged = dataclasses.replace(st, body=body.encode()[:-1] + b"\x01")
    _refused(
        fin,
        "city-bank",
        grpc.StatusCode.INVALID_ARGUMENT,
        "statement of node 'tax-bureau' does not verify",
        lambda: _exchange(alice, job, forged, points),
    )


def test_malformed_points_signed_by_a_faulty_node_are_denied_after_approval(fin, n):
    alice = _Client(fin, "analyst", "alice")
    job = _job(n, "job-bad-points")
    _, st, points = _blind(alice, job)
    bad = bytes([0xFF] * 31 + [0x7F]) + points[32:]  # a non-canonical encoding
    body = dataclasses.replace(
        StatementBody.decode(st.body), payload_digest=hashlib.sha256(bad).digest()
    )
    faulty = _node_statement(fin, "tax-bureau", body)
    _refused(
        fin,
        "city-bank",
        grpc.StatusCode.INVALID_ARGUMENT,
        "the relayed blinded points failed verification",
        lambda: _exchange(alice, job, faulty, bad),
        decisions=("approved", "denied"),
    )


def test_tampered_sealed_box_is_denied_and_the_job_is_gone(fin, n):
    alice = _Client(fin, "analyst", "alice")
    job = _job(n, "job-box")
    _, st, points = _blind(alice, job)
    frames = _exchange(alice, job, st, points)
    est, _ = psi_serde.reply_from_proto(frames[0].reply)
    sealed = b"".join(f.chunk for f in frames[1:])
    bad = sealed[:-1] + bytes([sealed[-1] ^ 1])

    def intersect(box: bytes):  # type: ignore[no-untyped-def]
        body = lambda h: psi_serde.relay_body("intersect", h, job, est, box)  # noqa: E731
        signed = alice.sign("tax-bureau", job, body)
        return alice.stub("tax-bureau").Intersect(psi_serde.upload_frames(signed, box))

    _refused(
        fin,
        "tax-bureau",
        grpc.StatusCode.INVALID_ARGUMENT,
        "does not match the values node's statement",
        lambda: intersect(bad),
    )
    _refused(
        fin,
        "tax-bureau",
        grpc.StatusCode.NOT_FOUND,
        "no intersection-sum job 'job-box' in progress",
        lambda: intersect(sealed),
    )
