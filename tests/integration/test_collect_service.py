"""Collection of live data through two real aggregator nodes (mTLS, signed, ledgered).

One federation for the module: ``water-north`` leads and ``water-east`` helps five
tasks, one per concern, so each test owns its task's windows and watermark. Attack
tests (``test_attack_*``) play a faulty device, a hostile gateway, a hostile Leader
and a curious analyst; each must end in a clear error or a counted rejection, with
nothing half-aggregated and every refusal recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datafed.cli.app import app
from datafed.collect import Collector, Uploader
from datafed.errors import RemoteError
from datafed.pki.ca import load_signing_key, party_paths
from datafed.pki.peers import verify_peer
from datafed.proto.v1 import collect_pb2
from datafed.protocols import Leader, Report, shard_report
from nodes.collect.runtime import verify_key_of

from .collect_harness import (
    HELPER,
    LEADER,
    PURPOSE,
    T0,
    collect_federation,
    faulty,
    gateway_file,
    make_task,
    party,
    signed,
    upload,
    wait_closed,
)
from .collect_harness import window as w
from .raw import ledger_records

SUM = 'vdaf = "sum"\nmax_measurement = 255'
DP = '\n[collect.dp]\nmechanism = "laplace"\nepsilon = 1.0\nbudget_epsilon = 2.0\n'


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    tasks = [
        make_task("meters"),
        make_task("badinput", end=False),
        make_task("usage", vdaf=SUM),
        make_task("probe"),
        make_task("private", DP),
        make_task("alarms"),
    ]
    f = collect_federation(tmp_path_factory.mktemp("collect"), tasks)
    try:
        yield f
    finally:
        codes = f.stop()
        assert all(c == 0 for c in codes), f"nodes exited with {codes}"


def close_entries(fed, node, name):
    """The window entries (``approved``) of task ``name`` in ``node``'s ledger."""
    records = ledger_records(fed, node)
    return [
        r
        for r in records
        if (r.operation, r.decision, r.dataset) == ("collect_window", "approved", name)
    ]


def test_counts_per_window_end_to_end_with_receipts_and_cli(fed) -> None:
    # window 0: 30 reports (20 ones), window 1: 10 (3 ones); a tick 30 s past window 1
    items = [(int(i < 20), w(0) + i) for i in range(30)]
    items += [(int(i < 3), w(1) + i) for i in range(10)]
    items.append((1, w(2) + 30))
    _, statuses = asyncio.run(upload(fed, "meters", items))
    assert statuses == ["accepted"] * len(items)
    asyncio.run(wait_closed(fed, "meters", [w(0), w(1)]))

    async def fetch():
        async with Collector.from_file(fed.fed_toml) as col:
            return [await col.get("meters", s, purpose=PURPOSE) for s in (w(0), w(1))]

    first, second = asyncio.run(fetch())
    assert (first.result, first.report_count, first.rejected_count) == (20, 30, 0)
    assert (second.result, second.report_count) == (3, 10)
    assert {r.node for r in first.receipts} == {LEADER, HELPER}
    # one close entry per window at each aggregator, recorded alike (reconcilable)
    lead, help_ = close_entries(fed, LEADER, "meters"), close_entries(fed, HELPER, "meters")
    assert [r.details["window"] for r in lead] == [str(w(0)), str(w(1))]
    for a, b in zip(lead, help_, strict=True):
        assert (a.job_id, a.request_digest, a.requester) == (
            b.job_id,
            b.request_digest,
            b.requester,
        )
        assert a.details["reports"] == b.details["reports"]
        assert a.result_digest != b.result_digest  # each aggregator's own share
    runner = CliRunner()
    got = runner.invoke(
        app,
        [
            "collect",
            "get",
            "-f",
            str(fed.fed_toml),
            "-t",
            "meters",
            "-w",
            str(w(0)),
            "--purpose",
            PURPOSE,
            "--json",
        ],
    )
    assert got.exit_code == 0, got.output
    assert json.loads(got.output)["result"] == 20
    listed = runner.invoke(
        app, ["collect", "windows", "-f", str(fed.fed_toml), "-t", "meters", "--purpose", PURPOSE]
    )
    assert str(w(0)) in listed.output and "releasable" in listed.output
    watched = runner.invoke(
        app,
        [
            "collect",
            "watch",
            "-f",
            str(fed.fed_toml),
            "-t",
            "meters",
            "--purpose",
            PURPOSE,
            "--count",
            "2",
        ],
    )
    assert watched.exit_code == 0 and "30" in watched.output


