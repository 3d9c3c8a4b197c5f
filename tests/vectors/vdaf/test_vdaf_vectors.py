"""Every Prio3 and XOF known-answer vector of draft-irtf-cfrg-vdaf-20 (vendored here).

Each vector file is replayed operation by operation, as its ``operations`` list says
(Appendix C.1): every intermediate value is compared byte for byte, and every step
marked ``success: false`` must raise ReportRejected at exactly that step. Inputs of
each step come from the vector itself (not from our earlier output), so the bad
reports are fed exactly as crafted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datafed.hazmat import (
    Field64,
    Field128,
    PolyEval,
    SumVecCircuit,
    Valid,
    XofFixedKeyAes128,
    XofTurboShake128,
)
from datafed.protocols import (
    Prio3,
    Prio3Count,
    Prio3Histogram,
    Prio3MultihotCountVec,
    Prio3Sum,
    Prio3SumVec,
    ReportRejected,
)

HERE = Path(__file__).parent
FILES = sorted(p.name for p in HERE.glob("Prio3*.json"))


class HigherDegreeCircuit(Valid[int, int]):
    """The draft's test circuit with a degree-3 gadget: x (x-1) (x-2) = 0."""

    field = Field64
    JOINT_RAND_LEN = 0
    MEAS_LEN = 1
    OUTPUT_LEN = 1
    EVAL_OUTPUT_LEN = 1

    def __init__(self) -> None:
        self.GADGETS = [PolyEval([0, 2, -3, 1], 1)]
        self.GADGET_CALLS = [1]

    def encode(self, measurement: int) -> list[int]:
        return [measurement]

    def wire_inputs(
        self, meas: list[int], joint_rand: list[int], num_shares: int
    ) -> list[list[list[int]]]:
        return [[[meas[0]]]]

    def eval_output(
        self,
        meas: list[int],
        joint_rand: list[int],
        num_shares: int,
        gadget_outputs: list[list[int]],
    ) -> list[int]:
        return [gadget_outputs[0][0]]

    def truncate(self, meas: list[int]) -> list[int]:
        return list(meas)

    def decode(self, output: list[int], num_measurements: int) -> int:
        return output[0]


def make_vdaf(name: str, v: dict[str, Any]) -> Prio3[Any, Any]:
    shares = v["shares"]
    kind = name.split("_")[0]
    if kind == "Prio3Count":
        return Prio3Count(shares)
    if kind == "Prio3Sum":
        return Prio3Sum(v["max_measurement"], shares)
    if kind == "Prio3SumVec":
        return Prio3SumVec(v["length"], v["max_measurement"], v["chunk_length"], shares)
    if kind == "Prio3Histogram":
        return Prio3Histogram(v["length"], v["chunk_length"], shares)
    if kind == "Prio3MultihotCountVec":
        return Prio3MultihotCountVec(v["length"], v["max_weight"], v["chunk_length"], shares)
    if kind == "Prio3SumVecWithMultiproof":
        circuit = SumVecCircuit(Field64, v["length"], v["max_measurement"], v["chunk_length"])
        return Prio3(circuit, shares=shares, vdaf_id=0xFFFFFFFF, proofs=3)
    if kind == "Prio3HigherDegree":
        return Prio3(HigherDegreeCircuit(), shares=shares, vdaf_id=0xFFFFFFFF)
    raise AssertionError(f"no VDAF for {name}")


def load(name: str) -> dict[str, Any]:
    return json.loads((HERE / name).read_text())  # type: ignore[no-any-return]


def test_vector_set_is_complete() -> None:
    # 21 Prio3 files + 2 XOF files, as vendored; a lost file fails here, never skips.
    assert len(FILES) == 21
    assert {f.split("_")[0] for f in FILES} == {
        "Prio3Count",
        "Prio3Sum",
        "Prio3SumVec",
        "Prio3Histogram",
        "Prio3MultihotCountVec",
        "Prio3SumVecWithMultiproof",
        "Prio3HigherDegree",
    }
    assert sum("_bad_" in f for f in FILES) == 8


