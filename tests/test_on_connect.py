"""``configure(name, uri, on_connect=fn)``: the hook runs on every new connection, a failing
hook hands nothing out, and a hook may not change what a strategy's guarantees rest on."""

from __future__ import annotations

import subprocess
import sys
import threading

import pysqlite3.dbapi2 as dbapi
import pytest

from _children import child_env
from _items import create_items, names
from _threads import in_thread
from sqlite_storemgr import ConfigError, StoreManager

NAME = "db"
pytestmark = pytest.mark.timeout(30)


class Hook:
    """An on_connect hook recording every connection it saw; ``fail`` makes it raise."""

    def __init__(self, *statements: str, fail: int = 0):
        self.statements = statements
        self.fail = fail  # how many calls raise before the hook works
        self.calls: list[tuple[object, bool]] = []
        self.lock = threading.Lock()

    def __call__(self, raw, read_only: bool) -> None:
        with self.lock:
            self.calls.append((raw, read_only))
            failing = len(self.calls) <= self.fail
        if failing:
            raise RuntimeError("no such extension: spellfix")
        raw.create_function("reverse_text", 1, lambda text: text[::-1], deterministic=True)
        for statement in self.statements:
            raw.execute(statement)

    def flags(self) -> set[bool]:
        return {read_only for _, read_only in self.calls}


def manager_with(path, strategy: str, hook) -> StoreManager:
    manager = StoreManager()
    manager.configure(NAME, f"sqlite:{path}?strategy={strategy}&timeout=5", on_connect=hook)
    return manager


def read(manager: StoreManager, strategy: str, fn):
    """``fn(store)`` on a read store of a new thread: get_store, or the worker under single."""
    if strategy == "single":
        return in_thread(lambda: manager.submit_read(fn).result(timeout=10))
    return in_thread(lambda: fn(manager.get_store(NAME)))


def test_a_function_the_hook_creates_works_in_units_and_reads(tmp_path, strategy):
    manager = manager_with(tmp_path / "fn.db", strategy, Hook())
    try:
        manager.submit_write(create_items).result(timeout=10)
        manager.submit_write(lambda store: store.execute(
            "INSERT INTO item (name) VALUES (reverse_text(?))", ("olleh",))).result(timeout=10)
        assert read(manager, strategy, lambda store: store.execute(
            "SELECT reverse_text(name) FROM item").get_all()) == [("olleh",)]
        assert manager.submit_read(lambda store: store.execute(
            "SELECT reverse_text('abc')").get_one()).result(timeout=10) == ("cba",)
    finally:
        manager.close(timeout=10)
    assert names(tmp_path / "fn.db") == ["hello"]


def test_a_cache_size_pragma_is_in_effect_on_every_connection(tmp_path, strategy):
    hook = Hook("PRAGMA cache_size = -4321")
    manager = manager_with(tmp_path / "cache.db", strategy, hook)
    pragma = "PRAGMA cache_size"
    try:
        in_writer = manager.submit_write(
            lambda store: store.execute(pragma).get_one()[0]).result(timeout=10)
        in_reads = {read(manager, strategy, lambda store: store.execute(pragma).get_one()[0])
                    for _ in range(3)}
    finally:
        manager.close(timeout=10)
    assert (in_writer, in_reads) == (-4321, {-4321})
    # Read-only connections exist under queue only (every other store writes too).
    assert hook.flags() == ({False, True} if strategy == "queue" else {False})


def test_a_failing_hook_is_reported_and_its_connection_never_handed_out(tmp_path, strategy):
    hook = Hook(fail=1)
    manager = manager_with(tmp_path / "fail.db", strategy, hook)
    try:
        error = manager.submit_write(create_items).exception(timeout=10)
        assert isinstance(error, ConfigError)  # under queue too: the writer's open failed
        message = str(error)
        assert "on_connect=Hook failed on a new write connection to" in message
        assert str(tmp_path / "fail.db") in message
        assert "no such extension: spellfix" in message
        assert isinstance(error.__cause__, RuntimeError)
        failed_raw = hook.calls[0][0]
        with pytest.raises(dbapi.ProgrammingError, match="closed"):
            failed_raw.execute("SELECT 1")
        # The next attempt runs the hook again, on a new connection, and works.
        manager.submit_write(create_items).result(timeout=10)
        assert len(hook.calls) == 2 and hook.calls[1][0] is not failed_raw
    finally:
        manager.close(timeout=10)
    assert names(tmp_path / "fail.db") == []


