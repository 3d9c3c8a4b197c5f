"""Run Prio3 end to end in memory (client, every aggregator, collector) for the tests."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from datafed.protocols import InputShare, Prio3

CTX = b"datafed test context"


def new_report(
    vdaf: Prio3[Any, Any], measurement: Any, ctx: bytes = CTX
) -> tuple[bytes, list[bytes] | None, list[InputShare]]:
    nonce = os.urandom(vdaf.NONCE_SIZE)
    public, shares = vdaf.shard(ctx, measurement, nonce, os.urandom(vdaf.RAND_SIZE))
    return nonce, public, shares


def verify(
    vdaf: Prio3[Any, Any],
    keys: Sequence[bytes],
    nonce: bytes,
    public: list[bytes] | None,
    shares: Sequence[InputShare],
    ctxs: Sequence[bytes] | None = None,
) -> list[list[int]]:
    """Every aggregator's output share; raises ReportRejected like the aggregators would."""
    ctxs = ctxs or [CTX] * vdaf.SHARES
    states, vshares = [], []
    for j, share in enumerate(shares):
        state, vshare = vdaf.verify_init(keys[j], ctxs[j], j, nonce, public, share)
        states.append(state)
        vshares.append(vshare)
    message = vdaf.verifier_shares_to_message(ctxs[0], vshares)
    return [vdaf.verify_next(ctxs[j], s, message) for j, s in enumerate(states)]


def run(vdaf: Prio3[Any, Any], measurements: Sequence[Any], key: bytes | None = None) -> Any:
    key = key or os.urandom(vdaf.VERIFY_KEY_SIZE)
    outs: list[list[list[int]]] = [[] for _ in range(vdaf.SHARES)]
    for m in measurements:
        nonce, public, shares = new_report(vdaf, m)
        for j, out in enumerate(verify(vdaf, [key] * vdaf.SHARES, nonce, public, shares)):
            outs[j].append(out)
    # Each aggregator's aggregate share goes over the wire (encoded) to the collector.
    wire = [vdaf.encode_agg_share(vdaf.aggregate(o)) for o in outs]
    return vdaf.unshard([vdaf.decode_agg_share(w) for w in wire], len(measurements))
