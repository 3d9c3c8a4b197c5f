"""A witness: cosigns a log's checkpoint only if it is consistent with what it cosigned before.

Per c2sp.org/tlog-witness semantics: the witness keeps, per origin, every checkpoint it
cosigned (persisted with fsync *before* it answers).  A request names the size the log
believes the witness holds (``old_size``) and a consistency proof from there; the witness
refuses with its own size if ``old_size`` is stale, refuses an invalid proof, and when it
sees a second, different signed checkpoint for a size it already cosigned it keeps both
notes as fork evidence.  Split views thus cannot collect a quorum of cosignatures.

With each checkpoint it keeps the note it vouches for: the log's signature and its own
cosignature.  :meth:`WitnessStore.newest` (served to auditors by a node's
``GetWitnessedCheckpoints``) and :func:`read_newest` (read-only, from the file, for
``datafed-audit witness-export --db``) return the newest of those per log, so an auditor can
check that a log is not shorter than, nor inconsistent with, what this witness cosigned.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import audit.merkle as merkle
from audit.checkpoint import Checkpoint, cosign, open_checkpoint, witness_verifier
from audit.errors import InvalidProof, InvalidSignature, WitnessRefusal
from audit.note import NoteSignature, Verifier, check_key_name, format_note, parse_note

__all__ = ["ForkEvidence", "WitnessStore", "read_newest"]

#: ``witnessed``: the checkpoint with the log's signature and this witness's cosignature
#: (NULL in rows written before it was kept; :meth:`WitnessStore.newest` fills it in).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS cosigned (origin TEXT NOT NULL, size INTEGER NOT NULL,
    root BLOB NOT NULL, note BLOB NOT NULL, witnessed BLOB, PRIMARY KEY (origin, size));
CREATE TABLE IF NOT EXISTS evidence (id INTEGER PRIMARY KEY, origin TEXT NOT NULL,
    size INTEGER NOT NULL, note_a BLOB NOT NULL, note_b BLOB NOT NULL, seen_ms INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class ForkEvidence:
    """Two validly signed checkpoints of ``origin`` with the same ``size`` and different roots."""

    origin: str
    size: int
    note_a: str
    note_b: str
    seen_ms: int


class WitnessStore:
    """A witness's keys, the logs it witnesses (pinned) and its persisted state.

    Parameters
    ----------
    path : Path
        SQLite file of the witness state (created if missing).
    name : str
        The witness's key name (a schema-less URL, e.g. ``datafed.example/regulator``).
    signing_key : Ed25519PrivateKey
        The witness's cosigning key.
    logs : Iterable[Verifier]
        The logs it witnesses: their origin (key name) and pinned public key.
    clock : Callable[[], float]
        Seconds since the epoch, for cosignature timestamps.
    """

    def __init__(
        self,
        path: Path,
        name: str,
        signing_key: Ed25519PrivateKey,
        logs: Iterable[Verifier],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = check_key_name(name)
        self._key = signing_key
        self._logs = {v.name: v for v in logs}
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(cosigned)")}
        if "witnessed" not in columns:  # a state file from before cosigned notes were kept
            self._db.execute("ALTER TABLE cosigned ADD COLUMN witnessed BLOB")

    @property
    def verifier(self) -> Verifier:
        """This witness's cosignature verifier (type 0x04)."""
        return witness_verifier(self.name, self._key)

    def latest(self, origin: str) -> tuple[int, bytes, str] | None:
        """Return ``(size, root, note)`` of the largest checkpoint cosigned for ``origin``."""
        with self._lock:
            return self._latest(origin)

    def _latest(self, origin: str) -> tuple[int, bytes, str] | None:
        row = self._db.execute(
            "SELECT size, root, note FROM cosigned WHERE origin = ? ORDER BY size DESC LIMIT 1",
            (origin,),
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]).decode())

    def evidence(self) -> list[ForkEvidence]:
        """Return every fork evidence kept, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT origin, size, note_a, note_b, seen_ms FROM evidence ORDER BY id"
            ).fetchall()
        return [
            ForkEvidence(o, s, bytes(a).decode(), bytes(b).decode(), t) for o, s, a, b, t in rows
        ]

    def add_checkpoint(
        self, note: str | bytes, old_size: int, proof: Sequence[bytes]
    ) -> NoteSignature:
        """Cosign ``note`` if it extends the last checkpoint cosigned for its origin.

        Parameters
        ----------
        note : str or bytes
            The log's signed checkpoint.
        old_size : int
            The size the caller believes this witness last cosigned (0 for none).
        proof : Sequence[bytes]
            Consistency proof from ``old_size`` to the checkpoint's size.

        Returns
        -------
        NoteSignature
            The cosignature line, returned only after the new state is durable.

        Raises
        ------
        WitnessRefusal
            ``unknown-origin``, ``bad-signature``, ``bad-request``, ``conflict`` (stale
            ``old_size``; carries this witness's size), ``bad-proof`` or ``fork``.
        """
        if isinstance(old_size, bool) or not isinstance(old_size, int) or old_size < 0:
            raise WitnessRefusal("bad-request", 0)
        cp, text = self._open(note)
        with self._lock:
            latest = self._latest(cp.origin)
            held = latest[0] if latest else 0
            self._check_fork(cp, text, held)
            if old_size != held:
                raise WitnessRefusal("conflict", held)
            if cp.size < old_size:
                raise WitnessRefusal("bad-request", held)
            self._check_proof(cp, old_size, proof, latest, held)
            sig = cosign(cp.text(), self.name, self._key, int(self._clock()))
            witnessed = self._witnessed(cp, text, sig)
            self._db.execute(
                "INSERT INTO cosigned VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin, size) "
                "DO UPDATE SET witnessed = excluded.witnessed",
                (cp.origin, cp.size, cp.root_hash, text.encode(), witnessed),
            )  # autocommit with synchronous=FULL: durable before we answer
        return sig

    def _witnessed(self, cp: Checkpoint, note: str, sig: NoteSignature) -> bytes:
        """The note this witness vouches for: the log's signature lines and ``sig``."""
        log = self._logs[cp.origin]
        mine = [s for s in parse_note(note)[1] if log.matches(s)]
        return format_note(cp.text(), [*mine, sig]).encode()

    def newest(self, origins: Iterable[str] | None = None) -> dict[str, str]:
        """The newest checkpoint cosigned for each of ``origins`` (default: every log held).

        Each note carries the log's signature and this witness's cosignature (a row kept
        from before cosigned notes were stored is cosigned now, and stored).  Origins this
        witness never cosigned are left out.
        """
        with self._lock:
            rows = _newest_rows(self._db, origins)
            out: dict[str, str] = {}
            for origin, size, note, witnessed in rows:
                if witnessed is None and origin in self._logs:
                    cp = Checkpoint.parse(parse_note(note)[0])
                    sig = cosign(cp.text(), self.name, self._key, int(self._clock()))
                    witnessed = self._witnessed(cp, bytes(note).decode(), sig)
                    self._db.execute(
                        "UPDATE cosigned SET witnessed = ? WHERE origin = ? AND size = ?",
                        (witnessed, origin, size),
                    )
                if witnessed is not None:
                    out[origin] = bytes(witnessed).decode()
        return out

    def _open(self, note: str | bytes) -> tuple[Checkpoint, str]:
        try:
            text, _ = parse_note(note)
            origin = Checkpoint.parse(text).origin
        except (InvalidSignature, ValueError):
            raise WitnessRefusal("bad-request", 0) from None
        log = self._logs.get(origin)
        if log is None:
            raise WitnessRefusal("unknown-origin", 0)
        try:
            opened = open_checkpoint(note, log)
        except InvalidSignature:
            raise WitnessRefusal("bad-signature", 0) from None
        return opened.checkpoint, opened.note

    def _check_fork(self, cp: Checkpoint, note: str, held: int) -> None:
        row = self._db.execute(
            "SELECT root, note FROM cosigned WHERE origin = ? AND size = ?", (cp.origin, cp.size)
        ).fetchone()
        if row is not None and bytes(row[0]) != cp.root_hash:
            self._db.execute(
                "INSERT INTO evidence (origin, size, note_a, note_b, seen_ms) VALUES (?,?,?,?,?)",
                (cp.origin, cp.size, bytes(row[1]), note.encode(), int(self._clock() * 1000)),
            )
            raise WitnessRefusal("fork", held)

    def _check_proof(
        self,
        cp: Checkpoint,
        old_size: int,
        proof: Sequence[bytes],
        latest: tuple[int, bytes, str] | None,
        held: int,
    ) -> None:
        if old_size == 0 or latest is None:
            if proof:
                raise WitnessRefusal("bad-proof", held)
            return
        try:
            merkle.verify_consistency(old_size, cp.size, list(proof), latest[1], cp.root_hash)
        except InvalidProof:
            raise WitnessRefusal("bad-proof", held) from None

    def close(self) -> None:
        """Close the state database."""
        with self._lock:
            self._db.close()


def _newest_rows(
    db: sqlite3.Connection, origins: Iterable[str] | None, witnessed: str = "witnessed"
) -> list[Any]:
    """``(origin, size, note, witnessed)`` of the largest checkpoint held per origin."""
    if origins is None:
        origins = [o for (o,) in db.execute("SELECT DISTINCT origin FROM cosigned ORDER BY 1")]
    rows = []
    for origin in dict.fromkeys(origins):
        row = db.execute(
            f"SELECT origin, size, note, {witnessed} FROM cosigned WHERE origin = ? "
            "ORDER BY size DESC LIMIT 1",
            (origin,),
        ).fetchone()
        if row is not None:
            rows.append(row)
    return rows


def read_newest(path: Path) -> tuple[dict[str, str], list[str]]:
    """Read a witness's state file without its key: the newest cosigned note per origin.

    Returns the notes (as :meth:`WitnessStore.newest`), and the origins whose newest
    checkpoint was cosigned before cosigned notes were kept (the witness cosigns them the
    next time its node serves them, or asks for them online).

    Raises
    ------
    ValueError
        If ``path`` is not a witness state database.
    """
    if not Path(path).is_file():
        raise ValueError(f"witness state database not found: {path}")
    try:
        db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(cosigned)")}
            if not {"origin", "size", "note"} <= columns:
                raise ValueError(f"{Path(path).name} is not a witness state database")
            rows = _newest_rows(db, None, "witnessed" if "witnessed" in columns else "NULL")
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ValueError(f"cannot read witness state {Path(path).name}: {exc}") from None
    notes = {o: bytes(w).decode() for o, _, _, w in rows if w is not None}
    return notes, [o for o, _, _, w in rows if w is None]
