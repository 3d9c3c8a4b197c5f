"""Private intersection-sum: Google's Private Join and Compute, as two state machines.

Ion et al., "On Deploying Secure Computing: Private Intersection-Sum-with-Cardinality"
(EuroS&P 2020), DDH-based protocol.  Party 1 holds identifiers ``V``; party 2 holds
pairs ``(w, t)`` and a Paillier key.  With ``H`` a hash to the prime-order group
(:func:`~datafed.hazmat.hash_to_group`) and secret exponents ``k1``, ``k2``:

1. P1 → P2: ``{H(v)^k1}`` shuffled.
2. P2 → P1: ``{H(v)^(k1·k2)}`` shuffled, and pairs ``(H(w)^k2, Enc(t))`` shuffled.
3. P1 raises each ``H(w)^k2`` to ``k1``, matches against ``{H(v)^(k1·k2)}``, adds the
   matching ciphertexts homomorphically, adds a uniform mask ``r`` and sends
   ``Enc(S + r)`` with the intersection size ``|J|``.
4. P2 decrypts and returns ``S + r mod n``; P1 removes ``r``.

Both learn ``|J|``; P1 learns ``S = Σ_{w∈J} t``; P2 sees only ``S + r``, uniform
in ``Z_n``.  (The published protocol stops at step 3 with P2 learning ``S``; the
mask round moves the sum to P1, as docs/invisibility.md wants.)  Semi-honest security.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from datafed.hazmat import (
    BatchEncryptor,
    HazmatError,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_paillier_keypair,
    hash_to_group,
    random_scalar,
    scalar_mult,
)
from datafed.protocols.errors import InvalidMessage, RoundError

VALUE_BOUND = 1 << 64
"""Party 2's values must satisfy ``|t| < 2^64`` so sums of many never wrap mod ``n``."""


@dataclass(frozen=True)
class PsiRound1:
    """P1 → P2: P1's blinded identifiers ``H(v)^k1``, shuffled."""

    blinded: tuple[bytes, ...]


@dataclass(frozen=True)
class PsiRound2:
    """P2 → P1: double-blinded identifiers, blinded pairs with Paillier ciphertexts, the key."""

    double_blinded: tuple[bytes, ...]
    pairs: tuple[tuple[bytes, bytes], ...]
    paillier_n: int


@dataclass(frozen=True)
class PsiRound3:
    """P1 → P2: ``Enc(S + r)`` and the intersection size."""

    masked_sum: bytes
    intersection_size: int


@dataclass(frozen=True)
class PsiRound4:
    """P2 → P1: the decrypted masked sum ``S + r mod n``."""

    masked_sum: int


@dataclass(frozen=True)
class PsiResult:
    """Party 1's output: the intersection size and the sum of P2's values over it."""

    intersection_size: int
    intersection_sum: int


def _encode_id(item: bytes | str) -> bytes:
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, bytes):
        return item
    raise TypeError(f"PSI identifiers must be str or bytes, got {type(item).__name__}")


def _shuffled(items: list[bytes]) -> tuple[bytes, ...]:
    secrets.SystemRandom().shuffle(items)
    return tuple(items)


