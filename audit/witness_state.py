"""What the witnesses hold: their newest cosigned checkpoints, checked against a log.

A log's operator holds the log key and can always sign *a* history; what it cannot sign
are the witnesses' cosignatures.  A log that has fewer entries than a checkpoint one of its
witnesses cosigned was cut back (``log-behind-witness``); one whose entries do not hash to
that checkpoint's root at its size was rewritten (``witness-inconsistent``: no consistency
proof leads from the witness's checkpoint to the log).  The log's own export cannot show
either: the operator leaves the newer checkpoints out of it.

The auditor obtains each pinned witness's newest cosigned checkpoint of the log, online
(``GetWitnessedCheckpoints``, :func:`audit.remote.ask_witnesses`) or from a **witness state
file** that ``datafed-audit witness-export`` wrote from the witness (its node, or its
``witness.sqlite``)::

    {"format": "datafed-witness-state/1",
     "witness": "datafed/witness/water-east",          # the witness it claims to be
     "exported_ms": 1767225600000,                      # informative
     "checkpoints": {"datafed/ledger/water-north": "<signed note>", ...}}

Nothing in it is trusted: a note counts only if it carries the pinned log key's signature
and a valid cosignature by the pinned key of the witness named (``witness-state-invalid``
otherwise).  A pinned witness that did not vouch for the log (unreachable, no file, holds
nothing of the log, invalid) counts against the policy's quorum: fewer than ``quorum``
vouching witnesses is ``witness-unavailable``.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.checkpoint import open_checkpoint
from audit.errors import InvalidSignature
from audit.findings import VerifyReport, WitnessHeld
from audit.policy import Policy

__all__ = [
    "FORMAT",
    "WitnessView",
    "check_views",
    "compare_with_witnesses",
    "read_state_file",
    "write_state_file",
]

FORMAT = "datafed-witness-state/1"
_MAX_FILE_BYTES = 64 << 20
_U64 = struct.Struct(">Q")


@dataclass(frozen=True)
class WitnessView:
    """What one source says a witness holds: its newest cosigned note per log, or why none.

    ``witness`` is the witness's key name (as the source claims it), ``source`` where the
    view came from (a file name, an address), ``notes`` the signed notes by origin, and
    ``problem`` why there are none (e.g. ``unreachable: ...``).
    """

    witness: str
    source: str
    notes: Mapping[str, bytes] = field(default_factory=dict)
    problem: str | None = None


def _b64(root: bytes) -> str:
    return base64.b64encode(root).decode()


def open_view(view: WitnessView, policy: Policy, origin: str) -> WitnessHeld:
    """Verify the view's note of ``origin`` against the pinned log and witness keys.

    Raises
    ------
    InvalidSignature
        Saying why the note does not count (the caller reports it).
    """
    pinned = [w for w in policy.witnesses if w.name == view.witness]
    if not pinned:
        raise InvalidSignature(f"{view.witness!r} is not a witness pinned in the policy")
    note = view.notes[origin]
    try:
        opened = open_checkpoint(note, policy.logs[origin])
    except InvalidSignature as exc:
        raise InvalidSignature(f"its checkpoint of the log does not verify: {exc}") from None
    mine = [s for s in opened.signatures if any(w.matches(s) for w in pinned)]
    if not mine:
        raise InvalidSignature("its checkpoint carries no cosignature by the pinned key")
    try:
        opened.cosigners(pinned)
    except InvalidSignature:
        raise InvalidSignature("its cosignature does not verify against the pinned key") from None
    (timestamp,) = _U64.unpack(mine[0].signature[:8])
    return WitnessHeld(view.witness, opened.checkpoint, timestamp, view.source)


def check_views(
    views: Sequence[WitnessView], policy: Policy, report: VerifyReport
) -> list[WitnessHeld]:
    """Verify every view of ``report.origin``; report invalid ones and witnesses missing.

    Returns the verified checkpoints (the sizes the scan must compute roots at).
    """
    held: list[WitnessHeld] = []
    missing: dict[str, str] = {}
    for view in views:
        if view.problem is not None or report.origin not in view.notes:
            missing[view.witness] = f"{view.source}: {view.problem or 'holds no checkpoint of it'}"
            continue
        try:
            held.append(open_view(view, policy, report.origin))
        except InvalidSignature as exc:
            report.add("witness-state-invalid", f"witness {view.witness} ({view.source}): {exc}")
            missing[view.witness] = f"{view.source}: its state does not verify"
    vouching = {h.witness for h in held}
    for w in dict.fromkeys(w.name for w in policy.witnesses):
        if w in vouching:
            continue
        why = missing.get(w, "not consulted: no --witness-state file, nor --node with its address")
        report.witness_missing.append(f"{w} ({why})")
    report.witness_held = held
    return held


def compare_with_witnesses(
    held: Sequence[WitnessHeld], roots: Mapping[int, bytes], root: bytes, report: VerifyReport
) -> None:
    """The log (``report.entries``, ``root``; ``roots`` by size) against what witnesses hold.

    Then the quorum: fewer than ``report.quorum`` vouching witnesses fail, and a missing
    witness within the quorum is a warning.
    """
    n = report.entries
    for h in held:
        cp = h.checkpoint
        theirs = f"witness {h.witness} holds size {cp.size} root {_b64(cp.root_hash)}"
        theirs += f" (cosigned {h.when()}, {h.source})"
        if cp.size > n:
            report.add(
                "log-behind-witness",
                f"{theirs}; the log has {n} entries, root {_b64(root)}",
                size=cp.size,
            )
        elif roots.get(cp.size) != cp.root_hash:
            got = roots.get(cp.size, b"")
            report.add(
                "witness-inconsistent",
                f"{theirs}; the log's entries hash to {_b64(got)} at that size (the log has "
                f"{n} entries, root {_b64(root)}): no consistency proof leads from the "
                "witness's checkpoint to the log",
                size=cp.size,
            )
    vouching = len({h.witness for h in held})
    if vouching < report.quorum:
        report.add(
            "witness-unavailable",
            f"{vouching} of {report.witnesses} witnesses hold a verified checkpoint of the "
            f"log, quorum {report.quorum}; missing: " + "; ".join(report.witness_missing),
        )
    else:
        report.warnings += [f"witness {m} did not vouch" for m in report.witness_missing]


def write_state_file(path: Path, witness: str, notes: Mapping[str, str]) -> None:
    """Write a witness state file (fresh: refuses to overwrite), durably."""
    data = {
        "format": FORMAT,
        "witness": witness,
        "exported_ms": int(time.time() * 1000),
        "checkpoints": dict(sorted(notes.items())),
    }
    with open(path, "x", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_state_file(path: Path) -> WitnessView:
    """Read a witness state file as a view (its signatures are checked by the verifier).

    Raises
    ------
    ValueError
        If the file is not a witness state file (one line saying what is wrong).
    """
    name = Path(path).name
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_FILE_BYTES + 1)
        if len(raw) > _MAX_FILE_BYTES:
            raise ValueError("too large")
        data: Any = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise ValueError(f"witness state file not found: {path}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"witness state file {name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"witness state file {name} is not of format {FORMAT}")
    witness, notes = data.get("witness"), data.get("checkpoints")
    if not isinstance(witness, str) or not isinstance(notes, dict):
        raise ValueError(f"witness state file {name} lacks its witness or checkpoints")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in notes.items()):
        raise ValueError(f"witness state file {name}: checkpoints must map origins to notes")
    return WitnessView(witness, f"file {name}", {k: v.encode() for k, v in notes.items()})
