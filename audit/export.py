"""Export directories: a self-contained copy of a log that an auditor can take away.

Layout (format ``datafed-audit-export/2``; version 1 lacked ``private.bin``)::

    MANIFEST.json              origin, entry count, checkpoint sizes, file digests (informative)
    entries.bin                every leaf as u32 length || leaf bytes, in index order
    hashes.bin                 the stored leaf hashes (32 bytes each), when exported from a store
    private.bin                private parts: u64 index || u32 length || opening, by index
                               (:mod:`audit.private`; for auditors only, never for analysts)
    checkpoints/<size>.note    every checkpoint the log signed, with its cosignatures

Nothing in an export is trusted: the verifier pins origins and keys from its own policy.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from audit.sqlite_store import SQLiteStore

__all__ = [
    "FORMAT",
    "ExportDir",
    "MemorySource",
    "export_store",
    "read_private",
    "write_export",
]

FORMAT = "datafed-audit-export/2"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_CHUNK = 4096


def _fresh_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"export directory {out} exists and is not empty")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)


def write_export(
    out: Path,
    origin: str,
    leaves: Sequence[bytes],
    notes: Sequence[tuple[int, bytes]],
    hashes: Sequence[bytes] | None = None,
    private: Mapping[int, bytes] | None = None,
) -> Path:
    """Write an export directory from leaves, notes, stored hashes and private parts.

    ``private`` maps entry indexes to their private-part openings.
    """
    out = Path(out)
    _fresh_dir(out)
    with open(out / "entries.bin", "wb") as f:
        for leaf in leaves:
            f.write(_U32.pack(len(leaf)) + leaf)
    with open(out / "private.bin", "wb") as f:
        _write_private(f, private or {})
    if hashes is not None:
        (out / "hashes.bin").write_bytes(b"".join(hashes))
    for size, note in notes:
        (out / "checkpoints" / f"{size}.note").write_bytes(note)
    _manifest(out, origin, len(leaves), [s for s, _ in notes])
    return out


def export_store(db: Path, out: Path) -> Path:
    """Export the SQLite ledger at ``db`` (read-only; the node may keep running)."""
    out = Path(out)
    if not Path(db).is_file():
        raise ValueError(f"ledger database not found: {db}")
    store = SQLiteStore(Path(db), readonly=True)
    try:
        origin = (store.get_meta("origin") or b"").decode()
        _fresh_dir(out)
        count = 0
        with open(out / "entries.bin", "wb") as fe, open(out / "hashes.bin", "wb") as fh:
            start = 0
            while True:
                rows = store.get_entries_after(start, _CHUNK)
                if not rows:
                    break
                for _, leaf, h in rows:
                    fe.write(_U32.pack(len(leaf)) + leaf)
                    fh.write(h)
                count += len(rows)
                start = rows[-1][0] + 1
        with open(out / "private.bin", "wb") as f:
            for lo in range(0, count, _CHUNK * 16):
                _write_private(f, store.get_private(lo, lo + _CHUNK * 16))
        notes = store.get_checkpoints()
        for size, note in notes:
            (out / "checkpoints" / f"{size}.note").write_bytes(note)
    finally:
        store.close()
    _manifest(out, origin, count, [s for s, _ in notes])
    return out


def _write_private(f: BinaryIO, parts: Mapping[int, bytes]) -> None:
    for index in sorted(parts):
        f.write(_U64.pack(index) + _U32.pack(len(parts[index])) + parts[index])


def read_private(data: bytes) -> dict[int, bytes]:
    """Parse ``private.bin`` into ``{index: opening}``; raise ValueError if malformed."""
    parts: dict[int, bytes] = {}
    pos, end, last = 0, len(data), -1
    while pos < end:
        if pos + 12 > end:
            raise ValueError(f"private.bin is truncated at byte {pos}")
        (index,) = _U64.unpack_from(data, pos)
        (n,) = _U32.unpack_from(data, pos + 8)
        if pos + 12 + n > end:
            raise ValueError(f"private.bin is truncated at byte {pos}")
        if index <= last:
            raise ValueError(f"private.bin is not in index order at entry {index}")
        parts[index] = data[pos + 12 : pos + 12 + n]
        pos, last = pos + 12 + n, index
    return parts


def _manifest(out: Path, origin: str, count: int, sizes: list[int]) -> None:
    files = (out / "entries.bin", out / "hashes.bin", out / "private.bin")
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.exists()}
    manifest = {
        "format": FORMAT,
        "origin": origin,
        "entries": count,
        "checkpoints": sizes,
        "sha256": digests,
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for p in (*files, out / "MANIFEST.json"):
        if p.exists():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    for d in (out / "checkpoints", out):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class MemorySource:
    """A log held in memory (e.g. fetched from a node): leaves, checkpoint notes, hashes."""

    leaves: list[bytes]
    notes: list[tuple[str, bytes]]
    hashes: bytes | None = None
    origin: str = ""
    private: dict[int, bytes] = field(default_factory=dict)

    def checkpoint_notes(self) -> list[tuple[str, bytes]]:
        """Return ``(label, note)`` for every checkpoint."""
        return list(self.notes)

    def count(self) -> int:
        """Return the number of leaves."""
        return len(self.leaves)

    def leaf_chunks(self, chunk: int) -> Iterator[list[bytes]]:
        """Yield the leaves in lists of ``chunk``."""
        for i in range(0, len(self.leaves), chunk):
            yield self.leaves[i : i + chunk]

    def stored_hashes(self) -> bytes | None:
        """Return the stored leaf hashes, if any."""
        return self.hashes

    def private_parts(self) -> dict[int, bytes]:
        """Return the private-part openings by entry index."""
        return dict(self.private)


class ExportDir:
    """Read an export directory (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not (self.path / "entries.bin").is_file():
            raise ValueError(f"not an export directory (no entries.bin): {self.path}")
        self._data = (self.path / "entries.bin").read_bytes()
        try:
            manifest = json.loads((self.path / "MANIFEST.json").read_text())
            self.origin = str(manifest.get("origin", ""))
        except (OSError, ValueError, AttributeError):
            self.origin = ""
        self._count: int | None = None

    def checkpoint_notes(self) -> list[tuple[str, bytes]]:
        """Return ``(file name, note)`` for every checkpoint file, by size where numeric."""
        files = sorted(
            (self.path / "checkpoints").glob("*.note"),
            key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.name),
        )
        return [(f"checkpoints/{p.name}", p.read_bytes()) for p in files]

    def count(self) -> int:
        """Return the number of leaves in ``entries.bin``."""
        if self._count is None:
            self._count = sum(len(c) for c in self.leaf_chunks(1 << 16))
        return self._count

    def leaf_chunks(self, chunk: int) -> Iterator[list[bytes]]:
        """Yield the leaves in lists of ``chunk``; a torn tail yields what can be read.

        Raises
        ------
        ValueError
            If ``entries.bin`` ends inside a record (truncated file).
        """
        data, pos, end = self._data, 0, len(self._data)
        unpack = _U32.unpack_from
        out: list[bytes] = []
        while pos < end:
            if pos + 4 > end:
                raise ValueError(f"entries.bin is truncated at byte {pos}")
            (n,) = unpack(data, pos)
            if pos + 4 + n > end:
                raise ValueError(f"entries.bin is truncated at byte {pos}")
            out.append(data[pos + 4 : pos + 4 + n])
            pos += 4 + n
            if len(out) == chunk:
                yield out
                out = []
        if out:
            yield out

    def stored_hashes(self) -> bytes | None:
        """Return ``hashes.bin`` if present."""
        p = self.path / "hashes.bin"
        return p.read_bytes() if p.is_file() else None

    def private_parts(self) -> dict[int, bytes]:
        """Return the openings in ``private.bin`` by index (none if the file is absent).

        Raises
        ------
        ValueError
            If ``private.bin`` is malformed.
        """
        p = self.path / "private.bin"
        return read_private(p.read_bytes()) if p.is_file() else {}

    def leaves(self) -> list[bytes]:
        """Return every leaf (in memory)."""
        return [leaf for c in self.leaf_chunks(1 << 16) for leaf in c]
