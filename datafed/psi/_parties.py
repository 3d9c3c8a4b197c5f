"""The two node roles of intersection-sum as pure state machines (no I/O, no policy).

:class:`IdsParty` (the ids node) blinds its identifiers, later intersects and adds.
:func:`exchange` (the values node) answers in one step.  Payload layouts:

* blind payload: ``N`` points ``H(v)^k1``, shuffled (``32·N`` bytes);
* exchange payload: a sealed box (X25519 + XSalsa20-Poly1305, libsodium ``crypto_box_seal``)
  to the ids node's per-job key, whose plaintext is ``N`` points ``H(v)^(k1·k2)``, then
  ``M`` points ``H(w)^k2``, then ``M`` Paillier ciphertexts ``Enc_A(t_w)`` of fixed length,
  pairs in one shuffled order.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence

from nacl import bindings
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from datafed.hazmat import HazmatError, PaillierPublicKey, random_scalar
from datafed.psi._job import PsiJob
from datafed.psi._statement import StatementBody
from datafed.psi._workers import POINT_BYTES, Pool, blind_items, encrypt_values, multiply_points
from datafed.psi.errors import InvalidPsiMessage

__all__ = ["VALUE_BOUND", "IdsParty", "exchange"]

#: Each encoded value satisfies ``|t| < 2^64``, so a sum of up to 2^40 of them stays far
#: below ``n/2`` (n has at least 2047 bits) and never wraps.
VALUE_BOUND = 1 << 64
#: crypto_box_SEALBYTES: the ephemeral public key (32) and the Poly1305 tag (16).
_SEAL_OVERHEAD = bindings.crypto_box_SEALBYTES


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class IdsParty:
    """The ids node's side of one job: blind now, intersect when the sealed box comes back.

    Parameters
    ----------
    job
        The job as the analyst stated it.
    identifiers
        Canonical encodings of the node's identifiers (duplicates count once).
    pool
        Where the bulk arithmetic runs (default: inline).
    """

    def __init__(self, job: PsiJob, identifiers: Sequence[bytes], pool: Pool | None = None) -> None:
        self.job = job
        self._ids = list(set(identifiers))
        secrets.SystemRandom().shuffle(self._ids)
        self._key = random_scalar()
        self._box_key = PrivateKey.generate()
        self._pool = pool or Pool(1)
        self.count = len(self._ids)
        self.blind_digest = b""

    def blind(self) -> tuple[StatementBody, bytes]:
        """Blind the identifiers: return the statement to sign and the points.

        Returns
        -------
        tuple of (StatementBody, bytes)
            The blind statement and ``H(v)^k1`` for every identifier, shuffled.
        """
        if self.blind_digest:
            raise RuntimeError("identifiers already blinded")
        points = blind_items(self._pool, self._key, self._ids)
        self._ids = []
        self.blind_digest = _sha256(points)
        body = StatementBody(
            node=self.job.ids.node,
            job_id=self.job.job_id,
            job_digest=self.job.digest(),
            step="blind",
            count=self.count,
            payload_digest=self.blind_digest,
            recipient_key=bytes(self._box_key.public_key),
        )
        return body, points

    def intersect(
        self,
        peer: StatementBody,
        peer_of: bytes,
        sealed: bytes,
        min_intersection: int,
        sum_noise: int = 0,
    ) -> tuple[int, bytes]:
        """Open the values node's box, intersect and add the matching ciphertexts.

        Parameters
        ----------
        peer
            The values node's verified exchange statement.
        peer_of
            Digest of this party's own signed blind statement body.
        sealed
            The sealed box the analyst relayed.
        min_intersection
            This node's own minimum; the larger of it and the peer's applies.
        sum_noise
            Differential-privacy noise added to the sum under encryption (default none).

        Returns
        -------
        tuple of (int, bytes)
            The exact intersection size and ``Enc_A(sum + sum_noise)``, re-randomized.

        Raises
        ------
        InvalidPsiMessage
            If the statement does not answer this job's blind step, the box does not open
            or its contents do not match the statement.
        PermissionError
            If the intersection is smaller than the minimum.
        """
        pk = PaillierPublicKey(self.job.paillier_n)
        plain = self._open(peer, peer_of, sealed, pk.ciphertext_bytes)
        matches = self._matches(plain, peer.pairs, pk.ciphertext_bytes)
        size = len(matches)
        if size < max(min_intersection, peer.min_intersection):
            raise PermissionError(
                f"the intersection has fewer than {max(min_intersection, peer.min_intersection)}"
                " identifiers; no sum is released"
            )
        try:
            total = pk.add_many(pk.ciphertext_from_bytes(c) for c in matches)
        except HazmatError as exc:
            raise InvalidPsiMessage from exc
        # Multiplying by a fresh textbook encryption of the noise (0 without DP), with r^n
        # for r uniform in Z*_n (Paillier 1999, §3), hides which ciphertexts went into the
        # product and adds the noise in one step.
        noise = pk.encrypt_with_r(sum_noise, _unit(pk.n))
        return size, pk.raw_add(total, noise).to_bytes()

    def _open(self, peer: StatementBody, peer_of: bytes, sealed: bytes, width: int) -> bytes:
        """The box's plaintext, once the box and its statement answer this job's blind step."""
        n, m = self.count, peer.pairs
        if (
            not self.blind_digest
            or peer.job_digest != self.job.digest()
            or peer.peer_digest != peer_of
            or peer.count != n
            or peer.payload_digest != _sha256(sealed)
            or len(sealed) != _SEAL_OVERHEAD + n * POINT_BYTES + m * (POINT_BYTES + width)
        ):
            raise InvalidPsiMessage
        try:
            return SealedBox(self._box_key).decrypt(sealed)
        except CryptoError as exc:
            raise InvalidPsiMessage from exc

    def _matches(self, plain: bytes, m: int, width: int) -> list[bytes]:
        """The values node's ciphertexts whose identifier this node holds too.

        ``plain`` is this node's ``n`` points double-blinded, then the values node's ``m``
        points (blinded once more here) and its ``m`` ciphertexts in the same order.
        """
        n = self.count
        split = n * POINT_BYTES
        double = plain[:split]
        theirs = {double[i : i + POINT_BYTES] for i in range(0, split, POINT_BYTES)}
        if len(theirs) != n:
            raise InvalidPsiMessage
        mine = multiply_points(self._pool, self._key, plain[split : split + m * POINT_BYTES])
        base = split + m * POINT_BYTES
        return [
            plain[base + j * width : base + (j + 1) * width]
            for j in range(m)
            if mine[j * POINT_BYTES : (j + 1) * POINT_BYTES] in theirs
        ]


def exchange(
    job: PsiJob,
    pairs: Sequence[tuple[bytes, int]],
    peer: StatementBody,
    peer_digest: bytes,
    points: bytes,
    *,
    min_intersection: int,
    pool: Pool | None = None,
    dp_sensitivity: int = 0,
    dp_epsilon: str = "",
) -> tuple[StatementBody, bytes]:
    """The values node's single step: double-blind, blind own ids, encrypt, seal.

    Parameters
    ----------
    job
        The job as the analyst stated it.
    pairs
        ``(identifier encoding, encoded value)`` with distinct identifiers.
    peer
        The ids node's verified blind statement.
    peer_digest
        Digest of that statement's signed body (the answer points back to it).
    points
        The ids node's blinded points, as relayed.
    min_intersection
        This node's minimum intersection size, stated for the ids node to enforce.
    pool
        Where the bulk arithmetic runs (default: inline).
    dp_sensitivity, dp_epsilon
        Under differential privacy: the clamp bound of ``pairs``' values (fixed point) and
        this node's epsilon, stated for the ids node that adds the noise.

    Returns
    -------
    tuple of (StatementBody, bytes)
        The exchange statement and the sealed box.
    """
    pool = pool or Pool(1)
    _check_exchange(job, pairs, peer, points)
    key = random_scalar()
    double = bytearray(multiply_points(pool, key, points))
    _shuffle_points(double)
    order = list(pairs)
    secrets.SystemRandom().shuffle(order)
    blinded = blind_items(pool, key, [w for w, _ in order])
    cts = encrypt_values(pool, PaillierPublicKey(job.paillier_n), [t for _, t in order])
    plain = bytes(double) + blinded + b"".join(cts)
    sealed = SealedBox(PublicKey(peer.recipient_key)).encrypt(plain)
    body = StatementBody(
        node=job.values.node,
        job_id=job.job_id,
        job_digest=job.digest(),
        step="exchange",
        count=peer.count,
        pairs=len(order),
        payload_digest=_sha256(sealed),
        peer_digest=peer_digest,
        min_intersection=min_intersection,
        dp_sensitivity=dp_sensitivity,
        dp_epsilon=dp_epsilon if dp_sensitivity else "",
    )
    return body, bytes(sealed)


def _check_exchange(
    job: PsiJob, pairs: Sequence[tuple[bytes, int]], peer: StatementBody, points: bytes
) -> None:
    """Raise unless the blind statement and points answer this job and ``pairs`` fit it."""
    if peer.job_digest != job.digest() or len(peer.recipient_key) != 32:
        raise InvalidPsiMessage
    if len(points) != peer.count * POINT_BYTES or _sha256(points) != peer.payload_digest:
        raise InvalidPsiMessage
    received = {points[i : i + POINT_BYTES] for i in range(0, len(points), POINT_BYTES)}
    if len(received) != peer.count:
        raise InvalidPsiMessage
    if len({w for w, _ in pairs}) != len(pairs):
        raise ValueError("identifiers on the values side must be distinct")
    if any(not -VALUE_BOUND < t < VALUE_BOUND for _, t in pairs):
        raise ValueError("every encoded value must satisfy |value| < 2^64")


def _unit(n: int) -> int:
    """A uniform unit of ``Z_n`` (a non-unit would factor ``n``; retried for form's sake)."""
    while True:
        r = secrets.randbelow(n - 1) + 1
        if math.gcd(r, n) == 1:
            return r


def _shuffle_points(buf: bytearray) -> None:
    """Shuffle 32-byte points in place (Fisher-Yates with a CSPRNG)."""
    rng = secrets.SystemRandom()
    for i in range(len(buf) // POINT_BYTES - 1, 0, -1):
        j = rng.randint(0, i)
        a, b = i * POINT_BYTES, j * POINT_BYTES
        buf[a : a + POINT_BYTES], buf[b : b + POINT_BYTES] = (
            buf[b : b + POINT_BYTES],
            buf[a : a + POINT_BYTES],
        )
