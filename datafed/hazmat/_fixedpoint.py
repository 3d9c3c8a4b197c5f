"""Fixed-point encoding of real vectors into the ring ``Z_2^64`` (numpy-vectorized).

``x`` maps to ``round(x · 2^f)`` as a two's-complement 64-bit word, ``f = 16`` by
default (docs/parameters.md).  Sums of encodings decode correctly as long as the true
fixed-point sum stays inside ``[−2^63, 2^63)``; the encoder refuses inputs of
magnitude ``2^(62 − f)`` or more so that a sum of two never wraps silently.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FRAC_BITS = 16
"""Default fractional bits (docs/parameters.md: fixed-point scale 2^16)."""

RingArray = npt.NDArray[np.uint64]
"""A vector of ``Z_2^64`` elements."""


def encode_fixed(values: npt.ArrayLike, frac_bits: int = FRAC_BITS) -> RingArray:
    """Encode real values as fixed-point elements of ``Z_2^64``.

    Parameters
    ----------
    values : array_like
        Finite real values with ``|x| < 2^(62 − frac_bits)``.
    frac_bits : int, optional
        Fractional bits (default 16).

    Returns
    -------
    numpy.ndarray
        ``uint64`` array of the same length.
    """
    if not 0 <= frac_bits <= 52:
        raise ValueError(f"frac_bits must be in [0, 52], got {frac_bits}")
    x = np.asarray(values, dtype=np.float64).ravel()
    scaled = np.rint(x * float(1 << frac_bits))
    if x.size and not np.isfinite(scaled).all():
        raise ValueError("fixed-point values must be finite")
    if x.size and np.abs(scaled).max() >= float(1 << 62):
        raise ValueError(f"fixed-point values must have magnitude below 2^{62 - frac_bits}")
    return scaled.astype(np.int64).view(np.uint64)


def encode_int(values: npt.ArrayLike) -> RingArray:
    """Embed signed 64-bit integers in ``Z_2^64`` (two's complement).

    Parameters
    ----------
    values : array_like
        Integers in ``[−2^63, 2^63)``.

    Returns
    -------
    numpy.ndarray
        ``uint64`` array.
    """
    return np.asarray(values, dtype=np.int64).ravel().view(np.uint64)


def decode_fixed(ring: RingArray, frac_bits: int = FRAC_BITS) -> npt.NDArray[np.float64]:
    """Decode ``Z_2^64`` elements as signed fixed-point reals.

    Parameters
    ----------
    ring : numpy.ndarray
        ``uint64`` array.
    frac_bits : int, optional
        Fractional bits (default 16).

    Returns
    -------
    numpy.ndarray
        ``float64`` values ``signed(r) / 2^frac_bits``.
    """
    return decode_int(ring).astype(np.float64) / float(1 << frac_bits)


def decode_int(ring: RingArray) -> npt.NDArray[np.int64]:
    """Read ``Z_2^64`` elements as signed 64-bit integers.

    Parameters
    ----------
    ring : numpy.ndarray
        ``uint64`` array.

    Returns
    -------
    numpy.ndarray
        ``int64`` view of the same words.
    """
    return np.asarray(ring, dtype=np.uint64).view(np.int64)
