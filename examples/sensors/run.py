"""Live sensor data, invisible: district water use and pressure, collected in 5-minute windows.

10,000 household water meters and 2,000 pressure sensors over three districts report
every minute (simulated, seeded, in the recent past). Each district's gateway uploads
its devices' reports to the city water utility's node (the Leader); the city statistics
bureau's node is the Helper. Neither node ever sees one household's reading: each holds
one secret share of it, checks the zero-knowledge proof that it is in range, and adds it
to the window. A group of meters with a firmware fault sends 500 litres a minute: the
aggregators reject every one of those reports, count them and record them in their
ledgers; none is added. The analyst watches each window's district totals as it closes
and checks both aggregators' receipts; pressure bands come with noise (each aggregator
adds its own discrete Laplace draw, charged to the analyst's budget). From the third
minute a water main bursts in the south: pressure drops, and the analyst's alert rule
(``alerts.toml``: the share of readings below 300 kPa above 20 % in a district for two
windows, judged with the noise taken into account) fires once, to the watch output, to a
webhook on loopback and into the analyst's own alert log.

    python examples/sensors/run.py [--scale 1.0] [--windows 3] [--root demo-run/sensors]

Everything is real: two ``datafed-node serve`` processes (mTLS, SQLite, ledgers), three
gateways, the collector; ``--scale 0.1`` is the short version ``make demo`` plays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simulate import BANDS, DISTRICTS, Device, devices, faulty_task, readings

from audit.records import decode_leaf
from audit.remote import LedgerClient, mtls_channel
from datafed import pki
from datafed.collect import Alerts, Collector, Uploader, Window, deliver, load_alerts
from datafed.collect.local import LocalTask, add_collection
from datafed.errors import RemoteError
from datafed.local.federation import LocalFederation, NodeSpec

BIN = Path(sys.executable).parent
LEADER, HELPER = "city-water", "city-stats"
PURPOSE = "network-operations"
WINDOW = 300
NOW = int(time.time())


def tasks(t0: int) -> list[LocalTask]:
    """The two tasks, as both aggregators declare them."""
    common = (
        f"time_precision_s = {WINDOW}\nmin_batch_size = 100\nstart = {t0}\nend = {t0 + 86_400}\n"
        "max_skew_s = 60\nclose_after_s = 120\njob_size = 1000\n"
    )
    water = 'vdaf = "sumvec"\nlength = 3\nmax_measurement = 63\n' + common
    pressure = (
        f'vdaf = "histogram"\nlength = {3 * len(BANDS)}\n'
        + common
        + '[collect.dp]\nmechanism = "laplace"\nepsilon = 0.5\nbudget_epsilon = 50.0\n'
        + "contributions = 5\n"
    )
    return [
        LocalTask("water-use", water, LEADER, HELPER),
        LocalTask("pressure", pressure, LEADER, HELPER),
    ]


def federation(root: Path, t0: int) -> tuple[LocalFederation, dict[str, Path]]:
    """The two aggregator nodes (no datasets: they only aggregate) and three gateways."""
    specs = [
        NodeSpec(LEADER, "City Water Utility", []),
        NodeSpec(HELPER, "City Statistics Bureau", []),
    ]
    fed = LocalFederation.create(root, specs)
    gateways = add_collection(
        fed,
        tasks(t0),
        gateways=[f"gw-{d}" for d in DISTRICTS],
        collectors={"alice": [PURPOSE]},
    )
    return fed, gateways


async def upload_minute(
    ups: dict[str, Uploader],
    dts: dict[str, Any],
    population: list[Device],
    minute: int,
    t: int,
    seed: int,
    dip: bool,
) -> tuple[list[int], dict[str, int]]:
    """Shard and upload one minute of every device; the true valid litres per district."""
    r = readings(population, minute, t, seed, dip=dip)
    truth = [0, 0, 0]
    jobs = []
    for d, name in enumerate(DISTRICTS):
        meters = [(m, at) for m, at, dd in r["meter"] if dd == d]
        for m, _ in meters:
            truth[d] += m[d]
        sensors = [(b, at) for b, at, dd in r["sensor"] if dd == d]
        broken = [(m, at) for m, at, dd in r["faulty"] if dd == d]
        water = await asyncio.to_thread(dts["water-use"].shard_many, meters)
        if broken:
            water += await asyncio.to_thread(dts["faulty"].shard_many, broken)
        pressure = await asyncio.to_thread(dts["pressure"].shard_many, sensors)
        jobs.append(ups[name].upload(dts["water-use"], water))
        jobs.append(ups[name].upload(dts["pressure"], pressure))
    refused: dict[str, int] = defaultdict(int)
    for result in await asyncio.gather(*jobs):
        for status, n in result.refused.items():
            refused[status] += n
    return truth, refused


def _row(w: Window, truth: list[int]) -> str:
    when = time.strftime("%H:%M", time.gmtime(w.start))
    litres = "  ".join(f"{d} {v:>8,}" for d, v in zip(DISTRICTS, w.result, strict=True))
    ok = "matches" if list(w.result) == truth else f"DIFFERS from {truth}"
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(w.rejected.items())) or "none"
    return (
        f"    {when} UTC  {litres} L  | {w.report_count:>6} reports, rejected: {rejected}"
        f"  | cleartext check {ok}"
    )


def _pressure(w: Window) -> str:
    parts = []
    for d, name in enumerate(DISTRICTS):
        counts = w.result[d * len(BANDS) : (d + 1) * len(BANDS)]
        total = max(1, sum(counts))
        low = sum(counts[:2]) / total
        parts.append(f"{name} {low:5.1%}")
    return (
        f"      pressure below 300 kPa: {'  '.join(parts)}  (noise ±{w.noise_stddev:.0f} per band)"
    )


ALERTS = """log = "alerts.jsonl"

