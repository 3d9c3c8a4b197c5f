"""The main job: agencies answer joint questions without handing over a row.

Run with ``make demo``.  Everything is real: a federation CA issues certificates
(``datafed pki``), agency nodes run as ``datafed-node serve`` processes on 127.0.0.1 with
mTLS over their own seeded SQLite data, and every answer carries receipts (ledger
inclusion proofs) that the client verifies.  Five scenes:

1. three district water offices: a Paillier-protected total, then a grouped query under
   two protection modes (Paillier and additive secret shares), and a refused query;
2. the tax bureau and a bank: an intersection-sum over their shared person IDs;
3. live sensor data: water meters and pressure sensors report every minute with
   zero-knowledge validity proofs (Prio3), two aggregator nodes collect 5-minute windows,
   a faulty device group is rejected, counted and ledgered, and a burst main in the south
   fires the analyst's one pressure alert (``examples/sensors``);
4. three flood offices: a short federated training run on Flower (SecAgg+), and the
   model's lineage traced through the ledgers by the auditor;
5. two cities, two federations (Shanghai, Suzhou): recognition by trust bundles, a
   cross-city query and intersection-sum, both auditors reconciling the joint job, then
   recognition withdrawn and the next partner query refused (``examples/cities``).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from datafed.local.federation import (
    DEFAULT_DISTRICTS,
    FINANCE_PURPOSE,
    PURPOSE,
    LocalFederation,
    finance_specs,
)

ROOT = Path(__file__).resolve().parent.parent / "demo-run"
BIN = Path(sys.executable).parent
SQL = "SELECT SUM(bursts), COUNT(*), AVG(repair_hours) FROM pipe_incidents WHERE year = 2024"
GROUPED = (
    "SELECT material, SUM(bursts), AVG(pressure_drop_kpa) FROM pipe_incidents "
    "WHERE year = 2024 AND month IN (12, 1, 2) GROUP BY material"
)


def step(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def run(*args: str) -> str:
    """Run a datafed command, echo it, fail loudly if it fails."""
    print(
        "$ " + " ".join(Path(args[0]).name if i == 0 else a for i, a in enumerate(args)), flush=True
    )
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"command failed with exit code {proc.returncode}")
    return proc.stdout


def cleartext_check(fed: LocalFederation) -> tuple[int, int]:
    """What the total would be if someone pooled the rows (only possible in a demo)."""
    total = count = 0
    for node in fed.nodes:
        db = node.config.parent / "data" / "pipe_incidents.sqlite"
        with sqlite3.connect(db) as conn:
            s, c = conn.execute(
                "SELECT SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = 2024"
            ).fetchone()
        total, count = total + s, count + c
    return total, count


def finance_scene() -> list[int | None]:
    """The tax bureau and a bank: how many loan applicants file taxes, and their loans' sum."""
    step("tax bureau + city bank: intersection-sum over shared person IDs")
    fin = LocalFederation.create(
        ROOT / "finance", finance_specs(), progress=lambda m: print(f"    {m}", flush=True)
    )
    with fin:
        fin.start()
        run(
            str(BIN / "datafed"),
            "intersection-sum",
            "--federation",
            str(fin.fed_toml),
            "--ids",
            "tax-bureau:taxpayers:person_id",
            "--values",
            "city-bank:loans:person_id:amount",
            "--purpose",
            FINANCE_PURPOSE,
        )
        return fin.stop()


def sensors_scene() -> list[int | None]:
    """Live sensor data collected in windows by two aggregators (a tenth of the example)."""
    step("live sensor data: Prio3 reports with validity proofs, collected in 5-minute windows")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sensors.run import run as run_sensors

    codes = run_sensors(ROOT / "sensors", scale=0.1, windows=2, cli=True)
    log = ROOT / "sensors" / "alerts.jsonl"
    fired = log.read_text().splitlines() if log.exists() else []
    if len(fired) != 1:  # the scene shows exactly one burst-pipe alert
        print(f"    expected one alert, the analyst's log holds {len(fired)}", flush=True)
        codes.append(1)
    return codes


def flood_scene() -> None:
    """Flood offices train a model together on Flower; the auditor traces its lineage."""
    step("flood offices: federated training on Flower with SecAgg+, then the model's lineage")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from flood_fl.deploy import run as run_flood

    run_flood(ROOT / "flood", rounds=2, say=lambda m: print(f"    {m}", flush=True))


def cities_scene() -> list[int | None]:
    """Shanghai and Suzhou: two federations that recognise each other (docs/federation.md)."""
    step("two cities, two CAs: cross-city jobs, both auditors, recognition withdrawn")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cities.run import run as run_cities

    return run_cities(ROOT / "cities", say=lambda m: print(f"    {m}", flush=True))


def main() -> int:
    t0 = time.monotonic()
    shutil.rmtree(ROOT, ignore_errors=True)
    step("federation CA and certificates (datafed pki)")
    pki_dir = str(ROOT / "pki")
    run(str(BIN / "datafed"), "pki", "init", "--dir", pki_dir, "--name", "City Data Bureau CA")
    for role, name in [("node", n) for n in DEFAULT_DISTRICTS] + [("analyst", "alice")]:
        run(str(BIN / "datafed"), "pki", "issue", name, "--role", role, "--dir", pki_dir)
    step("seeded synthetic data and node configurations")
    fed = LocalFederation.create(ROOT, progress=lambda m: print(f"    {m}", flush=True))
    with fed:
        step("starting three agency nodes (datafed-node serve, mTLS on 127.0.0.1)")
        fed.start()
        for node in fed.nodes:
            print(f"    {node.spec.name:<12} {node.spec.agency:<30} {node.address}", flush=True)
        step("protected query across the three water offices (Paillier, 2048-bit)")
        run(
            str(BIN / "datafed"),
            "query",
            SQL,
            "--federation",
            str(fed.fed_toml),
            "--purpose",
            PURPOSE,
            "--protection",
            "paillier",
        )
        total, count = cleartext_check(fed)
        print(
            f"    check (cleartext, computed locally by the demo only): SUM(bursts) = {total}, COUNT(*) = {count}"
        )
        step("grouped query: winter bursts by pipe material (Paillier)")
        run(
            str(BIN / "datafed"),
            "query",
            GROUPED,
            "--federation",
            str(fed.fed_toml),
            "--purpose",
            PURPOSE,
            "--protection",
            "paillier",
        )
        step("the same grouped query with additive secret shares (two aggregator nodes)")
        run(
            str(BIN / "datafed"),
            "query",
            GROUPED,
            "--federation",
            str(fed.fed_toml),
            "--purpose",
            PURPOSE,
            "--protection",
            "shares",
        )
        step("a query the policy refuses (wrong purpose) is denied and recorded")
        proc = subprocess.run(
            [
                str(BIN / "datafed"),
                "query",
                SQL,
                "--federation",
                str(fed.fed_toml),
                "--purpose",
                "marketing",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        print(f"    exit {proc.returncode}: {proc.stderr.strip()}")
        step("each node's ledger head")
        run(str(BIN / "datafed"), "nodes", "--federation", str(fed.fed_toml))
        step("shutting down the water offices")
        codes = fed.stop()
    print(f"    node exit codes: {codes}")
    codes += finance_scene()
    codes += sensors_scene()
    flood_scene()
    codes += cities_scene()
    print(f"\ndemo finished in {time.monotonic() - t0:.1f}s")
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
