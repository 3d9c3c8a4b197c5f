"""Prio3 verification of many reports at once (draft-irtf-cfrg-vdaf-20 §7.2.2).

What :meth:`Prio3.verify_init`, :meth:`Prio3.verifier_shares_to_message` and
:meth:`Prio3.verify_next` compute for one report, for ``N`` reports, with no object per
report: the inputs are the encoded shares (bytes, as they travel), the field vectors
are columns (one row per element, :mod:`datafed.hazmat._field_cols`), every XOF call
goes through one reused Keccak state, and the FLP query and decision run once over all
reports (:mod:`datafed.hazmat._flp_batch`). A report whose data is malformed gets
``ok = False`` -- the batch goes on without it -- where the scalar API raises
:class:`ReportRejected`; no flag says why (as there, rejections are no oracle).
``tests/unit/protocols/test_prio3_batch.py`` holds the two paths equal, report by
report, valid and invalid, for every variant, and the draft's vectors pass through both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from functools import cached_property
from typing import Any

import numpy as np

from datafed.hazmat import (
    Cols,
    LazyRows,
    Mask,
    Words,
    decide_columns,
    decode_columns,
    encode_columns,
    query_columns,
    rows_of,
    stack,
    sum_rows,
    xof_many,
)
from datafed.protocols._prio3 import Prio3
from datafed.protocols._prio3_aux import (
    USAGE_JOINT_RAND_SEED,
    USAGE_QUERY_RANDOMNESS,
)
from datafed.protocols._prio3_batch_inputs import (
    expand,
    helper_shares,
    input_words,
    joint_rand,
    leader_shares,
    public_parts,
)

__all__ = [
    "InitBatch",
    "aggregate_out_shares",
    "decode_verifier_shares",
    "encode_verifier_shares",
    "verifier_messages",
    "verify_init_batch",
    "verify_next_batch",
]

AnyPrio3 = Prio3[Any, Any]


@dataclass(frozen=True, eq=False)
class InitBatch:
    """One aggregator's ``verify_init`` over ``n`` reports.

    Attributes
    ----------
    ok : numpy.ndarray of bool
        ``False`` where the report was malformed (it must be rejected).
    verifiers : numpy.ndarray
        ``(VERIFIER_LEN * PROOFS, n)`` verifier shares.
    parts, seeds : list of bytes or None
        With joint randomness: this aggregator's joint-randomness part and the
        corrected seed it derived, per report.
    out_words : numpy.ndarray or None
        Field128 circuits whose output share is the measurement share or a prefix of
        it: the output shares' ``uint64`` words, ``(OUTPUT_LEN, n, 2)``, which
        :func:`aggregate_out_shares` sums without making Python integers.
    out_shares : numpy.ndarray
        ``(OUTPUT_LEN, n)`` output shares (Python integers), released only after
        verification; made from the measurement shares when first read.
    """

    n: int
    ok: Mask
    verifiers: Cols
    parts: list[bytes] | None
    seeds: list[bytes] | None
    meas: Sequence[Any] = dc_field(repr=False)
    truncate: Callable[[list[Any]], list[Any]] = dc_field(repr=False)
    out_words: Words | None = dc_field(default=None, repr=False)

    @cached_property
    def out_shares(self) -> Cols:
        """The output shares, ``(OUTPUT_LEN, n)`` (the circuit's ``truncate`` of each)."""
        return stack(self.truncate(list(self.meas)), self.n)

    def __repr__(self) -> str:
        return f"InitBatch(n={self.n}, <shares redacted>)"


def aggregate_out_shares(vdaf: AnyPrio3, init: InitBatch, keep: Mask) -> list[int]:
    """The sum of the output shares of the reports ``keep`` (one aggregate share).

    With :attr:`InitBatch.out_words`, each element's low and high words are summed in
    32-bit halves on ``uint64`` (exact below ``2^32`` reports) and combined once;
    otherwise the Python integers of :attr:`InitBatch.out_shares` are summed.
    """
    p = vdaf.field.MODULUS
    if init.out_words is None:
        return [int(x) % p for x in init.out_shares[:, keep].sum(axis=1)]
    w = init.out_words[:, np.asarray(keep, dtype=bool)]
    half, mask = np.uint64(32), np.uint64(0xFFFFFFFF)
    lo, hi = w[..., 0], w[..., 1]
    parts = [
        x.sum(axis=1, dtype=np.uint64).tolist()
        for x in (lo & mask, lo >> half, hi & mask, hi >> half)
    ]
    return [(a + (b << 32) + (c << 64) + (d << 96)) % p for a, b, c, d in zip(*parts, strict=True)]


def _out_prefix(vdaf: AnyPrio3) -> int | None:
    """How many leading measurement elements ``truncate`` keeps, if that is all it does."""
    m = vdaf.flp.MEAS_LEN
    kept = vdaf.flp.truncate(list(range(m)))
    return len(kept) if list(kept) == list(range(len(kept))) else None


def _rows(cols: Any) -> Sequence[Any]:
    """Rows as the query takes them: :class:`LazyRows` as they are (decoded if read)."""
    return cols if isinstance(cols, LazyRows) else rows_of(cols)


def verify_init_batch(
    vdaf: AnyPrio3,
    verify_key: bytes,
    ctx: bytes,
    agg_id: int,
    nonces: Sequence[bytes],
    public_shares: Sequence[bytes],
    input_shares: Sequence[bytes],
) -> InitBatch:
    """``verify_init`` of aggregator ``agg_id`` for every report (see module docs).

    Parameters
    ----------
    vdaf : Prio3
        The VDAF.
    verify_key : bytes
        The aggregators' shared secret key.
    ctx : bytes
        Application context.
    agg_id : int
        This aggregator (0 is the Leader).
    nonces, public_shares, input_shares : sequences of bytes
        Per report: its nonce, its encoded public share, this aggregator's encoded
        input share.

    Returns
    -------
    InitBatch
        Per report: ok, output share, verifier share (and joint-randomness part, seed).
    """
    if len(verify_key) != vdaf.VERIFY_KEY_SIZE:
        raise ValueError("incorrect verify key size")
    if not 0 <= agg_id < vdaf.SHARES:
        raise ValueError("aggregator id out of range")
    n, flp = len(nonces), vdaf.flp
    if not len(public_shares) == len(input_shares) == n:
        raise ValueError("one public share and one input share per nonce")
    ok = np.array([len(x) == vdaf.NONCE_SIZE for x in nonces], dtype=bool)
    nonces = [x if len(x) == vdaf.NONCE_SIZE else bytes(vdaf.NONCE_SIZE) for x in nonces]
    if agg_id == 0:
        meas, proofs, meas_raw, blinds, mdata, pdata = leader_shares(vdaf, input_shares, ok)
    else:
        meas, proofs, meas_raw, blinds, mdata, pdata = helper_shares(
            vdaf, ctx, agg_id, input_shares, ok
        )
    parts = public_parts(vdaf, public_shares, ok)
    qr, _, _ = expand(
        vdaf,
        [verify_key] * n,
        vdaf.domain_separation_tag(USAGE_QUERY_RANDOMNESS, ctx),
        [bytes([vdaf.PROOFS]) + nonce for nonce in nonces],
        flp.QUERY_RAND_LEN * vdaf.PROOFS,
    )
    own: list[bytes] | None = None
    seeds: list[bytes] | None = None
    jr, jdata = np.empty((0, n), dtype=object), b""
    if vdaf.uses_joint_rand:
        jr, own, seeds, jdata = joint_rand(vdaf, ctx, agg_id, nonces, blinds, meas_raw, parts)
    meas_rows = _rows(meas)
    pl, ql, jl = flp.PROOF_LEN, flp.QUERY_RAND_LEN, flp.JOINT_RAND_LEN
    words = input_words(vdaf, n, mdata, pdata, jdata)
    verifiers: list[Any] = []
    for i in range(vdaf.PROOFS):
        v, fine = query_columns(
            flp,
            meas_rows,
            _rows(proofs[i * pl : (i + 1) * pl]),
            rows_of(qr[i * ql : (i + 1) * ql]),
            rows_of(jr[i * jl : (i + 1) * jl]),
            vdaf.SHARES,
            n,
            None
            if words is None
            else (words[0], words[1][i * pl : (i + 1) * pl], words[2][i * jl : (i + 1) * jl]),
        )
        ok &= fine
        verifiers += v
    prefix = _out_prefix(vdaf) if isinstance(meas, LazyRows) else None
    out_words = None if prefix is None else meas.words[:prefix]
    return InitBatch(n, ok, stack(verifiers, n), own, seeds, meas_rows, flp.truncate, out_words)


def encode_verifier_shares(vdaf: AnyPrio3, init: InitBatch) -> list[bytes]:
    """Each report's encoded verifier share (§7.2.7.3)."""
    size = vdaf.flp.VERIFIER_LEN * vdaf.PROOFS * vdaf.field.ENCODED_SIZE
    data = encode_columns(vdaf.field, init.verifiers)
    shares = [data[j * size : (j + 1) * size] for j in range(init.n)]
    if init.parts is not None:
        shares = [s + part for s, part in zip(shares, init.parts, strict=True)]
    return shares


def decode_verifier_shares(
    vdaf: AnyPrio3, shares: Sequence[bytes]
) -> tuple[Cols, list[bytes] | None, Mask]:
    """Inverse of :func:`encode_verifier_shares`: rows, parts, and which decoded."""
    n, field = len(shares), vdaf.field
    length = vdaf.flp.VERIFIER_LEN * vdaf.PROOFS
    body = length * field.ENCODED_SIZE
    part_len = vdaf.xof.SEED_SIZE if vdaf.uses_joint_rand else 0
    ok = np.array([len(s) == body + part_len for s in shares], dtype=bool)
    fixed = [s if good else bytes(body + part_len) for s, good in zip(shares, ok, strict=True)]
    cols, inrange = decode_columns(field, b"".join(s[:body] for s in fixed), n, length)
    parts = [s[body:] for s in fixed] if vdaf.uses_joint_rand else None
    return cols, parts, ok & inrange


def verifier_messages(
    vdaf: AnyPrio3, ctx: bytes, shares: Sequence[tuple[Cols, list[bytes] | None]], n: int
) -> tuple[Mask, list[bytes | None]]:
    """Sum every aggregator's verifier shares and decide (§7.2.2): ok, messages.

    ``shares`` holds, in aggregator order, each one's verifier rows and parts.
    """
    if len(shares) != vdaf.SHARES:
        raise ValueError(f"need {vdaf.SHARES} verifier shares per report")
    total = sum_rows(vdaf.field, [rows_of(v) for v, _ in shares])
    vl, ok = vdaf.flp.VERIFIER_LEN, np.ones(n, dtype=bool)
    for i in range(vdaf.PROOFS):
        ok &= decide_columns(vdaf.flp, total[i * vl : (i + 1) * vl], n)
    if not vdaf.uses_joint_rand:
        return ok, [None] * n
    dst = vdaf.domain_separation_tag(USAGE_JOINT_RAND_SEED, ctx)
    binders = [b"".join(ps) for ps in zip(*(p or [] for _, p in shares), strict=True)]
    seeds = xof_many([bytes(vdaf.xof.SEED_SIZE)] * n, dst, binders, vdaf.xof.SEED_SIZE)
    return ok, list(seeds)


def verify_next_batch(init: InitBatch, messages: Sequence[bytes | None]) -> Mask:
    """Whether each report's verifier message is the seed this aggregator derived."""
    if init.seeds is None:
        return np.array([m is None for m in messages], dtype=bool)
    return np.array([m == s for m, s in zip(messages, init.seeds, strict=True)], dtype=bool)