[tasks.pressure.grid]
district = ["north", "east", "south"]
band = ["<250", "250-300", "300-350", "350-400", "400-450", ">=450"]

[[rules]]
name = "burst-pipe-{district}"
task = "pressure"
for_each = { district = ["north", "east", "south"] }
share_of = ["{district}/<250", "{district}/250-300"]
among = ["{district}/*"]
above = 0.20
windows = 2
confidence = 0.95
deliver = ["watch", "webhook:http://127.0.0.1:%d/alerts"]
"""


class _Hook(BaseHTTPRequestHandler):
    """The operations centre's webhook (on loopback): prints what it receives."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        print(f"    [webhook] received {body['rule']}: probability {body['probability']:.3f}")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def alert_rules(root: Path, port: int) -> Path:
    """The analyst's alert rules (its own file; the nodes never see them)."""
    path = root / "alerts.toml"
    path.write_text(ALERTS % port)
    return path


async def closed_window(col: Collector, task: str, start: int) -> Any:
    """``task``'s window at ``start`` once it has closed.

    Each task's windows close by that task's own clock (its newest report, then the wall
    clock: docs/collect.md), so a pressure window may close a moment after the water-use
    window of the same minutes. Asking early is refused before admission (nothing charged).
    """
    deadline = time.monotonic() + 600
    while True:
        try:
            return await col.get(task, start, purpose=PURPOSE)
        except RemoteError as exc:
            if "is not closed" not in exc.message or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def watch(
    fed: LocalFederation, windows: int, truth: dict[int, list[int]], say: Any, port: int
) -> Window:
    """Print each water-use window as it closes, with its pressure bands; return the first."""
    first: Window | None = None
    async with Collector.from_file(fed.fed_toml) as col:
        path = alert_rules(fed.root, port)
        alerts: Alerts = load_alerts(path, {"pressure": (await col.task("pressure")).spec})
        seen = 0
        async for w in col.watch("water-use", purpose=PURPOSE, poll_s=0.5):
            if not isinstance(w, Window):
                say(f"    window {w.start}: below the minimum batch size, not released")
                continue
            say(_row(w, truth[w.start]))
            pw = await closed_window(col, "pressure", w.start)
            say(_pressure(pw))
            for a in alerts.check("pressure", pw.start, pw.duration, pw.result, pw.noise_stddev):
                await asyncio.to_thread(deliver, a, alerts.log, lambda m: say("    " + m))
            first = first or w
            seen += 1
            if seen == windows:
                assert first is not None
                return first
    raise AssertionError("unreachable")


async def ledger(fed: LocalFederation, node: str) -> list[Any]:
    """The node's entries, read as the federation's auditor."""
    files = pki.party_paths(fed.pki_dir, "auditor", "regulator")
    address = next(n.address for n in fed.nodes if n.spec.name == node)
    async with mtls_channel(address, fed.pki_dir / "ca.crt", files.cert, files.key, node) as ch:
        client = LedgerClient(ch, 30)
        size = int((await client.checkpoint()).split("\n")[1])
        return [decode_leaf(leaf)[1] for leaf in await client.entries(0, size)]


