"""Two cities, two CAs, real nodes: Prio3 collection and federated training across the border.

Issue 19's remaining job types. Shanghai's ``water-north`` leads a Prio3 collection task
whose Helper is Suzhou's ``water-wujiang``; a Shanghai gateway uploads (its file pins
Suzhou's bundle to check the Helper's certificate), and a Suzhou analyst, named among the
task's collectors by its qualified name, collects a window. Each aggregator checks the
other against the CAs it trusts now (home and recognised partners). Withdrawing Suzhou's
recognition at the Leader refuses the partner's next collection call and records it.

Training: two Shanghai flood offices and one Suzhou office, each with its SuperNode, one
SuperLink run by Shanghai (its certificate from Shanghai's CA, which Suzhou's SuperNode
pins from Shanghai's bundle); a Suzhou analyst, admitted by each Shanghai office's
``partners.suzhou`` section, trains one round; every node records the round under the
analyst's qualified name.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.export import ExportDir, export_store
from audit.records import DataUseRecord, decode_leaf
from datafed import pki
from datafed.collect import Collector, Uploader
from datafed.errors import RemoteError
from datafed.fl.local import FLOOD_PURPOSE, flood_node_specs, flood_policy
from datafed.fl.superlink import free_port, start_process
from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE
from datafed.local.cities import SHARED_PURPOSE, TwoCities
from datafed.local.federation import LocalFederation
from datafed.pki.trust import PartnerBundle
from nodes.config import load_node_config
from nodes.fl.local import LocalFlower
from nodes.fl.supernode import superlink_ca, supernode_command

LEADER = ("shanghai", "water-north")
HELPER = ("suzhou", "water-wujiang")
TASK = "taihu-sensors"
WINDOW = 60
#: Report times start here: three days ago, aligned, so every window is in the past.
T0 = (int(time.time()) - 3 * 86_400) // 3600 * 3600


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _add_cross_city_task(cities: TwoCities) -> Path:
    """One ``[[collect]]`` block at the Leader and the Helper; the gateway's file."""
    ports = {}
    for city, name in (LEADER, HELPER):
        node = next(n for n in cities.cities[city].nodes if n.spec.name == name)
        ports[(city, name)] = _free_port()
        node.config.write_text(
            node.config.read_text().replace(
                'listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{ports[(city, name)]}"'
            )
        )
    lines = ["", "[[collect]]", f'name = "{TASK}"', 'vdaf = "count"']
    lines += [f"time_precision_s = {WINDOW}", "min_batch_size = 5", f"start = {T0}"]
    lines += [f"end = {T0 + 86_400}", "max_skew_s = 5", "close_after_s = 30"]
    for role, (city, name) in (("leader", LEADER), ("helper", HELPER)):
        fed = cities.cities[city]
        cert = pki.party_paths(fed.pki_dir, "node", name).cert
        lines += [f"[collect.{role}]", f'name = "{city}:{name}"', f'cert = "{cert}"']
        lines += [f'address = "127.0.0.1:{ports[(city, name)]}"']
    for analyst in ("shanghai:alice", "suzhou:alice"):
        lines += ["[[collect.collectors]]", f'name = "{analyst}"']
        lines += [f'purposes = ["{SHARED_PURPOSE}"]']
    block = "\n".join(lines) + "\n"
    for city, name in (LEADER, HELPER):
        node = next(n for n in cities.cities[city].nodes if n.spec.name == name)
        node.config.write_text(node.config.read_text() + block)
    sh = cities.cities["shanghai"]
    pki.issue(sh.pki_dir, "gateway", "gw-city")
    gw = cities.root / "gateway-gw-city.toml"
    gw.write_text(
        "\n".join(
            [
                'gateway = "shanghai:gw-city"',
                "timeout_s = 10",
                f'partners = ["{cities.bundle("suzhou")}"]',
                "",
                *sh.tls_table("gateway", "gw-city"),
                "",
                "[leader]",
                f'name = "{LEADER[0]}:{LEADER[1]}"',
                f'address = "127.0.0.1:{ports[LEADER]}"',
            ]
        )
        + "\n"
    )
    return gw


@pytest.fixture(scope="module")
def cities(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoCities]:
    c = TwoCities.create(tmp_path_factory.mktemp("cities"), segments=10)
    try:
        c.gateway = _add_cross_city_task(c)  # type: ignore[attr-defined]
        c.recognise()
        c.start()
        yield c
    finally:
        c.stop()


def records(cities: TwoCities, node: tuple[str, str], out: Path) -> list[DataUseRecord]:
    """Every entry of one node's ledger (read from its SQLite file, as an auditor would)."""
    city, name = node
    db = cities.cities[city].root / "nodes" / name / "state" / "ledger.sqlite"
    exp = ExportDir(export_store(db, out / f"{city}-{name}-{time.monotonic_ns()}"))
    return [decode_leaf(leaf)[1] for chunk in exp.leaf_chunks(4096) for leaf in chunk]


def w(i: int) -> int:
    return T0 + i * WINDOW


