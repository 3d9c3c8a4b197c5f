"""A checksum slot that lets the analyst refuse garbage totals.

Every node appends to its vector ``x`` one more value, ``c = Σ_k w_k·x_k``, with weights
``w`` expanded from the job id (public; AES-CTR PRG seeded by HKDF-SHA256, RFC 5869).
The check is linear, so the totals of any set of honest nodes satisfy it, while totals an
aggregator or a node corrupted (random garbage, a wrong share, a bit flip) fail it except
with probability ``2^-64`` (ring modes) or negligibly (CKKS, within the error bound).  It
is an integrity check against faults, not a proof against an aggregator who crafts
consistent offsets: that one is outside the modes' trust assumptions (docs/invisibility.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from datafed.errors import ProtocolError
from datafed.hazmat import RingArray, decode_int, derive_seed, encode_int, prg_uint64

__all__ = [
    "check_real",
    "check_ring",
    "real_weights",
    "ring_from_bytes",
    "ring_to_bytes",
    "with_ring_checksum",
]

_LABEL = b"datafed/v1/aggregate-checksum"


def ring_to_bytes(vec: RingArray) -> bytes:
    """Encode a ``Z_2^64`` vector as little-endian ``uint64`` bytes."""
    return np.asarray(vec, dtype="<u8").tobytes()


def ring_from_bytes(data: bytes, length: int) -> RingArray:
    """Decode little-endian ``uint64`` bytes; ValueError unless exactly ``length`` words."""
    if len(data) != 8 * length:
        raise ValueError(f"expected {length} ring elements, got {len(data)} bytes")
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def _stream(job_id: str, length: int) -> RingArray:
    return prg_uint64(derive_seed(job_id.encode(), _LABEL), length)


def with_ring_checksum(job_id: str, values: Sequence[int]) -> RingArray:
    """Embed signed 64-bit ``values`` in ``Z_2^64`` and append their checksum."""
    x = encode_int(np.asarray(list(values), dtype=np.int64))
    checksum = np.sum(_stream(job_id, x.size) * x, dtype=np.uint64)
    return np.concatenate([x, np.asarray([checksum], dtype=np.uint64)])


def check_ring(job_id: str, total: RingArray) -> list[int]:
    """Verify the checksum of a ``Z_2^64`` total; return the signed totals without it.

    Raises
    ------
    ProtocolError
        If the checksum does not match.
    """
    x, checksum = total[:-1], total[-1]
    if np.sum(_stream(job_id, x.size) * x, dtype=np.uint64) != checksum:
        raise ProtocolError("the combined totals fail their checksum (a party sent garbage)")
    return [int(v) for v in decode_int(x)]


def real_weights(job_id: str, length: int) -> npt.NDArray[np.float64]:
    """Weights in ``[-1, 1)`` divided by ``length``, so ``|c| ≤ max |x_k|``."""
    u = (_stream(job_id, length) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    out: npt.NDArray[np.float64] = (2.0 * u - 1.0) / max(length, 1)
    return out


def check_real(job_id: str, total: npt.NDArray[np.float64], error_bound: float) -> None:
    """Verify a real-valued checksum up to twice the per-slot ``error_bound``.

    Raises
    ------
    ProtocolError
        If the checksum is off by more than the errors allow.
    """
    x, checksum = total[:-1], float(total[-1])
    expected = float(np.dot(real_weights(job_id, x.size), x))
    slack = 2.0 * error_bound + 1e-9 * max(1.0, float(np.abs(x).max(initial=0.0)))
    if not np.isfinite(total).all() or abs(expected - checksum) > slack:
        raise ProtocolError("the combined totals fail their checksum (a party sent garbage)")
