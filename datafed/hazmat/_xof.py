"""The XOFs of the VDAF draft (draft-irtf-cfrg-vdaf-20 §6.2).

* :class:`XofTurboShake128` (§6.2.1): TurboSHAKE128 (RFC 9861) from
  pycryptodome, over ``le16(len(dst)) || dst || le8(len(seed)) || seed || binder``
  with domain byte 1.  Prio3 uses only this one.
* :class:`XofFixedKeyAes128` (§6.2.2): a fixed-key AES-128 hash of counter
  blocks, the key derived by TurboSHAKE128 (domain byte 2); AES comes from
  ``cryptography`` (OpenSSL).  The draft reserves it for Poplar1's IDPF; it is here
  for the known-answer vectors and completeness.

No Keccak or AES is implemented here: both come from kept libraries.
"""

from __future__ import annotations

from Crypto.Hash import TurboSHAKE128
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from datafed.hazmat._field import NttField, Vec

VERSION = 18
"""The draft's ``VERSION`` constant (§2), the first byte of every DST (§6.2.3)."""


def format_dst(algo_class: int, algo: int, usage: int) -> bytes:
    """Domain separation tag ``VERSION || class || algo (4 bytes BE) || usage (2 bytes BE)``.

    draft §6.2.3.

    Parameters
    ----------
    algo_class : int
        0 for a (V)DAF, 1 for an IDPF.
    algo : int
        The algorithm identifier, e.g. the VDAF ``ID``.
    usage : int
        What the output is used for (Prio3's ``USAGE_*`` constants).

    Returns
    -------
    bytes
        The 8-byte tag.
    """
    return (
        VERSION.to_bytes(1, "big")
        + algo_class.to_bytes(1, "big")
        + algo.to_bytes(4, "big")
        + usage.to_bytes(2, "big")
    )


class Xof:
    """Interface of the draft's XOFs (§6.2): a seeded byte stream read with :meth:`next`."""

    SEED_SIZE = 0

    def __init__(self, seed: bytes, dst: bytes, binder: bytes) -> None:
        raise NotImplementedError

    def next(self, length: int) -> bytes:
        """The next ``length`` bytes of the stream."""
        raise NotImplementedError

    @classmethod
    def derive_seed(cls, seed: bytes, dst: bytes, binder: bytes) -> bytes:
        """A fresh ``SEED_SIZE``-byte seed (draft §6.2 ``derive_seed``)."""
        return cls(seed, dst, binder).next(cls.SEED_SIZE)

    def next_vec(self, field: NttField, length: int) -> Vec:
        """The next ``length`` field elements by rejection sampling (draft §6.2).

        Each candidate is ``ENCODED_SIZE`` little-endian bytes masked to the bit
        length of the modulus; candidates ``>= MODULUS`` are skipped and the
        stream continues.  Reads a whole block of candidates at a time.

        Parameters
        ----------
        field : NttField
            The field.
        length : int
            Number of elements.

        Returns
        -------
        list of int
            The elements.
        """
        p, size = field.MODULUS, field.ENCODED_SIZE
        mask = (1 << p.bit_length()) - 1
        out: Vec = []
        while len(out) < length:
            words = field.parse_words(self.next(size * (length - len(out))))
            if mask != (1 << (8 * size)) - 1:
                words = [w & mask for w in words]
            if not words or max(words) < p:  # the common case: nothing rejected
                out.extend(words)
            else:
                out.extend(w for w in words if w < p)
        return out

    @classmethod
    def expand_into_vec(
        cls, field: NttField, seed: bytes, dst: bytes, binder: bytes, length: int
    ) -> Vec:
        """One-shot ``cls(seed, dst, binder).next_vec(field, length)`` (draft §6.2)."""
        return cls(seed, dst, binder).next_vec(field, length)


class XofTurboShake128(Xof):
    """XofTurboShake128 (draft §6.2.1): a stream read with :meth:`next`.

    ``seed`` has at most 255 bytes (``SEED_SIZE`` = 32 by default), ``dst`` (the domain
    separation tag) at most 65535; ``binder`` is the binder string.
    """

    SEED_SIZE = 32

    def __init__(self, seed: bytes, dst: bytes, binder: bytes) -> None:
        if len(seed) > 255:
            raise ValueError("XofTurboShake128 seed longer than 255 bytes")
        if len(dst) > 65535:
            raise ValueError("XofTurboShake128 dst longer than 65535 bytes")
        message = b"".join(
            (len(dst).to_bytes(2, "little"), dst, len(seed).to_bytes(1, "little"), seed, binder)
        )
        # pycryptodome squeezes incrementally: successive reads continue the stream,
        # which is what the draft's next() computes by re-squeezing a longer prefix.
        self._hash = TurboSHAKE128.new(domain=1, data=message)

    def next(self, length: int) -> bytes:
        """The next ``length`` bytes of the stream."""
        return bytes(self._hash.read(length))


class XofFixedKeyAes128(Xof):
    """XofFixedKeyAes128 (draft §6.2.2): fixed-key AES-128 over counter blocks.

    Block ``i`` of the stream is ``AES(k, σ(seed ⊕ le128(i))) ⊕ σ(seed ⊕ le128(i))`` with
    ``σ(lo || hi) = hi || (hi ⊕ lo)`` (the circular correlation-robust hash of
    GKWWY20 §4.2) and ``k = TurboSHAKE128(le16(len(dst)) || dst || binder, 2, 16)``.

    ``seed`` has exactly 16 bytes, ``dst`` (the domain separation tag) at most 65535;
    ``binder`` is the binder string.
    """

    SEED_SIZE = 16

    def __init__(self, seed: bytes, dst: bytes, binder: bytes) -> None:
        if len(seed) != self.SEED_SIZE:
            raise ValueError("XofFixedKeyAes128 seed must be 16 bytes")
        if len(dst) > 65535:
            raise ValueError("XofFixedKeyAes128 dst longer than 65535 bytes")
        key_input = len(dst).to_bytes(2, "little") + dst + binder
        fixed_key = TurboSHAKE128.new(domain=2, data=key_input).read(16)
        self._ecb = Cipher(algorithms.AES(bytes(fixed_key)), modes.ECB()).encryptor()
        self._seed = int.from_bytes(seed, "little")
        self._consumed = 0

    def _blocks(self, first: int, count: int) -> bytes:
        sigmas = []
        for i in range(first, first + count):
            block = (self._seed ^ i).to_bytes(16, "little")
            lo, hi = block[:8], block[8:]
            mixed = (int.from_bytes(hi, "little") ^ int.from_bytes(lo, "little")).to_bytes(
                8, "little"
            )
            sigmas.append(hi + mixed)
        plain = b"".join(sigmas)
        cipher = self._ecb.update(plain)
        return (int.from_bytes(cipher, "little") ^ int.from_bytes(plain, "little")).to_bytes(
            len(plain), "little"
        )

    def next(self, length: int) -> bytes:
        """The next ``length`` bytes of the stream."""
        start, end = self._consumed, self._consumed + length
        self._consumed = end
        first, last = start // 16, (end + 15) // 16
        data = self._blocks(first, last - first)
        offset = start - 16 * first
        return data[offset : offset + length]
