"""``datafed-audit``: the auditor's command (verify, prove, consistency, export, vkey, ...).

Trust comes from the auditor's policy file (``--policy``), never from the data under check.
Expected failures print one line and exit non-zero: 1 when verification found problems
(each named, with its entry index or checkpoint size), 2 for bad input or an unreachable
node.  The commands that read records (report, reconcile, jobs, lineage) live in
:mod:`audit.cli.read` and verify each export first.  docs/audit.md is the walk-through.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

import audit.merkle as merkle
from audit.checkpoint import Checkpoint, OpenedCheckpoint, open_checkpoint
from audit.cli.common import (
    ALLOW_TAIL,
    NO_WITNESSES,
    POLICY,
    REMOTE,
    Fail,
    Remote,
    app,
    load_policy,
    out,
    print_report,
    progress_run,
    run_main,
)
from audit.cli.groups import with_groups
from audit.errors import AuditError, ExitCode, InvalidSignature
from audit.export import ExportDir, MemorySource, export_store, write_export
from audit.note import SIG_COSIGNATURE_V1, SIG_ED25519, parse_note, vkey
from audit.policy import Policy
from audit.records import DataUseRecord, decode_leaf
from audit.verify import LogSource, VerifyReport, save_state, verify_log
from audit.vkeys import public_key_of
from audit.witness_state import WitnessView, read_state_file

if TYPE_CHECKING:
    from audit.remote import LedgerClient

__all__ = ["app", "main"]

T = TypeVar("T")


#: ``origin -> views``: what the witnesses hold of a log, asked before the log is read.
AskWitnesses = Callable[[str], Awaitable[list[WitnessView]]]


def _head(note: str, remote: Remote) -> Checkpoint:
    try:
        return Checkpoint.parse(parse_note(note)[0])
    except (InvalidSignature, ValueError):
        raise Fail(f"node {remote.node} returned a malformed checkpoint") from None


def _fetch(
    remote: Remote, extra: Callable[[int], None] | None = None, ask: AskWitnesses | None = None
) -> tuple[MemorySource, list[WitnessView]]:
    """Read the node's log, after asking the witnesses (``ask``) what they hold of it.

    In that order an honest log is at least as long as anything the witnesses hold.
    """

    async def fetch(client: LedgerClient) -> tuple[MemorySource, list[WitnessView]]:
        note = await client.checkpoint()
        views: list[WitnessView] = []
        if ask is not None:
            views = await ask(_head(note, remote).origin)
            note = await client.checkpoint()
        size = _head(note, remote).size
        leaves, private = await client.entries_with_private(0, size, extra)
        notes = [(f"{remote.node} checkpoint", note.encode())]
        return MemorySource(leaves, notes, private=private), views

    return remote.run(fetch)


def _asker(pol: Policy, remote: Remote) -> AskWitnesses | None:
    """Ask the policy's witnesses online (with ``--node``, where the policy has addresses)."""
    if remote.node is None or not pol.witnesses or not pol.witness_addresses:
        return None
    from audit.remote import ask_witnesses

    tls = remote.tls()
    return lambda origin: ask_witnesses(pol, origin, tls)


@app.command()
@with_groups
def verify(
    export: Path = typer.Argument(None, help="export directory (offline)"),
    policy: Path = POLICY,
    remote: Remote = REMOTE,
    checkpoint: list[Path] = typer.Option(
        [], "--checkpoint", help="extra checkpoint note(s) seen elsewhere"
    ),
    witness_state: list[Path] = typer.Option(
        [],
        "--witness-state",
        help="a witness's state from witness-export, taken before the log (once per witness)",
    ),
    deep: bool = typer.Option(False, help="also decode every record canonically"),
    no_witnesses: bool = NO_WITNESSES,
    allow_unsigned_tail: bool = ALLOW_TAIL,
) -> None:
    """Verify entries, private parts, tree, signatures, quorum, and the log against witnesses."""
    pol = load_policy(policy, no_witnesses)
    files = [read_state_file(p) for p in witness_state]
    if files and not pol.witnesses:
        raise Fail("--witness-state: the policy pins no witness to check it against")
    remote.check_one_of(export, "an export directory")

    def run(step: Callable[[int], None]) -> Any:
        src: LogSource
        if remote.node is not None:
            src, online = _fetch(remote, step, _asker(pol, remote))
        else:
            assert export is not None
            src, online = ExportDir(export), []
        if checkpoint:
            extra = [(str(p.name), p.read_bytes()) for p in checkpoint]
            src = MemorySource(
                [x for c in src.leaf_chunks(1 << 16) for x in c],
                src.checkpoint_notes() + extra,
                src.stored_hashes(),
                private=src.private_parts(),
            )
        views = [*files, *online] if pol.witnesses else None
        return verify_log(
            src,
            pol,
            deep=deep,
            progress=step,
            allow_unsigned_tail=allow_unsigned_tail,
            witnesses=views,
        )

    report = progress_run(None, "verifying", run)
    _print_verified(report, pol)


