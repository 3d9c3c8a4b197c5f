"""Red team, round 4: CKKS contexts named by digest, the Paillier randomizer pool, uploads.

An outsider's probes of the newest surfaces, through real node processes (mTLS on
127.0.0.1), playing two analysts (``alice``, ``bob``) with valid certificates and two
gateways (``gw-city``, ``gw-rogue``). Each test asserts the safe behaviour; one marked
``xfail(strict=True)`` is a finding (see its reason).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from datafed.client import Federation
from datafed.collect import Collector
from datafed.fl.superlink import free_port
from datafed.local.federation import PURPOSE, LocalFederation, water_district_specs
from datafed.pki.ca import party_paths
from datafed.proto.v1 import collect_pb2, modes_pb2, protocol_pb2, query_pb2

from .collect_harness import (
    collect_federation,
    make_task,
    raw_upload,
    shard_protos,
    upload,
    wait_closed,
)
from .collect_harness import window as w
from .raw import ledger_records, query_stub, signed_query

TOTAL = "SELECT SUM(repair_hours), COUNT(*) FROM pipe_incidents WHERE year = 2024"
COUNT = "SELECT COUNT(*) FROM pipe_incidents"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    specs = water_district_specs(segments=6, requesters=("alice", "bob", "carol"))
    f = LocalFederation.create(
        tmp_path_factory.mktemp("redteam-s25"), specs, analysts=("alice", "bob", "carol")
    )
    port = free_port()
    node = f.nodes[0]
    node.config.write_text(
        node.config.read_text().replace(
            "[node]\n", f'[node]\nmetrics_listen = "127.0.0.1:{port}"\n', 1
        )
    )
    f.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    f.start()
    try:
        yield f
    finally:
        f.stop()


def names(fed: LocalFederation) -> list[str]:
    return [n.spec.name for n in fed.nodes]


def certs(fed: LocalFederation) -> list[bytes]:
    return [party_paths(fed.pki_dir, "node", n).cert.read_bytes() for n in names(fed)]


def ckks(
    fed: LocalFederation, digest: bytes, length: int, inline: bytes = b""
) -> query_pb2.Protection:
    c = certs(fed)
    params = protocol_pb2.CkksParams(
        public_context=inline,
        public_context_digest=digest,
        public_context_bytes=length,
        aggregator_certificate=c[0],
        participant_certificates=c,
    )
    return query_pb2.Protection(mode="ckks", fixed_point_bits=16, params=params.SerializeToString())


def send(fed, index: int, analyst: str, job: str, protection, context: bytes = b"", sql=TOTAL):
    """One raw signed query to node ``index``; (status code name, details)."""
    ch, stub = query_stub(fed, index, analyst=analyst)
    with ch:
        try:
            stub.Query(
                signed_query(
                    fed,
                    names(fed)[index],
                    sql,
                    analyst=analyst,
                    job_id=job,
                    protection=protection,
                    public_context=context,
                ).request,
                timeout=60,
            )
        except grpc.RpcError as e:
            return e.code().name, e.details() or ""
    return "OK", ""


def decisions(fed, index: int, prefix: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in ledger_records(fed, names(fed)[index]):
        if r.job_id.startswith(prefix):
            out.setdefault(r.job_id, []).append(r.decision)
    return out


# ---------------------------------------------------------------------------- ckks


def test_a_context_beside_params_that_disagree_with_it_is_refused_before_admission(fed):
    """Channel: the body outside the statement.  The statement binds the params (and so
    the digest); the context beside them is swapped for another analyst-made one, its
    length misdeclared, or sent beside params that also carry a context inline. Safe:
    every variant refused before admission, recorded ``denied``, nothing approved."""
    real = secrets.token_bytes(4000)
    other = secrets.token_bytes(4000)
    d = hashlib.sha256(real).digest()
    cases = {
        "s25-swap": (ckks(fed, d, len(real)), other),
        "s25-len": (ckks(fed, d, len(real) + 1), real),
        "s25-both": (ckks(fed, d, len(real), inline=real), b""),
        "s25-inline-and-body": (ckks(fed, b"", 0, inline=real), real),
    }
    got = {j: send(fed, 1, "bob", j, p, c)[0] for j, (p, c) in cases.items()}
    assert set(got.values()) <= {"INVALID_ARGUMENT", "FAILED_PRECONDITION"}, got
    assert decisions(fed, 1, "s25-") == {j: ["denied"] for j in cases}


def test_an_oversized_context_is_bounded_before_admission(fed):
    """Channel: a huge context beside the params, or a digest naming a huge length.
    Safe: refused before admission (never cached, never parsed), ``denied``."""
    big = secrets.token_bytes(9 * 1024 * 1024)  # over limits.max_params_bytes (8 MiB)
    p = ckks(fed, hashlib.sha256(big).digest(), len(big))
    code, why = send(fed, 2, "bob", "s25-huge", p, big)
    assert code in {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, why
    p = ckks(fed, secrets.token_bytes(32), 1 << 40)
    code, _ = send(fed, 2, "bob", "s25-huge-named", p)
    assert code in {"INVALID_ARGUMENT", "FAILED_PRECONDITION"}
    assert decisions(fed, 2, "s25-huge") == {
        "s25-huge": ["denied"],
        "s25-huge-named": ["denied"],
    }


def test_bob_flooding_his_contexts_never_evicts_alices(fed):
    """Channel: eviction of another analyst's context.  bob sends three garbage contexts
    (each cached under his name, 2 per requester) to every node between two of alice's
    queries. Safe: alice's second query still needs no resend (no ``denied``)."""
    alice = Federation.from_file(fed.fed_toml)
    alice.query(TOTAL, purpose=PURPOSE, protection="ckks")
    for i in range(3):
        junk = secrets.token_bytes(400_000)
        p = ckks(fed, hashlib.sha256(junk).digest(), len(junk))
        for k in range(3):
            send(fed, k, "bob", f"s25-flood-{i}-{k}", p, junk)
    job = alice.query(TOTAL, purpose=PURPOSE, protection="ckks").job_id
    for k in range(3):
        got = [r.decision for r in ledger_records(fed, names(fed)[k]) if r.job_id == job]
        assert got[0] == "approved" and "denied" not in got, got


