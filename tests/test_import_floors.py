"""The import map of ``docs/design.md`` ("Imports go one way, down these floors"), read from the source by its syntax
tree: every ``import`` of a stochgrad module, inside functions too, goes to the same floor or one below; no circle
among the package's modules (nor among ``benchmarks/``'s); and the only imports inside functions are the command
line's, which loads a study when its command runs (``stochgrad --help`` does not import them all)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "stochgrad"


def modules(folder: Path, package: str) -> dict[str, Path]:
    """``{dotted name: path}`` of every module under ``folder`` (a package's ``__init__`` named as the package)."""
    out = {}
    for path in sorted(folder.rglob("*.py")):
        parts = (package, *path.relative_to(folder).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict) -> list[tuple[str, bool]]:
    """``[(imported module, at the top level)]`` for the imports of ``known`` modules in one file; ``from p import m``
    of a submodule ``m`` counts as an import of ``p.m``, not of the package ``p``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else node.module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out += [(t, id(node) in top) for t in targets if t in known and t != name]
    return out


def graph(folder: Path, package: str) -> tuple[dict, dict]:
    known = modules(folder, package)
    return known, {name: imports(name, path, known) for name, path in known.items()}


def circles(edges: dict) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a circle of imports."""
    index, low, stack, found = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w, _ in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def floors_in_the_design() -> dict[str, int]:
    """``{module: floor}`` from the floor table of ``docs/design.md``; a folder stands for its modules."""
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    floors = {}
    for number, entries in re.findall(r"^floor (\d)\s+(.*)$", text, flags=re.M):
        for entry in re.findall(r"[\w/]+(?:\.py|/)", re.sub(r"\(.*?\)", "", entries)):   # (a comment) skipped
            floors[entry] = int(number)
    return floors


def floor_of(name: str, floors: dict[str, int]) -> int:
    rel = name.split(".")[1:]
    if not rel:
        return floors["__init__.py"]
    if f"{rel[0]}/" in floors:
        return floors[f"{rel[0]}/"]
    return floors[f"{rel[0]}.py"]


def test_the_design_gives_every_module_a_floor():
    floors = floors_in_the_design()
    assert len(set(floors.values())) >= 4, floors
    known = set(modules(SRC, "stochgrad")) - {"stochgrad.__main__"}
    missing = []
    for name in sorted(known):
        try:
            floor_of(name, floors)
        except KeyError:
            missing.append(name)
    assert not missing, f"modules without a floor in docs/design.md: {missing}"


def test_imports_go_down_the_floors():
    floors = floors_in_the_design()
    known, edges = graph(SRC, "stochgrad")
    up = [f"{a} (floor {floor_of(a, floors)}) imports {b} (floor {floor_of(b, floors)})"
          for a, targets in edges.items() if a != "stochgrad.__main__"
          for b, _ in targets if floor_of(b, floors) > floor_of(a, floors)]
    assert not up, "\n".join(up)


@pytest.mark.parametrize("folder, package", [(SRC, "stochgrad"), (ROOT / "benchmarks", "benchmarks")],
                         ids=["src", "benchmarks"])
def test_no_import_circle(folder, package):
    _, edges = graph(folder, package)
    assert not circles(edges)


def test_imports_inside_functions_only_where_a_command_loads_its_study():
    _, edges = graph(SRC, "stochgrad")
    inside = sorted({(a, b) for a, targets in edges.items() for b, top in targets if not top
                     and a not in ("stochgrad.cli", "stochgrad.__main__")})
    assert not inside, inside


def test_the_reader_of_the_graph_sees_what_it_should(tmp_path):
    """The reader itself, on a made-up package: a circle through a function-level import, and a submodule import
    that is not an import of its package."""
    known = {"p": None, "p.a": None, "p.b": None}
    tree_a = "from . import b\n"
    tree_b = "def late():\n    from .a import x\n"
    for name, text in (("p.a", tree_a), ("p.b", tree_b)):
        path = tmp_path / f"{name[2:]}.py"
        path.write_text(text, encoding="utf-8")
        known[name] = imports(name, path, known)
    edges = {"p": [], "p.a": known["p.a"], "p.b": known["p.b"]}
    assert edges["p.a"] == [("p.b", True)] and edges["p.b"] == [("p.a", False)]
    assert circles(edges) == [["p.a", "p.b"]]
