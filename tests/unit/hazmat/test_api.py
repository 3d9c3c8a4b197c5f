from __future__ import annotations

import subprocess
import sys

import pytest

import datafed.hazmat
import datafed.protocols


def _isort_key(name: str) -> tuple[int, str]:
    # ruff RUF022 order: SCREAMING_CASE, then CamelCase, then the rest.
    if name.isupper():
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)


@pytest.mark.parametrize("module", [datafed.hazmat, datafed.protocols])
def test_all_is_sorted_and_complete(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert names == sorted(names, key=_isort_key)
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(module, name), name
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and not isinstance(v, type(sys)) and n not in {"annotations"}
    }
    assert public == set(names)


def test_import_is_light() -> None:
    code = (
        "import sys, datafed.hazmat, datafed.protocols;"
        "print([m for m in ('tenseal', 'torch', 'flwr') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
