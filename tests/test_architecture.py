"""Architecture checks: the cartpk package has no import cycle.

Every module under src/cartpk is parsed with :mod:`ast` (nothing is imported). Each
``import`` and ``from ... import`` that reaches cartpk counts as an edge, wherever it
stands: at module level, inside a function, under ``if TYPE_CHECKING:``. A cycle made
only of lazy or type-checking imports does not fail at run time, but it still ties the
modules together, so it is reported like any other.

Resolution rules:

* ``from .pkg import name``: an edge to ``pkg.name`` when that is a submodule, otherwise
  to ``pkg`` (its ``__init__``); relative levels are resolved against the importing
  module's package (a package's ``__init__`` is its own package).
* ``import cartpk.a.b`` / ``from cartpk.a import b``: the same, by absolute name.
* An import of a package is an edge to its ``__init__`` only; the parent packages that
  Python also initialises on the way are not counted (otherwise every submodule would
  form a cycle with a package ``__init__`` that re-exports it).
* An import of a module by itself (``from . import x`` inside ``pkg/__init__``) is no edge.
* Dynamic imports (``importlib.import_module``) are not seen.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "cartpk"


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``package_dir``.

    A package's ``__init__.py`` is named by the package (``cartpk.kernels``). Directories
    without ``__init__.py`` (namespace packages) are walked too; their modules are named
    through the directory.
    """
    root = package_dir.name
    names: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir).with_suffix("")
        parts = [root, *relative.parts]
        if parts[-1] == "__init__":
            parts.pop()
        if any(not part.isidentifier() for part in parts):
            continue  # not importable by name (e.g. a script with a dash)
        names[".".join(parts)] = path
    return names


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name that ``from <level dots><name> import ...`` means in ``module``."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(package) - 1:
        raise ValueError(f"{module}: relative import beyond the top-level package")
    base = package[: len(package) - (level - 1)]
    if name:
        base = [*base, *name.split(".")]
    return ".".join(base)


