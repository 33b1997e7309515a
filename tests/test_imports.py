"""The package has no import loop: the module graph of rskcnn/ (every import, lazy ones
inside functions included) is acyclic, and each module imports alone in a fresh interpreter."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rskcnn"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(path: Path) -> set[str]:
    """The rskcnn modules ``path`` imports, anywhere in it. ``from pkg import name`` counts as
    importing ``pkg.name`` when that is a module, else ``pkg`` (its ``__init__``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in MODULES else source)
    return {m for m in found if m in MODULES and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_module_graph_is_acyclic():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    graph = {name: imported_modules(path) for name, path in files.items()}
    # A package's __init__ runs before any of its modules; a module that imports its own
    # package's __init__ names (``from . import x`` of a name defined there) is still an edge.
    cycle = find_cycle(graph)
    assert cycle is None, "import loop: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# Runs in a fresh interpreter: imports torch once (the expensive part, and not rskcnn's),
# then forks a child per module, so each module is the first of rskcnn's to be imported.
FORK_EACH = r"""
import os, sys, traceback
import torch  # noqa: F401
failures = 0
for module in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 0
        try:
            __import__(module)
        except BaseException:
            os.write(write, traceback.format_exc().encode()[-3000:])
            code = 1
        os._exit(code)
    os.close(write)
    message = os.read(read, 4000).decode()
    os.close(read)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failures += 1
        print(f"--- {module} (status {status}):\n{message}")
sys.exit(1 if failures else 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to give each module a fresh interpreter cheaply")
def test_each_module_imports_alone_in_a_fresh_interpreter():
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TRITON_INTERPRET", None)
    assert "rskcnn.ops.cpp" in MODULES and "rskcnn.geometry" in MODULES  # the list is the package's
    result = subprocess.run([sys.executable, "-c", FORK_EACH, *MODULES], capture_output=True, text=True, env=env,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
