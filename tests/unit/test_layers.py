"""The import layers of src/vmsim, read from the source with ``ast`` (nothing is imported).

Rules:

(a) no import cycle among vmsim modules at module level. Imports under ``if TYPE_CHECKING:``
    are for annotations only (never run) and do not count;
(b) no vmsim import inside a function or method (a function-level import is how a cycle
    hides);
(c) the forbidden edges of ``FORBIDDEN`` below: a module matching the importer prefix may
    not import a module matching the imported prefix, not even for annotations.

To add a rule, add a row to ``FORBIDDEN``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "vmsim"

# (importer prefix, imported prefix, why). A prefix names a module or a whole package
# ("vmsim.hw" covers vmsim.hw and vmsim.hw.*).
FORBIDDEN: list[tuple[str, str, str]] = [
    ("vmsim.hw", "vmsim.mm", "hardware knows nothing of the kernel's memory management"),
    ("vmsim.phys", "vmsim.mm", "physical memory knows nothing of the kernel's mm"),
    ("vmsim.hw", "vmsim.machine", "hardware is below the machine"),
    ("vmsim.phys", "vmsim.machine", "physical memory is below the machine"),
    *[
        (cli, inner, "the CLI uses the public API (Machine, Process, procfs), not mm internals")
        for cli in ("vmsim.cli",)
        for inner in ("vmsim.mm", "vmsim.hw", "vmsim.phys")
    ],
    *[
        (core, below, "the VMA core (mm/vma.c) stands alone: page work goes through VmaHooks")
        for core in ("vmsim.mm.vma", "vmsim.mm.tree", "vmsim.mm.vma_ops", "vmsim.mm.vma_internal")
        for below in (
            "vmsim.hw",
            "vmsim.phys",
            "vmsim.mm.core",
            "vmsim.mm.kernel",
            "vmsim.mm.memory",
            "vmsim.mm.readahead",
            "vmsim.machine",
            "vmsim.process",
        )
    ],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, here: str) -> list[str]:
    """The vmsim modules an import statement names (``from pkg import mod`` names the
    module ``pkg.mod`` when that is a module, else ``pkg``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "vmsim"]
    base = node.module or ""
    if node.level:
        pkg = here.split(".")
        if MODULES[here].name != "__init__.py":
            pkg.pop()
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join([*pkg, base] if base else pkg)
    if base.split(".")[0] != "vmsim":
        return []
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append(sub if sub in MODULES else base)
    return out


class Imports(ast.NodeVisitor):
    """Every vmsim import of one module: (target, line, at module level and run, in a
    function)."""

    def __init__(self, here: str) -> None:
        self.here = here
        self.runtime: list[tuple[str, int]] = []  # module level, executed on import
        self.typing: list[tuple[str, int]] = []  # under if TYPE_CHECKING
        self.in_function: list[tuple[str, int]] = []
        self._func = 0
        self._tc = 0

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._func += 1
        self.generic_visit(node)
        self._func -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._tc += 1
            for n in node.body:
                self.visit(n)
            self._tc -= 1
            for n in node.orelse:
                self.visit(n)
        else:
            self.generic_visit(node)

    def _record(self, node: ast.Import | ast.ImportFrom) -> None:
        for t in _targets(node, self.here):
            if self._func:
                self.in_function.append((t, node.lineno))
            elif self._tc:
                self.typing.append((t, node.lineno))
            else:
                self.runtime.append((t, node.lineno))

    def visit_Import(self, node: ast.Import) -> None:
        self._record(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._record(node)


def scan() -> dict[str, Imports]:
    out = {}
    for name, path in MODULES.items():
        v = Imports(name)
        v.visit(ast.parse(path.read_text(), str(path)))
        out[name] = v
    return out


IMPORTS = scan()


def _covers(prefix: str, module: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of one that imports
    itself (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1 or node in graph.get(node, ()):
                    found.append(sorted(comp))
    return found


def test_the_scan_sees_the_package() -> None:
    # the rules below are only as good as the scan: it must see the modules and their edges
    assert {"vmsim.mm.memory", "vmsim.mm.core", "vmsim.hw.tlb", "vmsim.phys.frames"} <= set(MODULES)
    assert ("vmsim.mm.readahead", "vmsim.mm.filemap") in {
        (m, t) for m, v in IMPORTS.items() for t, _ in v.runtime
    }


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"], ["e"]]


def test_no_module_level_import_cycle() -> None:
    graph = {m: {t for t, _ in v.runtime if t in MODULES and t != m} for m, v in IMPORTS.items()}
    # a package's __init__ runs before its submodules: an edge from a submodule to the
    # package that contains it is not a cycle of its own making
    for m in graph:
        graph[m] = {t for t in graph[m] if not _covers(t, m)}
    assert cycles(graph) == []


def test_no_vmsim_import_inside_a_function() -> None:
    found = [f"{m}:{line} imports {t}" for m, v in IMPORTS.items() for t, line in v.in_function]
    assert found == []


@pytest.mark.parametrize(("importer", "imported", "why"), FORBIDDEN)
def test_forbidden_edges(importer: str, imported: str, why: str) -> None:
    found = [
        f"{m}:{line} imports {t}"
        for m, v in IMPORTS.items()
        if _covers(importer, m)
        for t, line in v.runtime + v.typing + v.in_function
        if _covers(imported, t)
    ]
    assert found == [], why
