"""A small city for audit tests: three agency ledgers, a witness, exports and a policy.

Deterministic (seeded keys, fixed times) and hostile in places: a requester name that is
HTML, a purpose that is a spreadsheet formula, a reason with ``[...]`` that rich markup
would eat.  Jobs span agencies (queries over three nodes with one job statement, two
intersection-sums joining water and health records with their sizes as private parts),
with DP charges against a budget and denials.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import DataUseRecord, Ledger
from audit.export import export_store
from audit.witness import WitnessStore

from .conftest import make_record

NODES = {"water-north": 0x41, "health-east": 0x42, "transport": 0x43}
AGENCIES = {
    "water-north": "Water Department",
    "health-east": "Health Department",
    "transport": "Transport Agency",
}
DATASETS = {"water-north": "pipe_incidents", "health-east": "clinic_visits", "transport": "trips"}
WITNESS_KEY = Ed25519PrivateKey.from_private_bytes(b"\x44" * 32)
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
HOUR = 3_600_000
EVIL_NAME = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://x")'
BRACKETS = "INVALID_ARGUMENT: name must match [a-z0-9]+"


def key(node: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([NODES[node]]) * 32)


def origin(node: str) -> str:
    return f"datafed/ledger/{node}"


def statement(job: str) -> str:
    return hashlib.sha256(f"statement {job}".encode()).hexdigest()


def rec(node: str, t: int, **over: Any) -> DataUseRecord:
    fields: dict[str, Any] = {
        "node": node,
        "dataset": DATASETS[node],
        "requester": "alice",
        "purpose": "service-planning",
        "time_ms": T0 + t * HOUR,
        "epsilon": 0.0,
        "decision": "approved",
    }
    fields.update(over)
    return make_record(t, **fields)


Records = dict[str, list[tuple[DataUseRecord, dict[str, str] | None]]]


def city_records() -> Records:
    """Each node's entries (record, private part), in append order."""
    logs: Records = {n: [] for n in NODES}
    for q in range(6):  # queries over all three agencies, one statement per job
        job, t = f"q-{q}", 20 * q
        purpose = "service-planning" if q % 2 else "public-health"
        who = "alice" if q < 4 else "bob"
        for node in NODES:
            eps = 0.5 if node == "health-east" else 0.0
            d = {"statement": statement(job)}
            logs[node].append((rec(node, t, job_id=job, purpose=purpose, requester=who,
                                   details=d), None))  # fmt: skip
            logs[node].append((rec(node, t + 1, job_id=job, purpose=purpose, requester=who,
                                   decision="released", epsilon=eps, details=d),
                               {"groups_released": "4", "groups_suppressed": str(q % 2)}))  # fmt: skip
    for j in range(2):  # cross-domain joins: water x health intersection-sums
        job, t = f"psi-{j}", 50 + 30 * j
        for node in ("water-north", "health-east"):
            kw = {"job_id": job, "operation": "intersection_sum", "purpose": "public-health"}
            logs[node].append((rec(node, t, **kw), None))
            logs[node].append((rec(node, t + 1, decision="released", **kw),
                               {"intersection_size": str(40 + j)}))  # fmt: skip
    for node in NODES:  # denials, with hostile texts
        logs[node].append((rec(node, 100, requester="mallory", decision="denied", job_id="x-1",
                               reason="PERMISSION_DENIED: requester not allowed"), None))  # fmt: skip
        logs[node].append((rec(node, 101, requester=EVIL_NAME, decision="denied", job_id="",
                               purpose=FORMULA, reason=BRACKETS), None))  # fmt: skip
    logs["health-east"].append((rec("health-east", 102, requester="bob", decision="denied",
                                    job_id="q-9",
                                    reason="RESOURCE_EXHAUSTED: privacy budget exhausted"),
                                None))  # fmt: skip
    return logs


@dataclass
class City:
    """Where everything was written."""

    root: Path
    dbs: dict[str, Path]
    exports: dict[str, Path]
    policy: Path
    witness: WitnessStore


def build_city(root: Path, tweak: Callable[[Records], None] | None = None) -> City:
    """Write the ledgers (each cosigned by the witness), their exports and the policy.

    ``tweak`` may change the records before they are appended (as a node would log them).
    """
    records = city_records()
    if tweak is not None:
        tweak(records)
    dbs, exports = {}, {}
    ledgers = {n: Ledger.open(root / f"{n}.db", origin(n), key(n)) for n in NODES}
    witness = WitnessStore(
        root / "witness.db",
        "datafed/witness/regulator",
        WITNESS_KEY,
        [led.verifier for led in ledgers.values()],
    )
    for node, entries in records.items():
        led = ledgers[node]
        led.append_many([r for r, _ in entries], private=[p for _, p in entries])
        note = led.checkpoint()
        led.add_cosignatures(led.head().size, [witness.add_checkpoint(note, 0, [])])
        led.close()
        dbs[node] = root / f"{node}.db"
        exports[node] = export_store(dbs[node], root / f"export-{node}")
    policy = root / "policy.toml"
    policy.write_text(
        "quorum = 1\n"
        "logs = [" + ", ".join(f'"{ledgers[n].verifier.vkey()}"' for n in NODES) + "]\n"
        f'witnesses = ["{witness.verifier.vkey()}"]\n'
        "[agencies]\n" + "".join(f'{n} = "{a}"\n' for n, a in AGENCIES.items()) +
        '[budgets]\n"health-east/clinic_visits" = 2.0\n'
    )  # fmt: skip
    return City(root, dbs, exports, policy, witness)
