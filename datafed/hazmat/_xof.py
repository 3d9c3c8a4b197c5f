"""The XOFs of the VDAF draft (draft-irtf-cfrg-vdaf-20 §6.2).

* :class:`XofTurboShake128` (§6.2.1): TurboSHAKE128 (RFC 9861) from
  pycryptodome, over ``le16(len(dst)) || dst || le8(len(seed)) || seed || binder``
  with domain byte 1.  Prio3 uses only this one.
* :class:`XofFixedKeyAes128` (§6.2.2): a fixed-key AES-128 hash of counter
  blocks, the key derived by TurboSHAKE128 (domain byte 2); AES comes from
  ``cryptography`` (OpenSSL).  The draft reserves it for Poplar1's IDPF; it is here
  for the known-answer vectors and completeness.

No Keccak or AES is implemented here: both come from kept libraries.

:class:`TurboShake` calls pycryptodome's Keccak library directly (init once, then absorb,
squeeze and reset per message: three C calls instead of the Python wrapper's object per
call), for the many short XOF calls of Prio3; :meth:`XofTurboShake128.derive_seed`,
:meth:`~XofTurboShake128.expand_into_vec` and :func:`xof_many` use it. Through cffi (the
usual backend) bytes and ints are passed as they are: about 2 µs a short call, against
2.5-4.5 µs with pycryptodome's argument wrappers (docs/prio3.md).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from Crypto.Hash import TurboSHAKE128
from Crypto.Hash.keccak import _raw_keccak_lib as _keccak  # type: ignore[attr-defined]
from Crypto.Util import _raw_api
from Crypto.Util._raw_api import (  # type: ignore[attr-defined]
    SmartPointer,
    VoidPointer,
    c_size_t,
    c_ubyte,
    c_uint8_ptr,
    create_string_buffer,
    get_raw_buffer,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from datafed.hazmat._field import NttField, Vec

#: pycryptodome's C functions are called through cffi (the usual case): they then take
#: bytes and ints directly; under its ctypes fallback every argument is wrapped.
_CFFI = getattr(_raw_api, "backend", "") == "cffi"
_ffi: Any = getattr(_raw_api, "ffi", None)

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


class TurboShake:
    """TurboSHAKE128 (RFC 9861, 12 rounds) on one reusable Keccak state.

    ``digest(message, length, domain)`` equals
    ``TurboSHAKE128.new(domain=domain, data=message).read(length)``; not thread-safe
    (one instance per thread or per batch).
    """

    def __init__(self) -> None:
        state = VoidPointer()
        if _keccak.keccak_init(state.address_of(), c_size_t(32), c_ubyte(12)):
            raise ValueError("cannot initialise TurboSHAKE128")
        self._state = SmartPointer(state.get(), _keccak.keccak_destroy)
        self._raw = self._state.get()
        self._out: dict[int, object] = {}

    def digest(self, message: bytes, length: int, domain: int = 1) -> bytes:
        """The first ``length`` bytes of TurboSHAKE128(``message``, ``domain``)."""
        raw, out = self._raw, self._out.get(length)
        if out is None:
            out = self._out[length] = create_string_buffer(length)  # type: ignore[call-arg]
        if _CFFI:  # bytes and ints go to the C functions as they are (no wrapper objects)
            failed = _keccak.keccak_absorb(raw, message, len(message)) or _keccak.keccak_squeeze(
                raw, out, length, domain
            )
            _keccak.keccak_reset(raw)
            if failed:
                raise ValueError("TurboSHAKE128 failed")
            return _ffi.buffer(out)[:]  # type: ignore[no-any-return]
        if _keccak.keccak_absorb(raw, c_uint8_ptr(message), c_size_t(len(message))):
            raise ValueError("TurboSHAKE128 absorb failed")
        if _keccak.keccak_squeeze(raw, out, c_size_t(length), c_ubyte(domain)):
            raise ValueError("TurboSHAKE128 squeeze failed")
        _keccak.keccak_reset(raw)
        return bytes(get_raw_buffer(out))

    def digest_many(self, messages: Sequence[bytes], length: int, domain: int = 1) -> list[bytes]:
        """:meth:`digest` of each message, in order (one loop, the C calls bound once)."""
        if not _CFFI:
            return [self.digest(m, length, domain) for m in messages]
        raw, out = self._raw, self._out.get(length)
        if out is None:
            out = self._out[length] = create_string_buffer(length)  # type: ignore[call-arg]
        absorb, squeeze, reset = _keccak.keccak_absorb, _keccak.keccak_squeeze, _keccak.keccak_reset
        buf, result = _ffi.buffer(out), []
        for m in messages:
            failed = absorb(raw, m, len(m)) or squeeze(raw, out, length, domain)
            reset(raw)
            if failed:
                raise ValueError("TurboSHAKE128 failed")
            result.append(buf[:])
        return result


def _xof_message(seed: bytes, dst: bytes, binder: bytes) -> bytes:
    # draft §6.2.1: le16(len(dst)) || dst || le8(len(seed)) || seed || binder
    if len(seed) > 255:
        raise ValueError("XofTurboShake128 seed longer than 255 bytes")
    if len(dst) > 65535:
        raise ValueError("XofTurboShake128 dst longer than 65535 bytes")
    return b"".join((len(dst).to_bytes(2, "little"), dst, bytes([len(seed)]), seed, binder))


def xof_many(
    seeds: Sequence[bytes], dst: bytes, binders: Sequence[bytes], length: int
) -> list[bytes]:
    """``XofTurboShake128(seed, dst, binder).next(length)`` for each pair, in order."""
    if len(seeds) != len(binders):
        raise ValueError("one binder per seed")
    if not seeds:
        return []
    size = len(seeds[0])
    if any(len(s) != size for s in seeds):  # the messages' common prefix needs one seed size
        return [
            turboshake().digest(_xof_message(s, dst, b), length)
            for s, b in zip(seeds, binders, strict=True)
        ]
    head = _xof_message(bytes(size), dst, b"")[: -size or None]
    return turboshake().digest_many(
        [b"".join((head, s, b)) for s, b in zip(seeds, binders, strict=True)], length
    )


_LOCAL = threading.local()


def turboshake() -> TurboShake:
    """This thread's reusable :class:`TurboShake` (one-shot calls never interleave on it)."""
    ts: TurboShake | None = getattr(_LOCAL, "ts", None)
    if ts is None:
        ts = _LOCAL.ts = TurboShake()
    return ts


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

    @classmethod
    def derive_seed(cls, seed: bytes, dst: bytes, binder: bytes) -> bytes:
        """A fresh ``SEED_SIZE``-byte seed (draft §6.2 ``derive_seed``), one-shot."""
        return turboshake().digest(_xof_message(seed, dst, binder), cls.SEED_SIZE)

    @classmethod
    def expand_into_vec(
        cls, field: NttField, seed: bytes, dst: bytes, binder: bytes, length: int
    ) -> Vec:
        """``next_vec`` from a fresh stream; one-shot unless an element is rejected."""
        size, p = field.ENCODED_SIZE, field.MODULUS
        data = turboshake().digest(_xof_message(seed, dst, binder), size * length)
        words = field.parse_words(data)
        if p.bit_length() == 8 * size and max(words, default=0) < p:  # nothing masked or rejected
            return words
        return cls(seed, dst, binder).next_vec(field, length)


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