async def _upload(cities: TwoCities, items: list[tuple[int, int]]) -> list[str]:
    async with Uploader.from_file(cities.gateway) as up:  # type: ignore[attr-defined]
        dt = await up.task(TASK)
        assert (dt.spec.leader, dt.spec.helper) == ("shanghai:water-north", "suzhou:water-wujiang")
        return list((await up.upload(dt, dt.shard_many(items))).statuses)


async def _wait_closed(fed_toml: Path, start: int, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    async with Collector.from_file(fed_toml) as col:
        while start not in {x.start for x in await col.windows(TASK, purpose=SHARED_PURPOSE)}:
            assert time.monotonic() < deadline, f"window {start} never closed"
            await asyncio.sleep(0.3)


async def _get(fed_toml: Path, start: int):  # type: ignore[no-untyped-def]
    async with Collector.from_file(fed_toml) as col:
        return await col.get(TASK, start, purpose=SHARED_PURPOSE)


def test_a_cross_city_collection_leader_in_shanghai_helper_in_suzhou(cities, tmp_path):
    items = [(int(i < 7), w(0) + i) for i in range(12)] + [(1, w(1) + 40)]  # + a tick
    assert asyncio.run(_upload(cities, items)) == ["accepted"] * len(items)
    suzhou = cities.fed_toml("suzhou")
    asyncio.run(_wait_closed(suzhou, w(0)))
    got = asyncio.run(_get(suzhou, w(0)))  # a partner collector
    assert (got.result, got.report_count, got.rejected_count) == (7, 12, 0)
    assert {r.node for r in got.receipts} == {"shanghai:water-north", "suzhou:water-wujiang"}
    assert asyncio.run(_get(cities.fed_toml("shanghai"), w(0))).result == 7  # a home one
    closes = {}
    for node in (LEADER, HELPER):
        recs = records(cities, node, tmp_path)
        assert all(r.node == f"{node[0]}:{node[1]}" for r in recs)
        assert all(":" in r.requester for r in recs), [r.requester for r in recs]
        closes[node] = [
            r
            for r in recs
            if (r.operation, r.decision, r.dataset) == ("collect_window", "approved", TASK)
        ]
        fetched = [r for r in recs if r.operation == "collect" and r.requester == "suzhou:alice"]
        assert {r.decision for r in fetched} == {"approved", "released"}
    # one close entry for the window at each aggregator, recorded alike (reconcilable)
    (a,), (b,) = closes[LEADER][:1], closes[HELPER][:1]
    assert (a.job_id, a.request_digest, a.requester) == (b.job_id, b.request_digest, b.requester)
    assert a.requester == "shanghai:water-north" and a.details["reports"] == "12"


def test_a_partner_gateway_must_be_named_among_the_uploaders(cities, tmp_path):
    su = cities.cities["suzhou"]
    pki.issue(su.pki_dir, "gateway", "gw-suzhou")
    text = cities.gateway.read_text()  # type: ignore[attr-defined]
    sh_table = "\n".join(cities.cities["shanghai"].tls_table("gateway", "gw-city"))
    su_table = "\n".join(su.tls_table("gateway", "gw-suzhou"))
    path = tmp_path / "gw-suzhou.toml"
    path.write_text(
        text.replace(sh_table, su_table)
        .replace('gateway = "shanghai:gw-city"', 'gateway = "suzhou:gw-suzhou"')
        .replace(str(cities.bundle("suzhou")), str(cities.bundle("shanghai")))
    )
    before = len(records(cities, LEADER, tmp_path))

    async def go() -> None:
        async with Uploader.from_file(path) as up:
            dt = await up.task(TASK)  # the task's parameters are public to a recognised party
            await up.upload(dt, dt.shard_many([(1, w(2) + 1)]))

    with pytest.raises(RemoteError) as refused:
        asyncio.run(go())
    assert refused.value.code == "PERMISSION_DENIED"
    assert "of partner federation 'suzhou' is not among the uploaders" in refused.value.message
    after = records(cities, LEADER, tmp_path)[before:]
    denied = [r for r in after if r.decision == "denied"]
    assert [r.requester for r in denied] == ["suzhou:gw-suzhou"]


def test_withdrawn_recognition_refuses_the_partners_next_collection_call(cities, tmp_path):
    suzhou = cities.fed_toml("suzhou")
    assert asyncio.run(_get(suzhou, w(0))).result == 7
    before = len(records(cities, LEADER, tmp_path))
    cities.withdraw("shanghai", "suzhou", nodes=(LEADER[1],))
    try:
        with pytest.raises(RemoteError) as refused:  # the very next call: no restart
            asyncio.run(_get(suzhou, w(0)))
        assert refused.value.code == "UNAUTHENTICATED"
        assert "recognition of partner federation 'suzhou' has been withdrawn" in (
            refused.value.message
        )
        after = records(cities, LEADER, tmp_path)[before:]
        denied = [r for r in after if "has been withdrawn" in r.reason]
        assert denied and all(r.decision == "denied" for r in denied)
        assert not any(r.decision == "approved" and r.operation == "collect" for r in after)
    finally:
        cities.recognise("shanghai", "suzhou")
    assert asyncio.run(_get(suzhou, w(0))).result == 7  # recognised again


# ---------------------------------------------------------------- training across cities

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOGISTIC = "tests.unit.fl.models:logistic"
FLOOD = {"shanghai": 2, "suzhou": 1}


def _flood_policy(city: str) -> str:
    partner = next(c for c in FLOOD if c != city)
    return flood_policy(
        requesters=(f"{city}:alice", f"{partner}:alice"), models=(LOGISTIC,), min_group_size=3
    ) + (
        f"[datasets.policy.partners.{partner}]\n"
        f'allowed_purposes = ["{FLOOD_PURPOSE}"]\n'
        'allowed_protections = ["paillier"]\n'
        'allowed_operations = ["training"]\n'
    )


@pytest.fixture(scope="module")
def flood(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TwoCities, LocalFlower]]:
    # every Flower process must import the model factory of this repository's tests
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved) if p)
    root = tmp_path_factory.mktemp("flood-cities").resolve()
    feds = {
        city: LocalFederation.create(
            root / city,
            flood_node_specs(n, seed=7 + i, policy=_flood_policy(city)),
            federation=city,
        )
        for i, (city, n) in enumerate(FLOOD.items())
    }
    cities = TwoCities(root, feds)
    for home, fed in feds.items():  # what `datafed-node partners add` does on each node
        other = next(c for c in feds if c != home)
        bundle = PartnerBundle.read(cities.bundle(other)).check(home)
        for node in fed.nodes:
            bundle.write(fed.root / "nodes" / node.spec.name / "state" / "partners")
    flower = LocalFlower(feds["shanghai"])  # Shanghai runs the SuperLink
    procs = []
    try:
        cities.start()
        flower.start()  # the SuperLink and Shanghai's SuperNodes
        # Suzhou's SuperNode pins the SuperLink's CA: Shanghai's, from its bundle (what
        # `datafed-node supernode --superlink-ca shanghai.bundle.json` does)
        sh_ca = root / "shanghai-ca.crt"
        sh_ca.write_bytes(PartnerBundle.read(cities.bundle("shanghai")).ca_pem)
        for node in feds["suzhou"].nodes:
            ca = superlink_ca(load_node_config(node.config), cities.bundle("shanghai"))
            assert ca.read_bytes() == sh_ca.read_bytes()  # the bundle's CA, checked
            cmd = supernode_command(
                node_config=node.config,
                node_address=node.address,
                superlink=flower.superlink_address,
                port=free_port(),
                root_certificates=ca,
            )
            log = flower.root / f"supernode-suzhou-{node.spec.name}.log"
            procs.append(start_process(cmd, log, cwd=flower.root))
            flower.supernodes[f"suzhou:{node.spec.name}"] = procs[-1]
        yield cities, flower
    finally:
        flower.stop()
        cities.stop()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.mark.slow
