"""Shamir secret sharing over the prime field ``GF(2^127 − 1)``.

``t``-of-``n``: a random polynomial of degree ``t − 1`` with the secret as its
constant term is evaluated at ``x = 1..n``; any ``t`` shares reconstruct by
Lagrange interpolation at 0 (Shamir, CACM 1979).  Given more than ``t`` shares,
:func:`shamir_reconstruct` also checks that *all* of them lie on one polynomial
of degree ``t − 1`` and raises :class:`~datafed.hazmat.errors.InvalidShare`
otherwise.  Byte strings (seeds, keys) are split into 15-byte chunks, each a
field element, so that every chunk is below the modulus.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from datafed.hazmat.errors import InvalidShare

PRIME = (1 << 127) - 1
"""The Mersenne prime ``2^127 − 1`` (docs/parameters.md)."""

CHUNK_BYTES = 15
"""Bytes per field element when sharing byte strings (120 bits < 127)."""


@dataclass(frozen=True)
class ShamirShare:
    """One party's share: the evaluation point ``x`` and one ``y`` per chunk."""

    x: int
    ys: tuple[int, ...]


def _check_params(t: int, n: int) -> None:
    if not 1 <= t <= n:
        raise ValueError(f"Shamir threshold must satisfy 1 <= t <= n, got t={t}, n={n}")
    if n >= PRIME:
        raise ValueError("too many Shamir shares for the field")


def shamir_split(
    secrets_: Sequence[int], t: int, n: int, *, xs: Sequence[int] | None = None
) -> list[ShamirShare]:
    """Share field elements ``secrets_`` with threshold ``t`` among ``n`` parties.

    Parameters
    ----------
    secrets_ : sequence of int
        Field elements in ``[0, 2^127 − 1)``, shared independently.
    t : int
        Threshold: any ``t`` shares reconstruct, fewer reveal nothing.
    n : int
        Number of shares.
    xs : sequence of int, optional
        The ``n`` distinct non-zero evaluation points (e.g. party ids); ``1..n`` by default.

    Returns
    -------
    list of ShamirShare
        One share per evaluation point, in order.
    """
    _check_params(t, n)
    points = list(range(1, n + 1)) if xs is None else list(xs)
    if len(points) != n or len(set(points)) != n or any(not 0 < x < PRIME for x in points):
        raise ValueError("Shamir evaluation points must be n distinct values in [1, 2^127 - 1)")
    for s in secrets_:
        if not isinstance(s, int) or not 0 <= s < PRIME:
            raise ValueError("Shamir secret must be an int in [0, 2^127 - 1)")
    polys = [[s, *(secrets.randbelow(PRIME) for _ in range(t - 1))] for s in secrets_]
    return [ShamirShare(x, tuple(_evaluate(c, x) for c in polys)) for x in points]


def _evaluate(coeffs: Sequence[int], x: int) -> int:
    acc = 0
    for c in reversed(coeffs):  # Horner
        acc = (acc * x + c) % PRIME
    return acc


def _lagrange_at(xs: Sequence[int], at: int) -> list[int]:
    """Lagrange basis coefficients for points ``xs`` evaluated at ``at``."""
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return out


def shamir_reconstruct(shares: Sequence[ShamirShare], t: int) -> list[int]:
    """Reconstruct the shared field elements from at least ``t`` shares.

    Parameters
    ----------
    shares : sequence of ShamirShare
        At least ``t`` shares with distinct ``x``.
    t : int
        The threshold used when splitting.

    Returns
    -------
    list of int
        The secrets.

    Raises
    ------
    InvalidShare
        If there are fewer than ``t`` shares, duplicates, mismatched lengths, values
        outside the field, or shares beyond the first ``t`` that are not on the
        same polynomial.
    """
    if t < 1 or len(shares) < t:
        raise InvalidShare
    xs = [s.x for s in shares]
    width = len(shares[0].ys)
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise InvalidShare
    if any(len(s.ys) != width or any(not 0 <= y < PRIME for y in s.ys) for s in shares):
        raise InvalidShare
    base, extra = shares[:t], shares[t:]
    base_xs = [s.x for s in base]
    at_zero = _lagrange_at(base_xs, 0)
    checks = [(s, _lagrange_at(base_xs, s.x)) for s in extra]
    out = []
    for k in range(width):
        ys = [s.ys[k] for s in base]
        out.append(sum(c * y for c, y in zip(at_zero, ys, strict=True)) % PRIME)
        for share, coeffs in checks:
            if sum(c * y for c, y in zip(coeffs, ys, strict=True)) % PRIME != share.ys[k]:
                raise InvalidShare
    return out


def shamir_split_bytes(
    secret: bytes, t: int, n: int, *, xs: Sequence[int] | None = None
) -> list[ShamirShare]:
    """Share a byte string (a seed or key) in 15-byte field elements.

    Parameters
    ----------
    secret : bytes
        The secret.
    t, n : int
        Threshold and number of shares.
    xs : sequence of int, optional
        Evaluation points, as in :func:`shamir_split`.

    Returns
    -------
    list of ShamirShare
        The shares; reconstruct with :func:`shamir_reconstruct_bytes`.
    """
    if not isinstance(secret, (bytes, bytearray)):
        raise TypeError(f"secret must be bytes, got {type(secret).__name__}")
    chunks = [secret[i : i + CHUNK_BYTES] for i in range(0, len(secret), CHUNK_BYTES)]
    # The length rides along as a leading element so that short tails round-trip exactly.
    values = [len(secret), *(int.from_bytes(c, "big") for c in chunks)]
    return shamir_split(values, t, n, xs=xs)


def shamir_reconstruct_bytes(shares: Sequence[ShamirShare], t: int) -> bytes:
    """Reconstruct a byte string shared with :func:`shamir_split_bytes`.

    Parameters
    ----------
    shares : sequence of ShamirShare
        At least ``t`` shares.
    t : int
        The threshold.

    Returns
    -------
    bytes
        The secret.

    Raises
    ------
    InvalidShare
        As :func:`shamir_reconstruct`, or if the chunks do not decode.
    """
    length, *values = shamir_reconstruct(shares, t)
    if len(values) != -(-length // CHUNK_BYTES):
        raise InvalidShare
    out = bytearray()
    for i, v in enumerate(values):
        size = min(CHUNK_BYTES, length - i * CHUNK_BYTES)
        if v >> (8 * size):
            raise InvalidShare
        out += v.to_bytes(size, "big")
    return bytes(out)
