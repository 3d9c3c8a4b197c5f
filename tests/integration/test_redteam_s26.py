"""Red team, round 5: remembered certificate checks, live collection, query modes.

An outsider's probes of what changed on 6 December, through real node processes (mTLS on
127.0.0.1): analysts with valid certificates (one revoked after its first call, one whose
certificate expires between two calls, one holding two certificates of one subject),
hand-made certificates signed by the federation CA (playing the operator's tooling) and by
a foreign CA, and gateways uploading Prio3 reports. Each test asserts the safe behaviour;
one marked ``xfail(strict=True)`` is a finding (see its reason).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from datafed.collect import Collector, Uploader
from datafed.hazmat import Field128, HistogramCircuit, SumVecCircuit
from datafed.local.federation import PURPOSE, LocalFederation, water_district_specs
from datafed.pki.ca import issue, load_signing_key, party_paths
from datafed.pki.registry import publish_crl, revoke
from datafed.proto.v1 import collect_pb2, collect_pb2_grpc, protocol_pb2, query_pb2, query_pb2_grpc
from datafed.protocols import Prio3

from .collect_harness import (
    LEADER,
    collect_federation,
    gateway_file,
    make_task,
    raw_upload,
    shard_protos,
    upload,
    wait_closed,
)
from .collect_harness import window as w
from .raw import ledger_records, signed_query

COUNT = "SELECT COUNT(*) FROM pipe_incidents"
ANALYSTS = ("alice", "bob", "carol", "dave", "erin")


# ---------------------------------------------------------------------------- certificates


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    specs = water_district_specs(segments=6, requesters=ANALYSTS)
    f = LocalFederation.create(tmp_path_factory.mktemp("redteam-s26"), specs, analysts=ANALYSTS)
    publish_crl(f.pki_dir)
    for node in f.nodes:
        crl = node.config.parent / "crl.pem"
        shutil.copy(f.pki_dir / "crl.pem", crl)
        node.config.write_text(
            node.config.read_text().replace("[tls]\n", f'[tls]\ncrl = "{crl}"\n')
        )
    f.start()
    try:
        yield f
    finally:
        f.stop()


def distribute_crl(fed: LocalFederation) -> None:
    for node in fed.nodes:
        shutil.copy(fed.pki_dir / "crl.pem", node.config.parent / "crl.pem")


def names(fed: LocalFederation) -> list[str]:
    return [n.spec.name for n in fed.nodes]


def ca_key(pki_dir: Path):
    return serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), None)


def clone(
    pki_dir: Path,
    pem: bytes,
    *,
    public_key=None,
    not_after: dt.datetime | None = None,
    signer=None,
    issuer: x509.Name | None = None,
) -> bytes:
    """``pem`` re-issued: a fresh serial, optionally another key, end date or signer."""
    old = x509.load_pem_x509_certificate(pem)
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(issuer or old.issuer)
        .public_key(public_key or old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or old.not_valid_after_utc)
    )
    for ext in old.extensions:
        if ext.oid in (
            x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
            x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ):
            continue
        b = b.add_extension(ext.value, ext.critical)
    key = signer or ca_key(pki_dir)
    algo = None if old.signature_hash_algorithm is None else hashes.SHA256()
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    if signer is None:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), False
        )
    return b.sign(key, algo).public_bytes(serialization.Encoding.PEM)


def query_as(
    fed: LocalFederation,
    index: int,
    analyst: str,
    job: str,
    *,
    cert: bytes | None = None,
    key: bytes | None = None,
    protection: query_pb2.Protection | None = None,
    signer: str | None = None,
) -> tuple[str, str]:
    """One signed query to node ``index``: TLS with ``cert``/``key`` (default: the
    analyst's files), body signed by ``signer``'s key (default ``analyst``)."""
    files = party_paths(fed.pki_dir, "analyst", analyst)
    creds = grpc.ssl_channel_credentials(
        root_certificates=(fed.pki_dir / "ca.crt").read_bytes(),
        private_key=key or files.key.read_bytes(),
        certificate_chain=cert or files.cert.read_bytes(),
    )
    node = fed.nodes[index]
    req = signed_query(
        fed, node.spec.name, COUNT, analyst=signer or analyst, job_id=job, protection=protection
    )
    with grpc.secure_channel(
        node.address, creds, options=[("grpc.ssl_target_name_override", node.spec.name)]
    ) as ch:
        try:
            query_pb2_grpc.QueryServiceStub(ch).Query(req.request, timeout=30)
        except grpc.RpcError as e:
            return e.code().name, e.details() or ""
    return "OK", ""


def decisions(fed: LocalFederation, index: int, prefix: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in ledger_records(fed, names(fed)[index]):
        if r.job_id.startswith(prefix):
            out.setdefault(r.job_id, []).append(r.decision)
    return out


def test_a_certificate_revoked_after_its_first_call_is_refused_on_the_next_everywhere(fed):
    """Channel: the remembered check of a certificate already seen.  carol queries every
    node (her certificate's check is remembered), the operator revokes her and distributes
    the list. Safe: her next call to each node ``UNAUTHENTICATED``, recorded ``denied``."""
    for i in range(3):
        assert query_as(fed, i, "carol", f"s26-rev-ok-{i}") == ("OK", "")
    revoke(fed.pki_dir, "carol")
    distribute_crl(fed)
    for i in range(3):
        code, why = query_as(fed, i, "carol", f"s26-rev-no-{i}")
        assert code == "UNAUTHENTICATED" and "revoked" in why, (code, why)
    last = ledger_records(fed, names(fed)[0])[-1]
    assert last.decision == "denied" and "revoked" in last.reason


def test_a_certificate_that_expires_between_two_calls_is_refused_after_it(fed):
    """Channel: the validity dates of a remembered certificate.  dave's certificate
    re-issued by the CA to end 6 s from now (same key); one call inside, one after.
    Safe: the first answered, the second refused."""
    files = party_paths(fed.pki_dir, "analyst", "dave")
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=6)
    short = clone(fed.pki_dir, files.cert.read_bytes(), not_after=end)
    assert query_as(fed, 1, "dave", "s26-exp-in", cert=short) == ("OK", "")
    time.sleep(max(0.0, (end - dt.datetime.now(dt.UTC)).total_seconds()) + 1.5)
    code, _ = query_as(fed, 1, "dave", "s26-exp-out", cert=short)
    assert code in {"UNAUTHENTICATED", "UNAVAILABLE", "PERMISSION_DENIED"}, code
    assert decisions(fed, 1, "s26-exp-out") in ({}, {"s26-exp-out": ["denied"]})


def test_two_certificates_of_one_subject_are_never_confused(fed, tmp_path):
    """Channel: a remembered check keyed by subject rather than by bytes.  erin holds two
    certificates (the second issued with ``--force``: same subject, new TLS and signing
    keys). Safe: each TLS certificate only accepts bodies signed by its own signing key;
    after the first serial alone is revoked the old one is refused, the new one answered."""
    old = party_paths(fed.pki_dir, "analyst", "erin")
    keep = {p: tmp_path / p.name for p in (old.cert, old.key, old.signing_key)}
    for src, dst in keep.items():
        shutil.copy(src, dst)
    assert query_as(fed, 2, "erin", "s26-two-old") == ("OK", "")
    old_serial = x509.load_pem_x509_certificate(old.cert.read_bytes()).serial_number
    issue(fed.pki_dir, "analyst", "erin", force=True)
    new_files = {p: p.read_bytes() for p in keep}
    old_files = {p: q.read_bytes() for p, q in keep.items()}

    def as_erin(job: str, tls: dict, signing: dict) -> str:
        for p in (old.cert, old.key):
            p.write_bytes(tls[p])
        old.signing_key.write_bytes(signing[old.signing_key])
        try:
            return query_as(fed, 2, "erin", job)[0]
        finally:
            for p, b in new_files.items():
                p.write_bytes(b)

    # new TLS certificate, request signed with the old signing key, and the reverse
    assert as_erin("s26-two-mix1", new_files, old_files) == "UNAUTHENTICATED"
    assert as_erin("s26-two-mix2", old_files, new_files) == "UNAUTHENTICATED"
    assert as_erin("s26-two-new", new_files, new_files) == "OK"
    assert as_erin("s26-two-old2", old_files, old_files) == "OK"
    revoke(fed.pki_dir, "erin", serial=old_serial)
    distribute_crl(fed)
    assert as_erin("s26-two-old3", old_files, old_files) == "UNAUTHENTICATED"
    assert as_erin("s26-two-mix3", new_files, old_files) == "UNAUTHENTICATED"
    assert query_as(fed, 2, "erin", "s26-two-new2") == ("OK", "")


def test_tls_as_one_analyst_with_a_request_of_another_is_refused(fed):
    """Channel: the caller's identity from TLS against the request's.  alice's TLS
    certificate carrying a request that names bob and is signed with bob's key (bob's
    certificate remembered from his own call just before). Safe: refused, never answered."""
    assert query_as(fed, 0, "bob", "s26-as-bob") == ("OK", "")
    code, _ = query_as(fed, 0, "alice", "s26-as-alice-for-bob", signer="bob")
    assert code in {"UNAUTHENTICATED", "PERMISSION_DENIED"}, code
    assert decisions(fed, 0, "s26-as-alice-for-bob") in ({}, {"s26-as-alice-for-bob": ["denied"]})


def ckks_params(aggregator: bytes, participants: list[bytes]) -> query_pb2.Protection:
    """Params that pass everything before admission but the certificates, and fail after
    admission (a garbage context): an admitted query shows as ``approved``."""
    params = protocol_pb2.CkksParams(
        public_context=b"not a TenSEAL context",
        aggregator_certificate=aggregator,
        participant_certificates=participants,
    )
    return query_pb2.Protection(mode="ckks", fixed_point_bits=16, params=params.SerializeToString())


def test_a_participant_certificate_not_of_the_roster_is_refused_before_admission(fed):
    """Channel: certificates relayed in a mode's parameters, now remembered.  The list names
    in place of water-south: alice's analyst certificate; water-south's certificate re-issued
    and that serial revoked; water-south's subject signed by a foreign CA; and the same three
    in place of the aggregator's. Each sent twice (the second time remembered). Safe: every one
    refused before admission and recorded ``denied`` only."""
    nodes = names(fed)
    real = [party_paths(fed.pki_dir, "node", n).cert.read_bytes() for n in nodes]
    alice = party_paths(fed.pki_dir, "analyst", "alice").cert.read_bytes()
    revoked_copy = clone(fed.pki_dir, real[2])
    serial = x509.load_pem_x509_certificate(revoked_copy).serial_number
    publish_crl(fed.pki_dir, (serial,))
    distribute_crl(fed)
    foreign_key = ec.generate_private_key(ec.SECP256R1())
    foreign = clone(
        fed.pki_dir,
        real[2],
        signer=foreign_key,
        issuer=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "datafed federation CA")]),
    )
    cases = {
        "s26-roster-analyst": ckks_params(real[0], [real[0], real[1], alice]),
        "s26-roster-revoked": ckks_params(real[0], [real[0], real[1], revoked_copy]),
        "s26-roster-foreign": ckks_params(real[0], [real[0], real[1], foreign]),
        "s26-roster-agg-analyst": ckks_params(alice, [real[0], real[1], real[2]]),
        "s26-roster-agg-revoked": ckks_params(revoked_copy, [real[0], real[1], real[2]]),
        "s26-roster-agg-foreign": ckks_params(foreign, [real[0], real[1], real[2]]),
    }
    # control: the real certificates are admitted (and fail after admission)
    control = query_as(fed, 1, "alice", "s26-control", protection=ckks_params(real[0], real))
    assert control[0] == "ABORTED", control
    for rnd in (1, 2):
        for job, p in cases.items():
            code, why = query_as(fed, 1, "alice", f"{job}-{rnd}", protection=p)
            assert code in {"INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED"}, (
                job,
                code,
                why,
            )
    got = decisions(fed, 1, "s26-roster-")
    assert got == {f"{j}-{r}": ["denied"] for j in cases for r in (1, 2)}, got


# ---------------------------------------------------------------------------- collection


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    tasks = [make_task(n) for n in ("replay", "tick", "nonce")]
    tasks.append(make_task("hist", vdaf='vdaf = "histogram"\nlength = 4'))
    tasks.append(make_task("svec", vdaf='vdaf = "sumvec"\nlength = 3\nmax_measurement = 63'))
    tasks.append(make_task("twogw"))
    tasks.append(make_task("hrace"))
    f = collect_federation(tmp_path_factory.mktemp("redteam-s26-collect"), tasks)
    try:
        yield f
    finally:
        f.stop()


def fetch_window(coll, task: str, start: int):
    async def go():
        async with Collector.from_file(coll.fed_toml) as col:
            return await col.get(task, start, purpose=PURPOSE)

    return asyncio.run(go())


def close_and_count(coll, task: str, start: int, tick: int = 3):
    asyncio.run(upload(coll, task, [(0, w(tick) + 40)]))
    asyncio.run(wait_closed(coll, task, [start]))
    got = fetch_window(coll, task, start)
    return got.result, got.report_count


def test_a_report_replayed_after_its_window_was_released_is_never_counted_again(coll):
    """Channel: the Helper's replay table now read only for shares that do not open.
    Six reports in window 0, released (6). Then the same bytes again, and the same IDs
    carrying other reports in an open later window. Safe: none accepted; window 0 still
    6; the later window counts only its own five fresh reports."""
    msgs = asyncio.run(shard_protos(coll, "replay", [(1, w(0) + i) for i in range(6)]))
    assert asyncio.run(raw_upload(coll, "replay", msgs)) == ["ACCEPTED"] * 6
    assert close_and_count(coll, "replay", w(0)) == (6, 6)
    again = asyncio.run(raw_upload(coll, "replay", msgs))
    assert "ACCEPTED" not in again, again
    later = asyncio.run(shard_protos(coll, "replay", [(1, w(5) + i) for i in range(6)]))
    for x, y in zip(later, msgs, strict=True):
        x.report_id = y.report_id
    moved = asyncio.run(raw_upload(coll, "replay", later))
    assert set(moved) <= {"REPORT_REPLAYED"}, moved
    asyncio.run(upload(coll, "replay", [(1, w(5) + 30 + i) for i in range(5)]))
    assert fetch_window(coll, "replay", w(0)).report_count == 6
    assert close_and_count(coll, "replay", w(5), tick=8) == (5, 5)


def test_reports_racing_the_tick_that_closes_their_window_count_exactly_once(coll):
    """Channel: the closing window and the watermark read without the writer's lock.
    Windows 0-2 hold 5 reports each; then three gateways' loops upload batches of 3 fresh
    reports into windows 0, 1 and 2 for about 2 s while, 0.3 s in, one report moves the
    task clock past all three. Safe: each report ``ACCEPTED`` or ``BATCH_COLLECTED``; each
    released count equals that window's accepted; more reports after the release are all
    refused and the released windows never change."""
    starts = [w(0), w(1), w(2)]
    pre = [asyncio.run(shard_protos(coll, "tick", [(1, s + i) for i in range(5)])) for s in starts]
    for msgs in pre:
        assert asyncio.run(raw_upload(coll, "tick", msgs)) == ["ACCEPTED"] * 5
    batches = [
        asyncio.run(shard_protos(coll, "tick", [(1, s + 10 + j % 45) for j in range(3 * 14)]))
        for s in starts
    ]

    async def loop(k: int) -> list[str]:
        out: list[str] = []
        for j in range(14):
            out += await raw_upload(coll, "tick", batches[k][3 * j : 3 * j + 3])
            await asyncio.sleep(0.12)
        return out

    async def tick() -> None:
        await asyncio.sleep(0.3)
        await upload(coll, "tick", [(0, w(4) + 40)])

    async def race():
        return await asyncio.gather(loop(0), loop(1), loop(2), tick())

    got = asyncio.run(race())[:3]
    accepted = []
    for statuses in got:
        assert set(statuses) <= {"ACCEPTED", "BATCH_COLLECTED"}, statuses
        accepted.append(5 + statuses.count("ACCEPTED"))
    assert any("BATCH_COLLECTED" in g for g in got), got  # the race did overlap the close
    print("s26 tick race accepted per window:", accepted)
    asyncio.run(wait_closed(coll, "tick", starts))
    outs = [fetch_window(coll, "tick", s) for s in starts]
    assert [(o.result, o.report_count) for o in outs] == [(a, a) for a in accepted], (got, outs)
    late = asyncio.run(shard_protos(coll, "tick", [(1, s + 50) for s in starts for _ in range(2)]))
    assert asyncio.run(raw_upload(coll, "tick", late)) == ["BATCH_COLLECTED"] * 6
    again = [fetch_window(coll, "tick", s) for s in starts]
    assert [(o.result, o.report_count) for o in again] == [(a, a) for a in accepted]


def test_one_signed_upload_sent_twice_at_once_is_served_once(coll):
    """Channel: the nonce claim now on a worker thread.  One signed Upload (one nonce)
    sent twice concurrently, and once more after. Safe: exactly one answered; the other
    two refused; the reports counted once."""
    msgs = asyncio.run(shard_protos(coll, "nonce", [(1, w(0) + i) for i in range(6)]))

    async def go():
        async with Uploader.from_file(gateway_file(coll)) as up:
            t = up.transport
            msg = collect_pb2.UploadRequest(task="nonce", reports=msgs)
            msg.header.CopyFrom(t.header(LEADER, f"s26-nonce-{secrets.token_hex(4)}", PURPOSE))
            request = t.sign(msg).request

            async def once() -> str:
                async def call(ch):
                    return await collect_pb2_grpc.CollectServiceStub(ch).Upload(request)

                try:
                    reply = await t.call(LEADER, call)
                except Exception as e:
                    return f"refused: {type(e).__name__}: {e}"[:200]
                return ",".join(collect_pb2.ReportStatus.Name(s) for s in reply.statuses)

            two = await asyncio.gather(once(), once())
            return [*two, await once()]

    got = asyncio.run(go())
    answered = [g for g in got if not g.startswith("refused")]
    assert answered == [",".join(["ACCEPTED"] * 6)], got
    assert close_and_count(coll, "nonce", w(0)) == (6, 6)


class TwoHot(HistogramCircuit):
    """A faulty device: two buckets set, proven honestly over the bad encoding."""

    def encode(self, measurement: int):  # type: ignore[override]
        v = super().encode(measurement)
        v[(measurement + 1) % self.length] = 1
        return v


def flip(msg: collect_pb2.CollectReport, element: int, bit: int) -> collect_pb2.CollectReport:
    out = collect_pb2.CollectReport()
    out.CopyFrom(msg)
    share = bytearray(out.leader_share)
    share[element * 16 + bit // 8] ^= 1 << (bit % 8)
    out.leader_share = bytes(share)
    return out


def test_histogram_reports_with_bad_elements_flipped_limbs_or_two_hot_are_rejected(coll):
    """Channel: Field128 verification on the new limb arithmetic.  Histogram(4): 6 valid
    reports; Leader shares with an element at, and at the top of, the modulus; a proof
    share (and a measurement share) element with one bit flipped at each limb boundary
    (26, 52, 64, 78, 104, 127); three two-hot reports proven honestly. Safe: the bad ones
    ``INVALID_MESSAGE`` or accepted and then rejected, never aggregated: the window
    releases exactly the 6 valid reports and their histogram."""
    valid = [(i % 4, w(0) + i) for i in range(6)]
    good = asyncio.run(shard_protos(coll, "hist", valid))
    base = asyncio.run(shard_protos(coll, "hist", [(0, w(0) + 20 + i) for i in range(16)]))
    bad: list[collect_pb2.CollectReport] = []
    for k, value in enumerate((Field128.MODULUS, 2**128 - 1)):
        m = collect_pb2.CollectReport()
        m.CopyFrom(base[k])
        share = bytearray(m.leader_share)
        share[4 * 16 : 5 * 16] = value.to_bytes(16, "little")
        m.leader_share = bytes(share)
        bad.append(m)
    for k, bit in enumerate((26, 52, 64, 78, 104, 127)):
        bad.append(flip(base[2 + k], 4, bit))  # first element of the proof share
        bad.append(flip(base[8 + k], 0, bit))  # a measurement share element
    statuses = asyncio.run(raw_upload(coll, "hist", [*good, *bad]))
    assert statuses[:6] == ["ACCEPTED"] * 6, statuses
    assert set(statuses[6:]) <= {"ACCEPTED", "INVALID_MESSAGE"}, statuses
    assert statuses[6:8] == ["INVALID_MESSAGE"] * 2, statuses

    async def two_hot():
        async with Uploader.from_file(gateway_file(coll)) as up:
            t = await up.task("hist")
            vdaf = t.task.vdaf
            circ = vdaf.flp.valid  # type: ignore[attr-defined]
            fake = Prio3(
                TwoHot(Field128, circ.length, circ.chunk_length),
                shares=2,
                vdaf_id=vdaf.ID,  # type: ignore[attr-defined]
            )
            import dataclasses

            ft = dataclasses.replace(t, task=dataclasses.replace(t.task, vdaf=fake))
            return await up.upload(ft, ft.shard_many([(i, w(0) + 40 + i) for i in range(3)]))

    res = asyncio.run(two_hot())
    assert [str(s).upper() for s in res.statuses] == ["ACCEPTED"] * 3
    accepted_bad = statuses[6:].count("ACCEPTED") + 3
    asyncio.run(upload(coll, "hist", [(0, w(3) + 40)]))
    asyncio.run(wait_closed(coll, "hist", [w(0)]))
    out = fetch_window(coll, "hist", w(0))
    assert (out.report_count, list(out.result)) == (6, [2, 2, 1, 1]), out
    assert sum(out.rejected.values()) == accepted_bad, (out.rejected, accepted_bad)


def test_a_relayed_certificate_expiring_or_revoked_after_its_first_use_is_refused_next(fed):
    """Channel: the remembered checks of certificates relayed in a mode's parameters (not
    the caller's).  Two CA-made copies of water-south's certificate (its own key): one
    ending 5 s from now, one whose serial is revoked after its first use; each named as a
    participant once (admitted: the query fails after admission on its garbage context,
    ``ABORTED``), then again after the expiry / the revocation. Safe: the second use
    refused before admission, recorded ``denied`` only."""
    real = [party_paths(fed.pki_dir, "node", n).cert.read_bytes() for n in names(fed)]
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=5)
    short = clone(fed.pki_dir, real[2], not_after=end)
    later = clone(fed.pki_dir, real[2])
    first = [
        query_as(
            fed, 0, "alice", f"s26-relay-{tag}-1", protection=ckks_params(real[0], [*real[:2], c])
        )[0]
        for tag, c in (("short", short), ("later", later))
    ]
    assert first == ["ABORTED", "ABORTED"], first
    publish_crl(fed.pki_dir, (x509.load_pem_x509_certificate(later).serial_number,))
    distribute_crl(fed)
    time.sleep(max(0.0, (end - dt.datetime.now(dt.UTC)).total_seconds()) + 1.5)
    for tag, c in (("short", short), ("later", later)):
        code, why = query_as(
            fed, 0, "alice", f"s26-relay-{tag}-2", protection=ckks_params(real[0], [*real[:2], c])
        )
        assert code in {"INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED"}, (
            tag,
            code,
            why,
        )
        assert decisions(fed, 0, f"s26-relay-{tag}-2") == {f"s26-relay-{tag}-2": ["denied"]}


def node_info_as(fed: LocalFederation, index: int, cert: bytes, key: bytes) -> str:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(fed.pki_dir / "ca.crt").read_bytes(),
        private_key=key,
        certificate_chain=cert,
    )
    node = fed.nodes[index]
    with grpc.secure_channel(
        node.address, creds, options=[("grpc.ssl_target_name_override", node.spec.name)]
    ) as ch:
        try:
            query_pb2_grpc.QueryServiceStub(ch).NodeInfo(query_pb2.NodeInfoRequest(), timeout=30)
        except grpc.RpcError as e:
            return e.code().name
    return "OK"


def test_a_revoked_certificate_stays_refused_after_a_flood_evicts_its_remembered_check(fed):
    """Channel: the bound of the remembered checks (the last 1,024 certificates).  A copy
    of bob's certificate (own serial, same key) answered, then its serial revoked; 1,100
    other distinct CA-signed copies each make one call (the revoked one's entry evicted),
    then the revoked copy again, on a query and on NodeInfo. Safe: refused every time after
    the revocation, before and after the flood; the flood's own copies answered."""
    files = party_paths(fed.pki_dir, "analyst", "bob")
    pem, key = files.cert.read_bytes(), files.key.read_bytes()
    mine = clone(fed.pki_dir, pem)
    assert query_as(fed, 0, "bob", "s26-flood-before", cert=mine) == ("OK", "")
    publish_crl(fed.pki_dir, (x509.load_pem_x509_certificate(mine).serial_number,))
    distribute_crl(fed)
    assert query_as(fed, 0, "bob", "s26-flood-revoked", cert=mine)[0] == "UNAUTHENTICATED"
    copies = [clone(fed.pki_dir, pem) for _ in range(2000)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda c: node_info_as(fed, 0, c, key), copies))
    assert got == ["OK"] * len(copies), {g: got.count(g) for g in set(got)}
    assert node_info_as(fed, 0, mine, key) == "UNAUTHENTICATED"
    code, why = query_as(fed, 0, "bob", "s26-flood-after", cert=mine)
    assert code == "UNAUTHENTICATED" and "revoked" in why, (code, why)
    assert query_as(fed, 0, "bob", "s26-flood-bob") == ("OK", "")


class BigBit(SumVecCircuit):
    """A faulty device: the first bit slot holds the whole first element, proven honestly."""

    def encode(self, measurement):  # type: ignore[no-untyped-def, override]
        v = super().encode([0] * self.length)
        v[0] = measurement[0] % self.field.MODULUS
        return v


def test_sumvec_reports_with_bad_elements_flipped_limbs_or_wide_bits_are_rejected(coll):
    """Channel: the same limb arithmetic on SumVec(3 x 6 bits).  6 valid reports; an
    element at the modulus; one bit flipped at each limb boundary in a proof element and
    a measurement element; three devices putting 40 (and the modulus minus one, i.e. -1)
    into one bit slot. Safe: the window releases exactly the 6 valid reports' sums and
    counts every accepted bad report as rejected."""
    valid = [([i, 2 * i, 63], w(0) + i) for i in range(6)]
    good = asyncio.run(shard_protos(coll, "svec", valid))
    base = asyncio.run(shard_protos(coll, "svec", [([0, 0, 0], w(0) + 20 + i) for i in range(13)]))
    m = collect_pb2.CollectReport()
    m.CopyFrom(base[0])
    share = bytearray(m.leader_share)
    share[18 * 16 : 19 * 16] = Field128.MODULUS.to_bytes(16, "little")
    m.leader_share = bytes(share)
    bad = [m]
    for k, bit in enumerate((26, 52, 64, 78, 104, 127)):
        bad.append(flip(base[1 + k], 18, bit))  # first element of the proof share
        bad.append(flip(base[7 + k], 5, bit))  # a measurement share element
    statuses = asyncio.run(raw_upload(coll, "svec", [*good, *bad]))
    assert statuses[:7] == ["ACCEPTED"] * 6 + ["INVALID_MESSAGE"], statuses
    assert set(statuses[7:]) <= {"ACCEPTED", "INVALID_MESSAGE"}, statuses

    async def wide():
        import dataclasses

        async with Uploader.from_file(gateway_file(coll)) as up:
            t = await up.task("svec")
            circ = t.task.vdaf.flp.valid  # type: ignore[attr-defined]
            fake = Prio3(
                BigBit(Field128, circ.length, circ.max_measurement, circ.chunk_length),
                shares=2,
                vdaf_id=t.task.vdaf.ID,  # type: ignore[attr-defined]
            )
            ft = dataclasses.replace(t, task=dataclasses.replace(t.task, vdaf=fake))
            items = [([40, 0, 0], w(0) + 40), ([-1, 0, 0], w(0) + 41), ([2, 0, 0], w(0) + 42)]
            return await up.upload(ft, ft.shard_many(items))

    res = asyncio.run(wide())
    assert [str(s).upper() for s in res.statuses] == ["ACCEPTED"] * 3
    accepted_bad = statuses[7:].count("ACCEPTED") + 3
    asyncio.run(upload(coll, "svec", [([0, 0, 0], w(3) + 40)]))
    asyncio.run(wait_closed(coll, "svec", [w(0)]))
    out = fetch_window(coll, "svec", w(0))
    assert (out.report_count, list(out.result)) == (6, [15, 30, 378]), out
    assert sum(out.rejected.values()) == accepted_bad, (out.rejected, accepted_bad)


def test_one_report_from_two_gateways_at_once_is_stored_once(coll):
    """Channel: the index under two writers and the columns path.  The same 12 reports
    (same bytes) uploaded at once by gw-city and gw-rogue, three times each. Safe: per
    report exactly one ``ACCEPTED``, the rest ``DUPLICATE``; counted once."""
    msgs = asyncio.run(shard_protos(coll, "twogw", [(1, w(0) + i) for i in range(12)]))

    async def all_at_once():
        return await asyncio.gather(
            *(raw_upload(coll, "twogw", msgs, gw) for gw in ("gw-city", "gw-rogue") * 3)
        )

    got = asyncio.run(all_at_once())
    for per_report in zip(*got, strict=True):
        assert sorted(per_report) == ["ACCEPTED"] + ["DUPLICATE"] * 5, got
    assert close_and_count(coll, "twogw", w(0)) == (12, 12)


def test_the_same_genuine_report_in_two_concurrent_helper_jobs_verifies_once(coll):
    """Channel: the Helper reading its replay table only for shares that do not open (the
    commit catches replays).  Playing the Leader (its certificate, as
    ``test_collect_service.py`` does), four jobs each carrying the same genuine report
    (its share opens), sent to the Helper at once, then the same signed job twice at once
    (one nonce). Safe: the report verifies in exactly one job, ``report_replayed`` in the
    others; the repeated request is answered at most once."""
    import os

    from datafed.errors import RemoteError
    from datafed.pki.peers import verify_peer
    from datafed.protocols import Leader, Report, shard_report
    from nodes.collect.runtime import verify_key_of

    from .collect_harness import HELPER, party, signed

    own = load_signing_key(party_paths(coll.pki_dir, "node", LEADER).signing_key)
    peer = verify_peer(
        party_paths(coll.pki_dir, "node", HELPER).cert.read_bytes(),
        (coll.pki_dir / "ca.crt").read_bytes(),
    )

    async def go():
        async with Uploader.from_file(gateway_file(coll)) as up:
            t = await up.task("hrace")
        key = verify_key_of(own, peer, t.spec.task_id)
        rogue = party(coll, "node", LEADER, HELPER)

        def init(genuine) -> collect_pb2.VerifyInitMessage:
            sealed = t.seal([genuine])[0].helper
            leader = Leader(t.task, key)
            r = Report(
                genuine.report_id, genuine.time, genuine.public_share, genuine.leader_share, b""
            )
            assert leader.upload(r, int(time.time())) is None
            req = leader.start_job(int(time.time()))
            return collect_pb2.VerifyInitMessage(
                report_id=genuine.report_id,
                time=genuine.time,
                public_share=genuine.public_share,
                helper_enc=sealed.enc,
                helper_ciphertext=sealed.ciphertext,
                payload=req.verify_inits[0].payload,
            )

        def job(*inits) -> collect_pb2.AggregateInitRequest:
            msg = collect_pb2.AggregateInitRequest(
                task="hrace", task_id=t.spec.task_id, job_id=os.urandom(16)
            )
            msg.inits.extend(inits)
            return msg

        async def send(msg):
            try:
                reply = await signed(rogue, HELPER, "AggregateInit", msg)
            except RemoteError as e:
                return f"refused: {e.code}"
            return [r.error for r in reply.resps]

        one = shard_report(t.task, 1, w(0) + 1)
        others = [shard_report(t.task, 1, w(0) + 2 + i) for i in range(4)]
        jobs = [job(init(one), init(others[i])) for i in range(4)]
        raced = await asyncio.gather(*(send(j) for j in jobs))
        two = shard_report(t.task, 1, w(0) + 9)
        msg = job(init(two))
        msg.header.CopyFrom(rogue.header(HELPER, f"s26-hrace-{secrets.token_hex(4)}", PURPOSE))
        request = rogue.sign(msg).request

        async def raw(ch):
            return await collect_pb2_grpc.CollectServiceStub(ch).AggregateInit(request)

        async def once():
            try:
                reply = await rogue.call(HELPER, raw)
            except Exception as e:
                return f"refused: {type(e).__name__}"
            return [r.error for r in reply.resps]

        replayed = await asyncio.gather(once(), once())
        await rogue.aclose()
        return raced, replayed

    raced, replayed = asyncio.run(go())
    assert all(isinstance(r, list) for r in raced), raced
    assert sorted(r[0] for r in raced) == ["", *["report_replayed"] * 3], raced
    assert [r[1] for r in raced] == [""] * 4, raced
    assert sorted(map(str, replayed)) == ["['']", "refused: RemoteError"], replayed


# ---------------------------------------------------------------------------- partners


@pytest.fixture(scope="module")
def cities(tmp_path_factory: pytest.TempPathFactory):
    from datafed.local.cities import TwoCities

    c = TwoCities.create(tmp_path_factory.mktemp("redteam-s26-cities"), segments=6)
    try:
        c.recognise()
        c.start()
        yield c
    finally:
        c.stop()


def partner_toml(path: Path, cities, name: str, ca: Path, cert: Path, key: Path, sk: Path) -> Path:
    """A Suzhou analyst's federation file naming only Shanghai's nodes."""
    sh = cities.cities["shanghai"]
    text = (
        f'analyst = "{name}"\ntimeout_s = 10\npartners = ["{cities.bundle("shanghai")}"]\n'
        f'[tls]\nca = "{ca}"\ncert = "{cert}"\nkey = "{key}"\nsigning_key = "{sk}"\n'
    )
    for n in sh.nodes:
        text += f'[[nodes]]\nname = "{sh.qname(n.spec.name)}"\naddress = "{n.address}"\n'
    path.write_text(text)
    return path


def test_a_withdrawn_partner_recognised_again_under_a_new_ca_of_the_same_name_is_not_the_old(
    cities, tmp_path
):
    """Channel: a remembered "this CA signed it" keyed by the CA's name rather than its key.
    Suzhou's analyst is identified at every Shanghai node (checks remembered); Shanghai
    withdraws Suzhou, then recognises a new Suzhou CA (same federation, same CA name, a new
    key: a rotation after a compromise). Safe: the old CA's analyst is refused at every
    Shanghai node; the new CA's analyst is identified (the rotation took effect)."""
    import subprocess
    import sys

    from datafed.client import Federation
    from datafed.pki.ca import init_ca

    suzhou = cities.cities["suzhou"]
    old = party_paths(suzhou.pki_dir, "analyst", "alice")
    old_toml = partner_toml(
        tmp_path / "old.toml",
        cities,
        "suzhou:alice",
        suzhou.pki_dir / "ca.crt",
        old.cert,
        old.key,
        old.signing_key,
    )
    first = Federation.from_file(old_toml).discover()
    assert first and all(s.up and s.info is not None for s in first), first
    cities.withdraw("shanghai", "suzhou")
    ca_name = (
        x509.load_pem_x509_certificate((suzhou.pki_dir / "ca.crt").read_bytes())
        .subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]
        .value
    )
    rotated = tmp_path / "suzhou-new"
    init_ca(rotated, str(ca_name), federation="suzhou")
    issue(rotated, "analyst", "alice")
    bundle = tmp_path / "suzhou-new.bundle.json"
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / "datafed"), "pki", "bundle", "--dir", str(rotated), "-o", str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for n in cities.cities["shanghai"].nodes:
        done = subprocess.run(
            [str(bin_dir / "datafed-node"), "partners", "add", str(bundle), "-c", str(n.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    new = party_paths(rotated, "analyst", "alice")
    new_toml = partner_toml(
        tmp_path / "new.toml",
        cities,
        "suzhou:alice",
        rotated / "ca.crt",
        new.cert,
        new.key,
        new.signing_key,
    )
    deadline = time.monotonic() + 20
    while True:
        now_new = Federation.from_file(new_toml).discover()
        if all(s.up and s.info is not None for s in now_new) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert all(s.up and s.info is not None for s in now_new), now_new
    again = Federation.from_file(old_toml).discover()
    assert not any(s.info is not None for s in again), again
