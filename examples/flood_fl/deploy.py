"""Federated training as deployed, on one machine: three district flood offices.

Everything is a real process on 127.0.0.1: three ``datafed-node serve`` agency nodes
(mTLS, their own SQLite readings, policy and ledger), a Flower SuperLink and one Flower
SuperNode per office (TLS, certificates from the federation CA). The analyst signs a
training request per office and runs ``datafed train`` (here: :func:`datafed.fl.training`);
afterwards the auditor exports each office's ledger and traces the model's lineage.

    python examples/flood_fl/deploy.py [--rounds 2] [--root demo-run/fl]

``make demo`` can end with :func:`run` to show a federated training run and its lineage.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from audit.export import ExportDir
from audit.records import decode_leaf
from datafed import pki
from datafed.fl import model_lineage, train
from datafed.fl.lineage import format_lineage
from datafed.fl.local import FLOOD_PURPOSE, flood_node_specs
from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE
from datafed.local.federation import LocalFederation
from nodes.fl.local import LocalFlower

BIN = Path(sys.executable).parent


def _export(fed: LocalFederation, out: Path) -> dict[str, list]:
    files = pki.party_paths(fed.pki_dir, "auditor", "regulator")
    logs = {}
    for node in fed.nodes:
        target = out / node.spec.name
        subprocess.run(
            [
                str(BIN / "datafed-audit"),
                "export",
                str(target),
                "--node",
                node.address,
                "--server-name",
                node.spec.name,
                "--ca",
                str(fed.pki_dir / "ca.crt"),
                "--cert",
                str(files.cert),
                "--key",
                str(files.key),
            ],
            check=True,
            capture_output=True,
        )
        exp = ExportDir(target)
        logs[node.spec.name] = [decode_leaf(b)[1] for c in exp.leaf_chunks(4096) for b in c]
    return logs


def run(root: Path, rounds: int = 2, say: Callable[[str], None] = print) -> str:
    """Start the offices and Flower, train, print the lineage; return the model digest."""
    shutil.rmtree(root, ignore_errors=True)
    fed = LocalFederation.create(root, flood_node_specs(3), progress=lambda m: say(f"   {m}"))
    with fed, LocalFlower(fed) as flower:
        say("==> starting 3 flood-office nodes, a Flower SuperLink and 3 SuperNodes (TLS)")
        fed.start()
        flower.start()
        say(f"==> federated training: {rounds} round(s), FedAvg under SecAgg+")
        t0 = time.monotonic()
        result = train(
            flower.fed_toml,
            purpose=FLOOD_PURPOSE,
            dataset=FLOOD_TABLE,
            features=FLOOD_FEATURES,
            label=FLOOD_LABEL,
            rounds=rounds,
            run_config={"eval-every": 0, "local-epochs": 1},
            on_progress=lambda step: say("   " + step.describe()),
        )
        say(f"   done in {time.monotonic() - t0:.0f}s: model {result.model_sha256}")
        say(f"   federated accuracy (nodes' own data): {result.accuracy:.3f}")
        say("==> the auditor exports each office's ledger and traces the model")
        lineage = model_lineage(result.model_sha256, _export(fed, root / "exports"))
        say(format_lineage(lineage))
        return result.model_sha256


def main() -> None:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--root", type=Path, default=Path("demo-run") / "fl")
    args = ap.parse_args()
    run(args.root.resolve(), args.rounds)


if __name__ == "__main__":
    main()