def _print_verified(report: VerifyReport, pol: Policy) -> None:
    """Print the findings and the summary; exit 1 if anything failed, else save the state."""
    print_report(report)
    if not report.ok:
        out.print(f"{report.origin}: {len(report.findings)} problem(s) in {report.entries} entries")
        if report.origin in pol.logs:
            out.print(report.quorum_line())
            for line in report.witness_lines():
                out.print(line)
        raise typer.Exit(ExitCode.FAILED_CHECK)
    latest = report.latest
    if pol.state is not None and latest is not None:
        save_state(pol.state, report.origin, latest)
    size = latest.size if latest else 0
    out.print(
        f"OK {report.origin}: {report.entries} entries, {len(report.checkpoints)} "
        f"checkpoint(s) up to size {size}, {report.private} private part(s) checked"
    )
    out.print(report.quorum_line())
    for line in report.witness_lines():
        out.print(line)


def _pinned(pol: Policy, note: bytes, label: str) -> OpenedCheckpoint:
    try:
        origin = Checkpoint.parse(parse_note(note)[0]).origin
    except (InvalidSignature, ValueError):
        raise Fail(f"{label}: not a signed checkpoint") from None
    if origin not in pol.logs:
        raise Fail(f"{label}: log {origin!r} is not pinned in the policy")
    try:
        return open_checkpoint(note, pol.logs[origin])
    except InvalidSignature:
        raise Fail(
            f"{label}: checkpoint signature does not verify against the pinned key"
        ) from None


