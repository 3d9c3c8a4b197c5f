"""Issue 17's red team: an outsider's probes of "data available but invisible".

Written from the documentation (``README.md``, ``docs/``) and the public wire format
(``protos/``) only. Three real nodes serve ``residents`` (person-level, DP) and
``pipe_incidents`` (exact, consortium = all three). Each test is one probe by a curious
analyst holding a valid certificate and signing key (hand-made requests through
``tests/integration/raw.py``) and asserts the SAFE behaviour. A test marked
``xfail(strict=True)`` is a finding: it fails on today's code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from datafed.client import Federation
from datafed.local.federation import LocalFederation
from datafed.pki.ca import party_paths
from datafed.proto.v1 import (
    ledger_pb2,
    ledger_pb2_grpc,
    modes_pb2,
    query_pb2,
)
from datafed.query.sql import parse_sql
from datafed.wire.serde import spec_to_proto
from tests.integration.raw import (
    PURPOSE,
    district_specs,
    failing_after_admission,
    ledger_records,
    query_stub,
    signed_query,
)

DISTRICTS = ("north", "east", "south")
NODES = tuple(f"water-{d}" for d in DISTRICTS)
EPS = 1.0
EXACT = (
    'allowed_requesters = ["alice"]\n'
    f'allowed_purposes = ["{PURPOSE}"]\n'
    'allowed_protections = ["paillier", "plain", "shares", "secagg", "ckks"]\n'
    'allowed_aggregates = ["sum", "count", "avg", "histogram"]\n'
    "min_group_size = 3\n"
    "min_participants = 3\n"
    "person_level = false\n"
    f"consortium = {list(NODES)!r}\n".replace("'", '"')
    + "[datasets.policy.group_domains]\n"
    'material = ["cast_iron", "ductile_iron", "steel"]\n'
)
DP = (
    'allowed_requesters = ["alice"]\n'
    f'allowed_purposes = ["{PURPOSE}"]\n'
    'allowed_protections = ["paillier", "plain", "shares", "secagg", "ckks"]\n'
    'allowed_aggregates = ["sum", "count", "avg", "histogram"]\n'
    "min_group_size = 5\n"
    "[datasets.policy.group_domains]\n"
    'district = ["north", "east", "south"]\n'
    "[datasets.policy.dp]\n"
    f"epsilon_per_query = {EPS}\n"
    "budget_epsilon = 100000.0\n"
    'budget_scope = "requester"\n'
    "bounds = { income = [0, 400000], age = [0, 120] }\n"
)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    specs = district_specs(DISTRICTS, EXACT, DP, seed=7, segments=10, residents=40)
    fed = LocalFederation.create(tmp_path_factory.mktemp("redteam"), specs)
    fed.start()
    try:
        yield fed
    finally:
        fed.stop()


def alice(city: LocalFederation) -> Federation:
    return Federation.from_file(city.fed_toml)


def decisions(city: LocalFederation, node: str, job_id: str) -> list[str]:
    return [r.decision for r in ledger_records(city, node) if r.job_id == job_id]


def ask(
    city: LocalFederation,
    job_id: str,
    *,
    sql: str = "SELECT COUNT(*) FROM residents",
    spec: query_pb2.QuerySpec | None = None,
    node: int = 0,
    **kw: object,
) -> query_pb2.QueryResponse:
    """One hand-signed query to one node (raises grpc.RpcError on a refusal)."""
    probe = signed_query(city, NODES[node], sql, job_id=job_id, spec=spec, **kw)  # type: ignore[arg-type]
    ch, stub = query_stub(city, node)
    with ch:
        resp: query_pb2.QueryResponse = stub.Query(probe.request, timeout=60)
        return resp


def plain_values(resp: query_pb2.QueryResponse) -> list[float]:
    payload = modes_pb2.PlainPayload.FromString(resp.payload)
    return [v / 2**resp.fixed_point_bits for v in payload.values]


def refusal(*args: object, **kw: object) -> grpc.RpcError | None:
    """``ask(city, *args, **kw)``'s refusal, or None when it answered."""
    try:
        ask(*args, **kw)  # type: ignore[arg-type]
    except grpc.RpcError as e:
        return e
    return None


def _paillier_n() -> int:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_numbers()
        .public_numbers.n
    )


