"""A curious analyst with a valid certificate against real nodes (docs/invisibility.md).

Three district nodes serve an exact dataset about things (``pipe_incidents``, non-person,
k = 3) and person-level datasets under differential privacy (``residents*``, epsilon 1
per query; each its own budget, so each attack starts from a fresh one). Every attack
class of the invisibility issue is played here against the real services:

- a refusal as a free oracle under DP -> every probe is charged at admission;
- one node's contribution read through a one-node roster or per-node specs -> refused
  or garbage in every protected mode;
- trackers, flushing, races and collusion -> the DP budget runs out (person-level data),
  and exact data answers near-duplicates with the earlier release (no oracle, atomic,
  across requesters);
- receipts carry no per-node counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from datafed.client import Federation
from datafed.client._query import QueryJob as _Job
from datafed.client._receipts import answer_digest, node_receipt
from datafed.errors import ProtocolError, RemoteError
from datafed.local import synth
from datafed.local.federation import LocalFederation, NodeSpec
from datafed.pki.ca import load_signing_key, party_paths
from datafed.proto.v1 import modes_pb2, query_pb2, query_pb2_grpc
from datafed.query.sql import parse_sql
from datafed.wire.serde import spec_to_proto
from datafed.wire.statement import sign_job_statement
from tests.integration.raw import (
    PURPOSE,
    failing_after_admission,
    ledger_records,
    query_stub,
    signed_query,
)

DISTRICTS = ("north", "east", "south")
#: Person-level datasets: the same residents under separate budgets, one per attack.
RESIDENTS = ("residents_oracle", "residents_tracker", "residents_flush", "residents_race")


def _dp_policy(budget: float) -> str:
    return (
        'allowed_requesters = ["alice", "bob"]\n'
        f'allowed_purposes = ["{PURPOSE}"]\n'
        'allowed_aggregates = ["sum", "count", "avg"]\n'
        'allowed_protections = ["paillier", "plain", "shares", "secagg", "ckks"]\n'
        "min_group_size = 5\n"
        "[datasets.policy.dp]\n"
        "epsilon_per_query = 1.0\n"
        f"budget_epsilon = {budget}\n"
        "bounds = { income = [0, 400000], age = [0, 120] }\n"
    )


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    specs = []
    for d in DISTRICTS:
        people = synth.residents(d, seed=3, count=120)
        pipes = synth.pipe_incidents(d, seed=3, segments=40)
        exact = (
            'allowed_requesters = ["alice", "bob"]\n'
            f'allowed_purposes = ["{PURPOSE}"]\n'
            'allowed_protections = ["paillier", "plain", "shares", "secagg", "ckks"]\n'
            'allowed_aggregates = ["sum", "count", "avg"]\n'
            "min_group_size = 3\n"
            "person_level = false\n"
            "[datasets.policy.group_domains]\n"
            'material = ["cast_iron", "ductile_iron", "steel", "pvc"]\n'
        )
        specs.append(
            NodeSpec(
                name=f"water-{d}",
                agency=f"{d.title()} District Office",
                datasets=[("pipe_incidents", synth.PIPE_COLUMNS, pipes)]
                + [(r, synth.RESIDENT_COLUMNS, people) for r in RESIDENTS],
                policy_toml=exact,
                dataset_policies={
                    r: _dp_policy(3.0 if r == RESIDENTS[0] else 2.0) for r in RESIDENTS
                },
            )
        )
    fed = LocalFederation.create(tmp_path_factory.mktemp("city"), specs, analysts=("alice", "bob"))
    fed.start()
    fed.write_fed_toml("bob")
    try:
        yield fed
    finally:
        fed.stop()


def alice(city: LocalFederation) -> Federation:
    return Federation.from_file(city.fed_toml)


def bob(city: LocalFederation) -> Federation:
    return Federation.from_file(city.root / "fed-bob.toml")


# ---------------------------------------------------------------- class 1: DP oracles
def test_oracle_probes_are_charged_and_learn_nothing(city):
    """Probes of S are admitted and charged like any query; a failure after admission too."""
    ds = RESIDENTS[0]  # budget 3 at each node
    s = f"SELECT SUM(income), COUNT(*) FROM {ds} WHERE household <= 4"
    first = alice(city).query(s, purpose=PURPOSE, protection="plain")
    assert first.epsilon == {f"water-{d}": 1.0 for d in DISTRICTS}
    # A fault of the request alone (Paillier parameters naming no participant) is refused
    # before admission and costs nothing (red team finding 1).
    n = (1 << 2047) | 1
    params = modes_pb2.PaillierParams(n=n.to_bytes(256, "big"), value_bits=64)
    bad = query_pb2.Protection(
        mode="paillier", fixed_point_bits=16, params=params.SerializeToString()
    )
    fault = signed_query(city, "water-north", s, job_id="job-fault-0", protection=bad)
    ch, stub = query_stub(city, 0)
    with ch, pytest.raises(grpc.RpcError) as err:
        stub.Query(fault.request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A probe that fails after admission (a garbage HE context, parsed only when the node
    # encrypts) still spends.
    probe = signed_query(
        city, "water-north", s, job_id="job-probe-0", protection=failing_after_admission(city)
    )
    ch, stub = query_stub(city, 0)
    with ch, pytest.raises(grpc.RpcError) as err:
        stub.Query(probe.request, timeout=30)
    # After admission a failure reads one fixed text, whatever went wrong (issue 17).
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert "failed at this node after it was admitted" in (err.value.details() or "")
    # The binary-search probe S AND NOT (person AND income > t): admitted, charged, noisy.
    p1 = f"{s} AND NOT (age = 47 AND income > 50000)"
    r = alice(city).query(p1, purpose=PURPOSE, protection="plain")
    assert r.noise_stddev and r.epsilon["water-north"] == 1.0
    # water-north has now spent 3 (S, the failed probe, p1): the next probe is refused
    # for the budget only -- the same answer whatever the data.
    p2 = f"{s} AND NOT (age = 47 AND income > 25000)"
    with pytest.raises(RemoteError) as info:
        alice(city).query(p2, purpose=PURPOSE, protection="plain")
    assert info.value.code == "RESOURCE_EXHAUSTED" and info.value.node == "water-north"
    assert "row" not in info.value.message and "differ" not in info.value.message
    # A colluding analyst draws on the same budget of the dataset.
    with pytest.raises(RemoteError) as info:
        bob(city).query(p2, purpose=PURPOSE, protection="plain")
    assert info.value.code == "RESOURCE_EXHAUSTED"


# ------------------------------------------------- class 3 on DP data: the budget ends it
def test_tracker_on_dp_data_exhausts_the_budget(city):
    """Q1 + Q2 - Q3 isolates a person on exact data; under DP the third query never runs."""
    ds = RESIDENTS[1]  # budget 2
    fed = alice(city)
    fed.query(
        f"SELECT SUM(income) FROM {ds} WHERE age = 47 OR household >= 3",
        purpose=PURPOSE,
        protection="plain",
    )
    fed.query(
        f"SELECT SUM(income) FROM {ds} WHERE household >= 3", purpose=PURPOSE, protection="plain"
    )
    with pytest.raises(RemoteError) as info:
        fed.query(
            f"SELECT SUM(income) FROM {ds} WHERE age = 47 AND household >= 3",
            purpose=PURPOSE,
            protection="plain",
        )
    assert info.value.code == "RESOURCE_EXHAUSTED"


def test_flushing_on_dp_data_exhausts_the_budget(city):
    """Filler queries to flush a history only spend the budget the target query needs."""
    ds = RESIDENTS[2]
    fed = alice(city)
    answered = refused = 0
    for month in range(6):
        try:
            fed.query(
                f"SELECT COUNT(*) FROM {ds} WHERE age > {20 + month}",
                purpose=PURPOSE,
                protection="plain",
            )
            answered += 1
        except RemoteError as exc:
            assert exc.code == "RESOURCE_EXHAUSTED"
            refused += 1
    assert (answered, refused) == (2, 4)


def test_racing_queries_on_dp_data_cannot_both_spend_the_last_epsilon(city):
    """S and S minus a person sent at once: admission is atomic, one of them is refused."""
    ds = RESIDENTS[3]
    fed = alice(city)
    fed.query(f"SELECT COUNT(*) FROM {ds}", purpose=PURPOSE, protection="plain")  # 1 of 2
    s = f"SELECT SUM(income) FROM {ds} WHERE household <= 4"
    t = f"{s} AND NOT (age = 47)"

    jobs = ("job-race-s", "job-race-t")

    async def race() -> list[object]:
        return await asyncio.gather(
            *(
                fed.aquery(q, purpose=PURPOSE, protection="plain", job_id=job)
                for q, job in zip((s, t), jobs, strict=True)
            ),
            return_exceptions=True,
        )

    results = asyncio.run(race())
    assert sum(not isinstance(r, BaseException) for r in results) <= 1
    assert all(r.code == "RESOURCE_EXHAUSTED" for r in results if isinstance(r, RemoteError))
    # At every node exactly one of the two was admitted; its last epsilon spent once.
    for d in DISTRICTS:
        recs = [r for r in ledger_records(city, f"water-{d}") if r.job_id in jobs]
        approved = [r for r in recs if r.decision == "approved"]
        assert len(approved) == 1 and approved[0].epsilon == 1.0, recs


# ------------------------------------- class 3 on exact data: SQL's answer, every time
def test_exact_data_races_and_collusion_get_sqls_answer(city):
    """Concurrent S / S-minus-one-segment pairs, and S by alice then S-minus by bob.

    Exact data protects no row (``docs/invisibility.md``): the pair differs by the
    victim's rows, as SQL says -- the answer is never an earlier release's in disguise.
    """
    base = "SELECT SUM(repair_hours), COUNT(*) FROM pipe_incidents WHERE year = {y} AND month = {m}"
    victim = "(segment_id IN ('north-0003', 'east-0003', 'south-0003'))"

    async def pair(fed: Federation, y: int, m: int) -> tuple[object, object]:
        s = base.format(y=y, m=m)
        a, b = await asyncio.gather(
            fed.aquery(s, purpose=PURPOSE, protection="plain"),
            fed.aquery(f"{s} AND NOT {victim}", purpose=PURPOSE, protection="plain"),
        )
        return a.rows, b.rows

    async def races() -> list[tuple[object, object]]:
        fed = alice(city)
        return list(await asyncio.gather(*(pair(fed, 2023, m) for m in range(1, 4))))

    for a, b in asyncio.run(races()):
        assert a[0][1] == b[0][1] + 3  # COUNT(*): the victim's three segments, one a month
    s = base.format(y=2024, m=5)
    first = alice(city).query(s, purpose=PURPOSE, protection="plain")
    second = bob(city).query(f"{s} AND NOT {victim}", purpose=PURPOSE, protection="plain")
    assert first.rows[0][1] == second.rows[0][1] + 3


# ---------------------------------------------- class 2: one node's contribution
def test_one_node_roster_is_refused(city):
    fed = alice(city)
    one = Federation(fed.config.model_copy(update={"nodes": fed.config.nodes[:1]}))
    for mode in ("paillier", "plain"):
        with pytest.raises(RemoteError) as info:
            one.query("SELECT COUNT(*) FROM pipe_incidents", purpose=PURPOSE, protection=mode)
        assert info.value.code == "PERMISSION_DENIED"
        assert "exactly its consortium" in info.value.message


def test_a_spec_other_than_the_statements_is_refused(city):
    signed = signed_query(
        city,
        "water-north",
        "SELECT COUNT(*) FROM pipe_incidents WHERE year = 2024",
        job_id="job-mismatch",
        statement_sql="SELECT COUNT(*) FROM pipe_incidents",
    )
    ch, stub = query_stub(city, 0)
    with ch, pytest.raises(grpc.RpcError) as err:
        stub.Query(signed.request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not match its job statement" in err.value.details()


@pytest.mark.parametrize(
    ("mode", "failure"),
    [
        ("paillier", ProtocolError),  # masks of different statements do not cancel
        ("shares", RemoteError),  # the aggregators refuse shares bound to another statement
        ("secagg", RemoteError),  # advertised keys are signed for another statement
        ("ckks", RemoteError),  # the aggregator refuses ciphertexts of another statement
    ],
)
def test_per_node_specs_give_garbage_or_refusal_never_one_nodes_value(
    city, monkeypatch, mode, failure
):
    """The analyst signs a different statement and spec for each node: the target's real
    query, and a zero-row WHERE for the others (which each admit it individually)."""
    target = "water-east"
    evil_sql = "SELECT SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = 1900"

    async def per_node(self, transport, job: _Job, spec_msg, signoffs, keys):
        key = load_signing_key(party_paths(city.pki_dir, "analyst", "alice").signing_key)
        answers, receipts = [], []
        for node in job.statement.statement.roster:
            spec = spec_msg if node == target else spec_to_proto(parse_sql(evil_sql))
            st = sign_job_statement(
                key,
                job_id=job.job_id,
                requester="alice",
                purpose=job.purpose,
                operation="query",
                dataset=spec.dataset,
                spec=spec,
                protection=job.protection.mode,
                protection_msg=job.protection,
                roster=job.statement.statement.roster,
                lifetime_ms=60_000,
            )
            signed = transport.sign(
                query_pb2.QueryRequestBody(
                    header=transport.header(node, job.job_id, job.purpose),
                    spec=spec,
                    protection=job.protection,
                    statement=st.to_proto(),
                    # ckks: the context beside the params, so the aggregator is what refuses
                    public_context=self._mode(job.protection.mode).attachment(node),
                )
            )
            reply = await transport.call(
                node,
                lambda ch, s=signed: query_pb2_grpc.QueryServiceStub(ch).Query(
                    s.request, timeout=60
                ),
            )
            answers.append(reply)
            receipts.append(
                node_receipt(
                    node,
                    keys[node],
                    reply.receipt,
                    job_id=job.job_id,
                    request_digests=[signed.digest] * 2,
                    decisions=["approved", "released"],
                    result_digest=answer_digest(reply),
                )
            )
        return answers, tuple(receipts)

    monkeypatch.setattr(Federation, "_ask", per_node)
    sql = "SELECT SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = 2024"
    with pytest.raises(failure):
        alice(city).query(sql, purpose=PURPOSE, protection=mode)


# ---------------------------------------------- class 4: receipts reveal no counts
def test_receipts_carry_no_per_node_counts(city):
    r = alice(city).query(
        "SELECT material, COUNT(*) FROM pipe_incidents WHERE month = 1 GROUP BY material",
        purpose=PURPOSE,
        protection="paillier",
    )
    for receipt in r.receipts:
        for rec in receipt.records:
            assert rec.reason in ("policy allows query", "released")
            assert set(rec.details) == {"statement"}
            assert rec.details["statement"] == r.statement
