"""Paillier key generation: two primes of equal length whose product has the asked length.

Key pairs use ``g = n + 1`` as ``phe`` does (see :mod:`datafed.hazmat._paillier`); the
public key lives in that module and the private key in
:mod:`datafed.hazmat._paillier_private`, so this module, which builds both, sits above them.
"""

from __future__ import annotations

import secrets
from typing import Any

import gmpy2

from datafed.hazmat._paillier import DEFAULT_MODULUS_BITS, PaillierPublicKey, check_modulus_bits
from datafed.hazmat._paillier_private import PaillierPrivateKey


def _random_prime(bits: int) -> Any:
    """A random ``bits``-bit prime p = 3 mod 4 (so that n = pq is a Blum integer).

    The two top bits are set so that the product of two such primes has exactly 2·bits
    bits. DJN's encryption base -x^2 (:mod:`datafed.hazmat._djn`) generates the subgroup
    its security argument needs when -1 is a non-residue mod p and mod q, i.e. p = q = 3
    mod 4 (Damgard, Jurik and Nielsen 2010, section 4.2); it costs nothing here.
    """
    while True:
        start = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        p = gmpy2.next_prime(start)
        while p % 4 != 3:
            p = gmpy2.next_prime(p)
        if p.bit_length() == bits:
            return p


def generate_paillier_keypair(
    bits: int = DEFAULT_MODULUS_BITS, *, strict: bool = False
) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """Generate a Paillier key pair with a ``bits``-bit modulus.

    Parameters
    ----------
    bits : int, optional
        Modulus length, at least 2048 and even; default 3072.
    strict : bool, optional
        Full-length encryption randomness (see :mod:`datafed.hazmat._djn`).

    Returns
    -------
    tuple of (PaillierPublicKey, PaillierPrivateKey)
        The key pair.
    """
    check_modulus_bits(bits)
    while True:
        p, q = _random_prime(bits // 2), _random_prime(bits // 2)
        n = p * q
        if p != q and gmpy2.gcd(n, (p - 1) * (q - 1)) == 1 and n.bit_length() == bits:
            break
    public = PaillierPublicKey(int(n), strict=strict)
    return public, PaillierPrivateKey(public, int(p), int(q))