async def scenario(
    args: argparse.Namespace, fed: LocalFederation, gateways: dict[str, Path], t0: int
) -> None:
    say = lambda m: print(m, flush=True)  # noqa: E731
    meters, sensors = int(10_000 * args.scale), int(2_000 * args.scale)
    faulty = max(5, int(150 * args.scale))
    population = devices(meters, sensors, faulty, args.seed)
    say(f"    {meters:,} water meters, {sensors:,} pressure sensors, {faulty} faulty meters (east)")
    ups = {d: Uploader.from_file(gateways[f"gw-{d}"]) for d in DISTRICTS}
    dts = {name: await ups["north"].task(name) for name in ("water-use", "pressure")}
    dts["faulty"] = faulty_task(dts["water-use"])
    truth: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    hook = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    watcher = asyncio.create_task(watch(fed, args.windows, truth, say, hook.server_port))
    start = time.monotonic()
    reports = 0
    for minute in range(args.windows * 5 + 3):  # three minutes past the last window close it
        t = t0 + 60 * minute
        window = t - t % WINDOW
        burst = minute >= 2  # from the third minute a main bursts in the south
        got, refused = await upload_minute(ups, dts, population, minute, t, args.seed, burst)
        truth[window] = [a + b for a, b in zip(truth[window], got, strict=True)]
        reports += meters + sensors + faulty
        if refused:
            say(f"    minute {minute}: the Leader refused {dict(refused)}")
    say(f"    uploaded {reports:,} reports in {time.monotonic() - start:.1f}s (sharding included)")
    first = await asyncio.wait_for(watcher, timeout=600)
    hook.shutdown()
    for u in ups.values():
        await u.aclose()
    log = fed.root / "alerts.jsonl"
    fired = log.read_text().splitlines() if log.exists() else []
    say(f"\n    the analyst's alert log ({log.name}) holds {len(fired)} alert(s):")
    for line in fired:
        rec = json.loads(line)
        say(f"    {rec['rule']}: windows {rec['windows']}, probability {rec['probability']:.3f}")
    say("\n    each closed window is one entry at both aggregators (auditor's view):")
    for node in (LEADER, HELPER):
        for r in await ledger(fed, node):
            if (
                r.operation == "collect_window"
                and r.dataset == "water-use"
                and r.details["window"] == str(first.start)
            ):
                keys = ("reports", "rejected", "rejected.vdaf_verify_error")
                facts = ", ".join(f"{k} {r.details.get(k, '0')}" for k in keys)
                say(f"    {node:<11} {r.job_id}: {facts}; share digest {r.result_digest[:16]}…")
    if args.cli:
        cmd = [str(BIN / "datafed"), "collect", "get", "-f", str(fed.fed_toml), "-t", "water-use"]
        cmd += ["-w", str(first.start), "--purpose", PURPOSE, "--labels", ",".join(DISTRICTS)]
        say("\n$ datafed collect get -t water-use -w " + str(first.start) + " ...")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        sys.stdout.write(proc.stdout or proc.stderr)


def run(
    root: Path, *, scale: float = 1.0, windows: int = 3, seed: int = 7, cli: bool = False
) -> list[int | None]:
    """Play the example under ``root``; return the nodes' exit codes."""
    shutil.rmtree(root, ignore_errors=True)
    t0 = (NOW - (windows + 2) * WINDOW) // WINDOW * WINDOW  # the recent past, aligned
    fed, gateways = federation(root, t0)
    args = argparse.Namespace(scale=scale, windows=windows, seed=seed, cli=cli)
    with fed:
        fed.start()
        asyncio.run(scenario(args, fed, gateways, t0))
        return fed.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 12,000 devices")
    parser.add_argument("--windows", type=int, default=3, help="5-minute windows to collect")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--root", type=Path, default=Path("demo-run/sensors"))
    parser.add_argument("--cli", action="store_true", help="end with `datafed collect get`")
    ns = parser.parse_args()
    codes = run(ns.root, scale=ns.scale, windows=ns.windows, seed=ns.seed, cli=ns.cli)
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