def test_attack_malformed_reports_and_wrong_lengths_get_clear_statuses(fed) -> None:
    async def go():
        async with Uploader.from_file(gateway_file(fed)) as up:
            dt = await up.task("badinput")
            good = dt.shard_many([(1, w(0) + i) for i in range(6)])
            msgs = [r.to_proto() for r in good]
            msgs[0].report_id = b"short"
            msgs[1].leader_share = msgs[1].leader_share[:-1]
            msgs[2].public_share = b"\x00"  # Count has an empty public share
            msgs[3].helper_ciphertext = msgs[3].helper_ciphertext + b"\x00"
            msgs[4].leader_share = b"\xff" * len(msgs[4].leader_share)  # above the modulus
            reply = await signed(
                up.transport,
                LEADER,
                "Upload",
                collect_pb2.UploadRequest(task="badinput", reports=msgs),
            )
            return [collect_pb2.ReportStatus.Name(s) for s in reply.statuses]

    assert asyncio.run(go()) == ["INVALID_MESSAGE"] * 5 + ["ACCEPTED"]
    asyncio.run(upload(fed, "badinput", [(0, w(1) + 40)]))  # tick: window 0 closes
    asyncio.run(wait_closed(fed, "badinput", [w(0)]))
    entries = close_entries(fed, LEADER, "badinput")  # the refusals are ledgered
    assert sum(int(e.details.get("upload_rejected.invalid_message", 0)) for e in entries) == 5
    assert entries[0].details["reports"] == "1"  # the one good report, nothing else


def test_attack_replayed_report_ids_are_refused_and_counted_once(fed) -> None:
    async def go():
        async with Uploader.from_file(gateway_file(fed)) as up:
            dt = await up.task("badinput")
            reports = dt.shard_many([(1, w(3) + i) for i in range(6)])
            first = await up.upload(dt, reports)
            retry = await up.upload(dt, reports)  # a gateway retrying after a lost answer
            other = dt.shard(0, w(3) + 50)
            replay = dataclasses.replace(other, report_id=reports[0].report_id)
            replayed = await up.upload(dt, [replay])
            await up.upload(dt, dt.shard_many([(0, w(4) + 40)]))  # tick: closes window 3
            return first, retry, replayed

    first, retry, replayed = asyncio.run(go())
    assert set(first.statuses) == {"accepted"} and set(retry.statuses) == {"duplicate"}
    assert replayed.statuses == ("report_replayed",)
    asyncio.run(wait_closed(fed, "badinput", [w(3)]))

    async def fetch():
        async with Collector.from_file(fed.fed_toml) as col:
            return await col.get("badinput", w(3), purpose=PURPOSE)

    window = asyncio.run(fetch())
    assert (window.result, window.report_count) == (
        6,
        6,
    )  # the retry counted once, the replay never
    entries = close_entries(fed, LEADER, "badinput")  # refusals go to the next entry
    assert sum(int(e.details.get("upload_rejected.report_replayed", 0)) for e in entries) == 1


def test_attack_reports_for_closed_windows_and_outside_the_task_range(fed) -> None:
    async def go():
        async with Uploader.from_file(gateway_file(fed)) as up:
            dt = await up.task("badinput")
            await up.upload(dt, dt.shard_many([(1, w(6) + i) for i in range(5)] + [(0, w(7) + 40)]))
            await wait_closed(fed, "badinput", [w(6)])
            late = await up.upload(dt, dt.shard_many([(1, w(6) + 30)]))
            early = await up.upload(dt, dt.shard_many([(1, T0 - 1)]))
            future = await up.upload(dt, dt.shard_many([(1, int(time.time()) + 3600)]))
            meters = await up.task("meters")  # a task that ended
            expired = await up.upload(meters, meters.shard_many([(1, T0 + 86_400)]))
            return late, early, future, expired

    late, early, future, expired = asyncio.run(go())
    assert late.statuses == ("batch_collected",)
    assert early.statuses == ("task_not_started",)
    assert future.statuses == ("report_too_early",)
    assert expired.statuses == ("task_expired",)
    assert int(close_entries(fed, LEADER, "badinput")[-1].details.get("rejected", "0")) == 0