class _LeafHashes:
    """A HashReader over the hashes of ``leaves`` (for proofs computed from an export)."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.hashes = [merkle.hash_leaf(x) for x in leaves]

    def get_hashes(self, ids: Any) -> list[bytes]:
        return [merkle.perfect_root(self.hashes[i << lvl : (i + 1) << lvl]) for lvl, i in ids]


def _export_leaves(path: Path) -> tuple[ExportDir, list[bytes]]:
    exp = ExportDir(path)
    return exp, exp.leaves()


@app.command()
@with_groups
def prove(
    export: Path = typer.Argument(None, help="export directory (offline)"),
    index: int = typer.Option(..., "--index", help="entry index"),
    policy: Path = POLICY,
    remote: Remote = REMOTE,
) -> None:
    """Prove (and check) that entry INDEX is in the log under its latest signed checkpoint."""
    pol = Policy.load(policy)  # a proof needs the log key only
    remote.check_one_of(export, "an export directory")
    if remote.node is not None:

        async def fetch(c: LedgerClient) -> tuple[bytes, bytes, list[bytes]]:
            note = (await c.checkpoint()).encode()
            size = _pinned(pol, note, "node checkpoint").checkpoint.size
            if not 0 <= index < size:
                raise Fail(f"entry index must be in [0, {size}), got {index}")
            return (
                note,
                (await c.entries(index, index + 1))[0],
                await c.inclusion_proof(index, size),
            )

        note, leaf, proof = remote.run(fetch)
        cp = _pinned(pol, note, "node checkpoint").checkpoint
    else:
        exp, leaves = _export_leaves(export)
        notes = exp.checkpoint_notes()
        if not notes:
            raise Fail("the export holds no checkpoint")
        cp = _pinned(pol, notes[-1][1], notes[-1][0]).checkpoint
        if not 0 <= index < min(cp.size, len(leaves)):
            raise Fail(f"entry index must be in [0, {cp.size}), got {index}")
        leaf = leaves[index]
        proof = merkle.inclusion_proof(index, cp.size, _LeafHashes(leaves[: cp.size]))
    try:
        merkle.verify_inclusion(merkle.hash_leaf(leaf), index, cp.size, proof, cp.root_hash)
        _, record = decode_leaf(leaf)
    except AuditError as exc:
        out.print(f"FAIL inclusion of entry {index} at checkpoint size {cp.size}: {exc}")
        raise typer.Exit(ExitCode.FAILED_CHECK) from None
    out.print(json.dumps(_record_json(record), indent=2, sort_keys=True))
    out.print(
        f"OK entry {index} is included in {cp.origin} at size {cp.size} "
        f"({len(proof)} proof hashes: {' '.join(h.hex()[:16] for h in proof)})"
    )


@app.command()
@with_groups
def consistency(
    old: Path = typer.Argument(..., help="older checkpoint note"),
    new: Path = typer.Argument(..., help="newer checkpoint note"),
    export: Path = typer.Option(None, "--export", help="export directory to prove from"),
    policy: Path = POLICY,
    remote: Remote = REMOTE,
) -> None:
    """Check that checkpoint NEW extends checkpoint OLD (RFC 9162 consistency proof)."""
    pol = Policy.load(policy)
    a = _pinned(pol, old.read_bytes(), old.name).checkpoint
    b = _pinned(pol, new.read_bytes(), new.name).checkpoint
    if a.origin != b.origin:
        raise Fail(f"checkpoints are of different logs: {a.origin!r} and {b.origin!r}")
    if not 0 < a.size <= b.size:
        raise Fail(f"need 0 < old size <= new size, got {a.size} and {b.size}")
    remote.check_one_of(export, "--export")
    if remote.node is not None:
        proof = remote.run(lambda c: c.consistency_proof(a.size, b.size))
    else:
        _, leaves = _export_leaves(export)
        if len(leaves) < b.size:
            raise Fail(f"the export holds {len(leaves)} entries, fewer than {b.size}")
        proof = merkle.consistency_proof(a.size, b.size, _LeafHashes(leaves[: b.size]))
    try:
        merkle.verify_consistency(a.size, b.size, proof, a.root_hash, b.root_hash)
    except AuditError:
        out.print(f"FAIL fork: size {b.size} does not extend size {a.size} of {a.origin}")
        raise typer.Exit(ExitCode.FAILED_CHECK) from None
    out.print(f"OK {a.origin}: size {b.size} is consistent with size {a.size}")


@app.command()
@with_groups
def export(
    out_dir: Path = typer.Argument(..., help="new directory to write"),
    db: Path = typer.Option(None, "--db", help="the node's ledger database (offline)"),
    remote: Remote = REMOTE,
) -> None:
    """Write a self-contained export directory of a log (from its database or a node)."""
    remote.check_one_of(db, "--db")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise Fail(f"export directory {out_dir} exists and is not empty")
    if db is not None:
        export_store(db, out_dir)
    else:
        src = progress_run(None, "fetching", lambda step: _fetch(remote, step)[0])
        origin = ""
        try:
            origin = Checkpoint.parse(parse_note(src.notes[0][1])[0]).origin
            size = Checkpoint.parse(parse_note(src.notes[0][1])[0]).size
        except (InvalidSignature, ValueError):
            raise Fail("node returned a malformed checkpoint") from None
        write_export(out_dir, origin, src.leaves, [(size, src.notes[0][1])], None, src.private)
    exp = ExportDir(out_dir)
    out.print(
        f"exported {exp.count()} entries, {len(exp.private_parts())} private part(s) and "
        f"{len(exp.checkpoint_notes())} checkpoint(s) to {out_dir} (private parts are for "
        "auditors only)"
    )


def _record_json(r: DataUseRecord) -> dict[str, Any]:
    return {k: (dict(v) if k == "details" else v) for k, v in r.__dict__.items()}


@app.command("vkey")
def vkey_cmd(
    source: Path = typer.Argument(
        ..., help="a node's certificate (PEM), or an Ed25519 key file (private or public PEM)"
    ),
    name: str = typer.Option(
        None, "--name", help="key name (default from a certificate: datafed/ledger/<node>)"
    ),
    witness: bool = typer.Option(False, "--witness", help="cosignature (0x04) witness key"),
    ca: Path = typer.Option(None, "--ca", help="check the certificate against this CA (PEM)"),
) -> None:
    """Print the C2SP verifier key to pin in a policy file, from a certificate or key file."""
    found = public_key_of(source.read_bytes(), source.name, witness=witness, ca=ca)
    if name is None and found.name is None:
        raise Fail(f"{source.name} is a key file: give the key name with --name")
    out.print(vkey(name or found.name or "", SIG_COSIGNATURE_V1 if witness else SIG_ED25519,
                   found.key))  # fmt: skip


import audit.cli.read  # noqa: E402 - registers jobs, report, reconcile, lineage (after)
import audit.cli.witnesses  # noqa: E402, F401 - registers witness-export (after)


def main() -> None:
    """Console entry point: one-line errors for expected failures, never a traceback."""
    run_main(app, (Fail, ValueError, AuditError, OSError), markup=False)
