"""The package's import graph: no circle anywhere, and arrows only point down the layers.

Layers, top to bottom (README, Development): cli -> jobs -> library packages (attribution, metrics,
influence, concepts, llm, report) -> models, data -> core. Every import counts, also those inside
functions: a deferred import hides a circle, it does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"xaibench": ROOT / "xaibench", "xaibench.cli": ROOT / "cli", "xaibench.metrics": ROOT / "metrics"}
LAYERS = [  # a module may import its own layer and the layers below it
    ("cli", ("xaibench.cli",)),
    ("jobs", ("xaibench.jobs",)),
    ("library", ("xaibench.attribution", "xaibench.metrics", "xaibench.influence", "xaibench.concepts",
                 "xaibench.llm", "xaibench.report")),
    ("models and data", ("xaibench.models", "xaibench.data")),
    ("core", ("xaibench.core",)),
]
TOP = ("xaibench", "xaibench.__main__")  # the package's own entry points sit above everything


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            if package == "xaibench" and parts and parts[0] in ("cli", "metrics"):
                continue
            found[".".join([package, *parts])] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports (``from pkg import submodule`` counts as the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


MODULES = modules()
GRAPH = {name: imports(name, path, MODULES) for name, path in MODULES.items()}


def layer(name: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{name} belongs to no layer; add it to LAYERS")


def test_every_module_belongs_to_a_layer():
    for name in GRAPH:
        if name not in TOP:
            layer(name)


def test_no_import_circle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert circles == []


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if n not in TOP))
def test_imports_point_down(name):
    upward = [t for t in GRAPH[name] if t not in TOP and layer(t) < layer(name)]
    assert upward == [], f"{name} ({LAYERS[layer(name)][0]}) imports from a layer above it: {upward}"


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path):
    """The graph walk itself: a planted circle and a deferred upward import are found."""
    (tmp_path / "a.py").write_text("from pkg import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from pkg.a import x\n")
    known = {"pkg": tmp_path / "__init__.py", "pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py"}
    assert imports("pkg.a", known["pkg.a"], known) == {"pkg.b"}
    assert imports("pkg.b", known["pkg.b"], known) == {"pkg.a"}
    assert layer("xaibench.jobs.explain") < layer("xaibench.attribution.base") < layer("xaibench.core.runs")