def test_bob_naming_alices_live_digest_reads_like_a_random_digest(fed):
    """Channel: a cache hit as a probe.  bob names alice's live digest without the context
    (asked for it: ``FAILED_PRECONDITION``, whatever alice holds) and a random digest (the
    same answer). Safe: the two answers are identical, so a cache hit is no oracle."""
    alice = Federation.from_file(fed.fed_toml)
    alice.query(TOTAL, purpose=PURPOSE, protection="ckks")
    public = alice._modes["ckks"]._public  # type: ignore[attr-defined]
    hers = send(
        fed, 0, "bob", "s25-probe-hers", ckks(fed, hashlib.sha256(public).digest(), len(public))
    )
    rand = send(fed, 0, "bob", "s25-probe-rand", ckks(fed, secrets.token_bytes(32), len(public)))
    assert hers == rand and hers[0] == "FAILED_PRECONDITION"


def public_context(size: int) -> bytes:
    """A valid public CKKS context of ``size`` bytes: a fresh one (0.36 MB) padded with an
    unknown protobuf field, which the node's parser skips but its cache counts."""
    from datafed.hazmat import HeContext, HeParams

    base = HeContext.generate(HeParams.for_sums(2**30)).public_bytes()
    n = size - len(base) - 5  # tag + 4-byte varint length
    assert 2**14 <= n < 2**28
    length = bytes([(n >> s & 0x7F) | (0x80 if s < 21 else 0) for s in (0, 7, 14, 21)])
    return base + bytes([15 << 3 | 2]) + length + b"\0" * n


