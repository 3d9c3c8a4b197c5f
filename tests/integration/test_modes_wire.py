"""``shares``, ``secagg`` and ``ckks`` over the wire: three node processes, mTLS, loopback.

Each mode gives the totals of ``plain`` (``ckks`` within its error bound) on every declared
group, and an empty remainder (no material is NULL or undeclared here); every step is in the
nodes' ledgers; the analyst's bytes do not open; a bad step, an aggregator that returns
garbage and a node that dies mid-query each end in a clear error -- on this exact dataset
``secagg`` releases nothing without every node of the consortium (issue 17).
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit import Ledger
from datafed.client import Federation
from datafed.client._session import ProtocolSession
from datafed.errors import NodeUnavailable, ProtocolError, RemoteError
from datafed.local.federation import PURPOSE, LocalFederation, water_district_specs
from datafed.modes import NodeEnv
from datafed.modes._envelope import open_sealed, peers
from datafed.modes.errors import InvalidEnvelope
from datafed.pki.ca import load_signing_key, party_paths
from datafed.proto.v1 import protocol_pb2
from datafed.query.components import Component, components
from datafed.query.sql import parse_sql

MODES = ("shares", "secagg", "ckks")
GROUPED = (
    "SELECT material, SUM(bursts), COUNT(*) FROM pipe_incidents "
    "WHERE month IN (1, 2) GROUP BY material"
)
TOTAL = (
    "SELECT SUM(repair_hours), COUNT(*), AVG(repair_hours) FROM pipe_incidents WHERE year = 2024"
)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    specs = water_district_specs()
    for s in specs:
        s.policy_toml, n = re.subn(
            r"allowed_protections = \[[^\]]*\]",
            'allowed_protections = ["paillier", "plain", "shares", "secagg", "ckks"]',
            s.policy_toml,
        )
        assert n == 1
    f = LocalFederation.create(
        tmp_path_factory.mktemp("fed-modes"), specs, analysts=("alice", "bob")
    )
    f.start()
    f.write_fed_toml("bob")
    try:
        yield f
    finally:
        f.stop()


def sizes(fed: LocalFederation) -> dict[str, int]:
    return {i.node: i.ledger.size for i in Federation.from_file(fed.fed_toml).node_info()}


def declared(result) -> tuple:
    """The rows of the declared groups; the remainder must be empty here."""
    rest = [row for row, r in zip(result.rows, result.remainder, strict=True) if r]
    assert all(row[-1] == 0 for row in rest), rest  # COUNT(*) of the remainder
    return tuple(row for row, r in zip(result.rows, result.remainder, strict=True) if not r)


def names(fed: LocalFederation) -> list[str]:
    return [n.spec.name for n in fed.nodes]


@pytest.mark.parametrize("mode", MODES)
def test_mode_matches_plain_and_records_its_steps(fed, mode):
    client = Federation.from_file(fed.fed_toml)
    before = sizes(fed)
    grouped = client.query(GROUPED, purpose=PURPOSE, protection=mode)
    total = client.query(TOTAL, purpose=PURPOSE, protection=mode)
    after = sizes(fed)
    plain_g = client.query(GROUPED, purpose=PURPOSE, protection="plain")
    plain_t = client.query(TOTAL, purpose=PURPOSE, protection="plain")
    assert grouped.nodes == total.nodes == tuple(names(fed))
    if mode == "ckks":
        bound = total.error_bound
        assert bound is not None and 0 < bound < 0.05
        for got, want in zip(declared(grouped), plain_g.rows, strict=True):
            assert got[0] == want[0] and got[2] == want[2]  # counts exact
            assert abs(got[1] - want[1]) <= grouped.error_bound
        (got,), (want,) = total.rows, plain_t.rows
        assert abs(got[0] - want[0]) <= bound and got[1] == want[1]
        assert abs(got[2] - want[2]) <= bound / want[1] + 1e-12
    else:
        assert declared(grouped) == plain_g.rows and total.rows == plain_t.rows
        assert grouped.error_bound is None
    steps = {"shares": [1, 1, 0], "secagg": [4, 4, 4], "ckks": [1, 0, 0]}[mode]
    for node, extra in zip(names(fed), steps, strict=True):
        assert after[node] == before[node] + 2 * (2 + extra)  # two queries
        # The analyst verified a receipt for every step each node ran.
        assert sum(r.node == node for r in grouped.step_receipts) == extra
    for receipt in grouped.step_receipts:
        (record,) = receipt.records
        assert record.decision == "released" and record.job_id == grouped.job_id
        assert record.details["step"] in {
            "aggregate",
            "share-keys",
            "masked-input",
            "consistency",
            "unmask",
        }


def _capture(monkeypatch) -> list[tuple[str, int, bytes, bytes]]:
    seen: list[tuple[str, int, bytes, bytes]] = []
    real = ProtocolSession.step

    async def step(self, node, round_, payload):
        reply = await real(self, node, round_, payload)
        seen.append((node, round_, payload, reply))
        return reply

    monkeypatch.setattr(ProtocolSession, "step", step)
    return seen


def _env(fed: LocalFederation, node: str, job: str, binding: str) -> NodeEnv:
    key = load_signing_key(party_paths(fed.pki_dir, "node", node).signing_key)
    return NodeEnv(node, job, key, (fed.pki_dir / "ca.crt").read_bytes(), binding=binding)


def test_what_the_analyst_and_the_aggregators_receive_under_shares(fed, monkeypatch):
    seen = _capture(monkeypatch)
    client = Federation.from_file(fed.fed_toml)
    r = client.query(GROUPED, purpose=PURPOSE, protection="shares")
    a, b, _ = names(fed)
    # where count(*) sits in the group-major vector: 4 groups and the remainder x components
    comps = components(parse_sql(GROUPED))
    positions = [g * len(comps) + comps.index(Component("count", "*")) for g in range(5)]
    assert sorted(s[0] for s in seen) == sorted([a, b])  # the two aggregators, once each
    certs = [party_paths(fed.pki_dir, "node", n).cert.read_bytes() for n in names(fed)]
    senders = {i.name: i for i in peers(_env(fed, a, r.job_id, r.statement), certs, "participant")}
    for agg, _round, request, reply in seen:
        bundle = protocol_pb2.SealedBundle.FromString(request)
        other = b if agg == a else a
        for item in bundle.items:  # what the analyst relays: sealed to the aggregator only
            with pytest.raises(InvalidEnvelope):
                open_sealed(_env(fed, other, r.job_id, r.statement), "shares", senders, item)
            with pytest.raises(InvalidEnvelope):  # sealed under this job's statement only
                open_sealed(_env(fed, agg, r.job_id, "00" * 32), "shares", senders, item)
            _, body = open_sealed(_env(fed, agg, r.job_id, r.statement), "shares", senders, item)
            share = protocol_pb2.ShareBody.FromString(body)
            assert share.WhichOneof("share") == ("seed" if agg == a else "vector")
        # An aggregator's sum alone is not the total (it is uniformly random).
        vec = protocol_pb2.ShareSum.FromString(reply).vector
        counts = [int.from_bytes(vec[8 * i : 8 * i + 8], "little") for i in positions]
        assert sorted(counts) != sorted(row[2] for row in r.rows)
    total = [
        sum(
            int.from_bytes(
                protocol_pb2.ShareSum.FromString(s[3]).vector[8 * i : 8 * i + 8], "little"
            )
            for s in seen
        )
        % (1 << 64)
        for i in positions
    ]
    assert sorted(total) == sorted(row[2] for row in r.rows)  # domain order vs sorted rows


def test_step_for_unknown_job_or_other_requester_is_refused_and_recorded(fed):
    cfg_alice = Federation.from_file(fed.fed_toml)
    cfg_bob = Federation.from_file(fed.root / "fed-bob.toml")
    node = names(fed)[0]
    before = sizes(fed)

    async def one(client: Federation, job: str) -> None:
        async with client.transport() as transport:
            keys = client._log_keys(await client._infos(transport))
            session = ProtocolSession(
                transport, job_id=job, mode="shares", purpose=PURPOSE, binding="", keys=keys
            )
            await session.step(node, 1, b"")

    for client in (cfg_alice, cfg_bob):
        with pytest.raises(RemoteError, match="no open protocol job") as info:
            asyncio.run(one(client, f"job-{secrets.token_hex(4)}"))
        assert info.value.code == "INVALID_ARGUMENT" and info.value.node == node
    after = sizes(fed)
    assert after[node] == before[node] + 2  # one 'denied' entry each


def test_bad_step_payload_is_refused_recorded_and_yields_no_result(fed, monkeypatch):
    real = ProtocolSession.step

    async def garbage(self, node, round_, payload):
        return await real(self, node, round_, b"\x0a\x05garbage")

    monkeypatch.setattr(ProtocolSession, "step", garbage)
    before = sizes(fed)
    for mode in ("shares", "ckks", "secagg"):
        with pytest.raises(RemoteError) as info:
            Federation.from_file(fed.fed_toml).query(GROUPED, purpose=PURPOSE, protection=mode)
        assert info.value.code == "INVALID_ARGUMENT"
    after = sizes(fed)
    a, b, c = names(fed)
    # approved + released per query at each node, plus one 'denied' step per refusal
    assert after[a] == before[a] + 6 + 3 and after[b] == before[b] + 6 + 2
    assert after[c] == before[c] + 6 + 1


@pytest.mark.parametrize("mode", MODES)
def test_aggregator_returning_garbage_yields_no_result(fed, monkeypatch, mode):
    real = ProtocolSession.step

    async def corrupt(self, node, round_, payload):
        reply = await real(self, node, round_, payload)
        if mode == "shares":
            msg = protocol_pb2.ShareSum.FromString(reply)
            return protocol_pb2.ShareSum(
                vector=secrets.token_bytes(len(msg.vector))
            ).SerializeToString()
        if mode == "secagg" and round_ == 2:
            msg = protocol_pb2.SecAggMasked.FromString(reply)
            return protocol_pb2.SecAggMasked(
                client_id=msg.client_id, masked=secrets.token_bytes(len(msg.masked))
            ).SerializeToString()
        return reply if mode == "secagg" else reply[: len(reply) // 2]

    monkeypatch.setattr(ProtocolSession, "step", corrupt)
    with pytest.raises(ProtocolError, match=r"checksum|malformed"):
        Federation.from_file(fed.fed_toml).query(GROUPED, purpose=PURPOSE, protection=mode)


def test_node_dying_mid_query(fed, monkeypatch):
    """secagg: a node killed after sharing its keys drops out, and on exact data the
    survivors release nothing (the consortium's total or none, issue 17); shares: an
    aggregator killed before aggregating is a clear error."""
    real = ProtocolSession.step
    _, b, c = names(fed)
    victim = {"secagg": (fed.nodes[2], 2), "shares": (fed.nodes[1], 1)}
    killed = []

    async def step(self, node, round_, payload):
        target, at = victim[self.mode]
        if node == target.spec.name and round_ == at and target.process is not None:
            fed.stop_node(target)
            killed.append(target)
        return await real(self, node, round_, payload)

    monkeypatch.setattr(ProtocolSession, "step", step)
    client = Federation.from_file(fed.fed_toml)
    try:
        with pytest.raises(RemoteError, match=r"did not survive|fewer than 3 survivors"):
            client.query(GROUPED, purpose=PURPOSE, protection="secagg")
        fed.start_node(fed.nodes[2])
        fed.write_fed_toml()
        client = Federation.from_file(fed.fed_toml)
        with pytest.raises(NodeUnavailable) as info:
            client.query(GROUPED, purpose=PURPOSE, protection="shares")
        assert info.value.node == b
    finally:
        for node in fed.nodes:
            if node.process is None:
                fed.start_node(node)
        fed.write_fed_toml()
        fed.write_fed_toml("bob")
    assert [n.spec.name for n in killed] == [c, b]


def test_steps_are_in_the_ledgers(fed):
    """Every step is a 'released' entry naming its step; refused steps are 'denied'."""
    records = {}
    for node in fed.nodes:
        fed.stop_node(node)
        key = load_signing_key(party_paths(fed.pki_dir, "node", node.spec.name).signing_key)
        path = Path(node.config.parent / "state" / "ledger.sqlite")
        with Ledger.open(path, f"datafed/ledger/{node.spec.name}", key) as ledger:
            records[node.spec.name] = [ledger.get_record(i) for i in range(ledger.head().size)]
    steps = [r for recs in records.values() for r in recs if "step" in r.details]
    released = {r.details["step"] for r in steps if r.decision == "released"}
    assert released == {"aggregate", "share-keys", "masked-input", "consistency", "unmask"}
    for r in steps:
        assert r.operation == "query" and r.protection in MODES and len(r.request_digest) == 64
        if r.decision == "released":
            assert len(r.result_digest) == 64 and r.details["step_round"] in {"1", "2", "3", "4"}
        else:
            assert r.decision == "denied" and r.reason.startswith("INVALID_ARGUMENT")
    by_job = {}
    for recs in records.values():
        for r in recs:
            by_job.setdefault(r.job_id, []).append(r)
    for job in {r.job_id for r in steps if r.decision == "released"}:
        assert any(r.decision == "approved" for r in by_job[job])  # steps follow an approval
