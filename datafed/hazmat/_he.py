"""CKKS and BFV vectors on TenSEAL, with automatic chunking and a CKKS error bound.

The analyst holds an :class:`HeContext` with the secret key; only
:meth:`HeContext.public_bytes` (public key, no secret, relinearization or Galois
keys) leaves it.  Vectors longer than one ciphertext's slots (``N/2`` for CKKS,
``N`` for BFV) are split into chunks and joined on decryption.

CKKS error bound: a fresh encryption's error in the canonical embedding is at
most ``B_clean = 8√2·σN + 6σ√N + 16σ√(hN)`` (Cheon, Kim, Kim, Song, ASIACRYPT
2017, Lemma 1; a high-probability bound, ``σ = 3.2`` as in SEAL and the HE
standard, ``h ≤ N``), encoding rounding adds at most ``N/2``, and each slot's error
is bounded by the canonical-embedding norm divided by the scale ``Δ``.  Sums add
the bounds.  Double-precision encoding and decoding add at most
``M·N·2^−53`` each for inputs of magnitude at most ``M`` (the declared
``value_bound``).  TenSEAL is imported lazily: importing :mod:`datafed.hazmat`
stays light.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Scheme = Literal["ckks", "bfv"]

NOISE_SIGMA = 3.2
"""Error standard deviation of SEAL and the HE standard (homomorphicencryption.org, 2018)."""

BFV_PLAIN_MODULUS = 549756026881
"""A 40-bit prime ``≡ 1 (mod 16384)``, so BFV batching works at ``N = 8192``."""

_MAGIC = b"datafed-he-v1\n"


@dataclass(frozen=True)
class HeParams:
    """Public parameters shared by the analyst and every encryptor.

    Defaults follow docs/parameters.md: ``N = 8192``, coefficient moduli [60, 40, 40, 60],
    scale ``2^40`` (128-bit security per the HE standard's table for ``N = 8192``).
    """

    scheme: Scheme = "ckks"
    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60)
    scale_bits: int = 40
    plain_modulus: int = BFV_PLAIN_MODULUS
    value_bound: float = float(1 << 20)
    max_additions: int = 1024

    @classmethod
    def for_sums(cls, value_bound: float, max_additions: int = 1024) -> HeParams:
        """CKKS parameters for sums only, with the fewest coefficient primes that hold them.

        Sums need no multiplication, so no prime is consumed by rescaling: the data level
        (every prime but the last, special one) must only hold the encoded total,
        ``2^scale_bits x max_additions x value_bound`` (an encoded coefficient is at most
        the scale times the largest slot), below half its modulus. ``[60, 40, 60]`` (data
        level ``~2^99.9``) holds ``value_bound <= 2^48`` at 1024 additions, with a bit to
        spare; larger bounds keep ``[60, 40, 40, 60]``. Fewer primes only lower
        ``log q``, so 128-bit security holds (HE standard, Table 1: ``log q <= 218`` at
        ``N = 8192``); the fresh-encryption error (:meth:`fresh_error`) does not depend on
        them. One prime fewer makes the public key a quarter and a ciphertext a third
        smaller (docs/parameters.md).
        """
        needed = cls.scale_bits + math.log2(value_bound) + math.log2(max_additions) + 2
        small = (60, 40, 60)
        coeff = small if needed <= sum(small[:-1]) else cls.coeff_mod_bit_sizes
        return cls(coeff_mod_bit_sizes=coeff, value_bound=value_bound, max_additions=max_additions)

    @property
    def slots(self) -> int:
        """Values per ciphertext."""
        n = self.poly_modulus_degree
        return n // 2 if self.scheme == "ckks" else n

    def fresh_error(self) -> float:
        """Return the bound on one fresh CKKS encryption's per-slot error.

        Returns
        -------
        float
            The bound (0 for BFV, which is exact).
        """
        if self.scheme == "bfv":
            return 0.0
        n, s = float(self.poly_modulus_degree), NOISE_SIGMA
        b_clean = 8 * math.sqrt(2) * s * n + 6 * s * math.sqrt(n) + 16 * s * math.sqrt(n * n)
        crypto = (b_clean + n / 2) / float(2**self.scale_bits)
        return crypto + 2 * self.value_bound * n * 2.0**-53


def _ts() -> Any:
    import tenseal

    return tenseal


def _make_context(params: HeParams) -> Any:
    ts = _ts()
    if params.scheme == "ckks":
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        )
        ctx.global_scale = float(2**params.scale_bits)
    else:
        ctx = ts.context(
            ts.SCHEME_TYPE.BFV,
            poly_modulus_degree=params.poly_modulus_degree,
            plain_modulus=params.plain_modulus,
        )
    return ctx


@dataclass(frozen=True)
class HeResult:
    """A decrypted vector and the bound on its per-entry absolute error."""

    values: npt.NDArray[Any]
    error_bound: float


class EncryptedVector:
    """A vector encrypted as one or more ciphertext chunks; ``a + b`` adds."""

    def __init__(self, params: HeParams, chunks: list[Any], length: int, additions: int) -> None:
        self.params = params
        self.chunks = chunks
        self.length = length
        self.additions = additions

    def __add__(self, other: EncryptedVector) -> EncryptedVector:
        if not isinstance(other, EncryptedVector):
            return NotImplemented
        if other.length != self.length or other.params != self.params:
            raise ValueError("encrypted vectors differ in length or parameters")
        if self.additions + other.additions > self.params.max_additions:
            raise ValueError(f"more than {self.params.max_additions} additions declared")
        chunks = [a + b for a, b in zip(self.chunks, other.chunks, strict=True)]
        return EncryptedVector(self.params, chunks, self.length, self.additions + other.additions)

    def to_chunks(self) -> list[bytes]:
        """Return the serialized ciphertext chunks.

        Returns
        -------
        list of bytes
            One TenSEAL serialization per chunk.
        """
        return [c.serialize() for c in self.chunks]


class HePublicContext:
    """The encryptor's side: the public context, no secret key."""

    def __init__(self, params: HeParams, context: Any) -> None:
        self.params = params
        self._context = context

    @classmethod
    def from_bytes(cls, data: bytes) -> HePublicContext:
        """Load a public context written by :meth:`HeContext.public_bytes`.

        Parameters
        ----------
        data : bytes
            The serialized public context.

        Returns
        -------
        HePublicContext
            The context.
        """
        if not data.startswith(_MAGIC):
            raise ValueError("not a datafed HE public context")
        header, _, body = data[len(_MAGIC) :].partition(b"\n")
        raw = json.loads(header)
        raw["coeff_mod_bit_sizes"] = tuple(raw["coeff_mod_bit_sizes"])
        ctx = _ts().context_from(body)
        if ctx.has_secret_key():
            raise ValueError("a public HE context must not contain a secret key")
        return cls(HeParams(**raw), ctx)

    def encrypt(self, values: npt.ArrayLike) -> EncryptedVector:
        """Encrypt a vector of any length, split into ``slots``-sized chunks.

        Parameters
        ----------
        values : array_like
            Reals (CKKS) or integers (BFV) of magnitude at most ``value_bound``.

        Returns
        -------
        EncryptedVector
            The encrypted vector (``additions = 1``).
        """
        p = self.params
        x = np.asarray(values, dtype=np.float64 if p.scheme == "ckks" else np.int64).ravel()
        if x.size == 0:
            raise ValueError("cannot encrypt an empty vector")
        if not np.isfinite(x).all() or np.abs(x).max() > p.value_bound:
            raise ValueError(f"values must be finite with magnitude at most {p.value_bound}")
        ts, ctx, step = _ts(), self._context, p.slots
        make = ts.ckks_vector if p.scheme == "ckks" else ts.bfv_vector
        chunks = [make(ctx, x[i : i + step].tolist()) for i in range(0, x.size, step)]
        return EncryptedVector(p, chunks, int(x.size), 1)

    def vector_from_chunks(
        self, chunks: Sequence[bytes], *, length: int, additions: int = 1
    ) -> EncryptedVector:
        """Load a serialized encrypted vector.

        Parameters
        ----------
        chunks : sequence of bytes
            From :meth:`EncryptedVector.to_chunks`.
        length : int
            Number of values.
        additions : int, optional
            How many fresh encryptions were summed into it.

        Returns
        -------
        EncryptedVector
            The vector, linked to this context.
        """
        p = self.params
        if len(chunks) != -(-length // p.slots) or not 1 <= additions <= p.max_additions:
            raise ValueError("chunk count, length and additions do not match the parameters")
        ts = _ts()
        load = ts.ckks_vector_from if p.scheme == "ckks" else ts.bfv_vector_from
        return EncryptedVector(p, [load(self._context, c) for c in chunks], length, additions)


class HeContext(HePublicContext):
    """The analyst's context: holds the secret key, decrypts, exports a public context."""

    @classmethod
    def generate(cls, params: HeParams | None = None) -> HeContext:
        """Create fresh keys for ``params`` (docs/parameters.md defaults).

        Parameters
        ----------
        params : HeParams, optional
            Parameters; CKKS defaults when omitted.

        Returns
        -------
        HeContext
            A context holding the secret key.
        """
        p = params or HeParams()
        if p.scheme == "bfv" and p.value_bound * p.max_additions >= p.plain_modulus // 2:
            raise ValueError("BFV value_bound * max_additions must stay below plain_modulus / 2")
        return cls(p, _make_context(p))

    def public_bytes(self) -> bytes:
        """Serialize the public context: public key only, never the secret key.

        Returns
        -------
        bytes
            Bytes for :meth:`HePublicContext.from_bytes`.
        """
        header = json.dumps(self.params.__dict__, sort_keys=True).encode()
        body: bytes = self._context.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        return _MAGIC + header + b"\n" + body

    def decrypt(self, vector: EncryptedVector) -> HeResult:
        """Decrypt ``vector`` and bound its error.

        Parameters
        ----------
        vector : EncryptedVector
            A vector under this context (possibly a sum).

        Returns
        -------
        HeResult
            The values and ``error_bound = additions × fresh_error`` (0 for BFV).
        """
        if vector.params != self.params:
            raise ValueError("vector was encrypted under different HE parameters")
        parts = []
        for chunk in vector.chunks:
            chunk.link_context(self._context)
            parts.append(chunk.decrypt())
        values = np.concatenate([np.asarray(p) for p in parts])[: vector.length]
        return HeResult(values, vector.additions * self.params.fresh_error())