def _paillier(
    city: LocalFederation, n: int, *, certs: list[bytes] | None = None, value_bits: int = 64
) -> query_pb2.Protection:
    peers = certs or [party_paths(city.pki_dir, "node", name).cert.read_bytes() for name in NODES]
    params = modes_pb2.PaillierParams(
        n=n.to_bytes((n.bit_length() + 7) // 8, "big"),
        peer_certificates=peers,
        value_bits=value_bits,
    )
    return query_pb2.Protection(
        mode="paillier", fixed_point_bits=16, params=params.SerializeToString()
    )


# ------------------------------------------------------------ probe 1: discovery
def test_discovery_carries_no_data_derived_value(city):
    """Channel: NodeInfo / `datafed nodes`. Three nodes with different rows must describe
    each dataset identically (columns, domains, policy): no row count, min or max."""
    seen = []
    for i in range(len(NODES)):
        ch, _ = query_stub(city, i)
        from datafed.proto.v1 import query_pb2_grpc

        with ch:
            info = query_pb2_grpc.QueryServiceStub(ch).NodeInfo(
                query_pb2.NodeInfoRequest(), timeout=30
            )
        for ds in info.datasets:
            ds.access.ClearField("budget_left")  # spent by this analyst's own probes
        seen.append(sorted(ds.SerializeToString(deterministic=True) for ds in info.datasets))
        text = str(info)
        for rows in (40, 10):  # each node's true row counts
            assert f": {rows}\n" not in text
    assert seen[0] == seen[1] == seen[2]


# --------------------------------------------------- probe 2: replaying one request
def test_replaying_one_signed_request_releases_once(city):
    """Channel: budget accounting. The same signed bytes sent again (a retry) must not
    draw a second, independently noised release for one charge."""
    probe = signed_query(city, NODES[0], "SELECT SUM(income) FROM residents", job_id="job-replay")
    answers = []
    for _ in range(3):
        ch, stub = query_stub(city, 0)
        with ch:
            try:
                answers.append(plain_values(stub.Query(probe.request, timeout=60)))
            except grpc.RpcError:
                pass
    # safe: one answer, or the same answer again (no fresh noise)
    assert len({tuple(a) for a in answers}) <= 1
    assert decisions(city, NODES[0], "job-replay").count("approved") == 1


# ------------------------------------------- probe 3: one job id, concurrent requests
def test_one_job_id_raced_with_fresh_nonces_releases_once(city):
    """Channel: budget accounting. Eight differently signed requests (fresh nonces) with
    one job id, sent at once: at most one release, one charge."""

    def one(_: int) -> list[float] | None:
        try:
            return plain_values(
                ask(city, "job-race-same-id", sql="SELECT SUM(income) FROM residents")
            )
        except grpc.RpcError:
            return None

    with ThreadPoolExecutor(8) as pool:
        got = [a for a in pool.map(one, range(8)) if a is not None]
    assert len({tuple(a) for a in got}) <= 1
    assert decisions(city, NODES[0], "job-race-same-id").count("approved") == 1


# ------------------------------------ probe 4: duplicate aggregates in one hand-made spec
def test_duplicate_aggregates_do_not_buy_extra_noise_draws(city):
    """Channel: components of one release. The SQL front end merges SUM(income) written
    twice; a hand-made spec repeating it k times must not give k independent draws at
    the single-SUM noise (averaged: sqrt(k) times less noise for one epsilon)."""
    single = ask(city, "job-dup-1", sql="SELECT SUM(income) FROM residents")
    s1 = single.noise_stddev[0]
    k = 16
    spec = spec_to_proto(parse_sql("SELECT SUM(income) FROM residents"))
    agg = spec.aggregates[0]
    del spec.aggregates[:]
    spec.aggregates.extend([agg] * k)
    err = refusal(city, "job-dup-k", spec=spec)
    if err is not None:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        return
    resp = ask(city, "job-dup-k2", spec=spec)
    vals = plain_values(resp)
    sums = [v for c, v in zip(resp.components, vals, strict=True) if c.startswith("sum")]
    sds = [
        s for c, s in zip(resp.components, resp.noise_stddev, strict=True) if c.startswith("sum")
    ]
    distinct = len(set(sums))
    # the mean of `distinct` independent copies must not be more precise than one release
    assert min(sds) / math.sqrt(distinct) >= s1 * 0.99, (s1, sds[:2], distinct)


# --------------------------------------- probe 5: overlapping HISTOGRAM bins, hand-made
def test_overlapping_histogram_bins_are_refused_or_charged(city):
    """Channel: HISTOGRAM bins. The front end wants increasing edges; a hand-made spec
    with edges 0,200,0,200,... makes every other bin [0,200): each row counts in k bins,
    so a histogram's sensitivity is k, not 1. Safe: refused before admission, or noise
    per bin at least sqrt(k) times that of one honest bin."""
    honest = spec_to_proto(parse_sql("SELECT HISTOGRAM(age, 0, 200) FROM residents"))
    one = ask(city, "job-hist-1", spec=honest)
    s1 = one.noise_stddev[0]
    k = 10
    spec = spec_to_proto(parse_sql("SELECT HISTOGRAM(age, 0, 200) FROM residents"))
    del spec.aggregates[0].bins[:]
    spec.aggregates[0].bins.extend([0.0, 200.0] * k)
    err = refusal(city, "job-hist-k", spec=spec)
    if err is not None:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert decisions(city, NODES[0], "job-hist-k") == ["denied"]
        return
    resp = ask(city, "job-hist-k2", spec=spec)
    vals = plain_values(resp)
    covering = vals[0::2]  # the k bins [0, 200)
    assert min(resp.noise_stddev) / math.sqrt(len(covering)) >= s1 * 0.99, (
        s1,
        list(resp.noise_stddev)[:3],
    )


# --------------------------------------- probe 6: the analyst's fixed-point precision
def test_fixed_point_bits_never_make_a_data_dependent_failure(city):
    """Channel: refusals after admission. `fixed_point_bits` is the analyst's: a SUM that
    overflows 64 bits only when a node's (noisy) sum is large would make success/failure
    an oracle on that sum. Safe: refused before admission (charged nothing), or answered
    (saturated) -- never ABORTED after admission."""
    outcomes: dict[int, list[str]] = {}
    for bits in (0, 30, 36, 40, 42, 44, 46, 48, 56, 63, 64, 200):
        outcomes[bits] = []
        for node in range(len(NODES)):
            pmsg = query_pb2.Protection(mode="plain", fixed_point_bits=bits)
            job = f"job-fpb-{bits}-{node}"
            err = refusal(
                city, job, sql="SELECT SUM(income) FROM residents", node=node, protection=pmsg
            )
            outcomes[bits].append("ok" if err is None else err.code().name)
    assert not any("ABORTED" in o for o in outcomes.values()), outcomes
    for o in outcomes.values():
        assert len(set(o)) == 1, outcomes  # the same outcome at every node


# ------------------------------------------- probe 7: a roster naming a node twice
@pytest.mark.parametrize(
    "roster",
    [
        (NODES[0], NODES[1], NODES[1]),
        (NODES[0], NODES[1], NODES[2], NODES[2]),
        (NODES[0], NODES[0], NODES[0]),
    ],
)
def test_a_roster_naming_a_node_twice_is_refused(city, roster):
    """Channel: the roster rule. Exact data needs exactly the consortium, DP at least
    min_participants nodes: a name repeated must count once (a list compared by length
    or membership only would admit a sub-roster)."""
    for ds, sql in (
        ("exact", "SELECT SUM(bursts) FROM pipe_incidents"),
        ("dp", "SELECT SUM(income) FROM residents"),
    ):
        job = f"job-dup-roster-{ds}-{len(roster)}-{roster.count(NODES[0])}"
        err = refusal(city, job, sql=sql, roster=roster)
        assert err is not None and err.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.PERMISSION_DENIED,
        ), (ds, roster)
        assert "approved" not in decisions(city, NODES[0], job)


