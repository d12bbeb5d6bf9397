"""A pytest plugin (entry point ``storemgr``): a fresh `StoreManager` per test, checked after it.

The ``store_manager`` fixture configures database ``main`` on a temporary file,
yields the manager, then closes it (queued writes drained) and runs
``PRAGMA integrity_check`` on the file: a damaged file fails the test.

The strategy is ``queue`` unless chosen:

- ``@pytest.mark.storemgr("mutex")``; several (``@pytest.mark.storemgr("queue",
  "threadlocal")``) run the test once under each; ``options="timeout=1"`` adds URI
  options and ``name="app"`` names the database;
- ``@pytest.mark.parametrize("store_manager_strategy", [...])`` on the test;
- ``pytest --storemgr-strategy=single`` for every test that says nothing.

``store_manager_path`` is the database file, ``store_manager_uri`` its URI.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from ..manager import StoreManager

MARKER = "storemgr"
DEFAULT_STRATEGY = "queue"
CLOSE_TIMEOUT = 30.0
SHOWN_PROBLEMS = 5  # of integrity_check's (up to 100) lines


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--storemgr-strategy", default=DEFAULT_STRATEGY, metavar="STRATEGY",
        help="strategy of the store_manager fixture where a test chooses none "
             f"(queue, single, mutex, threadlocal; default {DEFAULT_STRATEGY})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*strategies, options='', name='main'): the store_manager fixture's "
        "strategy (several: the test runs under each), extra URI options, database name")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if (marker is not None and len(marker.args) > 1
            and "store_manager_strategy" in metafunc.fixturenames):
        metafunc.parametrize("store_manager_strategy", list(marker.args))


def _marker_value(request: pytest.FixtureRequest, key: str, default: str) -> str:
    marker = request.node.get_closest_marker(MARKER)
    return default if marker is None else str(marker.kwargs.get(key, default))


@pytest.fixture
def store_manager_strategy(request: pytest.FixtureRequest) -> str:
    """The strategy of this test's manager: the marker's, else ``--storemgr-strategy``."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None and len(marker.args) == 1:
        return str(marker.args[0])
    return str(request.config.getoption("storemgr_strategy"))


@pytest.fixture
def store_manager_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def store_manager_uri(request: pytest.FixtureRequest, store_manager_path: Path,
                      store_manager_strategy: str) -> str:
    options = _marker_value(request, "options", "")
    return (f"sqlite:{store_manager_path}?strategy={store_manager_strategy}"
            + (f"&{options}" if options else ""))


@pytest.fixture
def store_manager(request: pytest.FixtureRequest, store_manager_uri: str,
                  store_manager_path: Path) -> Iterator[StoreManager]:
    """A fresh manager with one database; closed and integrity-checked after the test."""
    from ..manager import StoreManager

    manager = StoreManager()
    try:
        manager.configure(_marker_value(request, "name", "main"), store_manager_uri)
        yield manager
    finally:
        drained = manager.close(timeout=CLOSE_TIMEOUT)
    if drained is False:
        pytest.fail(f"store_manager: close() did not drain within {CLOSE_TIMEOUT:g} s "
                    "(a unit or a writer still running after the test)", pytrace=False)
    problems = integrity_problems(store_manager_path)
    if problems:
        shown = "; ".join(problems[:SHOWN_PROBLEMS]) + (
            f" (and {len(problems) - SHOWN_PROBLEMS} more)" if len(problems) > SHOWN_PROBLEMS
            else "")
        pytest.fail(f"store_manager: PRAGMA integrity_check of {store_manager_path} after "
                    f"the test: {shown}", pytrace=False)


def integrity_problems(path: Path) -> list[str]:
    """What ``PRAGMA integrity_check`` finds wrong with ``path`` (nothing if it is absent)."""
    if not path.exists():
        return []
    import pysqlite3.dbapi2 as dbapi  # the package's SQLite, never a second copy of it

    connection: Any = dbapi.connect(str(path), timeout=CLOSE_TIMEOUT)
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    except dbapi.DatabaseError as error:
        return [f"{type(error).__name__}: {error}"]
    finally:
        connection.close()
    return [] if rows == [("ok",)] else [line for (text,) in rows for line in text.splitlines()]
