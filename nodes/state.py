"""Backing up and restoring a node's state: the ledger (and with it budgets and history).

A node's ``state_dir`` holds everything it must not forget: ``ledger.sqlite`` (every
data use; the privacy budgets and used job ids are replayed from it at start),
``nonces.sqlite`` (the replay cache), ``witness.sqlite`` (the peers' checkpoints it
cosigned) and ``collect/<task>.sqlite`` (collection windows).

:func:`backup` copies each SQLite file with SQLite's online backup API -- a consistent
snapshot per file, also while the node serves -- into a ``.tar.gz`` with a manifest: the
node, its ledger's origin, size, root hash and signed checkpoint, and each file's SHA-256.
The archive is verified once written.  :func:`restore` refuses a node that is serving, an
archive whose files do not match its manifest or that belongs to another node, and one
whose ledger is shorter than the ledger in place (that would forget entries and the
epsilon they spent) unless forced; it verifies the restored ledger -- every signed
checkpoint verifies with this node's key and matches the entries, the root is the
manifest's -- and replays the budgets before it swaps the folder in (the old one is kept
beside it).  docs/operator.md ("Backup and restore").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from datafed.errors import ConfigError
from nodes.config import NodeConfig

__all__ = ["StateSummary", "backup", "restore", "verify_state"]

#: Files of a state folder never backed up: the serving process's own.
_SKIP_SUFFIXES = (".lock", ".pid", "-wal", "-shm", "-journal", ".tmp", ".request")
MANIFEST = "manifest.json"


@dataclass
class StateSummary:
    """What a verified state holds: the ledger's size, root and signed size; budgets spent."""

    node: str
    entries: int
    root_hash: str
    signed_size: int
    #: ``dataset -> epsilon spent`` (the most any one budget of it spent).
    spent: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the operator."""
        budgets = ", ".join(f"{d} {e:g}" for d, e in sorted(self.spent.items())) or "none"
        return (
            f"node {self.node}: ledger {self.entries} entries, root {self.root_hash[:16]}..., "
            f"signed up to {self.signed_size}; epsilon spent per dataset: {budgets}"
        )


def _files(state: Path) -> list[Path]:
    return sorted(
        p
        for p in state.rglob("*")
        if p.is_file() and not p.name.endswith(_SKIP_SUFFIXES) and p.name != "reload.json"
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _copy(src: Path, dst: Path) -> None:
    """A consistent copy of one file: SQLite's online backup for a database."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix != ".sqlite":
        shutil.copy2(src, dst)
        return
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        target.close()
        source.close()


def verify_state(cfg: NodeConfig, state: Path) -> StateSummary:
    """Open the ledger under ``state`` with this node's key and replay its budgets.

    Raises
    ------
    ConfigError
        No ledger, or one whose checkpoints do not verify with this node's key or do not
        match its entries (altered, rolled back, or another node's).
    """
    from audit import Ledger, ledger_origin
    from audit.errors import AuditError
    from audit.records import decode_leaf
    from datafed.errors import DatafedError
    from datafed.pki.ca import load_signing_key
    from nodes.policy.budget import LedgerBudget, dp_limits, recorded_delta, shared_budgets

    path = state / "ledger.sqlite"
    if not path.is_file():
        raise ConfigError(f"no ledger in {state}")
    key = load_signing_key(cfg.tls.signing_key)
    try:
        ledger = Ledger.open(path, ledger_origin(cfg.node.name), key)
    except (AuditError, DatafedError, ValueError) as exc:
        raise ConfigError(f"the ledger in {state} does not verify: {exc}") from None
    try:
        head = ledger.head()
        budget = LedgerBudget(dp_limits(cfg), shared_budgets(cfg))
        for start in range(0, head.size, 1024):
            for leaf in ledger.leaves(start, min(head.size, start + 1024)):
                rec = decode_leaf(leaf)[1]
                budget.replay(rec.requester, rec.dataset, rec.epsilon, recorded_delta(rec.details))
        spent = {d.name: budget.most_spent(d.name) for d in cfg.datasets if d.policy.dp}
        return StateSummary(
            cfg.node.name, head.size, head.root_hash.hex(), ledger.signed_size, spent
        )
    finally:
        ledger.close()


