"""Shared fixtures (the strategy, a database file, managers on it) and --cpu-burners."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from _items import create_items
from sqlite_storemgr import StoreManager
from sqlite_storemgr.uri import STRATEGIES

# --- --cpu-burners=N: run the session beside N CPU-burning processes (a loaded machine) ---
# A suite that passes only on an idle machine is not green.  The burners start once per
# session in the controlling process (under pytest-xdist not in the workers, so there
# are exactly N in all), and are killed when the session ends; each also exits by itself
# once its parent is gone, so a killed pytest leaves none spinning.
import subprocess
import sys

_BURNER = (
    "import os\n"
    "parent = os.getppid()\n"
    "while os.getppid() == parent:\n"
    "    for _ in range(200000):\n"
    "        pass\n"
)


def pytest_addoption(parser):
    parser.addoption(
        "--cpu-burners", type=int, default=0, metavar="N",
        help="run the tests beside N CPU-burning processes, as on a loaded machine "
             "(default 0; once per session, in the xdist controller only)")


def pytest_configure(config):
    count = config.getoption("cpu_burners")
    if count < 0:
        raise ValueError(f"--cpu-burners must be 0 or more, not {count}")
    if count == 0 or hasattr(config, "workerinput"):  # an xdist worker: the controller burns
        return
    burners = [subprocess.Popen([sys.executable, "-c", _BURNER], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(count)]
    config._cpu_burners = burners

    def stop_burners():
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait()
    config.add_cleanup(stop_burners)


def pytest_report_header(config):
    burners = getattr(config, "_cpu_burners", None)
    if burners:
        return f"cpu burners: {len(burners)} (pids {', '.join(str(b.pid) for b in burners)})"
    return None
# --- end of --cpu-burners ---


# --- shared fixtures: the strategy, a database file, managers on it ---

@pytest.fixture(params=STRATEGIES)
def strategy(request) -> str:
    """Each of the package's strategies in turn (a test module may override the list)."""
    return request.param


@pytest.fixture
def db_path(tmp_path) -> Path:
    """The database file make_manager opens unless told another path."""
    return tmp_path / "app.db"


@pytest.fixture
def make_manager(db_path) -> Callable[..., StoreManager]:
    """make_manager(strategy, **uri_options) -> a StoreManager with database `name` on
    `path` (db_path; "" for the in-memory database), `schema(store)` run in a first unit
    (the `item` table; None for nothing); every one is closed at teardown."""
    made: list[StoreManager] = []

    def make(strategy: str, *, name: str = "main", path: Any = None,
             schema: Callable[[Any], Any] | None = create_items,
             **uri_options: Any) -> StoreManager:
        query = "&".join(f"{key}={value}"
                         for key, value in {"strategy": strategy, **uri_options}.items())
        manager = StoreManager()
        made.append(manager)
        manager.configure(name, f"sqlite:{db_path if path is None else path}?{query}")
        if schema is not None:
            manager.submit_write(schema, name=name).result(timeout=10)
        return manager

    yield make
    for manager in made:
        manager.close(timeout=10)
# --- end of shared fixtures ---
