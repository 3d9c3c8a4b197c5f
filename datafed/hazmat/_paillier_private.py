"""Paillier private key: CRT decryption, batch decryption on two cores.

Decryption follows Paillier (EUROCRYPT 1999, §7) as ``phe`` does: with
``h_p = L_p(g^(p−1) mod p²)^(−1) mod p`` the plaintext modulo ``p`` is
``L_p(c^(p−1) mod p²) · h_p mod p`` where ``L_p(x) = (x − 1) / p``; the two halves
are joined with the CRT.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import gmpy2

from datafed.hazmat._paillier import PaillierCiphertext, PaillierPublicKey, check_ciphertexts
from datafed.hazmat.errors import DecryptionError


class _Half:
    """Decryption modulo one prime factor ``p``: exponent, modulus ``p²``, ``h_p``."""

    __slots__ = ("exp", "h", "p", "p2")

    def __init__(self, p: Any, g: Any) -> None:
        self.p = p
        self.p2 = p * p
        self.exp = p - 1
        self.h = gmpy2.invert(self.l_function(gmpy2.powmod(g, self.exp, self.p2)), p)

    def l_function(self, x: Any) -> Any:
        """Return ``(x − 1) / p``, raising if ``p`` does not divide ``x − 1``."""
        q, r = gmpy2.f_divmod(x - 1, self.p)
        if r:
            raise DecryptionError
        return q

    def finish(self, powered: Any) -> Any:
        """Return the plaintext modulo ``p`` from ``c^(p−1) mod p²``."""
        return gmpy2.f_mod(self.l_function(powered) * self.h, self.p)

    def run(self, cs: list[Any]) -> list[Any]:
        """Decrypt raw ciphertexts modulo ``p`` (releases the GIL while exponentiating)."""
        reduced = [gmpy2.f_mod(c, self.p2) for c in cs]
        return [self.finish(x) for x in gmpy2.powmod_base_list(reduced, self.exp, self.p2)]


class PaillierPrivateKey:
    """A Paillier private key ``(p, q)`` for a public key ``n = p·q``.

    Parameters
    ----------
    public_key : PaillierPublicKey
        The matching public key.
    p, q : int
        The prime factors of ``public_key.n``.
    """

    def __init__(self, public_key: PaillierPublicKey, p: int, q: int) -> None:
        if p * q != public_key.n:
            raise ValueError("Paillier primes do not match the public key modulus")
        if p == q:
            raise ValueError("Paillier primes must be distinct")
        self.public_key = public_key
        self.p, self.q = (p, q) if p < q else (q, p)
        g = gmpy2.mpz(public_key.n) + 1
        self._hp = _Half(gmpy2.mpz(self.p), g)
        self._hq = _Half(gmpy2.mpz(self.q), g)
        self._p_inv_q = gmpy2.invert(gmpy2.mpz(self.p), gmpy2.mpz(self.q))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PaillierPrivateKey):
            return NotImplemented
        return self.public_key == other.public_key and self.p == other.p

    def __hash__(self) -> int:
        return hash((self.public_key.n, self.p))

    def __repr__(self) -> str:
        return f"PaillierPrivateKey(bits={self.public_key.bits})"

    def _crt(self, mp: Any, mq: Any) -> int:
        # m = mp + p·((mq − mp)·p⁻¹ mod q), Garner's form of the CRT.
        u = gmpy2.f_mod((mq - mp) * self._p_inv_q, self._hq.p)
        return int(mp + u * self._hp.p)

    def decrypt(self, c: PaillierCiphertext) -> int:
        """Decrypt ``c`` to the plaintext in ``[0, n)``.

        Parameters
        ----------
        c : PaillierCiphertext
            A ciphertext under this key's public key.

        Returns
        -------
        int
            The plaintext.

        Raises
        ------
        DecryptionError
            If ``c`` is not a valid ciphertext.
        """
        return self.decrypt_many([c])[0]

    def decrypt_signed(self, c: PaillierCiphertext) -> int:
        """Decrypt ``c`` to a signed plaintext in ``(−n/2, n/2]`` (above ``n // 2``: negative).

        Raises :class:`DecryptionError` as :meth:`decrypt` does.
        """
        m = self.decrypt(c)
        return m - self.public_key.n if m > self.public_key.n // 2 else m

    def decrypt_many(
        self, ciphertexts: Sequence[PaillierCiphertext], *, threads: int = 1
    ) -> list[int]:
        """Decrypt many ciphertexts, optionally the two CRT halves on two cores.

        Parameters
        ----------
        ciphertexts : sequence of PaillierCiphertext
            Ciphertexts under this key's public key.
        threads : int, optional
            ``1`` (default) or ``2``: with 2 the ``p`` and ``q`` halves run in two
            threads (gmpy2 releases the GIL in ``powmod_base_list``).

        Returns
        -------
        list of int
            The plaintexts, in order.
        """
        if threads not in (1, 2):
            raise ValueError(f"threads must be 1 or 2, got {threads}")
        cs = check_ciphertexts(self.public_key, ciphertexts)
        if threads == 1 or len(cs) < 2:
            mps, mqs = self._hp.run(cs), self._hq.run(cs)
        else:
            out: dict[str, list[Any]] = {}
            errors: list[BaseException] = []

            def work() -> None:
                try:
                    out["q"] = self._hq.run(cs)
                except BaseException as exc:  # re-raised in the caller's thread
                    errors.append(exc)

            worker = threading.Thread(target=work)
            worker.start()
            mps = self._hp.run(cs)
            worker.join()
            if errors:
                raise errors[0]
            mqs = out["q"]
        return [self._crt(mp, mq) for mp, mq in zip(mps, mqs, strict=True)]
