"""``datafed-audit witness-export``: a witness's state, for auditors who verify offline.

A witness state file holds the newest checkpoint the witness cosigned of each log it
witnesses (:mod:`audit.witness_state`).  ``verify EXPORT --witness-state FILE`` checks the
log against it; export the witnesses' state **before** the logs, so that an honest log is at
least as long as what its witnesses hold.  Nothing in the file is trusted: ``verify`` checks
every note against the log and witness keys pinned in the policy.
"""

from __future__ import annotations

import struct
from pathlib import Path

import typer

from audit.checkpoint import Checkpoint
from audit.cli.common import REMOTE, Fail, Remote, app, err, out
from audit.cli.groups import with_groups
from audit.errors import InvalidSignature
from audit.findings import utc_time
from audit.note import NoteSignature, parse_note
from audit.witness import read_newest
from audit.witness_state import write_state_file

__all__ = ["witness_export"]

_U64 = struct.Struct(">Q")


def _cosignature(origin: str, note: str) -> tuple[Checkpoint, NoteSignature]:
    """The checkpoint of ``note`` and its one cosignature line (unverified)."""
    try:
        text, sigs = parse_note(note)
        cp = Checkpoint.parse(text)
    except (InvalidSignature, ValueError):
        raise Fail(f"the witness holds a malformed checkpoint of {origin}") from None
    others = [s for s in sigs if s.name != cp.origin and len(s.signature) == 72]
    if cp.origin != origin or len(others) != 1:
        raise Fail(f"the witness's checkpoint of {origin} does not carry one cosignature")
    return cp, others[0]


@app.command("witness-export")
@with_groups
def witness_export(
    out_file: Path = typer.Argument(..., help="new witness state file (JSON) to write"),
    db: Path = typer.Option(
        None, "--db", help="the witness node's state_dir/witness.sqlite (offline, read-only)"
    ),
    remote: Remote = REMOTE,
) -> None:
    """Write the newest checkpoint a witness cosigned of each log it witnesses."""
    remote.check_one_of(db, "--db")
    if out_file.exists():
        raise Fail(f"{out_file} exists: give a new file")
    if db is not None:
        notes, legacy = read_newest(db)
        for origin in legacy:
            err.print(
                f"warning: {origin}: the newest checkpoint was cosigned before this witness "
                "kept cosigned notes; export it online (--node) to include it"
            )
    else:
        answer = remote.run(lambda client: client.witnessed())
        notes = {o: n.decode("utf-8", errors="replace") for o, n in answer.items()}
    if not notes:
        raise Fail("the witness holds no cosigned checkpoint to export")
    held = {origin: _cosignature(origin, note) for origin, note in notes.items()}
    names = {sig.name for _, sig in held.values()}
    if len(names) != 1:
        raise Fail(f"the checkpoints are cosigned by several witnesses: {sorted(names)}")
    witness = names.pop()
    write_state_file(out_file, witness, notes)
    out.print(f"exported the state of witness {witness}: {len(notes)} log(s) to {out_file}")
    for origin, (cp, sig) in sorted(held.items()):
        when = utc_time(_U64.unpack(sig.signature[:8])[0])
        out.print(f"  {origin}: size {cp.size}, cosigned {when}")
