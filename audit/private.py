"""Private parts of ledger entries: details kept beside the log, committed to in the leaf.

A leaf travels to analysts in receipts, so it must not carry data-dependent facts about a
node (groups released or suppressed, intersection sizes, row counts).  Such facts are kept
as an entry's *private part*: a small ``str -> str`` map stored beside the log in the same
transaction as the leaf, given only to auditors and witnesses (export, ``GetEntries``).
The leaf carries a salted commitment to it (docs/ledger.md, "Private parts")::

    opening    = salt(16 random bytes) || map
    map        = u32(count) || (str(key) || str(value))*       keys sorted, str as in records
    commitment = SHA-256(PRIVATE_TAG || 0x00 || opening)

The fresh salt makes the commitment hiding even for a guessable map (a count of 0..1000
cannot be found by hashing candidates); SHA-256 makes it binding, so an operator cannot
later open it to another map.  The decoder accepts only canonical openings.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
from collections.abc import Mapping

from audit.records import StrReader, put_strs

__all__ = [
    "PRIVATE_TAG",
    "SALT_BYTES",
    "commitment",
    "decode_opening",
    "encode_opening",
    "new_opening",
]

#: Domain separation tag of a private-part commitment.
PRIVATE_TAG = b"datafed/audit/private-details"
SALT_BYTES = 16
MAX_PRIVATE_ITEMS = 64
MAX_PRIVATE_STRING = 4096
_U32 = struct.Struct(">I")


def _check(details: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(details, Mapping):
        raise TypeError(f"private details must be a mapping, got {type(details).__name__}")
    if len(details) > MAX_PRIVATE_ITEMS:
        raise ValueError(f"private details may hold at most {MAX_PRIVATE_ITEMS} items")
    for k, v in details.items():
        for what, s in (("key", k), ("value", v)):
            if not isinstance(s, str):
                raise TypeError(f"private details {what} must be a str, got {type(s).__name__}")
            if len(s.encode("utf-8")) > MAX_PRIVATE_STRING:
                raise ValueError(f"private details {what} must be at most 4096 UTF-8 bytes")
    return dict(sorted(details.items()))


def encode_opening(salt: bytes, details: Mapping[str, str]) -> bytes:
    """Return the canonical opening ``salt || map`` of ``details``.

    Parameters
    ----------
    salt : bytes
        Exactly :data:`SALT_BYTES` bytes.
    details : Mapping[str, str]
        The private part.

    Raises
    ------
    ValueError, TypeError
        If the salt has the wrong size or the map breaks the limits (64 items, 4 KiB strings).
    """
    if not isinstance(salt, bytes) or len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes")
    items = _check(details)
    out = bytearray(salt)
    out += _U32.pack(len(items))
    put_strs(out, itertools.chain.from_iterable(items.items()))
    return bytes(out)


def new_opening(details: Mapping[str, str]) -> bytes:
    """Return the opening of ``details`` under a fresh random salt (``os.urandom``)."""
    return encode_opening(os.urandom(SALT_BYTES), details)


def commitment(opening: bytes) -> str:
    """Return the lowercase hex commitment to an opening (see the module docstring)."""
    return hashlib.sha256(PRIVATE_TAG + b"\x00" + opening).hexdigest()


def decode_opening(opening: bytes) -> tuple[bytes, dict[str, str]]:
    """Return ``(salt, details)`` of a canonical opening.

    Raises
    ------
    ValueError
        If the bytes are not exactly a canonical opening.
    """
    data = bytes(opening)
    try:
        salt = data[:SALT_BYTES]
        (count,) = _U32.unpack_from(data, SALT_BYTES)
        if count > MAX_PRIVATE_ITEMS:
            raise ValueError("too many items")
        strs = StrReader(data, SALT_BYTES + 4, MAX_PRIVATE_STRING)
        details = strs.take_map(count)
        if strs.pos != len(data) or encode_opening(salt, details) != data:
            raise ValueError("not canonical")
    except (struct.error, UnicodeDecodeError, ValueError, TypeError):
        raise ValueError("not a canonical private-part opening") from None
    return salt, details