# ------------------------------- probe 8: Paillier peers replaced by the analyst's cert
def test_paillier_peers_must_be_the_rosters_nodes(city):
    """Channel: protocol payloads. Pairwise masks come from the peers' certificate keys;
    an analyst naming its own certificate as a peer would know that mask and could
    strip it from one node's ciphertext: one node's exact share on exact data."""
    n = _paillier_n()
    ok = ask(
        city,
        "job-pail-ok",
        sql="SELECT SUM(bursts) FROM pipe_incidents",
        protection=_paillier(city, n),
    )
    assert ok.payload  # the control: honest peers are accepted
    mine = party_paths(city.pki_dir, "analyst", "alice").cert.read_bytes()
    certs = [party_paths(city.pki_dir, "node", NODES[0]).cert.read_bytes(), mine, mine]
    for job, pmsg in (
        ("job-pail-mine", _paillier(city, n, certs=certs)),
        ("job-pail-short", _paillier(city, n, certs=certs[:1])),
    ):
        err = refusal(city, job, sql="SELECT SUM(bursts) FROM pipe_incidents", protection=pmsg)
        assert err is not None, job
        assert "released" not in decisions(city, NODES[0], job)


# --------------------------- probe 9: the analyst's packed width under Paillier
def test_paillier_value_bits_are_no_oracle_on_a_nodes_share(city):
    """Channel: refusals after admission (17.4 for Paillier). `value_bits` is the analyst's:
    if a node failed (or answered) depending on whether its hidden SUM fits, the analyst
    learns bits of one node's exact share by bisection. Safe: the outcome is the same for a
    WHERE matching no row and one matching every row, at every node, with one fixed text."""
    n = _paillier_n()
    for bits in (2, 12, 32, 63, 65):
        seen = set()
        for where in ("bursts < 0", "bursts >= 0"):
            for node in range(len(NODES)):
                job = f"job-vb-{bits}-{node}-{where[7]}"
                err = refusal(
                    city,
                    job,
                    node=node,
                    sql=f"SELECT SUM(bursts) FROM pipe_incidents WHERE {where}",
                    protection=_paillier(city, n, value_bits=bits),
                )
                seen.add("ok" if err is None else f"{err.code().name}: {err.details()}")
        assert len(seen) == 1, (bits, seen)


