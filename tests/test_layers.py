"""The import layers, read from the source: every ``import`` of every module under netstudio/.

Layers point one way, bottom to top (a module may import its own layer and the ones below):

    0  netstudio (the package itself), errors, fileio, enums
    1  graph, nodes, data             (data beside the node types: the Dataset node's shapes come from
                                       netstudio.data.describe; data itself imports only layer 0)
    2  compiler
    3  training
    4  project                        (files, exports)
    5  cli, ui, __main__

and no two packages import each other, directly or round a longer circle. Function-local
imports and ``if TYPE_CHECKING:`` imports count like the others: a lazy import up the stack
is still an upward dependency. Modules inside one package may import each other, but not
round a circle either (there an import under ``if TYPE_CHECKING:`` does not count: it never runs).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "netstudio"

#: unit of the layer table (a top-level module or subpackage of netstudio) -> its layer, bottom = 0
LAYERS: dict[str, int] = {
    "netstudio": 0, "netstudio.errors": 0, "netstudio.fileio": 0, "netstudio.enums": 0,
    "netstudio.graph": 1, "netstudio.nodes": 1, "netstudio.data": 1,
    "netstudio.compiler": 2,
    "netstudio.training": 3,
    "netstudio.project": 4,
    "netstudio.cli": 5, "netstudio.ui": 5, "netstudio.__main__": 5,
}
LAYER_NAMES = {0: "bottom (errors/fileio)", 1: "graph/nodes/data", 2: "compiler", 3: "training", 4: "project",
               5: "cli/ui"}


@dataclass(frozen=True)
class Import:
    module: str   # the importing module, e.g. netstudio.training.distributed
    line: int
    target: str   # the imported netstudio module, e.g. netstudio.cli
    text: str     # how the source spells it
    type_only: bool = False  # under `if TYPE_CHECKING:`

    def where(self) -> str:
        return f"{self.module} line {self.line} ({self.text})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    """The layer-table entry a module belongs to: netstudio.data.core -> netstudio.data."""
    return ".".join(module.split(".")[:2])


def imports_of(module: str, path: Path, known: set[str]) -> list[Import]:
    """Every netstudio import in ``path`` (module level, in functions, under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    type_only = {id(n) for guard in ast.walk(tree) if isinstance(guard, ast.If) and _is_type_checking(guard.test)
                 for stmt in guard.body for n in ast.walk(stmt)}
    out: list[Import] = []
    for node in ast.walk(tree):
        typing_only = id(node) in type_only
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "netstudio":
                    out.append(Import(module, node.lineno, _existing(alias.name, known), f"import {alias.name}",
                                      typing_only))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "netstudio":
                continue
            spelled = "." * node.level + (node.module or "")
            for alias in node.names:
                # `from netstudio import cli` imports the module netstudio.cli; `from x import name` imports x
                sub = f"{source}.{alias.name}"
                target = sub if sub in known else _existing(source, known)
                out.append(Import(module, node.lineno, target, f"from {spelled} import {alias.name}", typing_only))
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _existing(name: str, known: set[str]) -> str:
    """The longest prefix of a dotted name that is a module of the package."""
    parts = name.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts) or name


def all_imports() -> list[Import]:
    mods = all_modules()
    known = set(mods)
    return [imp for name, path in mods.items() for imp in imports_of(name, path, known)]


def layer_violations(imports: list[Import]) -> list[str]:
    out = []
    for imp in imports:
        src, dst = unit_of(imp.module), unit_of(imp.target)
        if src not in LAYERS:
            out.append(f"{imp.where()}: {src} is not in the layer table of tests/test_layers.py")
            continue
        if dst not in LAYERS:
            out.append(f"{imp.where()}: imports {dst}, which is not in the layer table of tests/test_layers.py")
            continue
        if LAYERS[dst] > LAYERS[src]:
            out.append(f"{imp.where()}: imports {imp.target}, a layer above it — {src} is in layer "
                       f"{LAYERS[src]} ({LAYER_NAMES[LAYERS[src]]}), {dst} in layer {LAYERS[dst]} "
                       f"({LAYER_NAMES[LAYERS[dst]]}); only imports of the same layer or below are allowed")
    return out


