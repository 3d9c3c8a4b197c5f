"""Sealing the Helper's input share to the Helper, bound to its report.

The Leader relays every report's Helper input share, so the share travels sealed to
the Helper's key, as DAP seals it with HPKE (draft-ietf-ppm-dap-18 §4.4.2, with the
report metadata as associated data). The construction is HPKE's base mode in
spirit (RFC 9180: an ephemeral X25519 agreement, HKDF-SHA256, an AEAD), from
kept libraries only (``cryptography``):

.. code-block:: text

    enc    = X25519 public key of a fresh ephemeral secret e
    shared = X25519(e, pk_helper)           pk_helper: from the Ed25519 key in the
                                            Helper's certificate (datafed/pki/peers.py)
    prk    = HKDF-Extract(salt = enc || pk_helper, ikm = shared)
    key    = HKDF-Expand(prk, LABEL || task_id || report_id || u64(time), 32)
    aad    = LABEL || task_id || report_id || u64(time) || u32(len(public)) || public
    ct     = ChaCha20-Poly1305(key).encrypt(nonce = 0^12, helper_share, aad)

The report ID, its time, the task and the public share are both in the key and in the
associated data, so a Leader that moves a sealed share to another report ID (to have
one report counted twice) or another time (another window) gets a share that does not
open at the Helper: for Count and Sum the report ID alone binds nothing, since it only
seeds query randomness (``docs/prio3.md``). A gateway may seal many reports under one
ephemeral key (one agreement per upload): each report still gets its own key, since
the key derivation includes the report ID, and :func:`seal_shares` refuses a batch with a
repeated ID, so a key never encrypts twice under the fixed nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from datafed.collect.errors import SealError

__all__ = ["ENC_SIZE", "TAG_SIZE", "ReportBinding", "SealedShare", "ShareOpener", "seal_shares"]

LABEL = b"datafed/collect/v1/helper-input-share\x00"
ENC_SIZE = 32
TAG_SIZE = 16
_NONCE = bytes(12)


@dataclass(frozen=True)
class ReportBinding:
    """What a sealed share is bound to: its task, report ID, time and public share."""

    task_id: bytes
    report_id: bytes
    time: int
    public_share: bytes

    def info(self) -> bytes:
        """The key-derivation info: label, task, report ID and time."""
        return LABEL + self.task_id + self.report_id + struct.pack(">Q", self.time)

    def aad(self) -> bytes:
        """The associated data: the info, then the length-prefixed public share."""
        return self.info() + struct.pack(">I", len(self.public_share)) + self.public_share


@dataclass(frozen=True)
class SealedShare:
    """A Helper input share sealed to the Helper: the ephemeral public key and ciphertext."""

    enc: bytes
    ciphertext: bytes


def _prk(shared: bytes, enc: bytes, recipient: bytes) -> bytes:
    # RFC 5869 §2.2 HKDF-Extract: HMAC-SHA256(salt, ikm).
    return hmac.digest(enc + recipient, shared, hashlib.sha256)


def _key(prk: bytes, binding: ReportBinding) -> bytes:
    # RFC 5869 §2.3 HKDF-Expand for one block (L = 32 = HashLen): T(1) = HMAC(PRK, info || 1).
    return hmac.digest(prk, binding.info() + b"\x01", hashlib.sha256)


def seal_shares(
    recipient: bytes, items: Sequence[tuple[ReportBinding, bytes]]
) -> list[SealedShare]:
    """Seal Helper input shares to the Helper's X25519 key ``recipient``, one agreement.

    Parameters
    ----------
    recipient : bytes
        The Helper's 32-byte X25519 public key (:func:`datafed.pki.peers.x25519_public`).
    items : sequence of (ReportBinding, bytes)
        Each report's binding and its encoded Helper input share.

    Returns
    -------
    list of SealedShare
        One per item, in order, all with the same ``enc``.
    """
    ids = [b.report_id for b, _ in items]
    if len(set(ids)) != len(ids):
        raise ValueError("a sealing batch must not repeat a report ID")
    eph = X25519PrivateKey.generate()
    enc = eph.public_key().public_bytes_raw()
    prk = _prk(eph.exchange(X25519PublicKey.from_public_bytes(recipient)), enc, recipient)
    return [
        SealedShare(enc, ChaCha20Poly1305(_key(prk, b)).encrypt(_NONCE, share, b.aad()))
        for b, share in items
    ]


class ShareOpener:
    """The Helper's side: opens sealed shares, one agreement per distinct ``enc``.

    Parameters
    ----------
    private : bytes
        The Helper's 32-byte X25519 secret (:func:`datafed.pki.peers.x25519_private`).
    """

    def __init__(self, private: bytes) -> None:
        self._key = X25519PrivateKey.from_private_bytes(private)
        self._public = self._key.public_key().public_bytes_raw()
        self._prks: dict[bytes, bytes] = {}

    def open(self, binding: ReportBinding, sealed: SealedShare) -> bytes:
        """The Helper input share, or :class:`SealError` if it was sealed for anything else."""
        prk = self._agree(sealed.enc, sealed.ciphertext)
        try:
            return ChaCha20Poly1305(_key(prk, binding)).decrypt(
                _NONCE, sealed.ciphertext, binding.aad()
            )
        except InvalidTag as exc:
            raise SealError from exc

    def open_many(
        self,
        task_id: bytes,
        ids: Sequence[bytes],
        times: Sequence[int],
        public_shares: Sequence[bytes],
        encs: Sequence[bytes],
        ciphertexts: Sequence[bytes],
    ) -> list[bytes | None]:
        """:meth:`open` for a job's reports given as columns; ``None`` where one does not open.

        The same derivation and checks as :meth:`open` (the binding is each report's own
        task ID, report ID, time and public share), without an object per report.
        """
        out: list[bytes | None] = []
        head, prks = LABEL + task_id, self._prks
        cols = zip(ids, times, public_shares, encs, ciphertexts, strict=True)
        for rid, t, public, enc, ct in cols:
            prk = prks.get(enc)
            if prk is None or len(ct) < TAG_SIZE:
                try:
                    prk = self._agree(enc, ct)
                except SealError:
                    out.append(None)
                    continue
            info = head + rid + t.to_bytes(8, "big")
            key = hmac.digest(prk, info + b"\x01", hashlib.sha256)
            aad = info + len(public).to_bytes(4, "big") + public
            try:
                out.append(ChaCha20Poly1305(key).decrypt(_NONCE, ct, aad))
            except InvalidTag:
                out.append(None)
        return out

    def _agree(self, enc: bytes, ct: bytes) -> bytes:
        """The PRK of one ``enc`` (cached), after the size checks of :meth:`open`."""
        if len(enc) != ENC_SIZE or len(ct) < TAG_SIZE:
            raise SealError
        if enc in self._prks:
            return self._prks[enc]
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(enc))
        except ValueError as exc:  # a low-order point: the agreement is all zeros
            raise SealError from exc
        prk = self._prks[enc] = _prk(shared, enc, self._public)
        return prk

    def forget(self) -> None:
        """Drop the cached agreements (call after each aggregation job)."""
        self._prks.clear()
