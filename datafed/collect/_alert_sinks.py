"""Where an alert goes: the collector's own log, a command, a webhook on loopback.

Every alert fired is appended to the collector's log (one JSON line: the rule, the
windows, the probability, what was released, and where it was delivered, with each
delivery's outcome) before :func:`deliver` returns, whether or not a delivery worked.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from datafed.collect._alerts import Alert

__all__ = ["deliver"]


def _command(cmd: str, payload: bytes) -> str:
    try:
        proc = subprocess.run(
            cmd, shell=True, input=payload, capture_output=True, timeout=10, check=False
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    return f"exit {proc.returncode}"


def _webhook(url: str, payload: bytes) -> str:
    req = urllib.request.Request(
        url, data=payload, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return f"http {resp.status}"
    except OSError as exc:
        return f"failed: {exc}"


def deliver(alert: Alert, log: Path, say: Any = None) -> dict[str, str]:
    """Send ``alert`` everywhere its rule says; record it (and the outcomes) in ``log``."""
    record = dataclasses.asdict(alert)
    record["fired_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    payload = json.dumps(record).encode()
    outcomes: dict[str, str] = {}
    for d in alert.deliver:
        kind, _, rest = d.partition(":")
        if d == "watch":
            if say is not None:
                say(alert.line())
            outcomes[d] = "printed" if say is not None else "not watching"
        elif kind == "command":
            outcomes[d] = _command(rest, payload)
        elif kind == "webhook":
            outcomes[d] = _webhook(rest, payload)
    record["delivered"] = outcomes
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return outcomes
