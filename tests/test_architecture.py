"""The package's shape, checked: layers import only downward, no import loops, and
close() reports whether everything drained in time, from the writer up to the manager."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

import sqlite_storemgr
from sqlite_storemgr import StoreManager

PACKAGE = Path(sqlite_storemgr.__file__).parent

# docs/architecture.md: each module's layer; a module may import its own layer or below.
LAYERS = {
    0: {"errors", "uri", "lifecycle"},
    1: {"backends"},
    2: {"stores", "nesting", "futures", "retry", "units", "threadlocal", "writer_batch", "work_items",
        "writer_queue", "gate", "scopes"},
    3: {"strategies"},
    4: {"manager", "handle", "awaitable", "shutdown", "__init__"},
    5: {"integrations", "tools", "django", "metrics", "__main__"},
}
RANK = {top: rank for rank, tops in LAYERS.items() for top in tops}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")[1:]  # below "sqlite_storemgr"
    return RANK[parts[0] if parts else "__init__"]


def _imports(path: Path) -> set[str]:
    """The package's own modules that ``path`` imports, anywhere in it (lazy imports too)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            found.update(name if _is_module(name) else target for name in names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "sqlite_storemgr"}


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:`` (imports for the type checker only)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", "") == "TYPE_CHECKING":
                pending.extend(child.orelse)
            else:
                pending.append(child)


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative).is_dir()


GRAPH = {_module_name(path): _imports(path) - {_module_name(path)}
         for path in PACKAGE.rglob("*.py")}


def test_every_module_has_a_layer():
    assert all(_layer(module) is not None for module in GRAPH)


def test_each_module_imports_only_its_own_layer_or_below():
    upward = sorted(f"{module} (layer {_layer(module)}) imports {imported} (layer "
                    f"{_layer(imported)})"
                    for module, imports in GRAPH.items() for imported in imports
                    if _layer(imported) > _layer(module))
    assert upward == []


def test_no_import_loops():
    def loop_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            module, path = stack.pop()
            for imported in GRAPH.get(module, ()):
                if imported == start:
                    return path + [start]
                if imported not in path and imported.startswith("sqlite_storemgr"):
                    stack.append((imported, path + [imported]))
        return None

    loops = [loop for module in GRAPH if (loop := loop_from(module)) is not None]
    # The package's __init__ re-exports from below; importing it from a submodule is a loop.
    assert [loop for loop in loops if "sqlite_storemgr" not in loop[1:-1]] == []


def test_the_core_never_imports_an_integration_or_a_tool():
    core = [module for module in GRAPH if _layer(module) < 5]
    reaching = {module: sorted(imported for imported in GRAPH[module] if _layer(imported) == 5)
                for module in core}
    assert {module: found for module, found in reaching.items() if found} == {}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("strategy", sqlite_storemgr.uri.STRATEGIES)
def test_close_reports_whether_a_unit_outlived_its_timeout(tmp_path, strategy):
    manager = StoreManager()
    manager.configure("db", f"sqlite:{tmp_path / 'db.sqlite'}?strategy={strategy}")
    started, release = threading.Event(), threading.Event()

    def slow(store):
        started.set()
        release.wait(10)
        store.execute("CREATE TABLE done (id INTEGER)")

    worker = threading.Thread(target=lambda: manager.submit_write(slow).result())
    worker.start()
    assert started.wait(10)
    assert manager.close(timeout=0.2) is False  # the unit is still running
    release.set()
    worker.join(10)
    assert manager.close() is True  # closed already: nothing left to drain


@pytest.mark.timeout(30)
@pytest.mark.parametrize("strategy", sqlite_storemgr.uri.STRATEGIES)
def test_close_reports_a_full_drain(tmp_path, strategy):
    manager = StoreManager()
    manager.configure("db", f"sqlite:{tmp_path / 'db.sqlite'}?strategy={strategy}")
    manager.submit_write(lambda store: store.execute("CREATE TABLE t (id INTEGER)")).result()
    futures = [manager.submit_write(lambda store, i=i: store.execute(
        "INSERT INTO t VALUES (?)", (i,))) for i in range(50)]
    assert manager.close(timeout=10) is True
    assert all(future.done() and future.exception() is None for future in futures)
