"""The pytest plugin, as users get it (the ``pytest11`` entry point): pytester runs small user
test files in pytest sessions of their own."""

from __future__ import annotations

import os
import re
from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(90)

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")

USER_TESTS = '''
import pytest
from sqlite_storemgr import ManagerClosedError

seen = {}


def create(store):
    store.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT)")


def strategy_of(manager, name="main"):
    return manager.strategy(name).config.strategy


def test_default_strategy(store_manager, store_manager_path):
    store_manager.submit_write(create).result()
    assert strategy_of(store_manager) == "queue"
    assert store_manager_path.exists()
    seen["earlier"] = store_manager


def test_the_earlier_manager_was_closed(store_manager):
    with pytest.raises(ManagerClosedError):
        seen["earlier"].submit_write(create)
    assert seen["earlier"] is not store_manager


@pytest.mark.storemgr("mutex", options="timeout=1.5", name="app")
def test_marker_chooses(store_manager):
    assert store_manager.names() == ["app"]
    config = store_manager.strategy("app").config
    assert (config.strategy, config.timeout) == ("mutex", 1.5)


@pytest.mark.storemgr("single", "threadlocal")
def test_each_strategy(store_manager, store_manager_strategy):
    assert strategy_of(store_manager) == store_manager_strategy
    seen.setdefault("each", []).append(store_manager_strategy)


@pytest.mark.parametrize("store_manager_strategy", ["mutex", "queue"])
def test_parametrized(store_manager, store_manager_strategy):
    assert strategy_of(store_manager) == store_manager_strategy


def test_every_strategy_was_run():
    assert seen["each"] == ["single", "threadlocal"]
'''

CORRUPTING_TEST = '''
def test_damages_the_file(store_manager, store_manager_path):
    def fill(store):
        store.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT)")
        store.execute("CREATE INDEX note_text ON note (text)")
        for index in range(3000):
            store.execute("INSERT INTO note (text) VALUES (?)", (f"note {index:05d}",))
    store_manager.submit_write(fill).result()
    store_manager.close()
    size = store_manager_path.stat().st_size
    with open(store_manager_path, "r+b") as file:  # scribble over pages, keep the header
        for offset in range(8192, size - 4096, 16384):
            file.seek(offset + 100)
            file.write(b"\\x17" * 200)


def test_a_sound_one_still_passes(store_manager):
    store_manager.submit_write(lambda store: store.execute("CREATE TABLE t (v)")).result()
'''


def test_the_plugin_is_a_pytest11_entry_point():
    [entry] = [entry for entry in entry_points(group="pytest11") if entry.name == "storemgr"]
    assert entry.value == "sqlite_storemgr.integrations.pytest_plugin"


def test_store_manager_fixture_strategies_and_closing(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=8)


def test_the_command_line_option_sets_the_default(pytester):
    pytester.makepyfile(test_option='''
def test_option(store_manager):
    assert store_manager.strategy("main").config.strategy == "threadlocal"
''')
    result = pytester.runpytest("--storemgr-strategy=threadlocal")
    result.assert_outcomes(passed=1)


def test_an_unknown_strategy_errors_at_setup_naming_it(pytester):
    pytester.makepyfile(test_bad='''
import pytest

@pytest.mark.storemgr("fastest")
def test_bad(store_manager):
    pass
''')
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ConfigError*strategy*fastest*"])


def test_a_failing_integrity_check_is_reported(pytester):
    pytester.makepyfile(test_corrupt=CORRUPTING_TEST)
    result = pytester.runpytest()
    # The damaging test itself passed; its teardown's check is an error, and names the file.
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_damages_the_file*",
        "*store_manager: PRAGMA integrity_check of *store.db after the test: *",
    ])
    assert "test_a_sound_one_still_passes" not in "\n".join(
        line for line in result.outlines if line.startswith("ERROR"))


def test_the_readme_sample_runs_as_a_user_test_file(pytester):
    with open(README, encoding="utf-8") as readme:
        section = readme.read().split("## Testing your code (pytest plugin)", 1)[1]
    section = section.split("\n## ", 1)[0]
    [sample] = re.findall(r"```python\n(.*?)```", section, re.S)
    pytester.makepyfile(test_readme=sample)
    result = pytester.runpytest()
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 3 and set(outcomes) <= {"passed"}, result.outlines
