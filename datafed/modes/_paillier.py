"""``paillier``: packed, pairwise-masked values encrypted under the analyst's Paillier key.

Node side, for a vector of signed fixed-point values:

1. pack them, many per plaintext (:class:`~datafed.hazmat.Packer`, 64-bit slots with
   headroom for one addition per participating node and a guard bit for overflow detection);
2. add to each plaintext a mask ``sum_j ±PRG(k_ij)`` mod n, where ``k_ij`` comes from the
   X25519 agreement between this node and peer ``j`` (keys bound in the CA-issued
   certificates, verified here), so the masks of all nodes sum to zero mod n;
3. encrypt (DJN short-exponent encryption over gmpy2, :mod:`datafed.hazmat`).

Client side: multiply the ciphertexts of all nodes (homomorphic addition), decrypt, and
unpack.  The masks cancel only in the total, so the analyst, although it holds the
private key, cannot open one node's contribution: each node's plaintext is uniformly
random mod n on its own.  Trust: semi-honest nodes that do not give their mask keys to
the analyst; every node must answer (a missing node leaves its peers' masks in the total,
which the packer's range checks then refuse).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from google.protobuf.message import DecodeError
from pydantic import Field

from datafed.errors import PkiError, ProtocolError
from datafed.hazmat import (
    InvalidCiphertext,
    Packer,
    PackingOverflow,
    PaillierCiphertext,
    PaillierPrivateKey,
    PaillierPublicKey,
    derive_seed,
    generate_paillier_keypair,
    prg_bytes,
)
from datafed.modes._base import ModeContext, ModeOptions, NodeEnv, OneShotMode, read_params
from datafed.modes._envelope import check_roster
from datafed.modes._paillier_keys import KEY_CACHE
from datafed.pki.identity import Identity
from datafed.pki.peers import shared_secret, verify_peer
from datafed.proto.v1 import modes_pb2
from datafed.query.components import Component

__all__ = ["MAX_PAILLIER_BITS", "MIN_PAILLIER_BITS", "PaillierMode", "check_paillier_modulus"]

#: NIST SP 800-57 Part 1 Table 2: 2048-bit factoring moduli give 112-bit security.
MIN_PAILLIER_BITS = 2048
MAX_PAILLIER_BITS = 8192
VALUE_BITS = 64
MAX_PEERS = 64
#: Extra PRG bytes per mask so reducing mod n leaves a bias below 2^-128.
_MASK_EXTRA_BYTES = 16
_MASK_LABEL = b"datafed/v1/paillier-zero-sum-mask"


def check_paillier_modulus(n: int) -> None:
    """Refuse moduli that are too small, too large or even."""
    bits = n.bit_length()
    if bits < MIN_PAILLIER_BITS:
        raise ValueError(f"Paillier modulus must be at least {MIN_PAILLIER_BITS} bits, got {bits}")
    if bits > MAX_PAILLIER_BITS:
        raise ValueError(f"Paillier modulus must be at most {MAX_PAILLIER_BITS} bits, got {bits}")
    if n % 2 == 0:
        raise ValueError("Paillier modulus must be odd")


def _packer(n: int, parties: int) -> Packer:
    return Packer(modulus_bits=n.bit_length(), value_bits=VALUE_BITS, max_additions=max(parties, 1))


def _masks(env: NodeEnv, n: int, peers: Sequence[bytes], count: int) -> list[int]:
    """This node's share of the zero-sum masks: ``sum_j sign(i, j) PRG(k_ij)`` mod n.

    The PRG seed of each pair is derived from the pair's X25519 secret and the job
    statement's digest (``env.binding``), so two nodes that admitted different statements
    (another spec, roster or key) produce masks that do not cancel: the total is garbage
    (refused by the packer's range check), never one node's value.
    """
    width = (n.bit_length() + 7) // 8 + _MASK_EXTRA_BYTES
    identities = _participants(env, peers)
    total = [0] * count
    for peer in identities:
        if peer.name == env.node:
            continue
        lo, hi = sorted((env.node, peer.name))
        label = b"|".join(
            (_MASK_LABEL, env.binding.encode(), lo.encode(), hi.encode(), n.to_bytes(width, "big"))
        )
        stream = prg_bytes(derive_seed(shared_secret(env.signing_key, peer), label), width * count)
        sign = 1 if env.node == lo else -1
        for k in range(count):
            r = int.from_bytes(stream[k * width : (k + 1) * width], "big") % n
            total[k] += sign * r
    return [m % n for m in total]


def _participants(env: NodeEnv, peers: Sequence[bytes]) -> list[Identity]:
    """The participants' verified identities: exactly the statement's roster, this node in it."""
    identities = []
    for pem in peers:
        try:
            identities.append(verify_peer(pem, env.ca_pem))
        except PkiError as exc:
            raise ValueError(f"peer certificate refused: {exc}") from exc
    names = [p.name for p in identities]
    if len(set(names)) != len(names):
        raise ValueError("a participant is listed twice")
    check_roster(env, identities)
    return identities


def _read(params: bytes) -> tuple[int, list[bytes]]:
    """The analyst's modulus and the participants' certificates, checked; ValueError."""
    msg = read_params(modes_pb2.PaillierParams, params, "Paillier")
    n = int.from_bytes(msg.n, "big")
    check_paillier_modulus(n)
    if msg.value_bits != VALUE_BITS:
        raise ValueError(f"value_bits must be {VALUE_BITS}, got {msg.value_bits}")
    peers = list(msg.peer_certificates)
    if not 1 <= len(peers) <= MAX_PEERS:
        raise ValueError(f"between 1 and {MAX_PEERS} participants required, got {len(peers)}")
    return n, peers


class _PaillierOptions(ModeOptions):
    """``[modes.paillier]``: the analyst's key size."""

    #: Modulus bits (NIST SP 800-57: 3072 for 128-bit security; 2048 gives 112).
    bits: int = Field(default=3072, ge=2048, le=8192)


class PaillierMode(OneShotMode):
    """Packed Paillier with pairwise zero-sum masks; the analyst holds the private key."""

    name = "paillier"
    summary = "packed Paillier, pairwise zero-sum masks: the analyst decrypts only the total"
    Options = _PaillierOptions

    def __init__(self, bits: int = 3072) -> None:
        if bits < MIN_PAILLIER_BITS:
            raise ValueError(
                f"Paillier modulus must be at least {MIN_PAILLIER_BITS} bits, got {bits}"
            )
        self.bits = bits
        self._keys: tuple[PaillierPublicKey, PaillierPrivateKey] | None = None
        self._lock = threading.Lock()
        self._parties = 0

    # ------------------------------------------------------------------ node side
    @staticmethod
    def check_params(env: NodeEnv, params: bytes) -> None:
        """The key, the value width and the participants (exactly the roster)."""
        _, peers = _read(params)
        _participants(env, peers)

    @staticmethod
    def protect(env: NodeEnv, params: bytes, values: Sequence[int]) -> bytes:
        """Pack, mask and encrypt ``values`` for the analyst's key in ``params``."""
        n, peers = _read(params)
        packer = _packer(n, len(peers))
        plaintexts = packer.pack(list(values))
        masks = _masks(env, n, peers, len(plaintexts))
        # The analyst's key comes from the node's bounded cache (docs/policy.md#limits).
        with KEY_CACHE.use(env.requester, n) as pub:
            cts = [pub.encrypt((p + m) % n) for p, m in zip(plaintexts, masks, strict=True)]
        return modes_pb2.PaillierPayload(
            ciphertexts=[c.to_bytes() for c in cts]
        ).SerializeToString()

    # ---------------------------------------------------------------- client side
    def _generate_once(self) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
        # Concurrent queries share this mode: the key pair is made exactly once, so no
        # query can decrypt with a key other than the one its params carried.
        with self._lock:
            if self._keys is None:
                self._keys = generate_paillier_keypair(self.bits)
            return self._keys

    async def _keypair(self) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
        if self._keys is not None:
            return self._keys
        return await asyncio.to_thread(self._generate_once)

    async def params(self, ctx: ModeContext) -> bytes:
        """The analyst's public modulus and every participant's certificate."""
        pub, _ = await self._keypair()
        self._parties = len(ctx.nodes)
        return modes_pb2.PaillierParams(
            n=pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big"),
            peer_certificates=[ctx.certificates[node] for node in ctx.nodes],
            value_bits=VALUE_BITS,
        ).SerializeToString()

    def combine(
        self, payloads: Sequence[bytes], comps: Sequence[Component], n_groups: int
    ) -> list[int]:
        """Add ciphertexts across nodes, decrypt, and unpack the totals."""
        if self._keys is None:
            raise ProtocolError("no Paillier key pair: params() was never called")
        pub, priv = self._keys
        count = n_groups * len(comps)
        if count == 0:
            return []
        packer = _packer(pub.n, self._parties)
        want = packer.plaintexts_for(count)
        columns: list[list[PaillierCiphertext]] = [[] for _ in range(want)]
        for raw in payloads:
            try:
                cts = list(modes_pb2.PaillierPayload.FromString(raw).ciphertexts)
            except DecodeError as exc:
                raise ProtocolError("malformed Paillier payload") from exc
            if len(cts) != want:
                raise ProtocolError("Paillier payload has the wrong number of ciphertexts")
            for i, c in enumerate(cts):
                try:
                    columns[i].append(pub.ciphertext_from_bytes(c))
                except (ValueError, InvalidCiphertext) as exc:
                    raise ProtocolError("ciphertext out of range") from exc
        # The two CRT halves on two threads (gmpy2 releases the GIL while exponentiating).
        totals = priv.decrypt_many([pub.add_many(col) for col in columns], threads=2)
        try:
            return packer.unpack(totals, count=count, additions=len(payloads))
        except PackingOverflow as exc:
            raise ProtocolError(
                "the combined total is out of range (a node's mask or value is wrong)"
            ) from exc