def test_attack_out_of_range_devices_are_rejected_counted_ledgered_never_aggregated(fed) -> None:
    async def go():
        async with Uploader.from_file(gateway_file(fed)) as up:
            dt = await up.task("usage")
            honest = dt.shard_many([(10 + i, w(0) + i) for i in range(8)])
            broken = faulty(dt, 255).shard_many([(100_000, w(0) + 20 + i) for i in range(3)])
            result = await up.upload(dt, honest + broken + dt.shard_many([(0, w(1) + 40)]))
            assert result.accepted == 12  # a bad proof is not visible at upload
            await wait_closed(fed, "usage", [w(0)])
        async with Collector.from_file(fed.fed_toml) as col:
            return await col.get("usage", w(0), purpose=PURPOSE)

    window = asyncio.run(go())
    assert window.result == sum(10 + i for i in range(8))
    assert (window.report_count, window.rejected) == (8, {"vdaf_verify_error": 3})
    for node in (LEADER, HELPER):
        entry = close_entries(fed, node, "usage")[0]
        assert (entry.details["reports"], entry.details["rejected.vdaf_verify_error"]) == ("8", "3")


def test_attack_leader_rebinding_a_helper_share_is_rejected_by_the_helper(fed) -> None:
    """The test plays the Leader (its certificate and key): it moves one genuine report's
    sealed Helper share to a fresh report ID, and to another time (another window). For
    Count the report ID only seeds query randomness, so only the sealing's binding stops
    the Helper from verifying and counting the same share twice."""
    key = _verify_key(fed)

    async def go():
        async with Uploader.from_file(gateway_file(fed)) as up:
            dt = await up.task("probe")
        genuine = shard_report(dt.task, 1, w(0) + 1)
        sealed = dt.seal([genuine])[0].helper
        rogue = party(fed, "node", LEADER, HELPER)

        def init(report_id: bytes, at: int) -> collect_pb2.VerifyInitMessage:
            # The Leader's own first message for the moved report, honestly computed.
            leader = Leader(dt.task, key(dt.spec.task_id))
            moved = Report(report_id, at, genuine.public_share, genuine.leader_share, b"")
            assert leader.upload(moved, int(time.time())) is None
            req = leader.start_job(int(time.time()))
            return collect_pb2.VerifyInitMessage(
                report_id=report_id,
                time=at,
                public_share=genuine.public_share,
                helper_enc=sealed.enc,
                helper_ciphertext=sealed.ciphertext,
                payload=req.verify_inits[0].payload,
            )

        def job(*inits: collect_pb2.VerifyInitMessage) -> collect_pb2.AggregateInitRequest:
            msg = collect_pb2.AggregateInitRequest(
                task="probe", task_id=dt.spec.task_id, job_id=os.urandom(16)
            )
            msg.inits.extend(inits)
            return msg

        rid = genuine.report_id
        dup = job(init(rid, w(0) + 1), init(rid, w(0) + 2))
        with pytest.raises(RemoteError, match="repeats a report ID"):
            await signed(rogue, HELPER, "AggregateInit", dup)
        moved = await signed(
            rogue, HELPER, "AggregateInit", job(init(os.urandom(16), w(0) + 1), init(rid, w(1) + 1))
        )
        honest = await signed(rogue, HELPER, "AggregateInit", job(init(rid, w(0) + 1)))
        again = await signed(rogue, HELPER, "AggregateInit", job(init(rid, w(0) + 1)))
        unopened = init(rid, w(0) + 1)  # the verified ID again, its share not opening
        unopened.helper_ciphertext = bytes(len(unopened.helper_ciphertext))
        fresh = init(os.urandom(16), w(0) + 1)  # beside a share moved to a fresh ID
        again2 = await signed(rogue, HELPER, "AggregateInit", job(unopened, fresh))
        lie = collect_pb2.CloseWindowRequest(
            task="probe", task_id=dt.spec.task_id, window_start=w(0), report_count=7
        )
        lie.checksum = bytes(32)  # the Leader claims reports the Helper never verified
        with pytest.raises(RemoteError, match="disagree on the reports"):
            await signed(rogue, HELPER, "CloseWindow", lie)
        await rogue.aclose()
        return moved, honest, again, again2

    moved, honest, again, again2 = asyncio.run(go())
    assert [r.error for r in moved.resps] == ["hpke_decrypt_error", "hpke_decrypt_error"]
    assert honest.resps[0].error == "" and honest.resps[0].payload  # the true binding verifies
    assert again.resps[0].error == "report_replayed"
    # A replayed ID is report_replayed whether or not its share opens (replays first).
    assert [r.error for r in again2.resps] == ["report_replayed", "hpke_decrypt_error"]
    records = ledger_records(fed, HELPER)
    denied = [r.reason for r in records if r.decision == "denied"]
    assert any("repeats a report ID" in r for r in denied)
    assert any("disagree" in r for r in denied)
    closes = [r for r in records if r.operation == "collect_window" and r.decision == "approved"]
    assert not [r for r in closes if r.dataset == "probe"]  # the lie closed nothing