def backup(cfg: NodeConfig, out: Path) -> StateSummary:
    """Write a verified ``.tar.gz`` of the node's state to ``out``; return what it holds."""
    from datafed import __version__

    state = cfg.node.state_dir
    if not (state / "ledger.sqlite").is_file():
        raise ConfigError(f"no ledger in {state}: nothing to back up")
    with tempfile.TemporaryDirectory(prefix="datafed-backup-") as tmp:
        copy = Path(tmp) / "state"
        for src in _files(state):
            _copy(src, copy / src.relative_to(state))
        summary = verify_state(cfg, copy)
        manifest = {
            "node": cfg.node.name,
            "datafed": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "ledger": {
                "entries": summary.entries,
                "root_hash": summary.root_hash,
                "signed_size": summary.signed_size,
            },
            "files": {p.relative_to(copy).as_posix(): _sha256(p) for p in _files(copy)},
        }
        (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=2))
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(Path(tmp) / MANIFEST, MANIFEST)
            tar.add(copy, "state")
        os.replace(partial, out)
    return summary


def _unpack(cfg: NodeConfig, archive: Path, into: Path) -> dict[str, object]:
    """Extract ``archive`` into ``into`` and check it against its manifest."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(into, filter="data")  # no links out, no absolute paths
    except (OSError, tarfile.TarError) as exc:
        raise ConfigError(f"{archive}: not a node backup ({exc})") from None
    try:
        manifest: dict[str, object] = json.loads((into / MANIFEST).read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{archive}: no readable {MANIFEST}") from None
    if manifest.get("node") != cfg.node.name:
        raise ConfigError(f"{archive} is node {manifest.get('node')!r}'s, not {cfg.node.name!r}'s")
    files = manifest.get("files", {})
    assert isinstance(files, dict)
    present = {p.relative_to(into / "state").as_posix() for p in _files(into / "state")}
    if present != set(files):
        raise ConfigError(f"{archive}: its files differ from its manifest's")
    for name, digest in files.items():
        if _sha256(into / "state" / name) != digest:
            raise ConfigError(f"{archive}: {name} does not match its SHA-256 in the manifest")
    return manifest


def restore(cfg: NodeConfig, archive: Path, *, pid_alive: bool, force: bool) -> StateSummary:
    """Verify ``archive`` and make it the node's state (module docs); return what it holds."""
    if pid_alive:
        raise ConfigError(f"node {cfg.node.name} is serving: stop it before restoring")
    state = cfg.node.state_dir
    state.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=state.parent) as tmp:
        manifest = _unpack(cfg, archive, Path(tmp))
        summary = verify_state(cfg, Path(tmp) / "state")
        ledger = manifest.get("ledger", {})
        assert isinstance(ledger, dict)
        if (summary.entries, summary.root_hash) != (ledger.get("entries"), ledger.get("root_hash")):
            raise ConfigError(f"{archive}: the ledger is not the one its manifest names")
        if (state / "ledger.sqlite").is_file() and not force:
            try:
                current = verify_state(cfg, state).entries
            except ConfigError:
                current = 0  # the ledger in place is damaged: the backup replaces it
            if current > summary.entries:
                raise ConfigError(
                    f"the ledger in place has {current} entries, the backup {summary.entries}: "
                    f"restoring would forget {current - summary.entries} entries and the "
                    "epsilon they spent (pass --force if the ledger in place is lost)"
                )
        if state.exists():
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            state.rename(state.with_name(f"{state.name}.replaced-{stamp}"))
        (Path(tmp) / "state").rename(state)
    return summary
