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
import re
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


# -- the shape of the tree (docs/architecture.md "Packages and the layering rule") ----------
#: A module longer than this, or a function longer than ``MAX_FUNCTION_LINES`` (its
#: docstring not counted), says why at its top: ``Why long:`` in its docstring.
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
WHY_LONG = "Why long:"


def import_graph() -> dict[str, set[str]]:
    """Module -> the repository's modules it imports, anywhere in it (lazy imports too)."""
    names = {module_name(p): p for p in ALL}

    def owner(m: str) -> str | None:
        while m and m not in names:
            m = m.rpartition(".")[0]
        return m or None

    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        deps = set()
        for _, m in imports(path):
            found = m if m in names else owner(m)
            if found and found != name:
                deps.add(found)
        graph[name] = deps
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: every component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_strongly_connected_finds_a_circle_and_only_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    """No module reaches itself through imports, lazy imports and TYPE_CHECKING included."""
    circles = strongly_connected(import_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def _long_functions(path: Path) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            doc = ast.get_docstring(node) or ""
            start = body[1].lineno if doc and len(body) > 1 else body[0].lineno
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            lines -= start - body[0].lineno  # the docstring does not count
            if lines > MAX_FUNCTION_LINES and WHY_LONG not in doc:
                yield node.name, lines


@pytest.mark.parametrize("path", ALL, ids=_id)
def test_modules_and_functions_are_short_or_say_why(path: Path) -> None:
    text = path.read_text()
    n = len(text.splitlines())
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert n <= MAX_MODULE_LINES or WHY_LONG in doc, (
        f"{_id(path)} has {n} lines: split it, or say why in its docstring ({WHY_LONG!r})"
    )
    long = list(_long_functions(path))
    assert not long, f"{_id(path)}: functions over {MAX_FUNCTION_LINES} lines: {long}"


DOC_FILES = [
    "README.md",
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")),
]
REPO_PATH = re.compile(
    r"(?<![\w/.-])((?:datafed|nodes|audit|tests|benchmarks|examples|docs)/[\w/.-]*\w\.(?:py|md|toml))"
)


@pytest.mark.parametrize("doc", DOC_FILES)
def test_docs_name_only_files_that_exist(doc: str) -> None:
    """Every repository path the docs name is there (the docs follow the tree)."""
    missing = sorted(
        {m for m in REPO_PATH.findall((ROOT / doc).read_text()) if not (ROOT / m).exists()}
    )
    assert not missing, f"{doc} names files that do not exist: {missing}"


# -- the release gate (docs/invisibility.md, nodes/release/) --------------------------------
#: A store's methods that read a dataset's rows.
STORE_READS = {"aggregate", "read_rows"}
GATE = ("nodes/release/", "nodes/stores/")


def _store_reads(path: Path) -> list[tuple[int, str]]:
    """Every ``<...store>.aggregate`` / ``.read_rows`` in ``path``, called or passed on."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in STORE_READS:
            receiver = ast.unparse(node.value)
            if receiver.split(".")[-1].endswith("store"):
                out.append((node.lineno, f"{receiver}.{node.attr}"))
    return out


def test_the_store_read_check_finds_a_read() -> None:
    path = ROOT / "nodes" / "release" / "query.py"
    assert any(call.endswith("store.aggregate") for _, call in _store_reads(path))


@pytest.mark.parametrize("path", modules("nodes"), ids=_id)
def test_only_the_release_gate_reads_datasets(path: Path) -> None:
    """No code outside the gate (and the stores) reads a dataset: every value derived from
    rows leaves the node through ``nodes/release/`` (its rule applied, its release recorded)."""
    if _id(path).startswith(GATE):
        return
    reads = _store_reads(path)
    assert not reads, f"{_id(path)} reads a dataset outside nodes/release/: {reads}"
