"""What the verifier reports: findings, the report, and the auditor's state file.

See :mod:`audit.verify` for the finding codes.  The state file remembers, per log, the
size and root of the newest checkpoint an earlier audit verified, so that a later audit
detects a log that was rolled back or rewritten since (``log-rolled-back``,
``log-rewritten``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from audit.checkpoint import Checkpoint

__all__ = ["Finding", "VerifyReport", "WitnessHeld", "load_state", "save_state", "utc_time"]


@dataclass(frozen=True)
class Finding:
    """One problem: a stable ``code``, where (``index`` or ``size``) and a ``message``."""

    code: str
    message: str
    index: int | None = None
    size: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.index is not None:
            where = f" at entry {self.index}"
        elif self.size is not None:
            where = f" at checkpoint size {self.size}"
        return f"{self.code}{where}: {self.message}"


@dataclass(frozen=True)
class WitnessHeld:
    """A witness's newest cosigned checkpoint of the log, verified against the policy.

    ``timestamp`` is the cosignature's (seconds since the epoch), ``source`` where it came
    from (an address, a witness state file).
    """

    witness: str
    checkpoint: Checkpoint
    timestamp: int
    source: str

    def when(self) -> str:
        """The cosignature's time in UTC."""
        return utc_time(self.timestamp)


def utc_time(seconds: int) -> str:
    """``seconds`` since the epoch as a UTC time (the raw number if it is out of range)."""
    try:
        at = datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"at time {seconds}"
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_log`."""

    origin: str
    entries: int = 0
    checkpoints: list[Checkpoint] = field(default_factory=list)
    published: list[int] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: The policy's quorum and number of pinned witnesses.
    quorum: int = 0
    witnesses: int = 0
    #: Valid pinned cosignatures per checkpoint size.
    cosigned: dict[int, int] = field(default_factory=dict)
    #: Entries that carry a private part (each checked against its commitment).
    private: int = 0
    #: The witnesses' newest checkpoints of the log (``None``: the witnesses were not asked).
    witness_held: list[WitnessHeld] | None = None
    #: Pinned witnesses that did not vouch for the log, each with why.
    witness_missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing failed."""
        return not self.findings

    @property
    def latest(self) -> Checkpoint | None:
        """The largest valid checkpoint."""
        return max(self.checkpoints, key=lambda c: c.size, default=None)

    @property
    def witnessed(self) -> int:
        """The largest checkpoint size cosigned by the quorum (0: none)."""
        return max(self.published, default=0) if self.quorum else 0

    def quorum_line(self) -> str:
        """One line saying which witness quorum was required and what was actually met."""
        head = f"witness quorum: {self.quorum} of {self.witnesses} required"
        latest = self.latest.size if self.latest else 0
        if self.quorum == 0:
            return f"{head} — NOT witnessed: the operator can rewrite this log undetectably"
        got = self.cosigned.get(latest, 0)
        w = self.witnessed
        if w and w == latest:
            return f"{head} — met: latest checkpoint (size {latest}) cosigned by {got}"
        if w:
            return (
                f"{head} — met only up to size {w}: entries {w}..{latest - 1} are NOT "
                f"witnessed (latest checkpoint cosigned by {got})"
            )
        return f"{head} — NOT met by any checkpoint"

    def witness_lines(self) -> list[str]:
        """What each pinned witness holds of the log (none if the witnesses were not asked)."""
        if self.witness_held is None:
            return []
        vouching = len({h.witness for h in self.witness_held})
        lines = [
            f"witnesses consulted: {vouching} of {self.witnesses} hold a cosigned checkpoint "
            f"of this log (quorum {self.quorum})"
        ]
        for h in sorted(self.witness_held, key=lambda h: (h.witness, h.checkpoint.size)):
            lines.append(
                f"  {h.witness}: size {h.checkpoint.size}, cosigned {h.when()} ({h.source})"
            )
        lines += [f"  {m}" for m in self.witness_missing]
        return lines

    def add(
        self, code: str, message: str, *, index: int | None = None, size: int | None = None
    ) -> None:
        """Record a finding."""
        self.findings.append(Finding(code, message, index, size))


def load_state(path: Path | None) -> dict[str, tuple[int, bytes]]:
    """Read the auditor's state file: origin -> (size, root) last verified."""
    if path is None or not Path(path).exists():
        return {}
    try:
        raw = json.loads(Path(path).read_text())
        return {o: (int(v["size"]), base64.b64decode(v["root"])) for o, v in raw.items()}
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise ValueError(f"auditor state file {Path(path).name} is corrupt") from None


def save_state(path: Path, origin: str, cp: Checkpoint) -> None:
    """Durably record ``cp`` as the last verified checkpoint of ``origin``."""
    state = load_state(path)
    state[origin] = (cp.size, cp.root_hash)
    data = {o: {"size": s, "root": base64.b64encode(r).decode()} for o, (s, r) in state.items()}
    tmp = Path(f"{path}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
