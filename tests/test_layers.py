"""Imports point one way: along the data flow, never from a lower layer into a higher one, and no
circle among the modules' top-level imports (read from the source, so lazy imports count too)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first; a module may import its own layer and the ones below it. Top-level modules of
# `worldmodel` not listed (files, numbers, device, errors, perf, video, report) are layer 0.
LAYERS = {
    "data": 1,
    "dynamics": 2,
    "envs": 3,
    "planning": 4,
    "training": 5,
    "rl": 6,
    "bench": 7,
    "cli": 8,
    "__main__": 8,
}
AGENTS = 9  # the copyable scripts sit on top; nothing in worldmodel/ imports them


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for pkg in ("worldmodel", "agents") for p in sorted((ROOT / pkg).rglob("*.py"))}


def _layer(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "agents":
        return AGENTS
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def _owner(name: str) -> str:
    """The project module an imported dotted name lives in ('' if none)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str, top_level_only: bool) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {_owner(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for alias in node.names:  # `from pkg import sub` imports the submodule, not pkg
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else _owner(base))
    return found - {"", module}


def test_the_scan_sees_the_project():
    assert {"worldmodel.envs.dream", "worldmodel.cli.demo", "agents.train"} <= set(MODULES)
    assert "worldmodel.dynamics.base" in _imports("worldmodel.envs.dream", top_level_only=True)
    assert _layer("worldmodel.cli.plan") > _layer("worldmodel.planning.run") > _layer("worldmodel.envs.task")


def test_no_import_runs_up_a_layer():
    upward = sorted(
        (module, target)
        for module in MODULES
        if module != "worldmodel"  # the package root registers the Gymnasium ids (envs, lazily)
        for target in _imports(module, top_level_only=False)
        if target != "worldmodel" and _layer(target) > _layer(module)
    )
    assert upward == []


def test_no_import_circle():
    graph = {m: _imports(m, top_level_only=True) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module)
    assert circles == []