def test_a_cross_city_training_round_with_supernodes_in_both_cities(flood, tmp_path):
    cities, flower = flood
    fed_toml = tmp_path / "fed-train-suzhou.toml"
    fed_toml.write_text(
        cities.fed_toml("suzhou").read_text()
        + "\n[flower]\n"
        + f'superlink = "{flower.superlink_address}"\n'
        + f'root_certificates = "{cities.root / "shanghai-ca.crt"}"\n'
        + "connect_timeout_s = 900\n"
    )
    cmd = [
        str(BIN / "datafed"), "train", "-f", str(fed_toml), "--purpose", FLOOD_PURPOSE,
        "--rounds", "1", "--dataset", FLOOD_TABLE, "--features", ",".join(FLOOD_FEATURES),
        "--label", FLOOD_LABEL, "--model", LOGISTIC,
        "--run-config", "local-epochs=1 eval-every=0", "--json",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    everyone = tuple(
        sorted(fed.qname(n.spec.name) for fed in cities.cities.values() for n in fed.nodes)
    )
    assert len(everyone) == 3 and {n.split(":")[0] for n in everyone} == set(FLOOD)
    assert [tuple(r["participants"]) for r in result["rounds"]] == [everyone]
    job = result["job_id"]
    for city, fed in cities.cities.items():
        for node in fed.nodes:
            db = fed.root / "nodes" / node.spec.name / "state" / "ledger.sqlite"
            exp = ExportDir(export_store(db, tmp_path / f"{city}-{node.spec.name}"))
            recs = [decode_leaf(x)[1] for chunk in exp.leaf_chunks(4096) for x in chunk]
            mine = [r for r in recs if r.job_id == job]
            assert mine and all(r.requester == "suzhou:alice" for r in mine)
            assert all(r.node == fed.qname(node.spec.name) for r in recs)
            assert [r.details["round"] for r in mine if r.operation == "fl_round"] == ["1"]
            assert all(r.decision in ("approved", "released") for r in mine), [
                (r.operation, r.decision, r.reason) for r in mine
            ]