class PsiParty1:
    """The party with identifiers only; it learns the intersection size and sum.

    Parameters
    ----------
    identifiers : iterable of str or bytes
        The identifier column (duplicates count once).
    """

    def __init__(self, identifiers: Iterable[bytes | str]) -> None:
        self._ids = sorted({_encode_id(i) for i in identifiers})
        self._key = random_scalar()
        self._round = 1
        self._mask = 0
        self._size = 0
        self._public: PaillierPublicKey | None = None

    def _advance(self, expected: int) -> None:
        if self._round != expected:
            raise RoundError(f"PSI party 1 is at round {self._round}, not {expected}")
        self._round += 2

    def round1(self) -> PsiRound1:
        """Blind and shuffle the identifiers.

        Returns
        -------
        PsiRound1
            ``{H(v)^k1}``.
        """
        self._advance(1)
        return PsiRound1(_shuffled([scalar_mult(self._key, hash_to_group(v)) for v in self._ids]))

    def round3(self, msg: PsiRound2) -> PsiRound3:
        """Intersect, add the matching ciphertexts, mask the sum.

        Parameters
        ----------
        msg : PsiRound2
            Party 2's reply.

        Returns
        -------
        PsiRound3
            ``Enc(S + r)`` and ``|J|``.
        """
        self._advance(3)
        if len(msg.double_blinded) != len(self._ids):
            raise InvalidMessage
        try:
            pk = PaillierPublicKey(msg.paillier_n)
            theirs = set(msg.double_blinded)
            matches = [
                pk.ciphertext_from_bytes(ct)
                for point, ct in msg.pairs
                if scalar_mult(self._key, point) in theirs
            ]
        except (HazmatError, ValueError, TypeError) as exc:
            raise InvalidMessage from exc
        self._public, self._size = pk, len(matches)
        self._mask = secrets.randbelow(pk.n)
        # Adding a fresh encryption of r both masks S and re-randomizes the sum.
        total = pk.raw_add(pk.add_many(matches), pk.encrypt(self._mask))
        return PsiRound3(total.to_bytes(), self._size)

    def finish(self, msg: PsiRound4) -> PsiResult:
        """Unmask the sum.

        Parameters
        ----------
        msg : PsiRound4
            Party 2's decryption of ``S + r``.

        Returns
        -------
        PsiResult
            Intersection size and sum.
        """
        self._advance(5)
        assert self._public is not None
        n = self._public.n
        if not isinstance(msg.masked_sum, int) or not 0 <= msg.masked_sum < n:
            raise InvalidMessage
        s = (msg.masked_sum - self._mask) % n
        return PsiResult(self._size, s - n if s > n // 2 else s)


class PsiParty2:
    """The party with ``(identifier, value)`` pairs and the Paillier key; it learns the size.

    Parameters
    ----------
    pairs : sequence of (str or bytes, int)
        The identifier and value columns; identifiers must be distinct.
    key_bits : int, optional
        Paillier modulus length when no key pair is given (default 3072).
    keypair : tuple of (PaillierPublicKey, PaillierPrivateKey), optional
        An existing key pair.
    encryptor : BatchEncryptor, optional
        A process pool for the value encryptions (must use the same public key).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[bytes | str, int]],
        *,
        key_bits: int = 3072,
        keypair: tuple[PaillierPublicKey, PaillierPrivateKey] | None = None,
        encryptor: BatchEncryptor | None = None,
    ) -> None:
        ids = [_encode_id(w) for w, _ in pairs]
        if len(set(ids)) != len(ids):
            raise ValueError("PSI party 2 identifiers must be distinct")
        values = [t for _, t in pairs]
        if any(
            isinstance(t, bool) or not isinstance(t, int) or abs(t) >= VALUE_BOUND for t in values
        ):
            raise ValueError("PSI party 2 values must be ints with |value| < 2^64")
        self._pk, self._sk = keypair if keypair is not None else generate_paillier_keypair(key_bits)
        if encryptor is not None and encryptor.public_key != self._pk:
            raise ValueError("encryptor uses a different Paillier public key")
        self._ids, self._values, self._encryptor = ids, values, encryptor
        self._key = random_scalar()
        self._round = 2
        self.intersection_size: int | None = None

    def _advance(self, expected: int) -> None:
        if self._round != expected:
            raise RoundError(f"PSI party 2 is at round {self._round}, not {expected}")
        self._round += 2

    def round2(self, msg: PsiRound1) -> PsiRound2:
        """Double-blind party 1's points; blind own identifiers; encrypt own values.

        Parameters
        ----------
        msg : PsiRound1
            Party 1's blinded identifiers.

        Returns
        -------
        PsiRound2
            The reply, both lists shuffled.
        """
        self._advance(2)
        if len(set(msg.blinded)) != len(msg.blinded):
            raise InvalidMessage
        try:
            double = [scalar_mult(self._key, p) for p in msg.blinded]
        except HazmatError as exc:
            raise InvalidMessage from exc
        if self._encryptor is not None:
            cts = self._encryptor.encrypt_many(self._values)
        else:
            cts = self._pk.encrypt_many(self._values)
        pairs = [
            (scalar_mult(self._key, hash_to_group(w)), c.to_bytes())
            for w, c in zip(self._ids, cts, strict=True)
        ]
        secrets.SystemRandom().shuffle(pairs)
        return PsiRound2(_shuffled(double), tuple(pairs), self._pk.n)

    def round4(self, msg: PsiRound3) -> PsiRound4:
        """Decrypt the masked sum and learn the intersection size.

        Parameters
        ----------
        msg : PsiRound3
            Party 1's masked encrypted sum.

        Returns
        -------
        PsiRound4
            ``S + r mod n``.
        """
        self._advance(4)
        if not 0 <= msg.intersection_size <= len(self._ids):
            raise InvalidMessage
        try:
            c = self._pk.ciphertext_from_bytes(msg.masked_sum)
        except HazmatError as exc:
            raise InvalidMessage from exc
        self.intersection_size = msg.intersection_size
        return PsiRound4(self._sk.decrypt(c))
