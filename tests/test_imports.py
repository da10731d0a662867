"""No import cycles between edgedistill's modules.

The graph is read from the source with `ast`, so every import counts: top-level ones, those inside
functions (imported lazily to dodge a cycle) and those under `if TYPE_CHECKING:`. An edge goes to
the module an import names: `from edgedistill.a import b` reaches `edgedistill.a.b` when that is a
module, else `edgedistill.a`. Importing a submodule also runs its package's `__init__`, but that is
not an edge: a package's `__init__` importing its submodules, which import their siblings, is how
a registry fills itself (`export.lint`), not a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "edgedistill"
PACKAGE = ROOT.name


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file, for every .py under `root` (a package's name for its __init__.py)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of the dotted `name` that is one of `modules`."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that the module `name` (its file at `path`) imports anywhere."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (_known(a.name, modules) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, one level up per dot after the first
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.update(filter(None, [sub if sub in modules else _known(base, modules)]))
    found.discard(name)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = module_names(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component of more than one module
    (Tarjan's algorithm, iterative so that a deep graph does not hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:  # node is the root of a component: pop it whole
                    component, member = set(), None
                    while member != node:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                    components.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return [_cycle_in(graph, c) for c in components if len(c) > 1]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, by breadth-first search."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if child not in came_from:
                    came_from[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in its component")  # Tarjan guarantees one


def test_every_kind_of_import_is_an_edge(tmp_path):
    files = {
        "__init__.py": "",
        "a.py": "def f():\n    from pkg import b\n",  # lazy, of a module
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import Thing\n",
        "c.py": "from . import a\nfrom .sub.leaf import name\nimport os\n",  # relative; outside ignored
        "sub/__init__.py": "from pkg.sub import leaf\n",
        "sub/leaf.py": "import pkg.a as alias\nfrom .. import b\nname = 1\n",
    }
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    assert import_graph(tmp_path / "pkg") == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.c"},
        "pkg.c": {"pkg.a", "pkg.sub.leaf"},
        "pkg.sub": {"pkg.sub.leaf"},
        "pkg.sub.leaf": {"pkg.a", "pkg.b"},
    }
    assert cycles(import_graph(tmp_path / "pkg")) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_the_graph_covers_the_package():
    graph = import_graph()
    assert f"{PACKAGE}.cli" in graph
    assert graph[f"{PACKAGE}.export.lint.tensorrt"] >= {f"{PACKAGE}.export.lint.base"}
    assert f"{PACKAGE}.export.lint.tensorrt" in graph[f"{PACKAGE}.export.lint"]


def test_cycles_are_found_and_spelled_out():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert sorted(cycles(graph)) == [["a", "b", "c", "a"], ["e", "e2", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)
