"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 signatures and verifier keys.

A note is text ending in a newline, a blank line, then signature lines
``— <key name> base64(key ID || signature)``.  The key ID is
``SHA-256(name || 0x0A || type || public key)[:4]`` (signed-note, "Signatures").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.errors import InvalidSignature

__all__ = [
    "SIG_COSIGNATURE_V1",
    "SIG_ED25519",
    "NoteSignature",
    "Verifier",
    "format_note",
    "key_id",
    "parse_note",
    "parse_vkey",
    "raw_public_key",
    "sign_line",
    "vkey",
]

#: Signature type byte of plain Ed25519 note signatures (signed-note, "Signature types").
SIG_ED25519 = 0x01
#: Signature type byte of timestamped Ed25519 cosignatures (c2sp.org/tlog-cosignature).
SIG_COSIGNATURE_V1 = 0x04
_DASH = "\u2014 "  # em dash U+2014 and a space start every signature line
MAX_SIGNATURES = 100  # the spec requires accepting at least 16
MAX_NOTE_BYTES = 1 << 20


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key ``name``, 4-byte ``key_id`` and the ``signature`` bytes."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        r"""Return the line ``— name base64(key_id || signature)\n``."""
        b64 = base64.b64encode(self.key_id + self.signature).decode()
        return f"{_DASH}{self.name} {b64}\n"


@dataclass(frozen=True)
class Verifier:
    """A trusted key: ``name``, signature ``type`` byte and 32-byte Ed25519 ``public_key``."""

    name: str
    type: int
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID of this key."""
        return key_id(self.name, self.type, self.public_key)

    def vkey(self) -> str:
        """Return the verifier-key text ``name+hex(key ID)+base64(type || key)``."""
        return vkey(self.name, self.type, self.public_key)

    def matches(self, sig: NoteSignature) -> bool:
        """Return whether ``sig`` claims to be made by this key (name and key ID)."""
        return sig.name == self.name and sig.key_id == self.key_id

    def verify(self, message: bytes, signature: bytes) -> None:
        """Verify an Ed25519 signature; raise :class:`InvalidSignature` on failure."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (_CryptoInvalidSignature, ValueError):
            raise InvalidSignature("signature does not verify") from None


def check_key_name(name: str) -> str:
    """Return ``name`` if it is a valid key name (non-empty, no spaces, no '+')."""
    if not isinstance(name, str):
        raise TypeError(f"key name must be a str, got {type(name).__name__}")
    if not name or any(c.isspace() or c == "+" for c in name) or not name.isprintable():
        raise ValueError(f"key name must be non-empty without spaces or '+', got {name!r}")
    return name


def raw_public_key(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """Return the 32-byte RFC 8032 encoding of an Ed25519 (public) key."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """Return ``SHA-256(name || 0x0A || type || public_key)[:4]`` (signed-note key ID)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def vkey(name: str, sig_type: int, public_key: bytes) -> str:
    """Return the verifier key ``name+hex(key ID)+base64(type || public key)``."""
    check_key_name(name)
    material = base64.b64encode(bytes([sig_type]) + public_key).decode()
    return f"{name}+{key_id(name, sig_type, public_key).hex()}+{material}"


def parse_vkey(text: str) -> Verifier:
    """Parse a verifier key; raise ValueError with the reason if it is malformed."""
    name, sep, rest = text.strip().partition("+")
    id_hex, sep2, material = rest.partition("+")
    if not sep or not sep2:
        raise ValueError(f"verifier key must be name+keyid+key, got {text!r}")
    check_key_name(name)
    try:
        raw = base64.b64decode(material, validate=True)
        want_id = bytes.fromhex(id_hex)
    except (binascii.Error, ValueError):
        raise ValueError(f"verifier key {name!r} has bad hex or base64") from None
    if len(id_hex) != 8 or len(raw) != 33 or raw[0] not in (SIG_ED25519, SIG_COSIGNATURE_V1):
        raise ValueError(f"verifier key {name!r} is not an Ed25519 (0x01/0x04) key")
    v = Verifier(name, raw[0], raw[1:])
    if v.key_id != want_id:
        raise ValueError(f"verifier key {name!r} has a key ID that does not match its key")
    return v


def sign_line(text: str, name: str, key: Ed25519PrivateKey) -> NoteSignature:
    """Sign note ``text`` with an Ed25519 (type 0x01) key named ``name``."""
    check_key_name(name)
    sig = key.sign(text.encode())
    return NoteSignature(name, key_id(name, SIG_ED25519, raw_public_key(key)), sig)


def format_note(text: str, signatures: list[NoteSignature]) -> str:
    """Return the signed note: ``text``, a blank line and the signature lines."""
    _check_text(text)
    if not signatures:
        raise ValueError("a signed note needs at least one signature")
    return text + "\n" + "".join(s.line() for s in signatures)


def _check_text(text: str) -> None:
    if not text.endswith("\n") or any(ord(c) < 0x20 and c != "\n" for c in text):
        raise ValueError("note text must end in a newline and contain no control characters")


def parse_note(note: str | bytes) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signatures, checking the syntax only.

    Raises
    ------
    InvalidSignature
        If the note is malformed (the signatures are not verified here).
    """
    try:
        if isinstance(note, bytes):
            if len(note) > MAX_NOTE_BYTES:
                raise ValueError("too long")
            note = note.decode("utf-8")
        return _parse(note)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidSignature("malformed signed note") from None


def _parse(note: str) -> tuple[str, list[NoteSignature]]:
    if len(note) > MAX_NOTE_BYTES or not note.endswith("\n"):
        raise ValueError("bad note")
    split = note.rfind("\n\n")
    if split < 0:
        raise ValueError("no signatures")
    text, sig_block = note[: split + 1], note[split + 2 :]
    _check_text(text)
    sigs = []
    for line in sig_block.split("\n")[:-1]:
        if not line.startswith(_DASH):
            raise ValueError("bad signature line")
        name, sep, b64 = line[len(_DASH) :].partition(" ")
        check_key_name(name)
        raw = base64.b64decode(b64, validate=True)
        if not sep or len(raw) < 5:
            raise ValueError("bad signature line")
        sigs.append(NoteSignature(name, raw[:4], raw[4:]))
    if not sigs or len(sigs) > MAX_SIGNATURES:
        raise ValueError("bad signature count")
    return text, sigs
