"""Additive secret sharing over ``Z_2^64`` with seed-compressed shares.

A vector ``x`` is split into ``n`` shares that sum to ``x`` modulo ``2^64``.  The
first ``n − 1`` shares are pseudorandom vectors expanded from fresh 16-byte seeds
(AES-128-CTR, :mod:`datafed.hazmat._prg`), so each costs 16 bytes on the wire;
the last share is ``x − Σ PRG(seed_i)`` and is sent in full.  Any ``n − 1``
shares are (computationally) uniform and reveal nothing about ``x``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from datafed.hazmat._fixedpoint import RingArray
from datafed.hazmat._prg import SEED_BYTES, prg_uint64
from datafed.hazmat.errors import InvalidShare


@dataclass(frozen=True)
class SeedShare:
    """A share given by its PRG seed: expands to ``length`` ring elements."""

    seed: bytes
    length: int

    def expand(self) -> RingArray:
        """Return the share's ``uint64`` vector.

        Returns
        -------
        numpy.ndarray
            ``PRG(seed)`` as ``length`` elements of ``Z_2^64``.
        """
        if len(self.seed) != SEED_BYTES or self.length < 0:
            raise InvalidShare
        return prg_uint64(self.seed, self.length)


@dataclass(frozen=True, eq=False)
class VectorShare:
    """A share given in full as a ``uint64`` vector."""

    values: RingArray

    @property
    def length(self) -> int:
        """Number of ring elements."""
        return int(self.values.shape[0])

    def expand(self) -> RingArray:
        """Return the share's ``uint64`` vector.

        Returns
        -------
        numpy.ndarray
            The values.
        """
        return self.values


AdditiveShare = SeedShare | VectorShare
"""One additive share: seed-compressed or explicit."""


def split_additive(secret: npt.ArrayLike, n: int) -> list[AdditiveShare]:
    """Split a ``Z_2^64`` vector into ``n`` additive shares.

    Parameters
    ----------
    secret : array_like
        ``uint64`` ring elements (see :func:`~datafed.hazmat.encode_fixed`).
    n : int
        Number of shares, at least 2.

    Returns
    -------
    list of AdditiveShare
        ``n − 1`` :class:`SeedShare` followed by one :class:`VectorShare`.
    """
    if n < 2:
        raise ValueError(f"additive sharing needs at least 2 shares, got {n}")
    x = np.asarray(secret)
    if x.dtype != np.uint64:
        raise TypeError(f"secret must be a uint64 array, got {x.dtype}")
    x = x.ravel()
    seeds = [SeedShare(secrets.token_bytes(SEED_BYTES), x.shape[0]) for _ in range(n - 1)]
    last = x.copy()
    for s in seeds:
        np.subtract(last, s.expand(), out=last)  # wraps mod 2^64
    shares: list[AdditiveShare] = [*seeds, VectorShare(last)]
    return shares


def add_shares(shares: Sequence[AdditiveShare]) -> VectorShare:
    """Add shares element-wise mod ``2^64`` (an aggregator summing its shares).

    Parameters
    ----------
    shares : sequence of AdditiveShare
        Shares of equal length.

    Returns
    -------
    VectorShare
        Their sum.

    Raises
    ------
    InvalidShare
        If the shares are empty or of different lengths.
    """
    if not shares:
        raise InvalidShare
    length = shares[0].length
    total = np.zeros(length, dtype=np.uint64)
    for share in shares:
        vec = share.expand()
        if vec.dtype != np.uint64 or vec.shape != (length,):
            raise InvalidShare
        np.add(total, vec, out=total)
    return VectorShare(total)


def reconstruct_additive(shares: Sequence[AdditiveShare]) -> RingArray:
    """Return the secret (or sum of secrets) from all its shares.

    Parameters
    ----------
    shares : sequence of AdditiveShare
        Every share (additive sharing has no threshold: all are needed).

    Returns
    -------
    numpy.ndarray
        ``uint64`` ring elements.
    """
    return add_shares(shares).values
