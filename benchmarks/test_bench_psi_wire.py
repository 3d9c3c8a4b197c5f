"""Intersection-sum over the wire: two real node processes vs the in-process protocol.

``ours``: ``Federation.intersection_sum`` between the tax bureau and the city bank as
``datafed-node`` processes on loopback with mTLS: signed steps, relayed and sealed
payloads, policy checks, four ledger entries with receipts, the nodes' work on a pool of
two processes each (they take turns, so the two cores are shared).  ``baseline``: the
same sets through :class:`datafed.protocols.PsiParty1` / ``PsiParty2`` in one process
(values encrypted on two cores by a ``BatchEncryptor``, curve work on one), same run,
same 2048-bit key size.  Unit ``s``; ``ratio`` is baseline / ours.

``n`` is the number of taxpayers and of loan rows generated (``DATAFED_BENCH_PSI_N``,
default 100,000, the issue's size); duplicate loan applicants are merged, so the bank's
set is a little smaller and about half of it intersects.  A 10,000 pair runs too.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sizes import env_size, size

from datafed.client import Federation
from datafed.client import psi as client_psi
from datafed.hazmat import BatchEncryptor, generate_paillier_keypair
from datafed.local.federation import FINANCE_PURPOSE, LocalFederation, finance_specs
from datafed.protocols import PsiParty1, PsiParty2
from datafed.psi import identifier_set, value_pairs

N = int(env_size("DATAFED_BENCH_PSI_N", "100000", "200"))
SIZES = sorted({size(10_000, N), N})
IDS = ("tax-bureau", "taxpayers", "person_id")
VALUES = ("city-bank", "loans", "person_id", "amount")
BASELINE = "in-process PsiParty1/PsiParty2 (datafed.protocols), 2 encryption workers"


def _column(root: Path, node: str, table: str, cols: str) -> list[tuple]:
    with sqlite3.connect(root / "nodes" / node / "data" / f"{table}.sqlite") as db:
        return db.execute(f"SELECT {cols} FROM {table}").fetchall()


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"n={n}")
def setup(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    n = request.param
    root = tmp_path_factory.mktemp(f"psi{n}")
    lf = LocalFederation.create(root, finance_specs(taxpayers=n, loans=n, exact=True))
    lf.start()
    ids = identifier_set(r[0] for r in _column(root, "tax-bureau", "taxpayers", "person_id"))
    pairs = value_pairs(_column(root, "city-bank", "loans", "person_id, amount"), 16)
    fed = Federation.from_file(lf.fed_toml)
    asyncio.run(client_psi._keypair(fed))  # the analyst's key exists before timing
    mine = set(ids)
    want = (sum(1 for w, _ in pairs if w in mine), sum(t for w, t in pairs if w in mine))
    try:
        yield n, fed, ids, pairs, want
    finally:
        codes = lf.stop()
        assert all(c == 0 for c in codes), f"nodes exited with {codes}"


def _row(bench_row, n: int, ids: list, pairs: list, role: str) -> None:  # type: ignore[no-untyped-def]
    bench_row(
        "psi.intersection_sum",
        role=role,
        unit="s",
        params={"n": n, "path": "grpc"},
        baseline_name=BASELINE,
        ids=len(ids),
        pairs=len(pairs),
        bits=2048,
    )


@pytest.mark.timeout(1800)
def test_intersection_sum_over_grpc(benchmark, bench_row, setup) -> None:  # type: ignore[no-untyped-def]
    n, fed, ids, pairs, want = setup
    _row(bench_row, n, ids, pairs, "ours")
    r = benchmark.pedantic(
        fed.intersection_sum,
        args=(IDS, VALUES),
        kwargs={"purpose": FINANCE_PURPOSE},
        rounds=1,
        iterations=1,
    )
    assert (r.intersection_size, r.sum_fixed) == want


@pytest.mark.timeout(1800)
def test_intersection_sum_in_process_baseline(benchmark, bench_row, setup) -> None:  # type: ignore[no-untyped-def]
    n, _, ids, pairs, want = setup
    _row(bench_row, n, ids, pairs, "baseline")
    keypair = generate_paillier_keypair(2048)

    def run(enc: BatchEncryptor):  # type: ignore[no-untyped-def]
        p1 = PsiParty1(ids)
        p2 = PsiParty2(pairs, keypair=keypair, encryptor=enc)
        return p1.finish(p2.round4(p1.round3(p2.round2(p1.round1()))))

    with BatchEncryptor(keypair[0], workers=2) as enc:
        enc.encrypt_many([0, 1])  # start the pool before timing
        out = benchmark.pedantic(run, args=(enc,), rounds=1, iterations=1)
    assert (out.intersection_size, out.intersection_sum) == want
