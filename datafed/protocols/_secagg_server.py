"""The server side of secure aggregation (Bonawitz et al., CCS 2017): a pure state machine.

The server relays messages and, in the last round, removes the masks it is
allowed to remove: each survivor's self mask ``PRG(b_u)`` (from ``t`` shares of
``b_u``) and the pairwise masks that dropped clients would have cancelled (from
``t`` shares of their masking keys).  The result is ``Σ_{u∈U3} x_u mod 2^64``.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import datafed.protocols._secagg_messages as messages
from datafed.hazmat import (
    InvalidShare,
    RingArray,
    ShamirShare,
    prg_uint64,
    shamir_reconstruct_bytes,
)
from datafed.protocols._secagg_client import check_parameters
from datafed.protocols.errors import InvalidMessage, ProtocolAbort, RoundError


class SecAggServer:
    """The aggregator of secure aggregation.

    Parameters
    ----------
    threshold : int
        ``t``: the minimum number of clients in every round.
    vector_length : int
        Length of every input vector.
    """

    def __init__(self, *, threshold: int, vector_length: int) -> None:
        check_parameters(threshold, vector_length)
        self.threshold = threshold
        self.vector_length = vector_length
        self._round = 0
        self._keys: dict[int, messages.AdvertiseKeys] = {}
        self._shares: dict[int, messages.ShareKeys] = {}
        self._masked: dict[int, RingArray] = {}
        self._unmask: dict[int, messages.UnmaskShares] = {}
        self._u1: frozenset[int] = frozenset()
        self._u2: frozenset[int] = frozenset()
        self._u3: frozenset[int] = frozenset()

    def _expect(self, expected: int) -> None:
        if self._round != expected:
            raise RoundError(f"secagg server is in round {self._round}, not {expected}")

    def _close(self, count: int, what: str) -> None:
        if count < self.threshold:
            raise ProtocolAbort(f"only {count} clients {what}, need {self.threshold}")
        self._round += 1

    def receive_advertise(self, msg: messages.AdvertiseKeys) -> None:
        """Round 0: record a client's public keys."""
        self._expect(0)
        if msg.sender in self._keys or not 0 < msg.sender < 1 << 32:
            raise InvalidMessage
        self._keys[msg.sender] = msg

    def roster(self) -> messages.KeyRoster:
        """Close round 0 and return U1's keys for every client in U1."""
        self._expect(0)
        self._close(len(self._keys), "advertised keys")
        self._u1 = frozenset(self._keys)
        return messages.KeyRoster(tuple(self._keys[i] for i in sorted(self._keys)))

    def receive_shares(self, msg: messages.ShareKeys) -> None:
        """Round 1: record a client's encrypted shares for its peers."""
        self._expect(1)
        recipients = [v for v, _ in msg.ciphertexts]
        if msg.sender not in self._u1 or msg.sender in self._shares:
            raise InvalidMessage
        if sorted(recipients) != sorted(self._u1 - {msg.sender}):
            raise InvalidMessage
        self._shares[msg.sender] = msg

    def forward(self) -> dict[int, messages.ForwardedShares]:
        """Close round 1 and return, per client in U2, the ciphertexts addressed to it."""
        self._expect(1)
        self._close(len(self._shares), "shared keys")
        self._u2 = frozenset(self._shares)
        out: dict[int, list[tuple[int, bytes]]] = {v: [] for v in self._u2}
        for sender in sorted(self._u2):
            for v, sealed in self._shares[sender].ciphertexts:
                if v in out:
                    out[v].append((sender, sealed))
        return {v: messages.ForwardedShares(v, tuple(cts)) for v, cts in out.items()}

    def receive_masked(self, msg: messages.MaskedInput) -> None:
        """Round 2: record a client's masked input."""
        self._expect(2)
        if msg.sender not in self._u2 or msg.sender in self._masked:
            raise InvalidMessage
        self._masked[msg.sender] = messages.ring_from_bytes(msg.masked, self.vector_length)

    def survivors(self) -> messages.Survivors:
        """Close round 2 and return U3, the clients whose masked input arrived."""
        self._expect(2)
        self._close(len(self._masked), "sent masked inputs")
        self._u3 = frozenset(self._masked)
        return messages.Survivors(tuple(sorted(self._u3)))

    def receive_unmask(self, msg: messages.UnmaskShares) -> None:
        """Round 3: record a survivor's unmasking shares."""
        self._expect(3)
        if msg.sender not in self._u3 or msg.sender in self._unmask:
            raise InvalidMessage
        if {v for v, _ in msg.self_mask_shares} != self._u3:
            raise InvalidMessage
        if {v for v, _ in msg.key_shares} != self._u2 - self._u3:
            raise InvalidMessage
        shares = [s for _, s in (*msg.self_mask_shares, *msg.key_shares)]
        if any(s.x != msg.sender for s in shares):
            raise InvalidMessage
        self._unmask[msg.sender] = msg

    def _collect(self, owner: int, self_mask: bool) -> list[ShamirShare]:
        out: list[ShamirShare] = []
        for msg in self._unmask.values():
            pairs = msg.self_mask_shares if self_mask else msg.key_shares
            out.extend(s for v, s in pairs if v == owner)
        return out

    def result(self) -> RingArray:
        """Close round 3 and return ``Σ_{u∈U3} x_u`` in ``Z_2^64``.

        Returns
        -------
        numpy.ndarray
            The ``uint64`` sum of the survivors' inputs.

        Raises
        ------
        ProtocolAbort
            If fewer than ``t`` survivors sent unmasking shares.
        InvalidMessage
            If the shares do not reconstruct consistently.
        """
        self._expect(3)
        self._close(len(self._unmask), "sent unmasking shares")
        total = np.zeros(self.vector_length, dtype=np.uint64)
        try:
            for u in sorted(self._u3):
                np.add(total, self._masked[u], out=total)
                seed = shamir_reconstruct_bytes(self._collect(u, True), self.threshold)
                np.subtract(total, prg_uint64(seed, self.vector_length), out=total)
            for v in sorted(self._u2 - self._u3):
                raw = shamir_reconstruct_bytes(self._collect(v, False), self.threshold)
                key = X25519PrivateKey.from_private_bytes(raw)
                for u in sorted(self._u3):
                    mask = messages.pairwise_mask(
                        messages.agree(key, self._keys[u].s_public), self.vector_length
                    )
                    # u added p_uv when u < v, subtracted it when u > v: undo that.
                    (np.subtract if u < v else np.add)(total, mask, out=total)
        except (InvalidShare, ValueError) as exc:
            raise InvalidMessage from exc
        return total
