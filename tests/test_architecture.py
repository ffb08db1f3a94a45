"""The import graph of ``realtime``, ``unimse`` and ``train``: one direction, no cycles.

Every import counts, also those inside functions: a lazy import that closes a circle still ties
two modules together. ``unimse`` (the model) imports neither other package; ``realtime`` and
``train`` do not import each other (the ``emotrack`` command finds ``train``'s subcommands
through an entry-point group).
"""

from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("realtime", "unimse", "train")
FORBIDDEN = {"unimse": {"realtime", "train"}, "realtime": {"train"}, "train": {"realtime"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from a import b`` means ``a.b`` if that is a
    module, else ``a``)."""
    files = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in files else base)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def test_packages_import_in_one_direction() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if target.split(".")[0] in FORBIDDEN[module.split(".")[0]]
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("level", ["packages", "modules"])
def test_no_import_cycles(level: str) -> None:
    graph = import_graph()
    if level == "packages":
        packages: dict[str, set[str]] = {pkg: set() for pkg in PACKAGES}
        for module, targets in graph.items():
            top = module.split(".")[0]
            packages[top].update(t.split(".")[0] for t in targets if not t.startswith(top))
        graph = packages
    circles = cycles(graph)
    assert not circles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
        return []
    except graphlib.CycleError:
        pass
    reach = {node: reachable(graph, node) for node in graph}
    groups = {tuple(sorted(n for n in reach[node] if node in reach[n])) for node in graph}
    return sorted(list(g) for g in groups if g)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def test_the_checker_sees_a_cycle() -> None:
    """The cycle check itself works (a test that cannot fail proves nothing)."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_data_folders_default_is_written_once() -> None:
    """Every command, benchmark and test takes ``../shared/data`` from ``train.datadir``
    (eighteen copies had grown, some relative to the current directory, some to the repo)."""
    written = re.compile(r"""["']\.\./shared/data["']|["']shared["']\s*/\s*["']data["']""")
    folders = (*PACKAGES, "benchmarks", "tests", "scripts")
    copies = [
        str(path.relative_to(REPO))
        for folder in folders
        for path in sorted((REPO / folder).rglob("*.py"))
        if written.search(path.read_text(encoding="utf-8"))
    ]
    assert copies == ["train/datadir.py"]