# ----------------------------------------------- probe 10: ledger reads as analyst
def test_an_analyst_cannot_read_ledger_entries(city):
    """Channel: ledger entries (private parts, per-node facts). Analysts get checkpoints
    and proofs, never entries."""
    files = party_paths(city.pki_dir, "analyst", "alice")
    creds = grpc.ssl_channel_credentials(
        root_certificates=(city.pki_dir / "ca.crt").read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )
    node = city.nodes[0]
    with grpc.secure_channel(
        node.address, creds, options=[("grpc.ssl_target_name_override", node.spec.name)]
    ) as ch:
        stub = ledger_pb2_grpc.LedgerServiceStub(ch)
        stub.GetCheckpoint(ledger_pb2.GetCheckpointRequest(), timeout=30)  # allowed
        with pytest.raises(grpc.RpcError) as err:
            stub.GetEntries(ledger_pb2.GetEntriesRequest(start=0, end=1), timeout=30)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


# ------------------------------- probe 11: what the ledger heads say about the rows
def test_ledger_heads_and_receipts_do_not_depend_on_the_rows(city):
    """Channel: receipts and the ledger heads in every answer. A query matching no row
    and one matching every row must append the same number of entries at every node and
    carry receipts without per-node facts."""
    fed = alice(city)
    shapes = []
    for where in ("income < 0", "income >= 0"):
        r = fed.query(
            f"SELECT COUNT(*), SUM(income) FROM residents WHERE {where}",
            purpose=PURPOSE,
            protection="paillier",
        )
        shapes.append(sorted((h["node"], len(h["entries"])) for h in r.to_dict()["ledgers"]))
        for receipt in r.receipts:
            for rec in receipt.records:
                # the statement, delta, and the budget the node enforces (policy, not data)
                public = {"statement", "delta", "budget_epsilon", "budget_scope"}
                assert set(rec.details) <= public, rec.details
    assert shapes[0] == shapes[1]
    assert len({c for _, c in shapes[0]}) == 1


# ------------------------- probe 12: shares mode, an aggregator fed one node's share
def _node_sum(city: LocalFederation, node: int, sql: str) -> int:
    import sqlite3

    path = city.nodes[node].config.parent / "data" / "pipe_incidents.sqlite"
    with sqlite3.connect(path) as db:
        return int(db.execute(sql).fetchone()[0])


@pytest.mark.parametrize("bundle", ["only-target", "target-thrice"])
@pytest.mark.parametrize("mode", ["shares", "ckks"])
def test_aggregators_take_every_participant_exactly_once(city, monkeypatch, mode, bundle):
    """Channel: protocol payloads (`shares`, `ckks`). The analyst relays each node's sealed
    contribution to the aggregator(s) (round 1: a SealedBundle, one item per
    participant). Handing them a bundle with only the target's item -- or the target's
    item three times, 3 being invertible mod 2^64 -- would make what comes back one
    node's exact SUM on exact data: under `shares` the two ShareSums add up to it, under
    `ckks` the analyst decrypts it with its own key. Safe: the aggregator refuses."""
    from datafed.pki.ca import load_signing_key
    from datafed.proto.v1 import common_pb2, protocol_pb2, protocol_pb2_grpc
    from datafed.wire.signing import sign_body

    target = 2  # water-south's item
    key = load_signing_key(party_paths(city.pki_dir, "analyst", "alice").signing_key)
    answered: list[bytes] = []
    calls: list[int] = []
    orig = protocol_pb2_grpc.ProtocolServiceStub

    class Evil:
        def __init__(self, ch: grpc.Channel) -> None:
            self.stub = orig(ch)

        def Step(self, req: common_pb2.SignedRequest, **kw: object) -> object:  # noqa: N802
            body = protocol_pb2.StepRequestBody.FromString(req.body)
            if body.mode == mode and body.round == 1:
                calls.append(body.round)
                items = list(protocol_pb2.SealedBundle.FromString(body.payload).items)
                keep = [items[target]] * (1 if bundle == "only-target" else len(items))
                body.payload = protocol_pb2.SealedBundle(items=keep).SerializeToString()
                raw = body.SerializeToString()
                req = common_pb2.SignedRequest(body=raw, signature=sign_body(raw, key))
                reply = self.stub.Step(req, **kw)
                answered.append(reply.payload)
                return reply
            return self.stub.Step(req, **kw)

    monkeypatch.setattr(protocol_pb2_grpc, "ProtocolServiceStub", Evil)
    sql = "SELECT SUM(bursts) FROM pipe_incidents"
    result = None
    try:
        result = alice(city).query(sql, purpose=PURPOSE, protection=mode)
    except Exception:  # the client may notice; the question is what leaked
        pass
    want = _node_sum(city, target, sql) * (1 if bundle == "only-target" else len(NODES))
    assert calls
    if mode == "shares" and len(answered) >= 2:
        vecs = [protocol_pb2.ShareSum.FromString(p).vector for p in answered]
        total = [
            (sum(int.from_bytes(v[i : i + 8], "little") for v in vecs)) % 2**64
            for i in range(0, len(vecs[0]), 8)
        ]
        assert (want * 2**16) % 2**64 not in total, f"water-south's SUM(bursts): {want}"
    if result is not None:
        assert round(float(result.rows[0][0] or 0)) != want, f"water-south's SUM: {want}"
    assert not answered, "an aggregator summed a bundle that is not one item per participant"


