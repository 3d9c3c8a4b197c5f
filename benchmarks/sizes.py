"""The one switch between a measurement and the smoke run of every benchmark.

``make bench`` measures: every benchmark at its full size, the rounds it asks for.
``make test`` runs every benchmark once at its smallest size (``DATAFED_BENCH_SMOKE=1``,
set by ``make benchsmoke``): one round, no warm-up, the sizes given as ``smoke`` below.
No figure is asserted in a smoke run, only that each benchmark runs and writes its row
(``benchmarks/conftest.py`` fails the session otherwise), so a benchmark cannot rot
between measurements.
"""

from __future__ import annotations

import os

SMOKE = os.environ.get("DATAFED_BENCH_SMOKE", "") == "1"


def size(full: int, smoke: int) -> int:
    """``full`` when measuring, ``smoke`` in the smoke run."""
    return smoke if SMOKE else full


def env_size(var: str, full: str, smoke: str) -> str:
    """``smoke`` in the smoke run, else the environment's value of ``var`` or ``full``.

    ``make bench`` can be sized by hand; the smoke run always takes its smallest size.
    """
    if SMOKE:
        return smoke
    return os.environ.get(var) or full