def _verify_key(fed):
    """The verification key as the Leader derives it (the test plays the Leader)."""
    own = load_signing_key(party_paths(fed.pki_dir, "node", LEADER).signing_key)
    ca = (fed.pki_dir / "ca.crt").read_bytes()
    peer = verify_peer(party_paths(fed.pki_dir, "node", HELPER).cert.read_bytes(), ca)
    return lambda task_id: verify_key_of(own, peer, task_id)


def test_attack_collector_beyond_budget_or_not_allowed_is_refused_and_small_dp_windows_noised(
    fed,
) -> None:
    items = [(1, w(0) + i) for i in range(8)] + [(1, w(1) + i) for i in range(3)] + [(0, w(2) + 40)]
    asyncio.run(upload(fed, "private", items))
    asyncio.run(wait_closed(fed, "private", [w(0), w(1)]))

    async def get(fed_toml, window):
        async with Collector.from_file(fed_toml) as col:
            return await col.get("private", window, purpose=PURPOSE)

    with pytest.raises(RemoteError, match="not closed") as open_:
        asyncio.run(get(fed.fed_toml, w(5)))
    assert open_.value.code == "INVALID_ARGUMENT"
    with pytest.raises(RemoteError, match="may not collect") as bob:
        asyncio.run(get(fed.write_fed_toml("bob"), w(0)))
    assert bob.value.code == "PERMISSION_DENIED"
    # Under noise a window below min_batch_size (3 < 5 reports) is released all the same:
    # a refusal on its exact count would tell whether one more device reported. Its
    # counts are withheld from every answer (and from the close entries' public details).
    results = [asyncio.run(get(fed.fed_toml, w)) for w in (w(1), w(0))]  # budget 2 x 1
    for r, true in zip(results, (3, 8), strict=True):
        assert (r.report_count, r.rejected_count, r.rejected) == (0, 0, {})
        assert r.epsilon == {LEADER: 1.0, HELPER: 1.0}
        assert abs(r.result - true) < 12 * r.noise_stddev
        closes = [rec for x in r.receipts[2:] for rec in x.records]
        assert closes and all(
            not rec.result_digest and "reports" not in rec.details for rec in closes
        )
    with pytest.raises(RemoteError, match="budget") as spent:
        asyncio.run(get(fed.fed_toml, w(0)))
    assert spent.value.code == "RESOURCE_EXHAUSTED"
    for node in (LEADER, HELPER):
        denied = [
            r
            for r in ledger_records(fed, node)
            if r.dataset == "private" and r.decision == "denied"
        ]
        reasons = " | ".join(r.reason for r in denied)
        assert "may not collect" in reasons and "budget" in reasons
        spent_eps = sum(r.epsilon for r in ledger_records(fed, node) if r.dataset == "private")
        assert spent_eps == 2.0


