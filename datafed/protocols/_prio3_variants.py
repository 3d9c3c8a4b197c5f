"""The Prio3 variants of draft-irtf-cfrg-vdaf-20 §7.4, with their registered ids (§10).

=====================  ==========  ========  ====================================
variant                VDAF id     field     measurement
=====================  ==========  ========  ====================================
Prio3Count             0x00000001  Field64   0 or 1
Prio3Sum               0x00000002  Field64   integer in ``[0, max_measurement]``
Prio3SumVec            0x00000003  Field128  ``length`` integers in that range
Prio3Histogram         0x00000004  Field128  bucket index in ``[0, length)``
Prio3MultihotCountVec  0x00000005  Field128  ``length`` booleans, weight bounded
=====================  ==========  ========  ====================================

``chunk_length`` defaults to the value that minimises the proof
(:func:`datafed.hazmat.optimal_chunk_length`); the test vectors fix their own.
"""

from __future__ import annotations

from datafed.hazmat import (
    CountCircuit,
    Field64,
    Field128,
    HistogramCircuit,
    MultihotCountVecCircuit,
    SumCircuit,
    SumVecCircuit,
    optimal_chunk_length,
)
from datafed.protocols._prio3 import Prio3


class Prio3Count(Prio3[int, int]):
    """Prio3Count (§7.4.1): the number of measurements equal to 1.

    Parameters
    ----------
    shares : int, optional
        Number of aggregators (default 2).
    """

    def __init__(self, shares: int = 2) -> None:
        super().__init__(CountCircuit(Field64), shares=shares, vdaf_id=0x00000001)


class Prio3Sum(Prio3[int, int]):
    """Prio3Sum (§7.4.2): the sum of integers in ``[0, max_measurement]``.

    Parameters
    ----------
    max_measurement : int
        Largest valid measurement.
    shares : int, optional
        Number of aggregators (default 2).
    """

    def __init__(self, max_measurement: int, shares: int = 2) -> None:
        self.max_measurement = max_measurement
        super().__init__(SumCircuit(Field64, max_measurement), shares=shares, vdaf_id=0x00000002)


class Prio3SumVec(Prio3[list[int], list[int]]):
    """Prio3SumVec (§7.4.3): the element-wise sum of bounded integer vectors.

    Parameters
    ----------
    length : int
        Vector length.
    max_measurement : int
        Largest valid element.
    chunk_length : int, optional
        ``ParallelSum`` chunk length (default: the shortest proof).
    shares : int, optional
        Number of aggregators (default 2).
    """

    def __init__(
        self, length: int, max_measurement: int, chunk_length: int | None = None, shares: int = 2
    ) -> None:
        bits = max_measurement.bit_length()
        chunk = chunk_length or optimal_chunk_length(length * bits)
        self.length, self.max_measurement, self.chunk_length = length, max_measurement, chunk
        circuit = SumVecCircuit(Field128, length, max_measurement, chunk)
        super().__init__(circuit, shares=shares, vdaf_id=0x00000003)


class Prio3Histogram(Prio3[int, list[int]]):
    """Prio3Histogram (§7.4.4): how many measurements fall in each bucket.

    Parameters
    ----------
    length : int
        Number of buckets.
    chunk_length : int, optional
        ``ParallelSum`` chunk length (default: the shortest proof).
    shares : int, optional
        Number of aggregators (default 2).
    """

    def __init__(self, length: int, chunk_length: int | None = None, shares: int = 2) -> None:
        chunk = chunk_length or optimal_chunk_length(length)
        self.length, self.chunk_length = length, chunk
        super().__init__(
            HistogramCircuit(Field128, length, chunk), shares=shares, vdaf_id=0x00000004
        )


class Prio3MultihotCountVec(Prio3[list[bool], list[int]]):
    """Prio3MultihotCountVec (§7.4.5): per-entry counts of bounded-weight bit vectors.

    Parameters
    ----------
    length : int
        Number of entries.
    max_weight : int
        Largest number of true entries per measurement.
    chunk_length : int, optional
        ``ParallelSum`` chunk length (default: the shortest proof).
    shares : int, optional
        Number of aggregators (default 2).
    """

    def __init__(
        self, length: int, max_weight: int, chunk_length: int | None = None, shares: int = 2
    ) -> None:
        chunk = chunk_length or optimal_chunk_length(length + max_weight.bit_length())
        self.length, self.max_weight, self.chunk_length = length, max_weight, chunk
        circuit = MultihotCountVecCircuit(Field128, length, max_weight, chunk)
        super().__init__(circuit, shares=shares, vdaf_id=0x00000005)
