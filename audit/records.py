"""Data-use records and their canonical leaf encoding (docs/ledger.md).

A leaf of the ledger is the canonical, unambiguous byte encoding of one data-use record,
prefixed with a domain tag, a schema version and the entry's own index in the log::

    leaf   = TAG || 0x00 || VERSION(u8) || index(u64) || body
    body   = commit || fields                                         (version 2)
    body   = fields                                                   (version 1, read only)
    commit = 0x00                                   no private part
           | 0x01 || commitment(32)                 SHA-256 commitment to the private part
    fields = str(node) || str(requester) || ... || str(reason)        13 strings, fixed order
             || f64(epsilon) || u64(time_ms) || u32(len(details)) || (str(k) || str(v))*
    str(s) = u32(len(utf8(s))) || utf8(s)

All integers are big-endian.  ``epsilon`` is the IEEE 754 binary64 bit pattern with ``-0.0``
normalised to ``0.0`` and NaN/infinity refused, so one value has exactly one encoding;
``details`` are sorted by key.  The decoder accepts only bytes that re-encode identically.
Carrying the index makes a moved (reordered or shifted) entry self-evident to a verifier.
The commitment sits at a fixed offset so that a verifier finds it without decoding the
leaf (:mod:`audit.private`, docs/ledger.md).  New leaves are always version 2; version 1
leaves (written before private parts existed) decode to records without a commitment.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from audit.errors import InvalidRecord

__all__ = [
    "DECISIONS",
    "LEAF_PREFIXES",
    "LEAF_TAG",
    "SCHEMA_VERSION",
    "DataUseRecord",
    "StrReader",
    "decode_leaf",
    "encode_body",
    "encode_leaf",
    "put_strs",
]

#: Domain separation tag of a data-use leaf (never a prefix of another datafed encoding).
LEAF_TAG = b"datafed/audit/data-use-record"
#: Version of the body layout written (see above); bump on any change.
SCHEMA_VERSION = 2
#: The leaf prefixes a reader accepts, by version.
LEAF_PREFIXES = {v: LEAF_TAG + b"\x00" + bytes([v]) for v in (1, 2)}
#: The policy decisions a record may carry.
DECISIONS = frozenset({"approved", "denied", "released"})

MAX_STRING_BYTES = 4096
MAX_DETAILS = 64
_PREFIX = LEAF_PREFIXES[SCHEMA_VERSION]
_HEX64 = re.compile(r"[0-9a-f]{64}")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_TAIL = struct.Struct(">dQI")
_STR_FIELDS = (
    "node",
    "requester",
    "requester_role",
    "dataset",
    "purpose",
    "legal_basis",
    "operation",
    "protection",
    "request_digest",
    "result_digest",
    "decision",
    "job_id",
    "reason",
)
_STR_VALUES = operator.attrgetter(*_STR_FIELDS)


@dataclass(frozen=True, eq=True)
class DataUseRecord:
    """One use of data at a node: who, what, why, how, the decision and its cost.

    Digests are lowercase hex SHA-256 (or empty); no raw data or personal identifiers.
    ``details`` is a small ``str -> str`` map (e.g. FL round number and model hashes); it
    reaches analysts in receipts, so per-node counts belong in the entry's private part,
    of which ``private_commitment`` (set by :meth:`audit.Ledger.append`) is the salted
    SHA-256 commitment, or empty.
    """

    node: str
    requester: str
    requester_role: str
    dataset: str
    purpose: str
    legal_basis: str
    operation: str
    protection: str
    request_digest: str
    result_digest: str
    decision: str
    reason: str
    epsilon: float
    job_id: str
    time_ms: int
    details: Mapping[str, str] = field(default_factory=dict)
    private_commitment: str = ""

    def __post_init__(self) -> None:
        for name in _STR_FIELDS:
            _check_str(name, getattr(self, name))
        _check_str("private_commitment", self.private_commitment)
        for name in ("request_digest", "result_digest", "private_commitment"):
            value = getattr(self, name)
            if value and not _HEX64.fullmatch(value):
                raise ValueError(f"{name} must be empty or 64 lowercase hex digits, got {value!r}")
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {sorted(DECISIONS)}, got {self.decision!r}")
        eps = self.epsilon
        if isinstance(eps, bool) or not isinstance(eps, (int, float)):
            raise TypeError(f"epsilon must be a float, got {type(eps).__name__}")
        if not math.isfinite(eps) or eps < 0:
            raise ValueError(f"epsilon must be finite and >= 0, got {eps!r}")
        object.__setattr__(self, "epsilon", float(eps) + 0.0)  # -0.0 + 0.0 == +0.0
        t = self.time_ms
        if isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"time_ms must be an int, got {type(t).__name__}")
        if not 0 <= t < 2**63:
            raise ValueError(f"time_ms must be in [0, 2**63), got {t}")
        if not isinstance(self.details, Mapping):
            raise TypeError(f"details must be a mapping, got {type(self.details).__name__}")
        if len(self.details) > MAX_DETAILS:
            raise ValueError(
                f"details may hold at most {MAX_DETAILS} items, got {len(self.details)}"
            )
        for k, v in self.details.items():
            _check_str("details key", k)
            _check_str(f"details[{k!r}]", v)
        object.__setattr__(self, "details", dict(sorted(self.details.items())))


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if len(value) > MAX_STRING_BYTES or len(value.encode("utf-8")) > MAX_STRING_BYTES:
        raise ValueError(f"{name} must be at most {MAX_STRING_BYTES} UTF-8 bytes")


def encode_body(record: DataUseRecord) -> bytes:
    """Return the canonical body encoding of ``record`` (the leaf without its prefix).

    Parameters
    ----------
    record : DataUseRecord
        A validated record.

    Returns
    -------
    bytes
        The version 2 body; :func:`encode_leaf` adds the domain tag, version and index.
    """
    c = record.private_commitment
    head = b"\x01" + bytes.fromhex(c) if c else b"\x00"
    return head + _encode_fields(record)


def _encode_fields(r: DataUseRecord) -> bytes:
    out = bytearray()
    put_strs(out, _STR_VALUES(r))
    out += _TAIL.pack(r.epsilon, r.time_ms, len(r.details))
    put_strs(out, itertools.chain.from_iterable(r.details.items()))  # sorted in __post_init__
    return bytes(out)


def put_strs(out: bytearray, strings: Iterable[str]) -> None:
    """Append each of ``strings`` to ``out`` as ``str(s) = u32(len(utf8(s))) || utf8(s)``."""
    pack = _U32.pack
    for s in strings:
        raw = s.encode("utf-8")
        out += pack(len(raw))
        out += raw


class StrReader:
    """Reads ``str(s)`` items of ``data`` from ``pos`` on, each at most ``limit`` UTF-8 bytes.

    A short or malformed item raises ``ValueError`` (a ``UnicodeDecodeError`` for bad
    UTF-8) or ``struct.error``.
    """

    __slots__ = ("data", "limit", "pos")

    def __init__(self, data: bytes, pos: int, limit: int) -> None:
        self.data, self.pos, self.limit = data, pos, limit

    def take(self) -> str:
        """Return the next string."""
        data, pos = self.data, self.pos
        (n,) = _U32.unpack_from(data, pos)
        if n > self.limit or pos + 4 + n > len(data):
            raise ValueError("bad string length")
        s = data[pos + 4 : pos + 4 + n].decode("utf-8")
        self.pos = pos + 4 + n
        return s

    def take_map(self, count: int) -> dict[str, str]:
        """Return the next ``count`` key and value pairs, in order."""
        out = {}
        for _ in range(count):
            k = self.take()
            out[k] = self.take()
        return out


def encode_leaf(index: int, body: bytes) -> bytes:
    """Return the leaf bytes of the entry at ``index`` with the encoded ``body``.

    Parameters
    ----------
    index : int
        The entry's position in the log.
    body : bytes
        The output of :func:`encode_body`.

    Returns
    -------
    bytes
        ``TAG || 0x00 || VERSION || u64(index) || body``.
    """
    return _PREFIX + _U64.pack(index) + body


def decode_leaf(leaf: bytes) -> tuple[int, DataUseRecord]:
    """Decode leaf bytes into ``(index, record)``, accepting only the canonical encoding.

    Parameters
    ----------
    leaf : bytes
        Leaf bytes as stored in the log.

    Returns
    -------
    tuple[int, DataUseRecord]
        The index the leaf claims and the record.

    Raises
    ------
    InvalidRecord
        If the bytes are not exactly a canonical encoding.
    """
    try:
        version, index, record = _decode(bytes(leaf))
    except (ValueError, TypeError, struct.error, UnicodeDecodeError, IndexError):
        raise InvalidRecord("leaf is not a canonical data-use record") from None
    if version == SCHEMA_VERSION:
        again = encode_leaf(index, encode_body(record))
    else:  # version 1: no commitment byte
        again = LEAF_PREFIXES[1] + _U64.pack(index) + _encode_fields(record)
    if again != leaf:
        raise InvalidRecord("leaf is not a canonical data-use record")
    return index, record


def _decode(leaf: bytes) -> tuple[int, int, DataUseRecord]:
    version = next((v for v, p in LEAF_PREFIXES.items() if leaf.startswith(p)), None)
    if version is None:
        raise ValueError("bad prefix")
    pos = len(_PREFIX)
    (index,) = _U64.unpack_from(leaf, pos)
    pos += 8
    commitment = ""
    if version >= 2:
        flag = leaf[pos]
        if flag == 1:
            commitment = leaf[pos + 1 : pos + 33].hex()
            pos += 33
        elif flag == 0:
            pos += 1
        else:
            raise ValueError("bad commitment flag")
    strs = StrReader(leaf, pos, MAX_STRING_BYTES)
    values = {name: strs.take() for name in _STR_FIELDS}
    epsilon, time_ms, count = _TAIL.unpack_from(leaf, strs.pos)
    strs.pos += _TAIL.size
    if count > MAX_DETAILS:
        raise ValueError("too many details")
    details = strs.take_map(count)
    if strs.pos != len(leaf):
        raise ValueError("trailing bytes")
    rec = DataUseRecord(
        **values,
        epsilon=epsilon,
        time_ms=time_ms,
        details=details,
        private_commitment=commitment,
    )
    return version, index, rec
