"""Loader for the RFC 9162 Merkle vectors vendored in ``tests/vectors/merkle`` (see its README)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

VECTOR_DIR = Path(__file__).resolve().parent / "merkle"


@dataclass(frozen=True)
class InclusionVector:
    name: str
    leaf_index: int
    tree_size: int
    root: bytes
    leaf_hash: bytes
    proof: list[bytes]
    want_err: bool


@dataclass(frozen=True)
class ConsistencyVector:
    name: str
    size1: int
    size2: int
    root1: bytes
    root2: bytes
    proof: list[bytes]
    want_err: bool


def _b(s: str) -> bytes:
    return base64.b64decode(s)


def _files(kind: str) -> list[Path]:
    base = VECTOR_DIR.resolve() / kind
    if not base.is_dir():
        raise FileNotFoundError(f"Merkle test vectors missing: {base}")
    files = sorted(base.rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"no Merkle test vectors under {base}")
    return files


def inclusion_vectors() -> list[InclusionVector]:
    out = []
    for f in _files("inclusion"):
        v = json.loads(f.read_text())
        out.append(
            InclusionVector(
                str(f.relative_to(VECTOR_DIR.resolve())),
                v["leafIdx"],
                v["treeSize"],
                _b(v["root"]),
                _b(v["leafHash"]),
                [_b(p) for p in v["proof"] or []],
                v["wantErr"],
            )
        )
    return out


def consistency_vectors() -> list[ConsistencyVector]:
    out = []
    for f in _files("consistency"):
        v = json.loads(f.read_text())
        out.append(
            ConsistencyVector(
                str(f.relative_to(VECTOR_DIR.resolve())),
                v["size1"],
                v["size2"],
                _b(v["root1"]),
                _b(v["root2"]),
                [_b(p) for p in v["proof"] or []],
                v["wantErr"],
            )
        )
    return out