def test_attack_wrong_roles_are_refused_and_recorded(fed) -> None:
    async def go():
        analyst = party(fed, "analyst", "alice", LEADER)
        with pytest.raises(RemoteError, match="need 'gateway'"):
            await signed(analyst, LEADER, "Upload", collect_pb2.UploadRequest(task="meters"))
        with pytest.raises(RemoteError, match="only water-north"):
            await signed(
                party(fed, "analyst", "alice", HELPER),
                HELPER,
                "AggregateInit",
                collect_pb2.AggregateInitRequest(task="meters"),
            )
        gw = party(fed, "gateway", "gw-city", LEADER)
        with pytest.raises(RemoteError, match="role 'gateway'"):
            await signed(
                gw,
                LEADER,
                "GetWindow",
                collect_pb2.GetWindowRequest(task="meters", window_start=w(0)),
            )
        with pytest.raises(RemoteError, match="not the leader"):
            await signed(
                party(fed, "gateway", "gw-city", HELPER),
                HELPER,
                "Upload",
                collect_pb2.UploadRequest(task="meters"),
            )
        with pytest.raises(RemoteError, match="unknown collection task"):
            await signed(gw, LEADER, "Upload", collect_pb2.UploadRequest(task="nope"))

    asyncio.run(go())
    denied = [
        r
        for r in ledger_records(fed, LEADER)
        if r.decision == "denied" and r.operation.startswith("collect")
    ]
    assert any("need 'gateway'" in r.reason for r in denied)
    assert any(r.requester_role == "gateway" and "role 'gateway'" in r.reason for r in denied)


ALARM_RULE = """log = "alerts.jsonl"
[[rules]]
name = "too-many-alarms"
task = "alarms"
total_of = ["{column}"]
above = 15
windows = 2
confidence = 0.95
deliver = ["watch", "webhook:http://127.0.0.1:{port}/alerts"]
"""


def test_alerts_on_live_windows_fire_once_to_watch_a_webhook_and_the_log(fed, tmp_path) -> None:
    """`datafed collect watch --alerts`: two windows above 15 fire one alert, everywhere."""
    got: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    rules = tmp_path / "alerts.toml"
    # A rule on a column the task does not have: refused before anything is watched.
    rules.write_text(ALARM_RULE.format(column="pressure", port=hook.server_port))
    exe = Path(sys.executable).parent / "datafed"
    watch = [str(exe), "collect", "watch", "-f", str(fed.fed_toml), "-t", "alarms"]
    watch += ["--purpose", PURPOSE, "--since", str(w(0)), "--count", "3", "--alerts", str(rules)]
    bad = subprocess.run(watch, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0 and "has no column 'pressure'" in bad.stderr, bad.stderr
    assert not (tmp_path / "alerts.jsonl").exists() and got == []
    # 18, then 19 alarms (above 15 twice: one alert), then 2 (the run ends)
    items = [(int(i < k), w(j) + i) for j, k in enumerate((18, 19, 2)) for i in range(20)]
    _, statuses = asyncio.run(upload(fed, "alarms", [*items, (0, w(3) + 30)]))
    assert set(statuses) == {"accepted"}
    asyncio.run(wait_closed(fed, "alarms", [w(0), w(1), w(2)]))
    rules.write_text(ALARM_RULE.format(column="value", port=hook.server_port))
    ok = subprocess.run(watch, capture_output=True, text=True, timeout=120, check=False)
    hook.shutdown()
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("ALERT too-many-alarms") == 1, ok.stdout
    (line,) = (tmp_path / "alerts.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["windows"] == [w(0), w(1)] and record["probability"] == 1.0
    assert record["delivered"] == {
        "watch": "printed",
        f"webhook:http://127.0.0.1:{hook.server_port}/alerts": "http 204",
    }
    assert [g["windows"] for g in got] == [[w(0), w(1)]]


def test_attack_a_replayed_signed_request_is_refused_recorded_and_changes_nothing(fed) -> None:
    """The gate's nonce check (run off the event loop) still refuses a request sent twice."""
    gw = party(fed, "gateway", "gw-city", LEADER)
    msg = collect_pb2.UploadRequest(task="probe")
    msg.header.CopyFrom(gw.header(LEADER, f"test-{time.monotonic_ns()}", PURPOSE))
    request = gw.sign(msg).request

    async def send() -> collect_pb2.UploadResponse:
        async def go(ch):
            from datafed.proto.v1 import collect_pb2_grpc

            return await collect_pb2_grpc.CollectServiceStub(ch).Upload(request)

        return await gw.call(LEADER, go)

    async def go() -> collect_pb2.UploadResponse:
        first = await send()
        with pytest.raises(RemoteError, match="replayed"):
            await send()
        return first

    first = asyncio.run(go())
    assert first.accepted == 0 and list(first.statuses) == []
    denied = [
        r
        for r in ledger_records(fed, LEADER)
        if r.operation == "collect_upload" and r.decision == "denied" and "replayed" in r.reason
    ]
    assert len(denied) == 1 and denied[0].requester_role == "gateway"
