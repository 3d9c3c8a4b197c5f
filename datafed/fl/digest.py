"""Canonical SHA-256 digests of models and metrics, the names that lineage follows.

A model is a list of numpy arrays (Flower's ``NDArrays``). Its digest covers, for every
array in order, the dtype, the shape and the little-endian C-order bytes, so two parties
holding the same parameters compute the same name and any change of value, order, shape
or precision changes it::

    digest = SHA-256( TAG || u32(count) || ( str(dtype) || u32(ndim) || u64(dim)* ||
                                             u64(nbytes) || bytes )* )

All integers big-endian; ``str`` is ``u32(len) || utf-8``. SHA-256 as everywhere in the
ledger (docs/parameters.md, RFC 9162).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from datafed.errors import ConfigError

__all__ = ["MODEL_TAG", "arrays_digest", "file_digest", "metrics_digest"]

#: Domain separation: a model digest is never the digest of another datafed encoding.
MODEL_TAG = b"datafed/fl/model/v1\x00"
_METRICS_TAG = b"datafed/fl/metrics/v1\x00"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def _str(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def arrays_digest(arrays: Sequence[npt.NDArray[np.generic]]) -> str:
    """Return the lowercase hex SHA-256 of a model given as a list of arrays.

    Parameters
    ----------
    arrays : Sequence[numpy.ndarray]
        The model's parameters in order (Flower ``NDArrays``).

    Returns
    -------
    str
        64 lowercase hex digits.

    Raises
    ------
    TypeError
        If an element is not a numpy array or has an object dtype.
    """
    h = hashlib.sha256(MODEL_TAG)
    h.update(_U32.pack(len(arrays)))
    for i, arr in enumerate(arrays):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"model part {i} must be a numpy array, got {type(arr).__name__}")
        if arr.dtype.hasobject:
            raise TypeError(f"model part {i} has an object dtype")
        le = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        h.update(_str(le.dtype.str))
        h.update(_U32.pack(le.ndim))
        for dim in le.shape:
            h.update(_U64.pack(dim))
        h.update(_U64.pack(le.nbytes))
        h.update(le.tobytes(order="C"))
    return h.hexdigest()


def metrics_digest(metrics: Mapping[str, float | int | str | bool]) -> str:
    """Return the hex SHA-256 of a metrics mapping (canonical JSON, sorted keys).

    Parameters
    ----------
    metrics : Mapping[str, float | int | str | bool]
        Scalar metrics, e.g. ``{"loss": 0.31, "accuracy": 0.9}``.

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    text = json.dumps(dict(metrics), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(_METRICS_TAG + text.encode("utf-8")).hexdigest()


def file_digest(path: Path) -> str:
    """Return the lineage key of a model saved as ``.npz`` (``datafed train --save-model``).

    The key is :func:`arrays_digest` of the file's arrays in the order they were saved
    (the model's ``state_dict`` order): the digest every node's ledger records for the
    model. It is not the SHA-256 of the file's bytes (a zip archive's bytes carry dates),
    so ``datafed model-digest FILE`` computes it.

    Raises
    ------
    ConfigError
        If the file is missing or is not a model saved as ``.npz``.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ConfigError(f"{path}: not a .npz model file (datafed train --save-model)")
            arrays = [npz[name] for name in npz.files]
    except FileNotFoundError as exc:
        raise ConfigError(f"model file not found: {path}") from exc
    except (OSError, ValueError, zipfile.BadZipFile, AttributeError) as exc:
        raise ConfigError(f"{path}: not a .npz model file (datafed train --save-model)") from exc
    if not arrays:
        raise ConfigError(f"{path}: the model file holds no arrays")
    try:
        return arrays_digest(arrays)
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