# ------------------------- probe 12b: shares with one node named as both aggregators
def test_shares_with_one_aggregator_named_twice_releases_nothing(city):
    """Channel: protocol payloads (`shares`). SharesParams names the aggregators; naming
    water-north twice would seal both of water-east's shares to water-north, a curious
    node that then holds water-east's exact value. Safe: nothing leaves water-east."""
    from datafed.proto.v1 import protocol_pb2

    def cert(name: str) -> bytes:
        return party_paths(city.pki_dir, "node", name).cert.read_bytes()

    params = protocol_pb2.SharesParams(
        aggregator_certificates=[cert(NODES[0]), cert(NODES[0])],
        participant_certificates=[cert(n) for n in NODES],
    )
    pmsg = query_pb2.Protection(
        mode="shares", fixed_point_bits=16, params=params.SerializeToString()
    )
    err = refusal(
        city,
        "job-shares-twice",
        node=1,
        sql="SELECT SUM(bursts) FROM pipe_incidents",
        protection=pmsg,
    )
    assert err is not None
    assert "released" not in decisions(city, NODES[1], "job-shares-twice")


# ------------- probe 13 (finding 1, fixed): a request's own fault, refused before admission
def test_malformed_protection_params_are_refused_before_admission_on_dp_data(city):
    """Channel: budget accounting. docs/invisibility.md: a request's own faults are decided
    before admission, from the request alone (recorded `denied`, nothing charged)."""
    from datafed.proto.v1 import protocol_pb2

    certs = [party_paths(city.pki_dir, "node", name).cert.read_bytes() for name in NODES]
    mine = party_paths(city.pki_dir, "analyst", "alice").cert.read_bytes()
    n = _paillier_n()
    shares = protocol_pb2.SharesParams(
        aggregator_certificates=[certs[0], certs[0]], participant_certificates=certs
    )
    secagg = protocol_pb2.SecAggParams(participant_certificates=certs, threshold=1)
    probes = {
        "job-dp-vb": _paillier(city, n, value_bits=2),
        "job-dp-peers": _paillier(city, n, certs=[mine, mine, mine]),
        "job-dp-shares": query_pb2.Protection(
            mode="shares", fixed_point_bits=16, params=shares.SerializeToString()
        ),
        "job-dp-secagg": query_pb2.Protection(
            mode="secagg", fixed_point_bits=16, params=secagg.SerializeToString()
        ),
    }
    fed = alice(city)

    def left() -> float:
        info = next(s for s in fed.discover() if s.node == NODES[0]).info
        return float(info.described["residents"].access.budget_left)

    before = left()
    failures = {}
    for job, pmsg in probes.items():
        err = refusal(city, job, sql="SELECT SUM(income) FROM residents", protection=pmsg)
        assert err is not None
        if err.code() == grpc.StatusCode.ABORTED or decisions(city, NODES[0], job) != ["denied"]:
            failures[job] = (err.code().name, decisions(city, NODES[0], job))
    assert not failures, failures
    assert left() == before  # nothing charged


# ----------------------- probe 14: one charge per release, whatever the release holds
def test_every_dp_release_is_charged_once_at_its_epsilon(city):
    """Channel: budget accounting. Many columns, a 12-bin HISTOGRAM, AVG (sum + count) and
    a WHERE on a sensitive column making a group of one are one release at
    epsilon_per_query: the budget left falls by exactly that, with the noise split."""
    fed = alice(city)

    def left() -> float:
        info = next(s for s in fed.discover() if s.node == NODES[1]).info
        return float(info.described["residents"].access.budget_left)

    before = left()
    edges = ", ".join(str(e) for e in range(0, 121, 10))
    r = fed.query(
        f"SELECT district, SUM(income), COUNT(*), AVG(age), HISTOGRAM(age, {edges}) FROM residents "
        "WHERE income > 399000 GROUP BY district",
        purpose=PURPOSE,
        protection="plain",
    )
    assert set(r.epsilon.values()) == {EPS}
    assert math.isclose(before - left(), EPS)
    assert r.noise_stddev


# ------------------------------ probe 15: the Intersect step of an intersection-sum again
@pytest.fixture(scope="module")
def finance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    from datafed.local.federation import finance_specs

    specs = finance_specs(taxpayers=200, loans=100, exact=True)
    for s in specs:
        s.policy_toml = s.policy_toml.replace("person_level = false\n", "")
        s.policy_toml += "[datasets.policy.dp]\nepsilon_per_query = 1.0\nbudget_epsilon = 100.0\n"
        if s.name == "city-bank":
            s.policy_toml += "bounds = { amount = [0, 1000000] }\n"
    fed = LocalFederation.create(tmp_path_factory.mktemp("redteam-psi"), specs)
    fed.start()
    try:
        yield fed
    finally:
        fed.stop()


