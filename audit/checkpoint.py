r"""Checkpoints (c2sp.org/tlog-checkpoint) and witness cosignatures (c2sp.org/tlog-cosignature).

A checkpoint is a signed note whose text is ``origin\nsize\nbase64(root)\n``; the log signs
it with its Ed25519 key named after the origin.  A witness adds a ``cosignature/v1`` line:
type 0x04, signature = ``u64 timestamp || Ed25519(cosignature/v1\ntime <t>\n || text)``.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.errors import InvalidSignature
from audit.note import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    NoteSignature,
    Verifier,
    format_note,
    key_id,
    parse_note,
    raw_public_key,
    sign_line,
)

__all__ = [
    "Checkpoint",
    "OpenedCheckpoint",
    "cosign",
    "cosignature_message",
    "log_verifier",
    "open_checkpoint",
    "sign_checkpoint",
    "witness_verifier",
]

_COSIG_HEADER = "cosignature/v1\n"  # tlog-cosignature, "Ed25519 signed message"
_U64 = struct.Struct(">Q")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: ``origin``, ``size`` and 32-byte RFC 9162 ``root_hash``."""

    origin: str
    size: int
    root_hash: bytes

    def text(self) -> str:
        """Return the checkpoint note text (three newline-terminated lines)."""
        root = base64.b64encode(self.root_hash).decode()
        return f"{self.origin}\n{self.size}\n{root}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse note text strictly (no extension lines); raise ValueError if malformed."""
        lines = text.split("\n")
        if len(lines) != 4 or lines[3] != "" or not lines[0]:
            raise ValueError("checkpoint must be exactly origin, size and root lines")
        origin, size_s, root_s = lines[:3]
        if not size_s.isdigit() or not size_s.isascii() or (size_s != "0" and size_s[0] == "0"):
            raise ValueError(f"bad checkpoint size {size_s!r}")
        try:
            root = base64.b64decode(root_s, validate=True)
        except binascii.Error:
            raise ValueError("bad checkpoint root hash") from None
        if len(root) != 32 or base64.b64encode(root).decode() != root_s:
            raise ValueError("bad checkpoint root hash")
        return cls(origin, int(size_s), root)


@dataclass(frozen=True)
class OpenedCheckpoint:
    """A checkpoint whose log signature verified, with its note and every signature line."""

    checkpoint: Checkpoint
    note: str
    signatures: tuple[NoteSignature, ...]

    def cosigners(self, witnesses: Iterable[Verifier]) -> set[str]:
        """Return the names of the ``witnesses`` whose cosignatures verify.

        Raises
        ------
        InvalidSignature
            If a line from a known witness key does not verify (the note must be rejected).
        """
        text = self.checkpoint.text()
        ok = set()
        for w in witnesses:
            for sig in self.signatures:
                if w.matches(sig):
                    _verify_cosignature(w, text, sig)
                    ok.add(w.name)
        return ok


def log_verifier(origin: str, key: Ed25519PrivateKey | bytes) -> Verifier:
    """Return the verifier of the log ``origin`` for a private key or raw public key."""
    pub = key if isinstance(key, bytes) else raw_public_key(key)
    return Verifier(origin, SIG_ED25519, pub)


def witness_verifier(name: str, key: Ed25519PrivateKey | bytes) -> Verifier:
    """Return the cosignature (type 0x04) verifier of the witness ``name``."""
    pub = key if isinstance(key, bytes) else raw_public_key(key)
    return Verifier(name, SIG_COSIGNATURE_V1, pub)


def sign_checkpoint(cp: Checkpoint, key: Ed25519PrivateKey) -> str:
    """Return the signed checkpoint note, signed by the log key named after the origin."""
    text = cp.text()
    return format_note(text, [sign_line(text, cp.origin, key)])


def open_checkpoint(note: str | bytes, log: Verifier) -> OpenedCheckpoint:
    """Verify the log's signature on a checkpoint note and parse it.

    Parameters
    ----------
    note : str or bytes
        The signed checkpoint (may carry cosignatures).
    log : Verifier
        The pinned log key; its name must be the checkpoint's origin.

    Raises
    ------
    InvalidSignature
        If the note is malformed, is not for ``log.name``, carries no signature by the
        pinned key, or that signature does not verify.
    """
    text, sigs = parse_note(note)
    try:
        cp = Checkpoint.parse(text)
    except ValueError:
        raise InvalidSignature("malformed checkpoint") from None
    if cp.origin != log.name:
        raise InvalidSignature("checkpoint is for another origin")
    mine = [s for s in sigs if log.matches(s)]
    if not mine:
        raise InvalidSignature("checkpoint carries no signature by the pinned log key")
    for s in mine:
        log.verify(text.encode(), s.signature)
    if isinstance(note, bytes):
        note = note.decode()
    return OpenedCheckpoint(cp, note, tuple(sigs))


def cosignature_message(text: str, timestamp: int) -> bytes:
    """Return the bytes a cosigner signs: header, ``time <t>`` line and checkpoint text."""
    return f"{_COSIG_HEADER}time {timestamp}\n{text}".encode()


def cosign(text: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> NoteSignature:
    """Return a ``cosignature/v1`` signature line by witness ``name`` over checkpoint ``text``."""
    if not 0 <= timestamp < 2**63:
        raise ValueError(f"timestamp must be in [0, 2**63), got {timestamp}")
    sig = key.sign(cosignature_message(text, timestamp))
    kid = key_id(name, SIG_COSIGNATURE_V1, raw_public_key(key))
    return NoteSignature(name, kid, _U64.pack(timestamp) + sig)


def _verify_cosignature(w: Verifier, text: str, sig: NoteSignature) -> None:
    if len(sig.signature) != 8 + 64:
        raise InvalidSignature("malformed cosignature")
    (timestamp,) = _U64.unpack(sig.signature[:8])
    if timestamp >= 2**63:
        raise InvalidSignature("malformed cosignature")
    w.verify(cosignature_message(text, timestamp), sig.signature[8:])


def add_signatures(note: str, extra: Iterable[NoteSignature]) -> str:
    """Return ``note`` with the ``extra`` signature lines appended (duplicates dropped)."""
    text, sigs = parse_note(note)
    merged = list(sigs)
    for s in extra:
        if s not in merged:
            merged.append(s)
    return format_note(text, merged)
