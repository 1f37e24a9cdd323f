"""Imports point one way: no cycles among zoo modules, lazy (inside functions) or not."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ZOO = Path(__file__).resolve().parents[1] / "zoo"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ZOO.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ZOO.rglob("*.py"))}


def import_statements(source: str, package: str) -> Iterator[tuple[str, list[str]]]:
    """``(module, names)`` of every import anywhere in ``source`` (functions included): ``import
    x`` gives ``("x", [])``, ``from x import y`` ``("x", ["y"])``; relative imports are resolved
    against ``package``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            yield base, [alias.name for alias in node.names]


def _package(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def imported_names(source: str, package: str) -> set[str]:
    """Every module name ``source`` imports; ``from x import y`` gives both ``x`` and ``x.y``."""
    found: set[str] = set()
    for base, names in import_statements(source, package):
        found |= {base, *(f"{base}.{n}" for n in names)}
    return found


def imported_modules(name: str) -> set[str]:
    """The zoo modules ``name`` imports anywhere in its source (functions included).

    ``from zoo.x import y`` counts as importing ``zoo.x.y`` when that is a module, else ``zoo.x``.
    The implicit import of a parent package is left out (``zoo.models.resnet`` needs ``zoo.models``
    initialised only because Python does that for every submodule).
    """
    found: set[str] = set()
    for base, names in import_statements(MODULES[name].read_text(), _package(name)):
        subs = [f"{base}.{n}" for n in names]
        found |= {sub if sub in MODULES else base for sub in subs} if subs else {base}
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
    assert "zoo.weights.pretrained" in imported_modules("zoo.weights.factory")
    assert "zoo.models.base" in imported_modules("zoo.models.resnet")
    assert "zoo.models.resnet" in imported_modules("zoo.models")  # from zoo.models import resnet


def test_no_import_cycles_among_zoo_modules() -> None:
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_layers_point_down() -> None:
    """registry <- models <- pretrained (registry only) <- factory, as the guide orders them."""
    assert {m for m in GRAPH["zoo.models.registry"] if m.startswith("zoo")} == set()
    assert GRAPH["zoo.weights.pretrained"] <= {
        "zoo.errors",
        "zoo.io",
        "zoo.paths",
        "zoo.models.registry",
    }
    for name, imports in GRAPH.items():
        if name.startswith("zoo.models"):
            assert imports <= {"zoo.models.registry", "zoo.models", "zoo.errors"} | {
                m for m in MODULES if m.startswith("zoo.models.")
            }, name


@pytest.mark.parametrize(
    "name", ["zoo.models.registry", "zoo.weights.pretrained", "zoo.weights.factory", "zoo.models"]
)
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


# The layers, lowest first: a module imports nothing from a layer above its own.
LAYERS = {
    "models": ("zoo.models",),
    "weights": ("zoo.weights",),
    "data": ("zoo.data",),
    "training": ("zoo.training",),
    "tasks": ("zoo.tasks",),
}
# The algorithms take models, tensors and plain arguments: they never read a config.
ALGORITHMS = (
    "zoo.analysis",
    "zoo.evaluation",
    "zoo.bench",
    "zoo.flows",
    "zoo.models",
    "zoo.weights",
    "zoo.data",
)
# The top of the package: the public API (zoo/__init__.py), subpackages, and the three helpers
# every layer uses (one-line user errors, atomic writes, the project's own folders).
TOP_LEVEL_MODULES = {"zoo", "zoo.errors", "zoo.io", "zoo.paths"}
CONFIG_READERS = ("omegaconf", "hydra", "zoo.tasks")


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in prefixes)


def layer_of(name: str) -> int | None:
    return next((i for i, p in enumerate(LAYERS.values()) if _in(name, p)), None)


def config_readers_imported(name: str) -> set[str]:
    found = imported_names(MODULES[name].read_text(), _package(name))
    return {m for m in found if _in(m, CONFIG_READERS)}


def test_scanner_sees_config_imports_anywhere() -> None:
    source = (
        "import torch\ndef f():\n    from omegaconf import OmegaConf\n    from ..tasks import eval"
    )
    found = {m for m in imported_names(source, "zoo.analysis") if _in(m, CONFIG_READERS)}
    assert found == {"omegaconf", "omegaconf.OmegaConf", "zoo.tasks", "zoo.tasks.eval"}
    assert "hydra.utils" in imported_names("import hydra.utils", "zoo")
    assert (
        layer_of("zoo.models.resnet")
        < layer_of("zoo.weights.checkpoint")
        < layer_of("zoo.tasks.eval")
    )
    assert layer_of("zoo.analysis.landscape") is None


def test_algorithms_never_read_a_config() -> None:
    """analysis, evaluation, bench, flows, models, weights and data import neither omegaconf nor
    hydra, nor the tasks that read the configs."""
    offenders = {
        name: sorted(found)
        for name in MODULES
        if _in(name, ALGORITHMS) and (found := config_readers_imported(name))
    }
    assert not offenders, offenders


def test_only_the_tasks_read_a_config() -> None:
    """Below the entry points only zoo.tasks imports omegaconf or hydra; besides it, the builder of
    ``_target_`` nodes (the classifier's optimizer and schedule, as in lightning-hydra-template)
    and the command-line tools, which read the configs saved in run folders."""
    readers = ("zoo.tasks", "zoo.training.instantiate", "zoo.tools")
    offenders = {
        name: sorted(found)
        for name in MODULES
        if not _in(name, readers)
        and (found := {m for m in config_readers_imported(name) if _in(m, ("omegaconf", "hydra"))})
    }
    assert not offenders, offenders


def test_layers_are_in_order() -> None:
    """models -> weights -> data -> training -> tasks: nothing imports a layer above its own."""
    upward = {
        name: sorted(m for m in imports if layer_of(m) is not None and layer_of(m) > layer)
        for name, imports in GRAPH.items()
        if (layer := layer_of(name)) is not None
    }
    assert not any(upward.values()), {k: v for k, v in upward.items() if v}


def test_only_the_entry_points_import_the_tasks() -> None:
    """zoo.tasks is the top layer: below the entry points (train.py, evaluate.py and their wrapper
    zoo.tasks.cli) nothing imports it."""
    importers = sorted(
        name
        for name, imports in GRAPH.items()
        if not _in(name, ("zoo.tasks",)) and any(_in(m, ("zoo.tasks",)) for m in imports)
    )
    assert not importers, importers


def test_top_level_holds_the_api_and_packages() -> None:
    """zoo/ itself holds the public API and subpackages; internal modules live in a package."""
    top = {name for name, path in MODULES.items() if path.parent == ZOO}
    assert top == TOP_LEVEL_MODULES, sorted(top - TOP_LEVEL_MODULES)
    packages = {path.parent.name for path in MODULES.values() if path.parent.parent == ZOO}
    layered = {p.split(".")[1] for prefixes in LAYERS.values() for p in prefixes}
    assert packages <= layered | {p.split(".")[1] for p in ALGORITHMS} | {"tools"}, packages