def cycles(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def describe_cycle(comp: list[str], edges: dict[str, dict[str, Import]], what: str) -> str:
    inner = [imp for a in comp for b, imp in sorted(edges.get(a, {}).items()) if b in comp]
    return f"import cycle between {what} {', '.join(comp)}: " + "; ".join(imp.where() for imp in inner)


def package_edges(imports: list[Import]) -> dict[str, dict[str, Import]]:
    """Unit -> unit it imports -> the first import (by module and line) that makes the edge."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in sorted(imports, key=lambda i: (i.module, i.line)):
        src, dst = unit_of(imp.module), unit_of(imp.target)
        if src != dst and dst != "netstudio":
            edges.setdefault(src, {}).setdefault(dst, imp)
    return edges


def module_edges(imports: list[Import]) -> dict[str, dict[str, Import]]:
    """Module -> module of the same package it imports at run time (a package's __init__ does not count)."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in sorted(imports, key=lambda i: (i.module, i.line)):
        if not imp.type_only and unit_of(imp.module) == unit_of(imp.target) and imp.target != imp.module \
                and imp.target != unit_of(imp.target):
            edges.setdefault(imp.module, {}).setdefault(imp.target, imp)
    return edges


# --- the rules ----------------------------------------------------------------------------------------------

def test_every_module_is_in_the_layer_table() -> None:
    missing = sorted({unit_of(m) for m in all_modules()} - set(LAYERS))
    assert not missing, f"add these to LAYERS in tests/test_layers.py: {missing}"


def test_nothing_imports_from_a_layer_above_it() -> None:
    bad = layer_violations(all_imports())
    assert not bad, "imports that point up the layers:\n" + "\n".join(bad)


def test_no_import_cycles_between_packages() -> None:
    edges = package_edges(all_imports())
    bad = [describe_cycle(c, edges, "packages") for c in cycles(edges)]
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_modules_of_a_package() -> None:
    edges = module_edges(all_imports())
    bad = [describe_cycle(c, edges, "modules") for c in cycles(edges)]
    assert not bad, "\n".join(bad)


# --- the checker itself ---------------------------------------------------------------------------------------

def _scan(tmp_path: Path, module: str, source: str, known: set[str]) -> list[Import]:
    path = tmp_path / "m.py"
    path.write_text(source, encoding="utf-8")
    return imports_of(module, path, known)


def test_the_scanner_sees_every_spelling_of_an_import(tmp_path: Path) -> None:
    known = {"netstudio", "netstudio.cli", "netstudio.graph", "netstudio.graph.model", "netstudio.training",
             "netstudio.training.engine", "netstudio.ui"}
    src = ("from __future__ import annotations\n"
           "import os\n"
           "from typing import TYPE_CHECKING\n"
           "import netstudio.graph.model as gm\n"
           "if TYPE_CHECKING:\n"
           "    from netstudio.ui import window\n"
           "def f():\n"
           "    from netstudio import cli\n"
           "    from netstudio.cli import main, _load\n"
           "    from . import engine\n"
           "    from ..graph.model import Graph\n")
    got = [(i.line, i.target, i.text, i.type_only)
           for i in _scan(tmp_path, "netstudio.training.distributed", src, known)]
    assert sorted(got) == [
        (4, "netstudio.graph.model", "import netstudio.graph.model", False),
        (6, "netstudio.ui", "from netstudio.ui import window", True),
        (8, "netstudio.cli", "from netstudio import cli", False),
        (9, "netstudio.cli", "from netstudio.cli import _load", False),
        (9, "netstudio.cli", "from netstudio.cli import main", False),
        (10, "netstudio.training.engine", "from . import engine", False),
        (11, "netstudio.graph.model", "from ..graph.model import Graph", False),
    ]
    bad = layer_violations(_scan(tmp_path, "netstudio.training.distributed", src, known))
    assert len(bad) == 4 and all("a layer above it" in b for b in bad)
    assert bad[0].startswith("netstudio.training.distributed line 6 (from netstudio.ui import window): imports "
                             "netstudio.ui, a layer above it — netstudio.training is in layer 3 (training), "
                             "netstudio.ui in layer 5 (cli/ui)")


def test_the_cycle_finder_names_each_import_of_a_circle() -> None:
    a = Import("netstudio.data.a", 3, "netstudio.data.b", "from netstudio.data.b import x")
    b = Import("netstudio.data.b", 7, "netstudio.data.c", "from netstudio.data import c")
    c = Import("netstudio.data.c", 9, "netstudio.data.a", "import netstudio.data.a")
    d = Import("netstudio.data.c", 1, "netstudio.data", "from netstudio.data import DatasetInfo")
    edges = module_edges([a, b, c, d])
    assert cycles(edges) == [["netstudio.data.a", "netstudio.data.b", "netstudio.data.c"]]
    assert describe_cycle(cycles(edges)[0], edges, "modules") == (
        "import cycle between modules netstudio.data.a, netstudio.data.b, netstudio.data.c: "
        "netstudio.data.a line 3 (from netstudio.data.b import x); netstudio.data.b line 7 (from netstudio.data "
        "import c); netstudio.data.c line 9 (import netstudio.data.a)")
    assert cycles(module_edges([a, b])) == []
    typing_only = Import("netstudio.data.c", 9, "netstudio.data.a", "import netstudio.data.a", type_only=True)
    assert cycles(module_edges([a, b, typing_only])) == []  # never runs, so no circle
    up = Import("netstudio.graph.model", 5, "netstudio.compiler.shapes", "from netstudio.compiler import shapes")
    down = Import("netstudio.compiler.shapes", 2, "netstudio.graph.model", "from netstudio.graph.model import Graph")
    assert cycles(package_edges([up, down])) == [["netstudio.compiler", "netstudio.graph"]]