def test_an_intersect_step_replayed_draws_no_fresh_noise(finance, monkeypatch):
    """Channel: intersection-sum (PSI). The noisy size and sum leave in the Intersect
    step; one admission must not answer the step again with fresh noise (re-signed with
    a fresh nonce): k answers averaged would shrink the noise by sqrt(k) for one charge."""
    import os

    from datafed.local.federation import FINANCE_PURPOSE
    from datafed.pki.ca import load_signing_key
    from datafed.proto.v1 import common_pb2, psi_pb2, psi_pb2_grpc
    from datafed.wire.signing import sign_body

    key = load_signing_key(party_paths(finance.pki_dir, "analyst", "alice").signing_key)
    frames: list[psi_pb2.PsiUpload] = []
    orig = psi_pb2_grpc.PsiServiceStub

    class Spy:
        def __init__(self, ch: grpc.Channel) -> None:
            self.stub = orig(ch)
            self.Blind = self.stub.Blind
            self.Exchange = self.stub.Exchange

        def Intersect(self, it: object, **kw: object) -> object:  # noqa: N802
            got = list(it)  # type: ignore[call-overload]
            frames.extend(got)
            return self.stub.Intersect(iter(got), **kw)

    monkeypatch.setattr(psi_pb2_grpc, "PsiServiceStub", Spy)
    fed = Federation.from_file(finance.fed_toml)
    first = fed.intersection_sum(
        ("tax-bureau", "taxpayers", "person_id"),
        ("city-bank", "loans", "person_id", "amount"),
        purpose=FINANCE_PURPOSE,
    )
    assert frames
    node = psi_pb2.PsiIntersectRequest.FromString(frames[0].request.body).header.node
    ch, _ = query_stub(finance, [n.spec.name for n in finance.nodes].index(node))
    stub = orig(ch)
    sizes = []
    for _ in range(3):
        body = psi_pb2.PsiIntersectRequest.FromString(frames[0].request.body)
        body.header.nonce = os.urandom(16)
        raw = body.SerializeToString()
        again = [
            psi_pb2.PsiUpload(
                request=common_pb2.SignedRequest(body=raw, signature=sign_body(raw, key))
            )
        ]
        again += frames[1:]
        try:
            reply = stub.Intersect(iter(again), timeout=60)
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
            continue
        sizes.append(reply.intersection_size)
    ch.close()
    # safe: refused, or the very same release again (no fresh draw)
    assert len(set(sizes)) <= 1, (
        f"fresh noisy sizes {sizes} for one charge (first: {first.intersection_size})"
    )


