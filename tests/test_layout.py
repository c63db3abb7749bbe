"""The tree shows the architecture: which package may import which (ARCHITECTURE.md, "Layout").

Imports point from the leaves to the two composition roots and never back; `tasks/` (planning
and the pipelines children run) imports nothing outside itself. A new dependency between
packages is a design decision: add it to ALLOWED knowingly, or move the code."""

from __future__ import annotations

import ast
from graphlib import TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = {".venv", "tests", "bench", "examples", "var", "scripts", "static"}

ALLOWED: dict[str, set[str]] = {
    "tasks": set(),
    "settings": {"tasks"},  # the pipelines' Limits type
    "redis_pool": set(),
    "redis_server": {"settings"},
    "records": {"settings", "tasks"},
    "storage": {"records"},
    "streaming": {"records"},
    "auth": {"records", "settings"},
    "services": {"auth", "records", "redis_pool", "settings", "storage", "streaming"},
    "worker": {"records", "services", "settings", "storage", "tasks"},
    "api": {"auth", "records", "services", "settings", "storage", "streaming", "tasks"},
    "server": {"api", "auth", "records", "redis_server", "services", "settings", "worker"},
    "cli": {"api", "auth", "redis_server", "services", "settings", "worker"},
    "worker_settings": {"redis_server", "records", "services", "settings", "worker"},
}


def _unit(path: Path) -> str:
    return path.relative_to(ROOT).with_suffix("").parts[0]


def _imports(path: Path) -> set[str]:
    """The first-party top-level names a module imports, anywhere in it (functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
    return names & set(ALLOWED)


def _sources() -> list[Path]:
    return [path for path in ROOT.rglob("*.py")
            if path.relative_to(ROOT).parts[0] not in SKIPPED]


def test_every_module_belongs_to_a_known_unit() -> None:
    assert {_unit(path) for path in _sources()} == set(ALLOWED)


def test_imports_follow_the_layers() -> None:
    wrong = {}
    for path in _sources():
        unit = _unit(path)
        extra = _imports(path) - ALLOWED[unit] - {unit}
        if extra:
            wrong[str(path.relative_to(ROOT))] = sorted(extra)
    assert wrong == {}


def test_the_layers_have_no_cycle_and_nothing_imports_a_composition_root() -> None:
    list(TopologicalSorter(ALLOWED).static_order())  # raises CycleError on a cycle
    roots = {"server", "cli", "worker_settings"}
    assert not any(roots & deps for deps in ALLOWED.values())