def test_a_read_store_whose_hook_fails_is_not_handed_out(tmp_path):
    hook = Hook(fail=1)
    manager = manager_with(tmp_path / "reader.db", "queue", hook)
    try:
        with pytest.raises(ConfigError, match="failed on a new read-only connection"):
            manager.get_store(NAME)
        store = manager.get_store(NAME)  # tried again: a new connection, the hook works
        assert store.execute("SELECT reverse_text('ab')").get_one() == ("ba",)
        assert [read_only for _, read_only in hook.calls] == [True, True]
    finally:
        manager.close(timeout=10)


@pytest.mark.parametrize("statement, refused", [
    ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode changed from 'wal' to 'delete'"),
    ("PRAGMA synchronous = OFF", "PRAGMA synchronous changed from 2 to 0"),
    ("PRAGMA foreign_keys = OFF", "PRAGMA foreign_keys changed from 1 to 0"),
    ("PRAGMA locking_mode = EXCLUSIVE", "PRAGMA locking_mode changed from 'normal' to 'exclusive'"),
    ("BEGIN", "a transaction left open"),
], ids=["journal_mode", "synchronous", "foreign_keys", "locking_mode", "open-transaction"])
def test_a_hook_changing_a_guarded_setting_is_refused(tmp_path, strategy, statement, refused):
    path = tmp_path / "guarded.db"
    with StoreManager() as plain:  # the file exists, in WAL mode, before the hook is ever run
        plain.configure(NAME, f"sqlite:{path}?strategy={strategy}")
        plain.submit_write(create_items).result(timeout=10)
    hook = Hook(statement)
    manager = manager_with(path, strategy, hook)
    try:
        error = manager.submit_write(lambda store: store.execute(
            "INSERT INTO item (name) VALUES ('never')")).exception(timeout=10)
    finally:
        manager.close(timeout=10)
    assert isinstance(error, ConfigError)
    assert refused in str(error) and "is refused on a new write connection" in str(error)
    with pytest.raises(dbapi.ProgrammingError, match="closed"):
        hook.calls[0][0].execute("SELECT 1")
    assert names(path) == []


def test_a_hook_turning_a_reader_writable_is_refused(tmp_path):
    manager = manager_with(tmp_path / "ro.db", "queue", Hook("PRAGMA query_only = 0"))
    try:
        manager.submit_write(create_items).result(timeout=10)  # query_only is 0 there already
        with pytest.raises(ConfigError, match="PRAGMA query_only changed from 1 to 0"):
            manager.get_store(NAME)
    finally:
        manager.close(timeout=10)


def test_a_hook_repeating_the_uris_own_settings_is_accepted(tmp_path, strategy):
    hook = Hook("PRAGMA synchronous = FULL", "PRAGMA foreign_keys = ON",
                "PRAGMA journal_mode = WAL", "PRAGMA mmap_size = 1048576")
    manager = manager_with(tmp_path / "same.db", strategy, hook)
    try:
        manager.submit_write(create_items).result(timeout=10)
        mmap = manager.submit_read(
            lambda store: store.execute("PRAGMA mmap_size").get_one()[0]).result(timeout=10)
    finally:
        manager.close(timeout=10)
    assert mmap == 1048576


def test_on_connect_must_be_a_function_and_is_for_sqlite_only(tmp_path):
    manager = StoreManager()
    try:
        with pytest.raises(ConfigError, match="on_connect must be a function"):
            manager.configure(NAME, f"sqlite:{tmp_path / 'x.db'}", on_connect="PRAGMA x")
        with pytest.raises(ConfigError, match="on_connect= is for SQLite databases"):
            manager.configure(NAME, "postgres://user@127.0.0.1/db", on_connect=Hook())
        assert manager.names() == []
        assert not (tmp_path / "x.db").exists()
    finally:
        manager.close()


def test_the_module_level_configure_takes_the_hook_too(tmp_path):
    script = (
        "import sys, sqlite_storemgr as sm\n"
        "seen = []\n"
        "sm.configure('main', 'sqlite:' + sys.argv[1], on_connect=lambda raw, ro: seen.append(ro))\n"
        "sm.submit_write(lambda store: store.execute('CREATE TABLE t (v)')).result()\n"
        "sm.close()\n"
        "print(seen)\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "module.db")],
                            env=child_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[False]"
