"""Model and metrics digests: known answers, canonical form, sensitivity to every change."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from datafed.fl.digest import MODEL_TAG, arrays_digest, metrics_digest


def reference(arrays_: list[np.ndarray]) -> str:
    """An independent transcription of the encoding in the module docstring."""
    out = MODEL_TAG + struct.pack(">I", len(arrays_))
    for a in arrays_:
        le = a.astype(a.dtype.newbyteorder("<"))
        dt = le.dtype.str.encode()
        out += struct.pack(">I", len(dt)) + dt + struct.pack(">I", a.ndim)
        out += b"".join(struct.pack(">Q", d) for d in a.shape)
        raw = le.tobytes(order="C")
        out += struct.pack(">Q", len(raw)) + raw
    return hashlib.sha256(out).hexdigest()


MODEL = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0.5], dtype=np.float32)]


def test_known_answer():
    assert arrays_digest(MODEL) == reference(MODEL)
    # Pinned: a change of encoding must be deliberate (it renames every model).
    assert (
        arrays_digest(MODEL) == "16a2503f9c45ea98640889e48716e369a6833e9ba478a84c82ac46daa0d93d73"
    )
    assert arrays_digest([]) == hashlib.sha256(MODEL_TAG + b"\x00\x00\x00\x00").hexdigest()


def test_byte_order_and_memory_layout_do_not_matter():
    big = [m.astype(">f4") for m in MODEL]
    fortran = [np.asfortranarray(MODEL[0]), MODEL[1]]
    assert arrays_digest(big) == arrays_digest(fortran) == arrays_digest(MODEL)


@pytest.mark.parametrize(
    "changed",
    [
        [MODEL[0].astype(np.float64), MODEL[1]],  # precision
        [MODEL[0].reshape(3, 2), MODEL[1]],  # shape
        [MODEL[1], MODEL[0]],  # order
        [MODEL[0]],  # a part missing
        [MODEL[0], np.array([0.5000001], dtype=np.float32)],  # one value
    ],
)
def test_any_change_changes_the_digest(changed):
    assert arrays_digest(changed) != arrays_digest(MODEL)


def test_bad_parts_are_refused():
    with pytest.raises(TypeError, match="model part 0 must be a numpy array"):
        arrays_digest([[1.0, 2.0]])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="object dtype"):
        arrays_digest([np.array([object()])])


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float32, st.integers(1, 20), elements=st.floats(-1e3, 1e3, width=32)),
    st.integers(0, 19),
)
def test_property_equal_iff_same_bits(a, i):
    assert arrays_digest([a]) == arrays_digest([a.copy()]) == reference([a])
    b = a.copy()
    i %= len(b)
    b[i] = np.nextafter(b[i], np.float32(np.inf))
    assert arrays_digest([b]) != arrays_digest([a])


def test_metrics_digest_is_canonical():
    assert metrics_digest({"a": 1.0, "b": 2}) == metrics_digest({"b": 2, "a": 1.0})
    assert metrics_digest({"a": 1.0}) != metrics_digest({"a": 1.0000001})
    with pytest.raises(ValueError):
        metrics_digest({"a": float("nan")})