def import_edges(package_dir: Path) -> list[Edge]:
    """Every import, in every module under ``package_dir``, of a module of that package."""
    modules = module_names(package_dir)
    root = package_dir.name
    edges: list[Edge] = []

    def target_of(name: str) -> str | None:
        """``name`` if it is a module of the package, else its longest module prefix."""
        parts = name.split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in modules:
                return candidate
            parts.pop()
        return None

    def add(source: str, name: str, path: Path, node: ast.stmt) -> None:
        if name != root and not name.startswith(root + "."):
            return
        target = target_of(name)
        if target is not None and target != source:
            edges.append(Edge(source, target, path, node.lineno))

    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(module, alias.name, path, node)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = _resolve_relative(module, is_package, node.level, node.module)
                else:
                    base = node.module or ""
                # from .pkg import name runs pkg (its __init__) first, whatever name is:
                # an edge to pkg (unless pkg is this module), and to the submodule pkg.name
                # when there is one.
                if base != module:
                    add(module, base, path, node)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    if submodule in modules:
                        add(module, submodule, path, node)
    return edges


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """Cycles that together pass through every module of every import cycle.

    Tarjan's algorithm (iterative) finds the strongly connected components; within each,
    a shortest cycle through each module, and of those, shortest first, every one that
    passes through a module no cycle kept so far passes through.
    """
    graph: dict[str, dict[str, Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
        graph.setdefault(edge.target, {})

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
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
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    cycles = []
    for component in sorted(components):
        members = set(component)
        candidates = sorted(
            (_shortest_cycle(graph, members, start) for start in component),
            key=lambda cycle: (len(cycle), [edge.source for edge in cycle]),
        )
        covered: set[str] = set()
        for cycle in candidates:
            sources = {edge.source for edge in cycle}
            if not sources <= covered:
                covered |= sources
                cycles.append(cycle)
    return cycles


def _shortest_cycle(graph: dict[str, dict[str, Edge]], members: set[str], start: str) -> list[Edge]:
    """A shortest cycle through ``start`` within ``members`` (breadth-first search)."""
    came_from: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if start in graph[node]:
            chain = [graph[node][start]]
            while node != start:
                chain.append(came_from[node])
                node = came_from[node].source
            return chain[::-1]
        for child, edge in sorted(graph[node].items()):
            if child in members and child not in came_from and child != start:
                came_from[child] = edge
                queue.append(child)
    raise AssertionError(f"{start} is in a strongly connected component but on no cycle")


def describe(cycle: list[Edge], package_dir: Path) -> str:
    """``a -> b -> a`` and, below, where each import stands."""
    chain = " -> ".join([cycle[0].source, *(edge.target for edge in cycle)])
    lines = [
        f"    {edge.source} -> {edge.target}  "
        f"({edge.path.relative_to(package_dir.parent)}:{edge.line})"
        for edge in cycle
    ]
    return "\n".join([chain, *lines])


def test_cartpk_has_no_import_cycle() -> None:
    edges = import_edges(PACKAGE_DIR)
    assert edges, "no cartpk imports found: is PACKAGE_DIR right?"
    cycles = find_cycles(edges)
    report = "\n".join(describe(cycle, PACKAGE_DIR) for cycle in cycles)
    assert not cycles, f"import cycles in cartpk (lazy and TYPE_CHECKING imports count):\n{report}"


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_checker_finds_a_planted_cycle(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import A\n",
            # a -> sub.b through `from .sub import b` (b is a submodule of sub)
            "pkg/a.py": "from .sub import b\nA = 1\n",
            "pkg/sub/__init__.py": "",
            # sub.b -> a only under TYPE_CHECKING: still a cycle
            "pkg/sub/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import A\n"
            ),
            # c -> d -> e -> c, the last edge inside a function and absolute
            "pkg/c.py": "import pkg.d\n",
            "pkg/d.py": "from pkg import e\n",
            "pkg/e.py": "def f():\n    from . import c\n    return c\n",
            # no cycle: f imports the package (its __init__), which does not import f
            "pkg/f.py": "from . import A\nimport pkg\n",
        },
    )
    cycles = find_cycles(import_edges(package))
    chains = [describe(cycle, package).splitlines()[0] for cycle in cycles]
    assert chains == ["pkg.a -> pkg.sub.b -> pkg.a", "pkg.c -> pkg.d -> pkg.e -> pkg.c"]
    assert "(pkg/sub/b.py:3)" in describe(cycles[0], package)


def test_checker_resolves_packages_and_submodules(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from . import x\nfrom .x import VALUE\n",
            "pkg/x.py": "VALUE = 1\n",
            "pkg/sub/__init__.py": "from .. import x\nNAME = 2\n",
            "pkg/sub/y.py": "from . import NAME\nfrom pkg.sub import y\nimport numpy\n",
        },
    )
    edges = {(edge.source, edge.target) for edge in import_edges(package)}
    # from .. import x runs pkg's __init__ as well as reaching pkg.x
    assert edges == {
        ("pkg", "pkg.x"),
        ("pkg.sub", "pkg"),
        ("pkg.sub", "pkg.x"),
        ("pkg.sub.y", "pkg.sub"),
    }
    assert find_cycles(import_edges(package)) == []


def test_a_sibling_import_through_the_package_is_a_cycle(tmp_path: Path) -> None:
    """pkg/__init__ imports pkg.a, and pkg.a does ``from . import b``: that runs pkg."""
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from . import a\n",
            "pkg/a.py": "from . import b\n",
            "pkg/b.py": "VALUE = 1\n",
        },
    )
    chains = [describe(c, package).splitlines()[0] for c in find_cycles(import_edges(package))]
    assert chains == ["pkg -> pkg.a -> pkg"]


@pytest.mark.parametrize(
    ("module", "is_package", "level", "name", "expected"),
    [
        ("pkg.a", False, 1, "b", "pkg.b"),
        ("pkg.sub", True, 1, None, "pkg.sub"),
        ("pkg.sub.b", False, 2, "a", "pkg.a"),
        ("pkg.sub", True, 2, None, "pkg"),
    ],
)
def test_relative_imports_resolve(
    module: str, is_package: bool, level: int, name: str | None, expected: str
) -> None:
    assert _resolve_relative(module, is_package, level, name) == expected
