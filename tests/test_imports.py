"""Imports point one way: no cycles among zoo modules, lazy (inside functions) or not."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ZOO = Path(__file__).resolve().parents[1] / "zoo"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ZOO.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ZOO.rglob("*.py"))}


def imported_modules(name: str) -> set[str]:
    """The zoo modules ``name`` imports anywhere in its source (functions included).

    ``from zoo.x import y`` counts as importing ``zoo.x.y`` when that is a module, else ``zoo.x``.
    The implicit import of a parent package is left out (``zoo.models.resnet`` needs ``zoo.models``
    initialised only because Python does that for every submodule).
    """
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


GRAPH = {name: imported_modules(name) for name in MODULES}


def test_cycle_finder_finds_a_lazy_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_scanner_sees_imports_inside_functions(tmp_path: Path) -> None:
    assert "zoo.pretrained" in imported_modules("zoo.factory")
    assert "zoo.models.base" in imported_modules("zoo.models.resnet")
    assert "zoo.models.resnet" in imported_modules("zoo.models")  # from zoo.models import resnet


def test_no_import_cycles_among_zoo_modules() -> None:
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_layers_point_down() -> None:
    """registry <- models <- pretrained (registry only) <- factory, as the guide orders them."""
    assert {m for m in GRAPH["zoo.registry"] if m.startswith("zoo")} == set()
    assert GRAPH["zoo.pretrained"] <= {"zoo.errors", "zoo.io", "zoo.registry"}
    for name, imports in GRAPH.items():
        if name.startswith("zoo.models"):
            assert imports <= {"zoo.registry", "zoo.models", "zoo.errors"} | {
                m for m in MODULES if m.startswith("zoo.models.")
            }, name


@pytest.mark.parametrize("name", ["zoo.registry", "zoo.pretrained", "zoo.factory", "zoo.models"])
def test_low_modules_import_alone_in_a_fresh_interpreter(name: str) -> None:
    """Each imports first in a fresh interpreter, without meeting a half-initialised module."""
    code = f"import {name}, zoo; assert zoo.create_model('lenet5') is not None"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ZOO.parent, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports_first_in_a_fresh_interpreter(name: str) -> None:
    subprocess.run(
        [sys.executable, "-c", f"import {name}"], check=True, cwd=ZOO.parent, timeout=300
    )
