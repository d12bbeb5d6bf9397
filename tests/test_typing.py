"""mypy --strict on the typed user example and on calls it must reject (README, "Typed units")."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sqlite_storemgr import ConfigError

ROOT = Path(__file__).resolve().parent.parent
MISTAKES = ROOT / "tests" / "typing_cases" / "mistakes.py"


def _mypy(tmp_path: Path, *files: Path) -> tuple[int, str]:
    """mypy with the project's configuration (pyproject.toml), its cache in ``tmp_path``."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache"),
         "--no-color-output", "--hide-error-context", *map(str, files)],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
        env={**os.environ, "MYPY_FORCE_COLOR": "0"})
    return result.returncode, result.stdout + result.stderr


@pytest.mark.timeout(180)
def test_the_typed_example_passes_strict_mypy(tmp_path: Path) -> None:
    code, output = _mypy(tmp_path, ROOT / "examples" / "typed_units.py")
    assert code == 0, output
    assert "Success: no issues found in 1 source file" in output, output


@pytest.mark.timeout(180)
def test_mypy_reports_each_wrong_call_to_a_unit_on_its_line(tmp_path: Path) -> None:
    lines = MISTAKES.read_text().splitlines()
    expected = {number for number, line in enumerate(lines, 1) if "# mistake:" in line}
    accepted = {number for number, line in enumerate(lines, 1) if "# accepted:" in line}
    assert len(expected) == 12 and len(accepted) == 1
    code, output = _mypy(tmp_path, MISTAKES)
    errors = re.findall(rf"^{re.escape(str(MISTAKES.relative_to(ROOT)))}:(\d+): error: (.*)$",
                        output, re.M)
    assert code == 1, output
    assert {int(line) for line, _ in errors} == expected, output
    messages = {int(line): message for line, message in errors}
    first = min(expected)
    assert messages[first] == ('Argument 2 to "submit_write" of "Database" has incompatible '
                               'type "int"; expected "str"  [arg-type]'), output
    assert 'Missing positional argument "text"' in messages[first + 1], output
    assert 'Unexpected keyword argument "extra"' in messages[first + 2], output
    assert 'No overload variant of "submit_write" of "StoreManager"' in messages[first + 5], output
    retried = sorted(expected)[-2]
    assert messages[retried] == ('Argument 1 to "rename" has incompatible type "str"; '
                                 'expected "int"  [arg-type]'), output


def _add_item(store: Any, name: str) -> int:
    """A unit with a parameter called ``name``: the handle passes it to the unit."""
    store.execute("INSERT INTO item (name) VALUES (?)", (name,))
    return int(store.execute("SELECT last_insert_rowid()").get_one()[0])


def _item_names(store: Any) -> list[str]:
    return [row[0] for row in store.execute("SELECT name FROM item ORDER BY id")]


@pytest.mark.timeout(60)
def test_the_handle_runs_units_on_its_database(make_manager: Any, strategy: str) -> None:
    manager = make_manager(strategy)
    manager.configure("other", f"sqlite:{manager.strategy('main').config.path}-other"
                               f"?strategy={strategy}")
    main = manager.database("main")
    assert (main.name, repr(main).startswith("<Database 'main' of ")) == ("main", True)
    first = main.submit_write(_add_item, name="a").result(timeout=10)  # name= goes to the unit
    second = asyncio.run(main.awrite(_add_item, "b"))
    assert (first, second) == (1, 2)
    assert main.submit_read(_item_names).result(timeout=10) == ["a", "b"]
    assert asyncio.run(main.aread(_item_names)) == ["a", "b"]
    with main.write() as store:
        store.execute("UPDATE item SET name = 'A' WHERE id = 1")
    if strategy != "single":
        with main.read() as store:
            assert [row[0] for row in store.execute("SELECT name FROM item")] == ["A", "b"]
        assert main.get_store() is manager.get_store("main")
    assert main.stats()["units_committed"] == manager.stats("main")["units_committed"] >= 3
    assert manager.submit_write(_add_item, "c", name="main").result(timeout=10) == 3
    with pytest.raises(ConfigError, match="no database named 'c' is configured"):
        manager.submit_write(_add_item, name="c")  # the manager's name= is the database's
    with pytest.raises(ConfigError, match="several databases are configured"):
        manager.database()
    with pytest.raises(ConfigError, match="no database named 'nope' is configured"):
        manager.database("nope")


@pytest.mark.timeout(60)
def test_the_handle_of_the_only_database_keeps_its_name(make_manager: Any, tmp_path: Path
                                                        ) -> None:
    manager = make_manager("mutex")
    only = manager.database()  # resolved now: the only database is "main"
    manager.configure("second", f"sqlite:{tmp_path / 'second.db'}?strategy=mutex")
    assert only.name == "main"
    assert only.submit_write(_add_item, "x").result(timeout=10) == 1

    @only.retrying()
    def rename(item_id: int, name: str) -> str:
        only.get_store().execute("UPDATE item SET name = ? WHERE id = ?", (name, item_id))
        return name

    assert rename(1, "y") == "y" and rename.__name__ == "rename"
    assert only.submit_read(_item_names).result(timeout=10) == ["y"]
    manager.remove("main")
    with pytest.raises(ConfigError, match="no database named 'main' is configured"):
        only.submit_write(_add_item, "z")


@pytest.mark.timeout(120)
def test_the_typed_example_runs(strategy: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "typed_units.py"), "--strategy", strategy],
        cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "starred: buy milk, call home, water plants", result.stdout
    assert lines[-3:] == ["buy milk", "call home tonight" if strategy in ("mutex", "threadlocal")
                          else "call home", "water plants"], result.stdout
