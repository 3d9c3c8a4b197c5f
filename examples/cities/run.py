"""Two cities, one river basin: Shanghai and Suzhou recognise each other (issue 19).

Each city is its own federation with its own CA (``datafed pki init --federation``):
three Shanghai water offices, two Suzhou ones. The operators exchange trust bundles
(``datafed pki bundle``) and add them to every node (``datafed-node partners add``); a
Suzhou analyst then runs one protected query over all five offices and an
intersection-sum across the border; each city's auditor pins the other city's node keys
from the partner bundle and reconciles the joint job; finally Shanghai withdraws
recognition and the next Suzhou query is refused. See docs/federation.md.

Run alone with ``python examples/cities/run.py`` or as a scene of ``make demo``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from datafed.local.cities import CITIES, SHARED_PURPOSE, TwoCities

BIN = Path(sys.executable).parent
SQL = "SELECT material, SUM(bursts), COUNT(*) FROM pipe_incidents GROUP BY material"


def _cmd(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    print("$ " + " ".join([Path(args[0]).name, *args[1:]]), flush=True)
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    sys.stdout.write(proc.stdout)
    if ok and proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"command failed with exit code {proc.returncode}")
    return proc


def _job_id(output: str) -> str:
    for word in output.split():
        if word.startswith("job-"):
            return word.strip(",:;()")
    raise SystemExit("no job id in the query's output")


def run(root: Path, say: Callable[[str], None] = print) -> list[int | None]:
    """Play the scene under ``root``; return the nodes' exit codes."""
    datafed, node_cmd, audit = (
        str(BIN / "datafed"),
        str(BIN / "datafed-node"),
        str(BIN / "datafed-audit"),
    )
    cities = TwoCities.create(root, progress=lambda m: say(f"    {m}"))
    bundles = root / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    say("each city's operator writes its trust bundle and adds the other's to every node")
    for city, fed in cities.cities.items():
        _cmd(
            datafed,
            "pki",
            "bundle",
            "--dir",
            str(fed.pki_dir),
            "-o",
            str(bundles / f"{city}.bundle.json"),
        )
    for city, fed in cities.cities.items():
        partner = next(c for c in CITIES if c != city)
        for node in fed.nodes:
            _cmd(
                node_cmd,
                "partners",
                "add",
                str(bundles / f"{partner}.bundle.json"),
                "-c",
                str(node.config),
            )
    with cities:
        cities.start()
        for fed in cities.cities.values():
            for node in fed.nodes:
                say(f"    {fed.qname(node.spec.name):<24} {node.spec.agency:<36} {node.address}")
        suzhou = str(cities.fed_toml("suzhou"))
        say("a Suzhou analyst's protected query over both cities' five offices (one job)")
        out = _cmd(datafed, "query", SQL, "--federation", suzhou, "--purpose", SHARED_PURPOSE,
                   "--protection", "paillier").stdout  # fmt: skip
        job = _job_id(out)
        say("a cross-city intersection-sum: Shanghai's and Suzhou's commuter water accounts")
        _cmd(datafed, "intersection-sum", "--federation", suzhou,
             "--ids", "shanghai:water-north:commuter_accounts:person_id",
             "--values", "suzhou:water-wujiang:commuter_accounts:person_id:usage_m3",
             "--purpose", SHARED_PURPOSE)  # fmt: skip
        say("what the Suzhou analyst may do at each node of both cities")
        _cmd(datafed, "nodes", "--federation", suzhou)
        for city in CITIES:
            say(f"{city}'s auditor reconciles job {job} over all five ledgers")
            policy = _auditor_policy(cities, city, root / "audit" / city, audit)
            exports = []
            for c, fed in cities.cities.items():
                for node in fed.nodes:
                    target = root / "audit" / city / "exports" / f"{c}-{node.spec.name}"
                    db = node.config.parent / "state" / "ledger.sqlite"
                    _cmd(audit, "export", str(target), "--db", str(db))
                    exports.append(str(target))
            _cmd(audit, "reconcile", job, *exports, "-p", str(policy), "--no-witnesses")
        say("Shanghai withdraws recognition of Suzhou; the next Suzhou query is refused")
        for node in cities.cities["shanghai"].nodes:
            _cmd(node_cmd, "partners", "remove", "suzhou", "-c", str(node.config))
        refused = _cmd(datafed, "query", SQL, "--federation", suzhou, "--purpose",
                       SHARED_PURPOSE, ok=False)  # fmt: skip
        say(f"    exit {refused.returncode}: {refused.stderr.strip()}")
        if refused.returncode == 0:
            raise SystemExit("a withdrawn partner's query was answered")
        codes: list[int | None] = []
        for fed in cities.cities.values():
            codes += fed.stop()
        return codes


def _auditor_policy(cities: TwoCities, city: str, folder: Path, audit: str) -> Path:
    """Pin every node's log key: home ones with the home CA, the partner's with its bundle."""
    folder.mkdir(parents=True, exist_ok=True)
    logs = []
    for c, fed in cities.cities.items():
        ca = fed.pki_dir / "ca.crt" if c == city else cities.root / "bundles" / f"{c}.bundle.json"
        for node in fed.nodes:
            cert = fed.pki_dir / "node" / f"{node.spec.name}.crt"
            logs.append(_cmd(audit, "vkey", str(cert), "--ca", str(ca)).stdout.strip())
    policy = folder / "audit-policy.toml"
    policy.write_text(f"quorum = 0\nlogs = {json.dumps(logs)}\nwitnesses = []\n")
    return policy


if __name__ == "__main__":
    import shutil

    target = Path(__file__).resolve().parents[2] / "demo-run" / "cities"
    shutil.rmtree(target, ignore_errors=True)
    sys.exit(0 if all(c == 0 for c in run(target)) else 1)
