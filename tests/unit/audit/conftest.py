from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import DataUseRecord, Ledger

ORIGIN = "datafed.test/water-north"


def make_record(i: int = 0, **over: Any) -> DataUseRecord:
    fields: dict[str, Any] = {
        "node": "water-north",
        "requester": f"analyst-{i % 7}",
        "requester_role": "analyst",
        "dataset": "pipe_incidents",
        "purpose": "service-planning",
        "legal_basis": "water-act-s12",
        "operation": "query",
        "protection": "paillier",
        "request_digest": hashlib.sha256(f"req{i}".encode()).hexdigest(),
        "result_digest": "",
        "decision": "approved",
        "reason": "policy ok",
        "epsilon": 0.0,
        "job_id": f"job-{i // 3}",
        "time_ms": 1_700_000_000_000 + i,
        "details": {},
    }
    fields.update(over)
    return DataUseRecord(**fields)


@pytest.fixture
def record() -> Callable[..., DataUseRecord]:
    return make_record


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture
def ledger(tmp_path: Path, key: Ed25519PrivateKey) -> Any:
    led = Ledger.open(tmp_path / "ledger.db", ORIGIN, key)
    yield led
    led.close()


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``datafed-audit ARGV`` in-process: its exit code, stdout and stderr."""
    from audit.cli.app import main

    old = sys.argv
    sys.argv = ["datafed-audit", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    cap = capsys.readouterr()
    return code, cap.out, cap.err
