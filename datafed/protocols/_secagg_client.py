"""The client side of secure aggregation (Bonawitz et al., CCS 2017): a pure state machine.

Each method is one round; it takes the server's last message and returns the
client's next one.  A client that drops out simply stops being called.  The
client refuses to reveal, for the same peer, both the self-mask share and the
mask-key share: that pair would let the server unmask a single input; and it
unmasks only for the one survivor set U3 it was shown in the consistency round,
vouched for by at least ``t`` signers (``_secagg_messages``).  A client
that rejects a message (``InvalidMessage``, ``ProtocolAbort``) has aborted: its
round does not rewind.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import datafed.protocols._secagg_messages as messages
from datafed.hazmat import SEED_BYTES, ShamirShare, derive_seed, prg_uint64, shamir_split_bytes
from datafed.protocols.errors import InvalidMessage, ProtocolAbort, RoundError


def check_parameters(threshold: int, vector_length: int) -> None:
    """Validate the protocol parameters shared by clients and server.

    Parameters
    ----------
    threshold : int
        ``t``: shares needed to reconstruct; at least 2.
    vector_length : int
        Length of every input vector; at least 1.
    """
    if threshold < 2:
        raise ValueError(f"secagg threshold must be at least 2, got {threshold}")
    if vector_length < 1:
        raise ValueError(f"secagg vector_length must be at least 1, got {vector_length}")


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _aad(sender: int, recipient: int) -> bytes:
    return sender.to_bytes(4, "big") + recipient.to_bytes(4, "big")


class SecAggClient:
    """One party of secure aggregation.

    Parameters
    ----------
    client_id : int
        This client's id in ``[1, 2^32)``; it is also its Shamir evaluation point.
    threshold : int
        ``t``: at least ``t`` clients must survive every round; ``2t`` must exceed
        the number of clients in the roster.
    vector_length : int
        Length of the ``Z_2^64`` input vector.
    """

    def __init__(self, client_id: int, *, threshold: int, vector_length: int) -> None:
        if not 0 < client_id < 1 << 32:
            raise ValueError(f"client_id must be in [1, 2^32), got {client_id}")
        check_parameters(threshold, vector_length)
        self.client_id = client_id
        self.threshold = threshold
        self.vector_length = vector_length
        self._c_key = X25519PrivateKey.generate()
        self._s_key = X25519PrivateKey.generate()
        self._round = 0
        self._roster: dict[int, messages.AdvertiseKeys] = {}
        self._self_seed = b""
        self._own_s_share: ShamirShare | None = None
        self._own_b_share: ShamirShare | None = None
        self._s_shares: dict[int, ShamirShare] = {}
        self._b_shares: dict[int, ShamirShare] = {}
        self._u2: frozenset[int] = frozenset()
        self._u3: frozenset[int] = frozenset()

    def _advance(self, expected: int) -> None:
        if self._round != expected:
            raise RoundError(f"secagg client is in round {self._round}, not {expected}")
        self._round += 1

    def advertise_keys(self) -> messages.AdvertiseKeys:
        """Round 0: publish the encryption and masking public keys.

        Returns
        -------
        messages.AdvertiseKeys
            The message for the server.
        """
        self._advance(0)
        return messages.AdvertiseKeys(
            self.client_id, _raw_public(self._c_key), _raw_public(self._s_key)
        )

    def share_keys(self, roster: messages.KeyRoster) -> messages.ShareKeys:
        """Round 1: Shamir-share the masking key and a fresh self-mask seed to U1.

        Parameters
        ----------
        roster : messages.KeyRoster
            Every client's keys, including this client's own.

        Returns
        -------
        messages.ShareKeys
            One AES-GCM ciphertext per other client.
        """
        self._advance(1)
        keys = {k.sender: k for k in roster.keys}
        mine = keys.get(self.client_id)
        publics = [k.c_public for k in roster.keys] + [k.s_public for k in roster.keys]
        if len(keys) != len(roster.keys) or len(set(publics)) != len(publics):
            raise InvalidMessage
        if any(not 0 < v < 1 << 32 for v in keys):
            raise InvalidMessage
        if mine is None or (mine.c_public, mine.s_public) != (
            _raw_public(self._c_key),
            _raw_public(self._s_key),
        ):
            raise InvalidMessage
        if len(keys) < self.threshold or 2 * self.threshold <= len(keys):
            raise ProtocolAbort(f"{len(keys)} clients do not fit threshold {self.threshold}")
        self._roster = keys
        self._self_seed = secrets.token_bytes(SEED_BYTES)
        ids = sorted(keys)
        s_shares = shamir_split_bytes(_raw_private(self._s_key), self.threshold, len(ids), xs=ids)
        b_shares = shamir_split_bytes(self._self_seed, self.threshold, len(ids), xs=ids)
        out = []
        for v, s_share, b_share in zip(ids, s_shares, b_shares, strict=True):
            if v == self.client_id:
                self._own_s_share, self._own_b_share = s_share, b_share
                continue
            key = derive_seed(
                messages.agree(self._c_key, keys[v].c_public), messages.AEAD_LABEL, length=32
            )
            nonce = secrets.token_bytes(12)
            plain = messages.encode_share_pair(self.client_id, v, s_share, b_share)
            sealed = nonce + AESGCM(key).encrypt(nonce, plain, _aad(self.client_id, v))
            out.append((v, sealed))
        return messages.ShareKeys(self.client_id, tuple(out))

    def _open(self, sender: int, sealed: bytes) -> None:
        peer = self._roster.get(sender)
        if peer is None or sender == self.client_id or len(sealed) < 12:
            raise InvalidMessage
        key = derive_seed(
            messages.agree(self._c_key, peer.c_public), messages.AEAD_LABEL, length=32
        )
        try:
            plain = AESGCM(key).decrypt(sealed[:12], sealed[12:], _aad(sender, self.client_id))
        except InvalidTag as exc:
            raise InvalidMessage from exc
        u, v, s_share, b_share = messages.decode_share_pair(plain, self.client_id)
        if (u, v) != (sender, self.client_id):
            raise InvalidMessage
        self._s_shares[sender], self._b_shares[sender] = s_share, b_share

    def masked_input(
        self, forwarded: messages.ForwardedShares, x: npt.ArrayLike
    ) -> messages.MaskedInput:
        """Round 2: store peers' shares and send ``y = x + PRG(b) + Σ ±PRG(s_uv)``.

        Parameters
        ----------
        forwarded : messages.ForwardedShares
            The shares other clients addressed to this one (their senders form U2).
        x : array_like
            The ``uint64`` input vector (see :func:`~datafed.hazmat.encode_fixed`).

        Returns
        -------
        messages.MaskedInput
            The masked vector.
        """
        self._advance(2)
        vec = np.asarray(x)
        if vec.dtype != np.uint64 or vec.shape != (self.vector_length,):
            raise ValueError(f"secagg input must be a uint64 vector of length {self.vector_length}")
        senders = [s for s, _ in forwarded.ciphertexts]
        if forwarded.recipient != self.client_id or len(set(senders)) != len(senders):
            raise InvalidMessage
        for sender, sealed in forwarded.ciphertexts:
            self._open(sender, sealed)
        self._u2 = frozenset([*senders, self.client_id])
        if len(self._u2) < self.threshold:
            raise ProtocolAbort(f"only {len(self._u2)} clients shared keys, need {self.threshold}")
        y = vec.copy()
        np.add(y, prg_uint64(self._self_seed, self.vector_length), out=y)
        for v in self._u2 - {self.client_id}:
            mask = messages.pairwise_mask(
                messages.agree(self._s_key, self._roster[v].s_public), self.vector_length
            )
            # p_uv is added by the smaller id and subtracted by the larger: they cancel in the sum.
            (np.add if self.client_id < v else np.subtract)(y, mask, out=y)
        return messages.MaskedInput(self.client_id, messages.ring_to_bytes(y))

    def consistency(self, survivors: messages.Survivors) -> bytes:
        """Round 3: accept U3 (once) and return the message this client signs.

        Parameters
        ----------
        survivors : messages.Survivors
            U3: the clients whose masked inputs the server holds.

        Returns
        -------
        bytes
            :func:`~datafed.protocols.consistency_message` of U3, for the caller to
            sign with this client's long-term key.
        """
        self._advance(3)
        u3 = frozenset(survivors.clients)
        if len(u3) != len(survivors.clients) or not u3 <= self._u2 or self.client_id not in u3:
            raise InvalidMessage
        if len(u3) < self.threshold:
            raise ProtocolAbort(f"only {len(u3)} clients survived, need {self.threshold}")
        self._u3 = u3
        return messages.consistency_message(survivors)

    def unmask(
        self, survivors: messages.Survivors, signers: Collection[int]
    ) -> messages.UnmaskShares:
        """Round 4: reveal self-mask shares of survivors, mask-key shares of dropouts.

        Parameters
        ----------
        survivors : messages.Survivors
            U3 again: it must be the set of round 3.
        signers : collection of int
            The clients whose signatures over round 3's message the caller has
            verified (U4); at least ``t``, all in U3.

        Returns
        -------
        messages.UnmaskShares
            The shares, never both kinds for the same client.
        """
        self._advance(4)
        u3, u4 = frozenset(survivors.clients), frozenset(signers)
        if len(u3) != len(survivors.clients) or u3 != self._u3 or not u4 <= u3:
            raise InvalidMessage
        if len(u4) < self.threshold:
            raise ProtocolAbort(f"only {len(u4)} clients vouched for U3, need {self.threshold}")
        assert self._own_s_share is not None and self._own_b_share is not None
        b_shares = {**self._b_shares, self.client_id: self._own_b_share}
        self_mask = tuple((v, b_shares[v]) for v in sorted(u3))
        keys = tuple((v, self._s_shares[v]) for v in sorted(self._u2 - u3))
        return messages.UnmaskShares(self.client_id, self_mask, keys)