@pytest.mark.parametrize("name", FILES)
def test_prio3_vector(name: str) -> None:
    v = load(name)
    vdaf = make_vdaf(name, v)
    ctx, key = bytes.fromhex(v["ctx"]), bytes.fromhex(v["verify_key"])
    assert v["agg_param"] == ""
    reports = v["reports"]
    states: dict[tuple[int, int], Any] = {}
    out_shares: dict[int, list[list[int]]] = {}
    failures = 0
    for op in v["operations"]:
        kind, ok = op["operation"], op["success"]
        r = reports[op["report_index"]] if "report_index" in op else None
        if kind == "shard":
            assert r is not None and ok
            public, inputs = vdaf.shard(
                ctx, r["measurement"], bytes.fromhex(r["nonce"]), bytes.fromhex(r["rand"])
            )
            assert vdaf.encode_public_share(public).hex() == r["public_share"]
            assert [vdaf.encode_input_share(s).hex() for s in inputs] == r["input_shares"]
        elif kind == "verify_init":
            assert r is not None and ok
            j = op["aggregator_id"]
            public = vdaf.decode_public_share(bytes.fromhex(r["public_share"]))
            share = vdaf.decode_input_share(j, bytes.fromhex(r["input_shares"][j]))
            state, vshare = vdaf.verify_init(key, ctx, j, bytes.fromhex(r["nonce"]), public, share)
            assert vdaf.encode_verifier_share(vshare).hex() == r["verifier_shares"][0][j]
            states[(op["report_index"], j)] = state
        elif kind == "verifier_shares_to_message":
            assert r is not None and op["round"] == 0
            vshares = [
                vdaf.decode_verifier_share(bytes.fromhex(h)) for h in r["verifier_shares"][0]
            ]
            if ok:
                msg = vdaf.verifier_shares_to_message(ctx, vshares)
                assert vdaf.encode_verifier_message(msg).hex() == r["verifier_messages"][0]
            else:
                with pytest.raises(ReportRejected):
                    vdaf.verifier_shares_to_message(ctx, vshares)
                failures += 1
        elif kind == "verify_next":
            assert r is not None and op["round"] == 1
            j = op["aggregator_id"]
            msg = vdaf.decode_verifier_message(bytes.fromhex(r["verifier_messages"][0]))
            state = states[(op["report_index"], j)]
            if ok:
                out = vdaf.verify_next(ctx, state, msg)
                assert vdaf.encode_agg_share(out).hex() == r["out_shares"][j]
                out_shares.setdefault(j, []).append(out)
            else:
                with pytest.raises(ReportRejected):
                    vdaf.verify_next(ctx, state, msg)
                failures += 1
        elif kind == "aggregate":
            assert ok
            j = op["aggregator_id"]
            agg = vdaf.agg_init()
            for out in out_shares[j]:
                agg = vdaf.agg_update(agg, out)
            assert agg == vdaf.aggregate(out_shares[j])
            assert vdaf.encode_agg_share(agg).hex() == v["agg_shares"][j]
        elif kind == "unshard":
            assert ok
            aggs = [vdaf.decode_agg_share(bytes.fromhex(h)) for h in v["agg_shares"]]
            assert vdaf.unshard(aggs, len(reports)) == v["agg_result"]
        else:
            raise AssertionError(f"unknown operation {kind}")
    # A bad vector fails exactly once, at the step it names; a good one never.
    assert failures == ("_bad_" in name)


@pytest.mark.parametrize("xof", [XofTurboShake128, XofFixedKeyAes128])
def test_xof_vector(xof: type[XofTurboShake128]) -> None:
    v = load(f"{xof.__name__}.json")
    seed, dst, binder = (bytes.fromhex(v[k]) for k in ("seed", "dst", "binder"))
    assert xof.derive_seed(seed, dst, binder).hex() == v["derived_seed"]
    vec = xof.expand_into_vec(Field128, seed, dst, binder, v["length"])
    assert Field128.encode_vec(vec).hex() == v["expanded_vec_field128"]
