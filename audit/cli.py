"""``datafed-audit``: the auditor's command (verify, prove, consistency, export, reconcile, report).

Trust comes from the auditor's policy file (``--policy``), never from the data under check.
Expected failures print one line and exit non-zero: 1 when verification found problems
(each named), 2 for bad input or an unreachable node.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from audit import merkle
from audit.checkpoint import Checkpoint, OpenedCheckpoint, open_checkpoint
from audit.errors import AuditError, InvalidSignature
from audit.export import ExportDir, MemorySource, export_store, write_export
from audit.note import SIG_COSIGNATURE_V1, SIG_ED25519, parse_note, raw_public_key, vkey
from audit.policy import Policy
from audit.records import DataUseRecord, decode_leaf
from audit.usage import reconcile as _reconcile
from audit.usage import summarize
from audit.verify import LogSource, save_state, verify_log

__all__ = ["app", "main"]

app = typer.Typer(
    help="Verify data-use ledgers: entries, checkpoints, cosignatures, proofs, reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console(soft_wrap=True, highlight=False)

POLICY = typer.Option(..., "--policy", "-p", help="the auditor's policy file (pinned keys)")
NODE = typer.Option(None, "--node", help="node address host:port (online, mTLS)")
NAME = typer.Option(None, "--server-name", help="TLS name of the node (default: from address)")
CA = typer.Option(None, "--ca", help="federation CA certificate (PEM)")
CERT = typer.Option(None, "--cert", help="auditor certificate (PEM)")
KEY = typer.Option(None, "--key", help="auditor TLS private key (PEM)")


class Fail(Exception):
    """A one-line error for the user (exit code 2)."""


def _fetch(
    node: str,
    name: str | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    extra: Callable[[int], None] | None = None,
) -> MemorySource:
    from audit.remote import LedgerClient, mtls_channel

    if not (ca and cert and key):
        raise Fail("--node needs --ca, --cert and --key (mTLS)")

    async def run() -> MemorySource:
        async with mtls_channel(node, ca, cert, key, name) as channel:
            client = LedgerClient(channel)
            note = await client.checkpoint()
            try:
                size = Checkpoint.parse(parse_note(note)[0]).size
            except (InvalidSignature, ValueError):
                raise Fail(f"node {node} returned a malformed checkpoint") from None
            leaves = await client.entries(0, size, extra)
            return MemorySource(leaves, [(f"{node} checkpoint", note.encode())])

    return asyncio.run(run())


def _source(
    path: Path | None,
    node: str | None,
    tls: tuple[Any, ...],
    progress: Callable[[int], None] | None = None,
) -> LogSource:
    if (path is None) == (node is None):
        raise Fail("give exactly one of an export directory or --node")
    if node is not None:
        return _fetch(node, tls[0], tls[1], tls[2], tls[3], extra=progress)
    assert path is not None
    return ExportDir(path)


def _progress_run(total: int | None, label: str, fn: Callable[[Callable[[int], None]], Any]) -> Any:
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        return fn(lambda k: bar.advance(task, k))


@app.command()
def verify(
    export: Path = typer.Argument(None, help="export directory (offline)"),
    policy: Path = POLICY,
    node: str = NODE,
    server_name: str = NAME,
    ca: Path = CA,
    cert: Path = CERT,
    key: Path = KEY,
    checkpoint: list[Path] = typer.Option(
        [], "--checkpoint", help="extra checkpoint note(s) seen elsewhere"
    ),
    deep: bool = typer.Option(False, help="also decode every record canonically"),
) -> None:
    """Verify every entry, the tree, every checkpoint signature, cosignature and the quorum."""
    pol = Policy.load(policy)
    tls = (server_name, ca, cert, key)

    def run(step: Callable[[int], None]) -> Any:
        src = _source(export, node, tls, step)
        if checkpoint:
            extra = [(str(p.name), p.read_bytes()) for p in checkpoint]
            src = MemorySource(
                [x for c in src.leaf_chunks(1 << 16) for x in c],
                src.checkpoint_notes() + extra,
                src.stored_hashes(),
            )
        return verify_log(src, pol, deep=deep, progress=step)

    report = _progress_run(None, "verifying", run)
    for w in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {w}")
    if not report.ok:
        for f in report.findings:
            out.print(f"FAIL {f}")
        out.print(f"{report.origin}: {len(report.findings)} problem(s) in {report.entries} entries")
        raise typer.Exit(1)
    latest = report.latest
    if pol.state is not None and latest is not None:
        save_state(pol.state, report.origin, latest)
    size = latest.size if latest else 0
    out.print(
        f"OK {report.origin}: {report.entries} entries, {len(report.checkpoints)} "
        f"checkpoint(s) up to size {size}, {len(report.published)} with witness quorum"
    )


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
    """A HashReader over all leaf hashes (for proofs computed from an export)."""

    def __init__(self, hashes: list[bytes]) -> None:
        self.hashes = hashes

    def get_hashes(self, ids: Any) -> list[bytes]:
        return [merkle.perfect_root(self.hashes[i << lvl : (i + 1) << lvl]) for lvl, i in ids]


def _export_leaves(path: Path) -> tuple[ExportDir, list[bytes]]:
    exp = ExportDir(path)
    return exp, exp.leaves()


@app.command()
def prove(
    export: Path = typer.Argument(None, help="export directory (offline)"),
    index: int = typer.Option(..., "--index", help="entry index"),
    policy: Path = POLICY,
    node: str = NODE,
    server_name: str = NAME,
    ca: Path = CA,
    cert: Path = CERT,
    key: Path = KEY,
) -> None:
    """Prove (and check) that entry INDEX is in the log under its latest signed checkpoint."""
    pol = Policy.load(policy)
    if (export is None) == (node is None):
        raise Fail("give exactly one of an export directory or --node")
    if node is not None:
        from audit.remote import LedgerClient, mtls_channel

        if not (ca and cert and key):
            raise Fail("--node needs --ca, --cert and --key (mTLS)")

        async def fetch() -> tuple[bytes, bytes, list[bytes]]:
            async with mtls_channel(node, ca, cert, key, server_name) as ch:
                c = LedgerClient(ch)
                note = (await c.checkpoint()).encode()
                size = _pinned(pol, note, "node checkpoint").checkpoint.size
                if not 0 <= index < size:
                    raise Fail(f"entry index must be in [0, {size}), got {index}")
                return (
                    note,
                    (await c.entries(index, index + 1))[0],
                    await c.inclusion_proof(index, size),
                )

        note, leaf, proof = asyncio.run(fetch())
        cp = _pinned(pol, note, "node checkpoint").checkpoint
    else:
        exp, leaves = _export_leaves(export)
        notes = exp.checkpoint_notes()
        if not notes:
            raise Fail("the export holds no checkpoint")
        cp = _pinned(pol, notes[-1][1], notes[-1][0]).checkpoint
        if not 0 <= index < min(cp.size, len(leaves)):
            raise Fail(f"entry index must be in [0, {cp.size}), got {index}")
        hashes = [merkle.hash_leaf(x) for x in leaves[: cp.size]]
        leaf, proof = leaves[index], merkle.inclusion_proof(index, cp.size, _LeafHashes(hashes))
    try:
        merkle.verify_inclusion(merkle.hash_leaf(leaf), index, cp.size, proof, cp.root_hash)
        _, record = decode_leaf(leaf)
    except AuditError as exc:
        out.print(f"FAIL inclusion of entry {index} at checkpoint size {cp.size}: {exc}")
        raise typer.Exit(1) from None
    out.print(json.dumps(_record_json(record), indent=2, sort_keys=True))
    out.print(
        f"OK entry {index} is included in {cp.origin} at size {cp.size} "
        f"({len(proof)} proof hashes: {' '.join(h.hex()[:16] for h in proof)})"
    )


@app.command()
def consistency(
    old: Path = typer.Argument(..., help="older checkpoint note"),
    new: Path = typer.Argument(..., help="newer checkpoint note"),
    export: Path = typer.Option(None, "--export", help="export directory to prove from"),
    policy: Path = POLICY,
    node: str = NODE,
    server_name: str = NAME,
    ca: Path = CA,
    cert: Path = CERT,
    key: Path = KEY,
) -> None:
    """Check that checkpoint NEW extends checkpoint OLD (RFC 9162 consistency proof)."""
    pol = Policy.load(policy)
    a = _pinned(pol, old.read_bytes(), old.name).checkpoint
    b = _pinned(pol, new.read_bytes(), new.name).checkpoint
    if a.origin != b.origin:
        raise Fail(f"checkpoints are of different logs: {a.origin!r} and {b.origin!r}")
    if not 0 < a.size <= b.size:
        raise Fail(f"need 0 < old size <= new size, got {a.size} and {b.size}")
    if (export is None) == (node is None):
        raise Fail("give exactly one of --export or --node")
    if node is not None:
        from audit.remote import LedgerClient, mtls_channel

        if not (ca and cert and key):
            raise Fail("--node needs --ca, --cert and --key (mTLS)")

        async def fetch() -> list[bytes]:
            async with mtls_channel(node, ca, cert, key, server_name) as ch:
                return await LedgerClient(ch).consistency_proof(a.size, b.size)

        proof = asyncio.run(fetch())
    else:
        _, leaves = _export_leaves(export)
        if len(leaves) < b.size:
            raise Fail(f"the export holds {len(leaves)} entries, fewer than {b.size}")
        hashes = [merkle.hash_leaf(x) for x in leaves[: b.size]]
        proof = merkle.consistency_proof(a.size, b.size, _LeafHashes(hashes))
    try:
        merkle.verify_consistency(a.size, b.size, proof, a.root_hash, b.root_hash)
    except AuditError:
        out.print(f"FAIL fork: size {b.size} does not extend size {a.size} of {a.origin}")
        raise typer.Exit(1) from None
    out.print(f"OK {a.origin}: size {b.size} is consistent with size {a.size}")


@app.command()
def export(
    out_dir: Path = typer.Argument(..., help="new directory to write"),
    db: Path = typer.Option(None, "--db", help="the node's ledger database (offline)"),
    node: str = NODE,
    server_name: str = NAME,
    ca: Path = CA,
    cert: Path = CERT,
    key: Path = KEY,
) -> None:
    """Write a self-contained export directory of a log (from its database or a node)."""
    if (db is None) == (node is None):
        raise Fail("give exactly one of --db or --node")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise Fail(f"export directory {out_dir} exists and is not empty")
    if db is not None:
        export_store(db, out_dir)
    else:
        src = _progress_run(
            None, "fetching", lambda step: _fetch(node, server_name, ca, cert, key, step)
        )
        origin = ""
        try:
            origin = Checkpoint.parse(parse_note(src.notes[0][1])[0]).origin
            size = Checkpoint.parse(parse_note(src.notes[0][1])[0]).size
        except (InvalidSignature, ValueError):
            raise Fail("node returned a malformed checkpoint") from None
        write_export(out_dir, origin, src.leaves, [(size, src.notes[0][1])])
    exp = ExportDir(out_dir)
    out.print(
        f"exported {exp.count()} entries and {len(exp.checkpoint_notes())} checkpoint(s) "
        f"to {out_dir}"
    )


def _records(paths: list[Path]) -> dict[str, list[DataUseRecord]]:
    logs: dict[str, list[DataUseRecord]] = {}
    exports = [ExportDir(p) for p in paths]
    total = sum(e.count() for e in exports)

    def run(step: Callable[[int], None]) -> None:
        for e in exports:
            recs: list[DataUseRecord] = []
            for chunk in e.leaf_chunks(4096):
                for i, leaf in enumerate(chunk):
                    try:
                        recs.append(decode_leaf(leaf)[1])
                    except AuditError:
                        raise Fail(
                            f"{e.path.name}: entry {len(recs) + i} is malformed; run verify"
                        ) from None
                step(len(chunk))
            node = recs[0].node if recs else (e.origin or e.path.name)
            logs.setdefault(node, []).extend(recs)

    _progress_run(total, "reading records", run)
    return logs


def _record_json(r: DataUseRecord) -> dict[str, Any]:
    return {k: (dict(v) if k == "details" else v) for k, v in r.__dict__.items()}


@app.command()
def reconcile(
    job_id: str = typer.Argument(..., help="the job to reconcile"),
    exports: list[Path] = typer.Argument(..., help="export directories of the nodes"),
) -> None:
    """Check that every node of a job recorded it, with matching requester, purpose and rounds."""
    logs = _records(exports)
    problems = _reconcile(job_id, logs)
    table = Table(title=f"job {job_id}")
    for col in ("node", "entries", "decisions"):
        table.add_column(col)
    for node, recs in sorted(logs.items()):
        mine = [r for r in recs if r.job_id == job_id]
        table.add_row(node, str(len(mine)), ", ".join(sorted({r.decision for r in mine})) or "-")
    out.print(table)
    for p in problems:
        out.print(f"FAIL {p}")
    if problems:
        raise typer.Exit(1)
    out.print(f"OK job {job_id} reconciles across {len(logs)} node(s)")


@app.command()
def report(
    exports: list[Path] = typer.Argument(..., help="export directories"),
    by: list[str] = typer.Option(
        ["requester", "dataset", "purpose"], "--by", help="group by field"
    ),
) -> None:
    """Print a human-readable report of data use: entries, decisions and epsilon spent."""
    for field_name in by:
        if field_name not in DataUseRecord.__dataclass_fields__ or field_name == "details":
            raise Fail(f"cannot group by {field_name!r}")
    logs = _records(exports)
    records = [r for recs in logs.values() for r in recs]
    for field_name in by:
        table = Table(title=f"data use by {field_name}")
        for col in (field_name, "entries", "approved", "denied", "released", "epsilon spent"):
            table.add_column(col, justify="left" if col == field_name else "right")
        for row in summarize(records, field_name):
            d = row.decisions
            table.add_row(
                row.key,
                str(row.entries),
                str(d["approved"]),
                str(d["denied"]),
                str(d["released"]),
                f"{row.epsilon:.4g}",
            )
        out.print(table)


@app.command()
def lineage(
    model_sha256: str = typer.Argument(..., help="the model's SHA-256 (from the training result)"),
    exports: list[Path] = typer.Argument(..., help="ledger export directories of the nodes"),
) -> None:
    """Trace a model through the ledgers: its job, every round, participant and decision."""
    from audit.lineage import format_lineage, model_lineage

    found = model_lineage(model_sha256.strip().lower(), _records(exports))
    out.print(format_lineage(found), highlight=False)
    if not found.ok:
        raise typer.Exit(1)


@app.command("vkey")
def vkey_cmd(
    key_file: Path = typer.Argument(..., help="Ed25519 key (PEM, private or public)"),
    name: str = typer.Option(..., "--name", help="key name: the log origin or witness name"),
    witness: bool = typer.Option(False, "--witness", help="cosignature (0x04) key"),
) -> None:
    """Print the C2SP verifier key to pin in a policy file."""
    data = key_file.read_bytes()
    key: Ed25519PrivateKey | Ed25519PublicKey
    try:
        loaded: Any = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        try:
            loaded = serialization.load_pem_public_key(data)
        except ValueError:
            raise Fail(f"{key_file.name} is not a PEM Ed25519 key") from None
    if not isinstance(loaded, (Ed25519PrivateKey, Ed25519PublicKey)):
        raise Fail(f"{key_file.name} is not an Ed25519 key")
    key = loaded
    out.print(vkey(name, SIG_COSIGNATURE_V1 if witness else SIG_ED25519, raw_public_key(key)))


def main() -> None:
    """Console entry point: one-line errors for expected failures, never a traceback."""
    try:
        app()
    except (Fail, ValueError, AuditError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
