"""The inputs of batched Prio3 verification (:mod:`datafed.protocols._prio3_batch`).

Per aggregator, for ``N`` reports: the measurement and proof shares as columns (the
Leader's decoded, a Helper's expanded from its seed, §7.2.6), the public shares'
joint-randomness parts, and the joint randomness from the corrected seed (§7.2.2).
For Field128 the measurement stays in ``uint64`` words (:class:`LazyRows`: Python
integers only if something reads them) and the words of the measurement, proof and
joint randomness go to the range-check query on limbs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from datafed.hazmat import (
    Cols,
    Field128,
    LazyRows,
    Mask,
    Words,
    decode_columns,
    decode_words,
    words_below,
    xof_many,
)
from datafed.protocols._prio3 import Prio3
from datafed.protocols._prio3_aux import (
    USAGE_JOINT_RAND_PART,
    USAGE_JOINT_RAND_SEED,
    USAGE_JOINT_RANDOMNESS,
    USAGE_MEAS_SHARE,
    USAGE_PROOF_SHARE,
)

AnyPrio3 = Prio3[Any, Any]


def expand(
    vdaf: AnyPrio3,
    seeds: Sequence[bytes],
    dst: bytes,
    binders: Sequence[bytes],
    length: int,
    lazy: bool = False,
) -> tuple[Any, list[bytes], bytes]:
    """``expand_into_vec`` per report as columns, each vector's encoding, and all of them.

    With ``lazy`` (Field128) the columns are :class:`LazyRows` over the words.
    """
    fld, n = vdaf.field, len(seeds)
    raw = xof_many(seeds, dst, binders, length * fld.ENCODED_SIZE)
    data = b"".join(raw)
    if lazy:
        inrange = words_below(fld, decode_words(data, n, length))
    else:
        cols, inrange = decode_columns(fld, data, n, length)
    if not inrange.all():  # an element >= p: the stream goes on (rare)
        for jj in np.flatnonzero(~inrange):
            j = int(jj)
            vec = vdaf.xof.expand_into_vec(fld, seeds[j], dst, binders[j], length)
            if not lazy:
                cols[:, j] = vec
            raw[j] = fld.encode_vec(vec)
        data = b"".join(raw)
    if lazy:
        return LazyRows(decode_words(data, n, length)), raw, data
    return cols, raw, data


def leader_shares(
    vdaf: AnyPrio3, shares: Sequence[bytes], ok: Mask
) -> tuple[Any, Any, list[bytes], list[bytes], bytes, bytes]:
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
    meas_raw = [s[: m * size] for s in fixed]
    proof_data = b"".join(s[m * size : body] for s in fixed)
    blinds = [s[body:] for s in fixed]
    if field_is_wide(vdaf):  # the measurement stays in words until read (LazyRows)
        words = decode_words(b"".join(s[:body] for s in fixed), len(fixed), m + pr)
        ok &= words_below(field, words)
        meas: Any = LazyRows(words[:m])
        return meas, LazyRows(words[m:]), meas_raw, blinds, b"".join(meas_raw), proof_data
    cols, inrange = decode_columns(field, b"".join(s[:body] for s in fixed), len(fixed), m + pr)
    ok &= inrange
    return cols[:m], cols[m:], meas_raw, blinds, b"".join(meas_raw), proof_data


def helper_shares(
    vdaf: AnyPrio3, ctx: bytes, agg_id: int, shares: Sequence[bytes], ok: Mask
) -> tuple[Any, Any, list[bytes], list[bytes], bytes, bytes]:
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
    meas, meas_raw, meas_data = expand(
        vdaf,
        seeds,
        vdaf.domain_separation_tag(USAGE_MEAS_SHARE, ctx),
        [bytes([agg_id])] * n,
        flp.MEAS_LEN,
        lazy=field_is_wide(vdaf),
    )
    proofs, _, proof_data = expand(
        vdaf,
        seeds,
        vdaf.domain_separation_tag(USAGE_PROOF_SHARE, ctx),
        [bytes([vdaf.PROOFS, agg_id])] * n,
        flp.PROOF_LEN * vdaf.PROOFS,
        lazy=field_is_wide(vdaf),
    )
    return meas, proofs, meas_raw, blinds, meas_data, proof_data


def public_parts(vdaf: AnyPrio3, public_shares: Sequence[bytes], ok: Mask) -> list[list[bytes]]:
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


def joint_rand(
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
    jr, _, jr_data = expand(
        vdaf,
        corrected,
        vdaf.domain_separation_tag(USAGE_JOINT_RANDOMNESS, ctx),
        [bytes([vdaf.PROOFS])] * n,
        vdaf.flp.JOINT_RAND_LEN * vdaf.PROOFS,
    )
    return jr, own, corrected, jr_data


def input_words(
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


def field_is_wide(vdaf: AnyPrio3) -> bool:
    """Whether the VDAF's field is Field128 (its elements are two words)."""
    return vdaf.field is Field128
