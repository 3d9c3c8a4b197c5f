"""Field elements of many reports at once: columns of numpy ``object`` arrays.

Batched verification (:mod:`datafed.hazmat._flp_batch`) keeps a vector of ``L`` field
elements of ``N`` reports as an ``(L, N)`` numpy ``object`` array of Python integers:
row ``i`` is element ``i`` of every report, so one arithmetic operation on a row is one
C loop over the reports instead of one interpreted step per report. The circuits'
list code then runs unchanged with rows in place of integers (``x * y % p`` works on
both).

This module converts between the wire encoding (``ENCODED_SIZE`` little-endian bytes per
element, draft-irtf-cfrg-vdaf-20 §6.1.1) of ``N`` reports laid end to end and such
columns, through ``uint64`` words: no Python loop over elements.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from datafed.hazmat._field import NttField

Cols = npt.NDArray[Any]
"""An ``(L, N)`` object array: element ``i`` of report ``j`` at ``[i, j]``."""
Mask = npt.NDArray[np.bool_]
"""One flag per report."""
Words = npt.NDArray[np.uint64]
"""An ``(L, N, 2)`` ``uint64`` array: the low and high words of Field128 elements."""

_M64 = (1 << 64) - 1
_LITTLE: repeat[Literal["little"]] = repeat("little")


def decode_columns(field: NttField, data: bytes, n: int, length: int) -> tuple[Cols, Mask]:
    """``n`` encoded vectors of ``length`` elements, laid end to end, as columns.

    Parameters
    ----------
    field : NttField
        Field64 or Field128.
    data : bytes
        ``n * length * ENCODED_SIZE`` bytes: report 0's vector, then report 1's, ...
    n, length : int
        Reports and elements per report.

    Returns
    -------
    tuple
        ``(cols, ok)``: the ``(length, n)`` columns and, per report, whether every
        element was below the modulus (elements of a report that is not are kept as
        parsed; the caller rejects the report).
    """
    size = field.ENCODED_SIZE
    if len(data) != n * length * size:
        raise ValueError("wrong number of bytes for the columns")
    words = np.frombuffer(data, dtype="<u8")
    p = field.MODULUS
    if size == 8:
        arr = words.reshape(n, length)
        ok = np.all(arr < np.uint64(p), axis=1) if length else np.ones(n, dtype=bool)
        return arr.T.astype(object), ok
    pairs = words.reshape(n, length, 2)
    lo, hi = pairs[..., 0], pairs[..., 1]
    p_lo, p_hi = np.uint64(p & _M64), np.uint64(p >> 64)
    below = (hi < p_hi) | ((hi == p_hi) & (lo < p_lo))
    ok = np.all(below, axis=1) if length else np.ones(n, dtype=bool)
    return decode_wide(data, n, length).T, ok


def decode_words(data: bytes, n: int, length: int) -> Words:
    """The ``(length, n, 2)`` ``uint64`` words of ``n`` Field128 vectors laid end to end.

    A view of ``data`` (no copy, no range check: see :func:`decode_columns`); element
    ``i`` of report ``j`` is ``out[i, j, 0] + out[i, j, 1] * 2^64``.
    """
    if len(data) != n * length * 16:
        raise ValueError("wrong number of bytes for the columns")
    words: Words = np.frombuffer(data, dtype="<u8").reshape(n, length, 2).transpose(1, 0, 2)
    return words


def words_below(field: NttField, words: Words) -> Mask:
    """Per report, whether every element of ``(L, N, 2)`` Field128 words is below ``p``."""
    if not len(words):
        return np.ones(words.shape[1], dtype=bool)
    p = field.MODULUS
    lo, hi = words[..., 0], words[..., 1]
    p_lo, p_hi = np.uint64(p & _M64), np.uint64(p >> 64)
    below = (hi < p_hi) | ((hi == p_hi) & (lo < p_lo))
    ok: Mask = np.all(below, axis=0)
    return ok


def ints_of_words(words: Words) -> Cols:
    """``(L, N, 2)`` Field128 words as an ``(L, N)`` object array of Python integers."""
    length, n = words.shape[:2]
    data = np.ascontiguousarray(words.transpose(1, 0, 2)).tobytes()
    return decode_wide(data, n, length).T


class LazyRows(Sequence[Any]):
    """Rows of Field128 elements decoded from their words only when read.

    A sequence of ``L`` rows of ``N`` Python integers (what the circuits' code takes)
    over ``(L, N, 2)`` words: a row is decoded when first read and kept, a slice is
    another :class:`LazyRows` (a view of the words), iterating decodes every row. Code
    that never reads the rows (the limb query) never pays for them.
    """

    def __init__(self, words: Words) -> None:
        self.words = words
        self._rows: Cols | None = None
        self._row: dict[int, Cols] = {}

    def __len__(self) -> int:
        return int(self.words.shape[0])

    def rows(self) -> Cols:
        """All rows, as one ``(L, N)`` object array."""
        if self._rows is None:
            self._rows = ints_of_words(self.words)
        return self._rows

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return LazyRows(self.words[index])
        if self._rows is not None:
            return self._rows[index]
        i = range(len(self))[index]  # a negative index counts from the end; IndexError
        row = self._row.get(i)
        if row is None:
            row = self._row[i] = ints_of_words(self.words[i : i + 1])[0]
        return row

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows())


def decode_wide(data: bytes, n: int, length: int) -> Cols:
    """``n`` vectors of ``length`` 16-byte little-endian integers as an ``(n, length)`` array.

    One ``int.from_bytes`` per element over 16-byte views (``V16``): about 80 ns an
    element, against 220 for assembling each from two ``uint64`` words as objects. No
    range check (see :func:`decode_columns`).
    """
    out = np.empty(n * length, dtype=object)
    out[:] = list(map(int.from_bytes, np.frombuffer(data, dtype="V16").tolist(), _LITTLE))
    return out.reshape(n, length)


def encode_columns(field: NttField, cols: Cols) -> bytes:
    """Inverse of :func:`decode_columns`: each report's encoding, laid end to end."""
    rows = np.asarray(cols, dtype=object).T  # (n, length)
    if field.ENCODED_SIZE == 8:
        return np.ascontiguousarray(rows.astype("<u8")).tobytes()
    out = np.empty((*rows.shape, 2), dtype="<u8")
    out[..., 0] = (rows & _M64).astype("<u8")
    out[..., 1] = (rows >> 64).astype("<u8")
    return out.tobytes()


def column(value: Any, n: int) -> Cols:
    """``value`` as one row of ``n`` (a scalar broadcast, a row kept)."""
    if isinstance(value, np.ndarray):
        return value
    out = np.empty(n, dtype=object)
    out[:] = value
    return out


def stack(rows: list[Any], n: int) -> Cols:
    """Rows (arrays or scalars) as one ``(len(rows), n)`` object array."""
    out = np.empty((len(rows), n), dtype=object)
    for i, r in enumerate(rows):
        out[i] = r
    return out


def where_rows(mask: Mask, cols: Cols, other: Cols) -> Cols:
    """Per report (column), ``cols`` where ``mask`` else ``other``."""
    return np.where(mask[None, :], cols, other)
