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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datafed.hazmat import (
    Cols,
    Field128,
    Mask,
    Words,
    decide_columns,
    decode_columns,
    decode_words,
    encode_columns,
    query_columns,
    rows_of,
    stack,
    sum_rows,
    xof_many,
)
from datafed.protocols._prio3 import Prio3
from datafed.protocols._prio3_aux import (
    USAGE_JOINT_RAND_PART,
    USAGE_JOINT_RAND_SEED,
    USAGE_JOINT_RANDOMNESS,
    USAGE_MEAS_SHARE,
    USAGE_PROOF_SHARE,
    USAGE_QUERY_RANDOMNESS,
)

__all__ = [
    "InitBatch",
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
    out_shares : numpy.ndarray
        ``(OUTPUT_LEN, n)`` output shares, released only after verification.
    verifiers : numpy.ndarray
        ``(VERIFIER_LEN * PROOFS, n)`` verifier shares.
    parts, seeds : list of bytes or None
        With joint randomness: this aggregator's joint-randomness part and the
        corrected seed it derived, per report.
    """

    n: int
    ok: Mask
    out_shares: Cols
    verifiers: Cols
    parts: list[bytes] | None
    seeds: list[bytes] | None

    def __repr__(self) -> str:
        return f"InitBatch(n={self.n}, <shares redacted>)"


def _expand(
    vdaf: AnyPrio3,
    seeds: Sequence[bytes],
    dst: bytes,
    binders: Sequence[bytes],
    length: int,
) -> tuple[Cols, list[bytes], bytes]:
    """``expand_into_vec`` per report as columns, each vector's encoding, and all of them."""
    field, n = vdaf.field, len(seeds)
    raw = xof_many(seeds, dst, binders, length * field.ENCODED_SIZE)
    data = b"".join(raw)
    cols, inrange = decode_columns(field, data, n, length)
    if not inrange.all():  # an element >= p: the stream goes on (rare)
        for jj in np.flatnonzero(~inrange):
            j = int(jj)
            vec = vdaf.xof.expand_into_vec(field, seeds[j], dst, binders[j], length)
            cols[:, j] = vec
            raw[j] = field.encode_vec(vec)
        data = b"".join(raw)
    return cols, raw, data


def _leader_shares(
    vdaf: AnyPrio3, shares: Sequence[bytes], ok: Mask
) -> tuple[Cols, Cols, list[bytes], list[bytes], bytes, bytes]:
    """Measurement and proof columns, encoded measurement shares and blinds (Leader).

    Also the measurement and proof vectors of every report, laid end to end (what
    :func:`decode_words` reads).
    """
    field, flp, size = vdaf.field, vdaf.flp, vdaf.field.ENCODED_SIZE
    m, pr = flp.MEAS_LEN, flp.PROOF_LEN * vdaf.PROOFS
    body = (m + pr) * size
    blind_len = vdaf.xof.SEED_SIZE if vdaf.uses_joint_rand else 0
    zero = bytes(body + blind_len)
    fixed = []
    for j, s in enumerate(shares):
        if len(s) != body + blind_len:
            ok[j] = False
            s = zero
        fixed.append(s)
    cols, inrange = decode_columns(field, b"".join(s[:body] for s in fixed), len(fixed), m + pr)
    ok &= inrange
    meas_raw = [s[: m * size] for s in fixed]
    proof_data = b"".join(s[m * size : body] for s in fixed)
    return cols[:m], cols[m:], meas_raw, [s[body:] for s in fixed], b"".join(meas_raw), proof_data


def _helper_shares(
    vdaf: AnyPrio3, ctx: bytes, agg_id: int, shares: Sequence[bytes], ok: Mask
) -> tuple[Cols, Cols, list[bytes], list[bytes], bytes, bytes]:
    """The same for a Helper: each share's seed expanded (§7.2.6)."""
    seed_len = vdaf.xof.SEED_SIZE
    blind_len = seed_len if vdaf.uses_joint_rand else 0
    seeds, blinds = [], []
    for j, s in enumerate(shares):
        if len(s) != seed_len + blind_len:
            ok[j] = False
            s = bytes(seed_len + blind_len)
        seeds.append(s[:seed_len])
        blinds.append(s[seed_len:])
    n, flp = len(seeds), vdaf.flp
    meas, meas_raw, meas_data = _expand(
        vdaf,
        seeds,
        vdaf.domain_separation_tag(USAGE_MEAS_SHARE, ctx),
        [bytes([agg_id])] * n,
        flp.MEAS_LEN,
    )
    proofs, _, proof_data = _expand(
        vdaf,
        seeds,
        vdaf.domain_separation_tag(USAGE_PROOF_SHARE, ctx),
        [bytes([vdaf.PROOFS, agg_id])] * n,
        flp.PROOF_LEN * vdaf.PROOFS,
    )
    return meas, proofs, meas_raw, blinds, meas_data, proof_data


def _public_parts(vdaf: AnyPrio3, public_shares: Sequence[bytes], ok: Mask) -> list[list[bytes]]:
    """Each report's joint-randomness parts (empty lists without joint randomness)."""
    size, shares = vdaf.xof.SEED_SIZE, vdaf.SHARES
    out: list[list[bytes]] = []
    for j, data in enumerate(public_shares):
        want = size * shares if vdaf.uses_joint_rand else 0
        if len(data) != want:
            ok[j] = False
            data = bytes(want)
        out.append([data[i : i + size] for i in range(0, want, size)])
    return out


def _joint_rand(
    vdaf: AnyPrio3,
    ctx: bytes,
    agg_id: int,
    nonces: Sequence[bytes],
    blinds: Sequence[bytes],
    meas_raw: Sequence[bytes],
    parts: list[list[bytes]],
) -> tuple[Cols, list[bytes], list[bytes], bytes]:
    """Joint randomness from this aggregator's corrected seed (§7.2.2); parts, seeds.

    Also the joint randomness of every report, encoded and laid end to end.
    """
    n = len(nonces)
    own = xof_many(
        blinds,
        vdaf.domain_separation_tag(USAGE_JOINT_RAND_PART, ctx),
        [bytes([agg_id]) + nonce + m for nonce, m in zip(nonces, meas_raw, strict=True)],
        vdaf.xof.SEED_SIZE,
    )
    seed_dst = vdaf.domain_separation_tag(USAGE_JOINT_RAND_SEED, ctx)
    corrected = xof_many(
        [bytes(vdaf.xof.SEED_SIZE)] * n,
        seed_dst,
        [
            b"".join([*p[:agg_id], mine, *p[agg_id + 1 :]])
            for p, mine in zip(parts, own, strict=True)
        ],
        vdaf.xof.SEED_SIZE,
    )
    jr, _, jr_data = _expand(
        vdaf,
        corrected,
        vdaf.domain_separation_tag(USAGE_JOINT_RANDOMNESS, ctx),
        [bytes([vdaf.PROOFS])] * n,
        vdaf.flp.JOINT_RAND_LEN * vdaf.PROOFS,
    )
    return jr, own, corrected, jr_data


def _words(
    vdaf: AnyPrio3, n: int, mdata: bytes, pdata: bytes, jdata: bytes
) -> tuple[Words, Words, Words] | None:
    """Field128: the ``uint64`` words of the measurement, proof and joint-randomness shares."""
    if not field_is_wide(vdaf):
        return None
    flp, proofs = vdaf.flp, vdaf.PROOFS
    return (
        decode_words(mdata, n, flp.MEAS_LEN),
        decode_words(pdata, n, flp.PROOF_LEN * proofs),
        decode_words(jdata, n, flp.JOINT_RAND_LEN * proofs),
    )


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
        meas, proofs, meas_raw, blinds, mdata, pdata = _leader_shares(vdaf, input_shares, ok)
    else:
        meas, proofs, meas_raw, blinds, mdata, pdata = _helper_shares(
            vdaf, ctx, agg_id, input_shares, ok
        )
    parts = _public_parts(vdaf, public_shares, ok)
    qr, _, _ = _expand(
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
        jr, own, seeds, jdata = _joint_rand(vdaf, ctx, agg_id, nonces, blinds, meas_raw, parts)
    meas_rows = rows_of(meas)
    pl, ql, jl = flp.PROOF_LEN, flp.QUERY_RAND_LEN, flp.JOINT_RAND_LEN
    words = _words(vdaf, n, mdata, pdata, jdata)
    verifiers: list[Any] = []
    for i in range(vdaf.PROOFS):
        v, fine = query_columns(
            flp,
            meas_rows,
            rows_of(proofs[i * pl : (i + 1) * pl]),
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
    out = stack(flp.truncate(meas_rows), n)
    return InitBatch(n, ok, out, stack(verifiers, n), own, seeds)


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


def field_is_wide(vdaf: AnyPrio3) -> bool:
    """Whether the VDAF's field is Field128 (its elements are two words)."""
    return vdaf.field is Field128
