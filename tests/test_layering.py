"""The layering rule of ``docs/architecture.md``, held over the whole repository.

- ``datafed`` (the library) never imports ``nodes`` (the deployable node);
- ``audit`` imports nothing from the repository but the wire contract ``datafed.proto``;
- no package imports another package's private module (``pkg._name``) -- only the
  package itself (and its subpackages) may;
- ``datafed.hazmat`` and ``datafed.protocols`` do no I/O: no files, sockets, processes
  to talk to, databases, logging or event loops;
- nothing under the repository reads the shared folder beside a checkout (a clone has none).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("datafed", "nodes", "audit")
NO_IO = {
    "asyncio",
    "grpc",
    "http",
    "io",
    "logging",
    "os",
    "pathlib",
    "requests",
    "shutil",
    "socket",
    "sqlite3",
    "ssl",
    "subprocess",
    "tempfile",
    "urllib",
}


def modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "proto/v1" not in p.as_posix())


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, absolute, with its line number."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = here[: len(here) - node.level + 1]
                base = ".".join([*prefix, base] if base else prefix)
            yield node.lineno, base
            for alias in node.names:  # ``from pkg import _private_module``
                yield node.lineno, f"{base}.{alias.name}"


ALL = [p for pkg in PACKAGES for p in modules(pkg)]


def _id(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", modules("datafed"), ids=_id)
def test_the_library_never_imports_the_node(path: Path) -> None:
    bad = [(n, m) for n, m in imports(path) if m == "nodes" or m.startswith("nodes.")]
    assert not bad, f"{_id(path)} imports the node package: {bad}"


@pytest.mark.parametrize("path", modules("audit"), ids=_id)
def test_audit_imports_only_the_wire_contract(path: Path) -> None:
    for n, m in imports(path):
        top = m.split(".")[0]
        assert top != "nodes", f"{_id(path)}:{n} imports {m}"
        if top == "datafed":
            assert m.startswith("datafed.proto"), f"{_id(path)}:{n} imports {m}"


@pytest.mark.parametrize("path", ALL, ids=_id)
def test_no_package_imports_another_packages_private_module(path: Path) -> None:
    mine = module_name(path)
    for n, m in imports(path):
        parts = m.split(".")
        if parts[0] not in PACKAGES:
            continue
        for i, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:i])  # the package the private module belongs to
                assert mine == owner or mine.startswith(owner + "."), (
                    f"{_id(path)}:{n} imports {m}, private to {owner}"
                )
                break


@pytest.mark.parametrize("path", modules("datafed/hazmat") + modules("datafed/protocols"), ids=_id)
def test_primitives_and_protocols_do_no_io(path: Path) -> None:
    for n, m in imports(path):
        assert m.split(".")[0] not in NO_IO, f"{_id(path)}:{n} imports {m}"
    tree = ast.parse(path.read_text())
    calls = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in {"open", "print", "input"}
    ]
    assert not calls, f"{_id(path)} does I/O at lines {calls}"


OUTSIDE = ("../" + "shared", '".." / "' + 'shared"')


@pytest.mark.parametrize(
    "path",
    [
        p
        for d in ("datafed", "nodes", "audit", "tests", "benchmarks", "examples")
        for p in (ROOT / d).rglob("*.py")
    ],
    ids=_id,
)
def test_nothing_reads_outside_the_repository(path: Path) -> None:
    text = path.read_text()
    assert not any(o in text for o in OUTSIDE), f"{_id(path)} reads outside the repository"