def test_cache_room_left_by_other_analysts_is_no_oracle(fed):
    """Channel: the cache's byte limits (each context counted 20x).  Red team round 4
    found one budget shared by all requesters: two colluding analysts (alice, bob) filling
    it exactly saw their third context asked for again iff a third analyst (carol) held a
    live context at the node. Now each requester has an allowance of its own
    (``ckks_cache_bytes / ckks_requesters``, docs/policy.md#limits): the colluders fill
    theirs to the byte, on a freshly started node and again after carol ran an ordinary
    ckks query there. Safe: the colluders' answers are the same either way."""
    node = fed.nodes[2]
    allowance = 256 * 1024 * 1024 // 8 // 20  # the defaults, in context bytes
    blobs = [
        ("alice", public_context(allowance)),
        ("bob", public_context(allowance // 2)),
        ("bob", public_context(allowance - allowance // 2)),
    ]
    prots = [(who, b, ckks(fed, hashlib.sha256(b).digest(), len(b))) for who, b in blobs]

    def probe(tag: str) -> list[str]:
        sent = [
            send(fed, 2, who, f"s25-room-{tag}-{i}", p, b)[0] for i, (who, b, p) in enumerate(prots)
        ]
        named = [
            send(fed, 2, who, f"s25-room-{tag}-{i}-again", p)[0]
            for i, (who, _, p) in enumerate(prots)
        ]
        return sent + named

    fed.stop_node(node)
    fed.start_node(node)
    fed.write_fed_toml()
    alone = probe("alone")
    assert alone == ["OK"] * 6, alone  # each fills its own allowance, and fits
    fed.stop_node(node)
    fed.start_node(node)
    fed.write_fed_toml()
    Federation.from_file(fed.write_fed_toml("carol")).query(
        TOTAL, purpose=PURPOSE, protection="ckks"
    )
    beside = probe("beside")
    assert alone == beside, (alone, beside)
    # One byte over an allowance is never kept, whoever else is there.
    over = public_context(allowance + 1)
    p = ckks(fed, hashlib.sha256(over).digest(), len(over))
    assert send(fed, 2, "alice", "s25-room-over", p, over)[0] == "OK"
    assert send(fed, 2, "alice", "s25-room-over-again", p)[0] == "FAILED_PRECONDITION"


def test_filling_the_whole_cache_tells_nothing_about_other_analysts(fed):
    """Red team round 4's original probe (it failed before each requester had an allowance
    of its own): alice and bob send three contexts padded to 5.4, 5.4 and 2.5 MB, which
    together just filled the node's whole 256 MiB (counted 20x), on a fresh node and
    again after carol ran one ckks query there; then name each by digest. Before, the
    third was asked for again only beside carol. Safe: the same answers either way."""
    node = fed.nodes[2]
    room = 256 * 1024 * 1024 // 20
    blobs = [
        ("alice", public_context(5_400_000)),
        ("bob", public_context(5_400_000)),
        ("bob", public_context(room - 10_900_000)),
    ]
    prots = [(who, b, ckks(fed, hashlib.sha256(b).digest(), len(b))) for who, b in blobs]

    def probe(tag: str) -> list[str]:
        for i, (who, b, p) in enumerate(prots):
            assert send(fed, 2, who, f"s25-fill-{tag}-{i}", p, b)[0] == "OK"
        return [
            send(fed, 2, who, f"s25-fill-{tag}-{i}-again", p)[0]
            for i, (who, _, p) in enumerate(prots)
        ]

    fed.stop_node(node)
    fed.start_node(node)
    fed.write_fed_toml()
    alone = probe("alone")
    fed.stop_node(node)
    fed.start_node(node)
    fed.write_fed_toml()
    Federation.from_file(fed.write_fed_toml("carol")).query(
        TOTAL, purpose=PURPOSE, protection="ckks"
    )
    assert probe("beside") == alone


def test_ckks_cache_metrics_name_no_analyst_and_no_digest(fed):
    """Channel: the node operator's metrics (``datafed_node_ckks_context_cache_bytes``)
    after alice's and bob's contexts are cached at the node. Safe: totals only, no label
    naming a requester or a context digest."""
    alice = Federation.from_file(fed.fed_toml)
    alice.query(TOTAL, purpose=PURPOSE, protection="ckks")
    public = alice._modes["ckks"]._public  # type: ignore[attr-defined]
    digest = hashlib.sha256(public).hexdigest()
    with urllib.request.urlopen(fed.metrics_url, timeout=10) as resp:  # type: ignore[attr-defined]
        text = resp.read().decode()
    lines = [x for x in text.splitlines() if "ckks" in x and not x.startswith("#")]
    assert any(x.startswith("datafed_node_ckks_context_cache_bytes") for x in lines), lines
    for x in lines:
        assert "alice" not in x and "bob" not in x and digest[:16] not in x, x
        assert "{" not in x or "requester" not in x, x


def context_with_header(**change: object) -> bytes:
    """A fresh public context whose datafed header (HeParams, outside TenSEAL's bytes)
    the analyst rewrote."""
    import json

    from datafed.hazmat import HeContext, HeParams

    base = HeContext.generate(HeParams.for_sums(2**30)).public_bytes()
    magic = base[: base.index(b"{")]
    header, _, body = base[len(magic) :].partition(b"\n")
    raw = json.loads(header)
    raw.update(change)
    return magic + json.dumps(raw).encode() + b"\n" + body


@pytest.mark.parametrize(
    "change",
    [
        {"value_bound": 0.0},
        {"value_bound": -1.0},
        {"value_bound": float("nan")},
        {"value_bound": float("inf")},
        {"value_bound": 2.0**200},
        {"scale_bits": 1},
        {"scale_bits": 90},
        {"coeff_mod_bit_sizes": [60, 40, 40, 60]},
        {"scheme": "bfv"},
        {"max_additions": 0},
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_a_rewritten_context_header_fails_alike_whatever_the_rows(fed, change):
    """Channel: the context's own header (value bound, scale, primes, scheme) that a node
    trusts when it encodes -- outside what the node checks before admission.  The same
    context under a WHERE matching no row and one matching every row. Safe: the same
    outcome either way (no data-dependent failure after admission)."""
    ctx = context_with_header(**change)
    p = ckks(fed, hashlib.sha256(ctx).digest(), len(ctx))
    tag = secrets.token_hex(4)
    none = "SELECT SUM(repair_hours), COUNT(*) FROM pipe_incidents WHERE year = 1900"
    every = "SELECT SUM(repair_hours), COUNT(*) FROM pipe_incidents"
    a = send(fed, 1, "bob", f"s25-hdr-{tag}-none", p, ctx, sql=none)
    b = send(fed, 1, "bob", f"s25-hdr-{tag}-every", p, ctx, sql=every)
    assert a == b, (a, b)


def test_a_value_beyond_a_small_bound_saturates_on_sums_only_parameters(fed, tmp_path):
    """Channel: [60, 40, 60] (the sums-only primes) wrapping.  The analyst sets
    ``value_bound = 1``: every node's SUM and COUNT are far beyond it. Safe: the query is
    answered (no failure after admission) and the total is at most 3 nodes x the bound."""
    toml = tmp_path / "fed.toml"
    toml.write_text(fed.fed_toml.read_text() + "\n[modes.ckks]\nvalue_bound = 1.0\n")
    (row,) = Federation.from_file(toml).query(TOTAL, purpose=PURPOSE, protection="ckks").rows
    assert all(v is not None and v <= 3 + 0.01 for v in row), row


DP = """
[datasets.policy.dp]
epsilon_per_query = 0.5
budget_epsilon = 20.0
bounds = { bursts = [0, 3], repair_hours = [0, 24] }
"""


@pytest.fixture(scope="module")
def dpfed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    specs = water_district_specs(segments=6)
    for s in specs:
        s.policy_toml = s.policy_toml.replace(
            "[datasets.policy.group_domains]", DP.strip() + "\n[datasets.policy.group_domains]"
        )
    f = LocalFederation.create(tmp_path_factory.mktemp("redteam-s25-dp"), specs)
    f.start()
    try:
        yield f
    finally:
        f.stop()


def budget_left(client: Federation) -> dict[str, float]:
    return {i.node: i.described["pipe_incidents"].access.budget_left for i in client.node_info()}


def test_a_resent_context_on_dp_data_is_charged_exactly_once(dpfed):
    """Channel: the refusal before admission and the resend, on DP data.  A warm session
    queries a restarted node (asked for the context, resends), then sends a query whose
    context is garbage under a digest that matches (fails after admission). Safe: the
    refusal charges nothing, the resent query once (0.5 each node), the garbage one once."""
    client = Federation.from_file(dpfed.fed_toml)
    client.query(TOTAL, purpose=PURPOSE, protection="ckks")
    node = dpfed.nodes[1]
    dpfed.stop_node(node)
    dpfed.start_node(node)
    dpfed.write_fed_toml()
    again = Federation.from_file(dpfed.fed_toml)
    again._modes["ckks"] = client._modes["ckks"]  # type: ignore[attr-defined]
    before = budget_left(again)
    job = again.query(TOTAL, purpose=PURPOSE, protection="ckks").job_id
    after = budget_left(again)
    assert {n: round(before[n] - after[n], 6) for n in before} == dict.fromkeys(before, 0.5)
    rec = [r for r in ledger_records(dpfed, node.spec.name) if r.job_id == job]
    assert [(r.decision, r.epsilon) for r in rec][:2] == [("denied", 0), ("approved", 0.5)]
    junk = b"datafed-he-v1 not a context" * 100
    p = ckks(dpfed, hashlib.sha256(junk).digest(), len(junk))
    assert send(dpfed, 1, "alice", "s25-dp-junk", p, junk)[0] == "ABORTED"
    assert round(after[node.spec.name] - budget_left(again)[node.spec.name], 6) == 0.5


# ---------------------------------------------------------------------------- paillier


class Key:
    def __init__(self) -> None:
        nums = rsa.generate_private_key(65537, 2048).private_numbers()
        self.n = nums.p * nums.q
        self.n2 = self.n * self.n
        self.lam = math.lcm(nums.p - 1, nums.q - 1)
        self.mu = pow(self.lam, -1, self.n)

    def randomizer(self, c: int) -> int:
        """r^n mod n^2 of ciphertext ``c`` (the key holder's view of its randomness)."""
        m = (pow(c, self.lam, self.n2) - 1) // self.n * self.mu % self.n
        return c * (1 - m * self.n) % self.n2


def paillier(fed, key: Key) -> query_pb2.Protection:
    params = modes_pb2.PaillierParams(
        n=key.n.to_bytes((key.n.bit_length() + 7) // 8, "big"),
        peer_certificates=certs(fed),
        value_bits=64,
    )
    return query_pb2.Protection(
        mode="paillier", fixed_point_bits=16, params=params.SerializeToString()
    )


def paillier_answer(fed, index: int, analyst: str, job: str, protection) -> list[int]:
    ch, stub = query_stub(fed, index, analyst=analyst)
    with ch:
        reply = stub.Query(
            signed_query(
                fed, names(fed)[index], COUNT, analyst=analyst, job_id=job, protection=protection
            ).request,
            timeout=60,
        )
    payload = modes_pb2.PaillierPayload.FromString(reply.payload)
    return [int.from_bytes(c, "big") for c in payload.ciphertexts]


def test_paillier_randomizers_never_repeat_across_queries_or_analysts(fed):
    """Channel: the DJN randomizer pool.  The key holder recovers r^n of every ciphertext
    it receives; two equal ones would give the difference of two masked plaintexts.
    alice sends 8 queries under one key to every node (cached on the second, pool refilled
    after each answer), then alice and bob (bob naming alice's key) 4 each at once. Safe:
    every randomizer distinct."""
    key = Key()
    p = paillier(fed, key)
    seen: list[int] = []
    for i in range(8):
        for k in range(3):
            seen += [
                key.randomizer(c) for c in paillier_answer(fed, k, "alice", f"s25-pl-{i}-{k}", p)
            ]

    def one(arg: tuple[str, int, int]) -> list[int]:
        who, i, k = arg
        return [
            key.randomizer(c) for c in paillier_answer(fed, k, who, f"s25-plc-{who}-{i}-{k}", p)
        ]

    jobs = [(w, i, k) for w in ("alice", "bob") for i in range(4) for k in range(3)]
    with ThreadPoolExecutor(8) as pool:
        for got in pool.map(one, jobs):
            seen += got
    assert len(seen) >= 48 and len(set(seen)) == len(seen)


def test_paillier_randomizers_never_repeat_when_one_analyst_alternates_keys(fed):
    """Channel: a pool left behind by an evicted key (one key per requester): alice
    alternates two keys A, B, A, B, ... twice each, so each is cached, evicted and cached
    again. Safe: no randomizer repeats under either key."""
    keys = [Key(), Key()]
    seen: list[list[int]] = [[], []]
    for i in range(8):
        k = i // 2 % 2
        p = paillier(fed, keys[k])
        for node in (0, 1):
            got = paillier_answer(fed, node, "alice", f"s25-alt-{i}-{node}", p)
            seen[k] += [keys[k].randomizer(c) for c in got]
    for s in seen:
        assert len(s) >= 8 and len(set(s)) == len(s)


def test_concurrent_paillier_analysts_each_get_answers_under_their_own_key(fed):
    """Channel: another analyst's cached key (and its randomizer pool) used for an answer.
    alice and bob, each with its own 2048-bit key cached at every node, query at once.
    Safe: every answer decrypts and checks under its own analyst's key, equal to plain."""
    (plain,) = Federation.from_file(fed.fed_toml).query(COUNT, purpose=PURPOSE).rows
    clients = [Federation.from_file(fed.fed_toml), Federation.from_file(fed.write_fed_toml("bob"))]

    async def many() -> list:
        return await asyncio.gather(
            *(
                c.aquery(COUNT, purpose=PURPOSE, protection="paillier")
                for c in clients
                for _ in range(3)
            )
        )

    for c in clients:  # warm: each key cached (second use) at every node
        c.query(COUNT, purpose=PURPOSE, protection="paillier")
        c.query(COUNT, purpose=PURPOSE, protection="paillier")
    results = asyncio.run(many())
    assert [r.rows[0] for r in results] == [plain] * 6


# ---------------------------------------------------------------------------- collect


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    tasks = [make_task(n) for n in ("dupsame", "dupdiff", "dupbad", "race", "race2", "rogue")]
    f = collect_federation(tmp_path_factory.mktemp("redteam-s25-collect"), tasks)
    try:
        yield f
    finally:
        f.stop()


def window_count(coll, task: str, start: int) -> tuple[int, int]:
    asyncio.run(upload(coll, task, [(0, w(3) + 40)]))  # tick: windows 0-1 close
    asyncio.run(wait_closed(coll, task, [start]))

    async def fetch():
        async with Collector.from_file(coll.fed_toml) as col:
            return await col.get(task, start, purpose=PURPOSE)

    got = asyncio.run(fetch())
    return got.result, got.report_count


def test_an_id_twice_in_one_upload_with_the_same_bytes_is_one_report(coll):
    """Channel: the fast path inside one request. Safe: one ``ACCEPTED``, the copy not
    accepted again; the window counts it once."""
    msgs = asyncio.run(shard_protos(coll, "dupsame", [(1, w(0) + i) for i in range(6)]))
    statuses = asyncio.run(raw_upload(coll, "dupsame", [*msgs, msgs[0]]))
    assert statuses.count("ACCEPTED") == 6 and statuses[0] == "ACCEPTED"
    assert statuses[-1] in {"DUPLICATE", "INVALID_MESSAGE", "REPORT_REPLAYED"}
    assert window_count(coll, "dupsame", w(0)) == (6, 6)


def test_an_id_twice_in_one_upload_with_different_bytes_counts_at_most_once(coll):
    """Channel: the same ID, two contents, one request (a replay inside the batch).
    Safe: never both accepted; the window counts six reports."""
    msgs = asyncio.run(shard_protos(coll, "dupdiff", [(1, w(0) + i) for i in range(6)]))
    (other,) = asyncio.run(shard_protos(coll, "dupdiff", [(0, w(0) + 30)]))
    other.report_id = msgs[0].report_id
    statuses = asyncio.run(raw_upload(coll, "dupdiff", [*msgs, other]))
    assert statuses.count("ACCEPTED") == 6 and statuses[-1] != "ACCEPTED"
    assert window_count(coll, "dupdiff", w(0)) == (6, 6)


def test_an_invalid_copy_of_an_id_before_the_valid_one_in_one_upload_loses_nothing(coll):
    """Channel: the in-request dedup ahead of validation.  A truncated copy of report X,
    then X itself, in one upload (and the reverse for Y). Safe: the truncated copies are
    ``INVALID_MESSAGE``; X and Y are each accepted once and counted once."""
    msgs = asyncio.run(shard_protos(coll, "dupbad", [(1, w(0) + i) for i in range(6)]))
    bad_x, bad_y = collect_pb2.CollectReport(), collect_pb2.CollectReport()
    bad_x.CopyFrom(msgs[0])
    bad_y.CopyFrom(msgs[1])
    bad_x.leader_share = bad_x.leader_share[:-1]
    bad_y.leader_share = bad_y.leader_share[:-1]
    statuses = asyncio.run(raw_upload(coll, "dupbad", [bad_x, *msgs, bad_y]))
    assert statuses == ["INVALID_MESSAGE"] + ["ACCEPTED"] * 6 + ["INVALID_MESSAGE"], statuses
    assert window_count(coll, "dupbad", w(0)) == (6, 6)


def test_two_concurrent_uploads_of_the_same_reports_store_each_once(coll):
    """Channel: two requests racing on the index. Safe: each report ``ACCEPTED`` in
    exactly one answer, ``DUPLICATE`` in the other; counted once."""
    msgs = asyncio.run(shard_protos(coll, "race", [(1, w(0) + i) for i in range(20)]))

    async def both():
        return await asyncio.gather(raw_upload(coll, "race", msgs), raw_upload(coll, "race", msgs))

    one, two = asyncio.run(both())
    for a, b in zip(one, two, strict=True):
        assert sorted([a, b]) == ["ACCEPTED", "DUPLICATE"]
    assert window_count(coll, "race", w(0)) == (20, 20)


def test_two_gateways_racing_one_id_with_different_reports_store_one(coll):
    """Channel: two gateways upload different reports under the same IDs at once.
    Safe: per ID exactly one ``ACCEPTED``, the other ``REPORT_REPLAYED``; the window
    counts one report per ID."""
    a = asyncio.run(shard_protos(coll, "race2", [(1, w(0) + i) for i in range(10)]))
    b = asyncio.run(shard_protos(coll, "race2", [(1, w(0) + 30 + i) for i in range(10)]))
    for x, y in zip(a, b, strict=True):
        y.report_id = x.report_id

    async def both():
        return await asyncio.gather(
            raw_upload(coll, "race2", a), raw_upload(coll, "race2", b, "gw-rogue")
        )

    one, two = asyncio.run(both())
    for x, y in zip(one, two, strict=True):
        assert sorted([x, y]) == ["ACCEPTED", "REPORT_REPLAYED"], (one, two)
    # the rogue's reports, where they won, fail the Helper's check (their ID was moved);
    # five more honest reports keep the window releasable whoever won
    asyncio.run(upload(coll, "race2", [(1, w(0) + 50 + i) for i in range(5)]))
    won = one.count("ACCEPTED")
    assert window_count(coll, "race2", w(0)) == (won + 5, won + 5)


def test_another_gateway_cannot_displace_or_double_a_report(coll):
    """Channel: a rogue gateway that learned gw-city's report IDs (not their sealed
    shares) uploads other reports under them, before and after, and exact copies.
    Safe: a report ID is first come, first served (the rogue's swapped-ID reports fail
    the Helper's HPKE check and are rejected, never aggregated); gw-city's other reports
    count once each; nothing the rogue uploads changes the total."""
    city = asyncio.run(shard_protos(coll, "rogue", [(1, w(0) + i) for i in range(10)]))
    fakes = asyncio.run(shard_protos(coll, "rogue", [(1, w(0) + 40 + i) for i in range(6)]))
    for f, c in zip(fakes, city[:6], strict=True):
        f.report_id = c.report_id
    first = asyncio.run(raw_upload(coll, "rogue", fakes[:3], "gw-rogue"))
    mine = asyncio.run(raw_upload(coll, "rogue", city))
    later = asyncio.run(raw_upload(coll, "rogue", [*fakes[3:], *city[3:6]], "gw-rogue"))
    assert first == ["ACCEPTED"] * 3  # first come: the IDs are the rogue's now
    assert mine == ["REPORT_REPLAYED"] * 3 + ["ACCEPTED"] * 7
    assert later == ["REPORT_REPLAYED"] * 3 + ["DUPLICATE"] * 3
    assert window_count(coll, "rogue", w(0)) == (7, 7)