# ------------------- probe 16: the operator edits a private part (the real reasons)
def _audit(*args: str) -> tuple[int, str]:
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [str(Path(sys.executable).parent / "datafed-audit"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("edit", ["rewrite", "delete"])
def test_an_edited_private_part_fails_verify(city, tmp_path, edit):
    """Channel: ledger verification. The private parts (the real reason of a failure,
    per-node facts) sit beside the log, committed to by a salted hash in the leaf. An
    operator who rewrites or drops one -- to hide why a job failed -- must fail verify."""
    import sqlite3

    job = f"job-private-{edit}"
    pmsg = failing_after_admission(city)  # fails after admission: the reason is private
    assert refusal(city, job, sql="SELECT SUM(bursts) FROM pipe_incidents", protection=pmsg)
    node = city.nodes[0]
    db = tmp_path / "ledger.sqlite"
    time.sleep(2.5)  # the node signs a checkpoint within sign_within_s (1 s)
    with (
        sqlite3.connect(node.config.parent / "state" / "ledger.sqlite") as src,
        sqlite3.connect(db) as dst,
    ):
        src.backup(dst)
    with sqlite3.connect(db) as c:
        count = c.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        assert count > 0, [r[0] for r in c.execute("SELECT name FROM sqlite_master")]
    key = party_paths(city.pki_dir, "node", node.spec.name).signing_key
    rc, out = _audit("export", str(tmp_path / "honest"), "--db", str(db))
    assert rc == 0, out
    rc, vkey = _audit("vkey", str(key), "--name", f"datafed/ledger/{node.spec.name}")
    assert rc == 0, vkey
    policy = tmp_path / "policy.toml"
    policy.write_text(f'quorum = 0\nlogs = ["{vkey.strip()}"]\n')
    flags = ["-p", str(policy), "--no-witnesses", "--allow-unsigned-tail"]
    rc, out = _audit("verify", str(tmp_path / "honest"), *flags)
    assert rc == 0, out  # the control: the honest copy verifies
    with sqlite3.connect(db) as c:
        cols = [r[1] for r in c.execute("PRAGMA table_info(private)")]
        idx = max(i for (i,) in c.execute(f"SELECT {cols[0]} FROM private"))
        if edit == "delete":
            c.execute(f"DELETE FROM private WHERE {cols[0]} = ?", (idx,))
        else:
            (blob,) = c.execute(
                f"SELECT {cols[1]} FROM private WHERE {cols[0]} = ?", (idx,)
            ).fetchone()
            forged = (blob[:-1] + b"X") if isinstance(blob, bytes) else blob[:-1] + "X"
            c.execute(f"UPDATE private SET {cols[1]} = ? WHERE {cols[0]} = ?", (forged, idx))
    rc, out = _audit("export", str(tmp_path / "edited"), "--db", str(db))
    assert rc == 0, out
    rc, out = _audit("verify", str(tmp_path / "edited"), *flags)
    assert rc != 0 and "private-mismatch" in out, out


# --------------------------- probe 17: analyst-chosen secagg threshold and Paillier size
@pytest.mark.parametrize("threshold", [0, 1, 4])
def test_a_secagg_threshold_without_an_honest_majority_is_refused(city, threshold):
    """Channel: protocol parameters (`secagg`). The consistency round stops two survivor
    stories only when 2t > n; a threshold of 1 of 3 would let the relaying analyst unmask
    one node's input. Safe: refused, nothing released."""
    from datafed.proto.v1 import protocol_pb2

    certs = [party_paths(city.pki_dir, "node", name).cert.read_bytes() for name in NODES]
    params = protocol_pb2.SecAggParams(participant_certificates=certs, threshold=threshold)
    pmsg = query_pb2.Protection(
        mode="secagg", fixed_point_bits=16, params=params.SerializeToString()
    )
    job = f"job-secagg-t{threshold}"
    err = refusal(city, job, sql="SELECT SUM(bursts) FROM pipe_incidents", protection=pmsg)
    assert err is not None, f"threshold {threshold} of {len(NODES)} accepted"
    assert "released" not in decisions(city, NODES[0], job)


def test_a_weak_paillier_modulus_is_refused_before_admission(city):
    """Channel: protocol parameters (`paillier`). A 512-bit modulus the analyst factors in
    minutes is no protection of what a node encrypts (a node's masked share is only as
    hidden as the masks; the key size is the policy's). Safe: refused before admission."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    n = (
        rsa.generate_private_key(public_exponent=65537, key_size=1024)
        .private_numbers()
        .public_numbers.n
    )
    err = refusal(
        city, "job-weak-n", sql="SELECT SUM(income) FROM residents", protection=_paillier(city, n)
    )
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert decisions(city, NODES[0], "job-weak-n") == ["denied"]


# ------------------------------- probe 18: training rounds beyond the admitted job
@pytest.fixture(scope="module")
def flood(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    from datafed.fl.local import flood_node_specs
    from tests.integration.test_fl_dp import EVALUATES, POLICY

    specs = flood_node_specs(3)
    for s in specs:
        s.policy_toml = POLICY + ("allow_evaluation = true\n" if s.name == EVALUATES else "")
    fed = LocalFederation.create(tmp_path_factory.mktemp("redteam-flood"), specs)
    fed.start()
    try:
        yield fed
    finally:
        fed.stop()


def test_fit_rounds_beyond_the_admitted_job_are_not_released(flood):
    """Channel: training updates. A job admitted for ONE round at delta 6e-5 (the policy's
    max_delta_per_job is 1e-4) is sent round 1 twice, then rounds 2 and 3, by the
    analyst's own ServerApp: each extra fit is a fresh noisy update of the same rows.
    Safe: at most `rounds` updates leave per node, and the job's delta stays within
    max_delta_per_job (1e-4), as checked at admission."""
    import numpy as np
    from flwr.app.message_type import MessageType

    from datafed.fl.spec import DpParams, TrainingSpec
    from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE
    from tests.integration.test_fl_dp import LOGISTIC, analyst, records

    spec = TrainingSpec(
        FLOOD_TABLE,
        FLOOD_FEATURES,
        FLOOD_LABEL,
        rounds=1,
        model=LOGISTIC,
        dp=DpParams.local(0.5, 6e-5, 1.0),
        secagg=False,
    )
    who, opened = analyst(flood, spec)
    assert who.names and not opened["refusals"]
    weights = [np.zeros((1, len(FLOOD_FEATURES)), np.float32), np.zeros(1, np.float32)]
    updates: dict[str, int] = {}
    for rnd in (1, 1, 2, 3):
        for node, reply in who.send(MessageType.TRAIN, weights, rnd).items():
            updates[node] = updates.get(node, 0) + (not reply.has_error())
    for node in who.names.values():
        fits = [
            r
            for r in records(flood, node, who.job)
            if r.operation == "fl_round" and r.decision == "released"
        ]
        delta = sum(float(r.details.get("delta", 0)) for r in fits)
        assert updates[node] <= spec.rounds and len(fits) <= spec.rounds, (
            node,
            updates[node],
            len(fits),
        )
        assert delta <= 1e-4, (node, delta)


# ------------------------------------ probe 19: a replay after the node restarts
def test_a_request_replayed_after_a_restart_is_refused(city):
    """Channel: budget accounting. The replay cache of a node may live in memory; the job
    ids it claimed are replayed from the ledger. The same signed bytes (a ten-minute
    lifetime), sent again after a restart, must not draw a second noisy release."""
    sql = "SELECT SUM(income) FROM residents"
    probe = signed_query(city, NODES[2], sql, job_id="job-restart-replay", lifetime_ms=600_000)
    ch, stub = query_stub(city, 2)
    with ch:
        first = plain_values(stub.Query(probe.request, timeout=60))
    node = city.nodes[2]
    city.stop_node(node)
    city.start_node(node)
    city.write_fed_toml()
    ch, stub = query_stub(city, 2)
    with ch:
        try:
            again = plain_values(stub.Query(probe.request, timeout=60))
        except grpc.RpcError:
            again = first
    assert again == first
    assert decisions(city, NODES[2], "job-restart-replay").count("approved") == 1


# ------------------------- probe 20: a requester name other than the certificate's
@pytest.mark.parametrize("who", ["header", "header-and-statement"])
def test_a_request_naming_another_requester_is_refused(city, who):
    """Channel: budget accounting (`budget_scope = "requester"`). Alice's certificate and key
    sign a request whose header (and statement) say `mallory`: were the budget keyed by the
    name in the request, every new name would be a fresh budget. Safe: refused, nothing
    admitted under either name."""
    from datafed.pki.ca import load_signing_key
    from datafed.wire.signing import new_header
    from datafed.wire.statement import sign_job_statement

    job = f"job-mallory-{who}"
    h = new_header("mallory", NODES[0], job, PURPOSE, lifetime_ms=60_000)
    statement = None
    if who == "header-and-statement":
        key = load_signing_key(party_paths(city.pki_dir, "analyst", "alice").signing_key)
        spec = spec_to_proto(parse_sql("SELECT SUM(income) FROM residents"))
        pmsg = query_pb2.Protection(mode="plain", fixed_point_bits=16)
        statement = sign_job_statement(
            key,
            job_id=job,
            requester="mallory",
            purpose=PURPOSE,
            operation="query",
            dataset="residents",
            spec=spec,
            protection="plain",
            protection_msg=pmsg,
            roster=NODES,
            lifetime_ms=60_000,
            legal_basis=h.legal_basis,
        )
    err = refusal(city, job, sql="SELECT SUM(income) FROM residents", header=h, statement=statement)
    assert err is not None
    assert "approved" not in decisions(city, NODES[0], job)


# ----------------------- probe 21: the reported error bound and noise, data-independent
@pytest.mark.parametrize("dataset", ["exact", "dp"])
def test_reported_error_bounds_and_noise_do_not_depend_on_the_rows(city, dataset):
    """Channel: answer metadata. `ckks` reports an error bound and DP a noise deviation per
    column; computed from the rows (a magnitude, a count) they would say what the values
    cannot. A WHERE matching no row and one matching every row must report the same."""
    fed = alice(city)
    if dataset == "exact":
        sql = "SELECT SUM(bursts), COUNT(*), AVG(bursts) FROM pipe_incidents WHERE bursts {}"
    else:
        sql = "SELECT SUM(income), COUNT(*), AVG(age) FROM residents WHERE income {}"
    seen = []
    for cond in ("< 0", ">= 0"):
        r = fed.query(sql.format(cond), purpose=PURPOSE, protection="ckks")
        seen.append((r.error_bound, r.noise_stddev, r.epsilon))
    assert seen[0] == seen[1]


# -------------------- probe 22: a domain of empty keys on a query without GROUP BY
@pytest.mark.parametrize("keys", [2, 1000])
def test_a_domain_on_a_query_without_group_by_is_refused(city, keys):
    """Channel: the analyst's domain (17.1's class, another door). 17.1 closed copies of a
    GROUP BY key; a query WITHOUT GROUP BY has one group, and a domain of `keys` empty keys
    would, if honoured, draw `keys` fresh noises of the one total for one epsilon. Safe:
    refused before admission, or one noisy total."""
    pmsg = query_pb2.Protection(mode="plain", fixed_point_bits=16)
    pmsg.domain.extend([query_pb2.GroupKey()] * keys)
    job = f"job-empty-domain-{keys}"
    err = refusal(city, job, sql="SELECT COUNT(*) FROM residents", protection=pmsg)
    if err is not None:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert decisions(city, NODES[0], job) == ["denied"]
        return
    resp = ask(city, job + "-b", sql="SELECT COUNT(*) FROM residents", protection=pmsg)
    assert (
        len(resp.groups) <= 1
        and len(set(modes_pb2.PlainPayload.FromString(resp.payload).values)) <= 1
    )
