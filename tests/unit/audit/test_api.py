from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import audit


def isort_key(name: str) -> tuple[int, str]:
    """ruff RUF022's order: CONSTANTS, then Classes, then functions."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


MODULES = sorted(p.stem for p in Path(audit.__file__).parent.glob("*.py") if p.stem != "__init__")


def test_all_is_sorted_and_importable() -> None:
    assert audit.__all__ == sorted(audit.__all__, key=isort_key)
    for name in audit.__all__:
        assert getattr(audit, name) is not None


@pytest.mark.parametrize("module", MODULES)
def test_module_all_sorted_and_complete(module: str) -> None:
    mod = importlib.import_module(f"audit.{module}")
    names = getattr(mod, "__all__", None)
    assert names is not None, f"audit.{module} has no __all__"
    assert list(names) == sorted(names, key=isort_key)
    for name in names:
        assert hasattr(mod, name), f"audit.{module}.__all__ names missing {name}"


def test_merkle_math_does_no_io() -> None:
    src = (Path(audit.__file__).parent / "merkle.py").read_text()
    tree = ast.parse(src)
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert imported <= {"__future__", "hashlib", "collections", "typing", "audit"}
    assert "open(" not in src and "print(" not in src


def test_the_policy_file_model_is_what_the_parser_reads(tmp_path: Path) -> None:
    """The generated reference documents audit.policy.PolicyFile; the parser takes exactly it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from audit.checkpoint import log_verifier
    from audit.note import raw_public_key
    from audit.policy import Policy, PolicyFile

    key = raw_public_key(Ed25519PrivateKey.generate().public_key())
    vkey = log_verifier("datafed/ledger/water-north", key).vkey()
    full = {
        "logs": [vkey],
        "witnesses": [],
        "quorum": 0,
        "state": "state.json",
        "agencies": {"water-north": "Water (north)"},
        "budgets": {"pipe_incidents": 2.0},
        "witness_addresses": {},
    }
    assert set(full) == set(PolicyFile.model_fields)
    PolicyFile.model_validate(full)
    policy = Policy.from_dict(full, base=tmp_path)
    assert policy.agencies == full["agencies"] and policy.budgets == full["budgets"]
    with pytest.raises(ValueError, match="unknown field 'extra'"):
        Policy.from_dict({**full, "extra": 1})
