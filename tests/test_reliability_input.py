"""Bad input under every strategy: units raising every kind of exception, units returning
Storm objects, re-entrant units, and option text that must never reach SQL.

What a ``BaseException`` (KeyboardInterrupt, SystemExit, GeneratorExit, or one of
your own) raised by a unit does, per strategy, as these tests pin it down:

- ``queue``/``single``: it kills the writer thread.  The unit's future holds
  that very exception (``result()`` re-raises it in the caller's thread), the
  other units of its batch and of the queue fail with `WriterBrokenError`
  caused by it, nothing of them is committed, and the next submit starts a
  new writer.
- ``mutex``/``threadlocal``: the unit runs in the caller's thread, so the
  exception propagates out of ``submit_write`` itself (no future), after the
  transaction was rolled back; the store and the manager stay usable.
- a ``write()`` block: under every strategy the exception leaves the ``with``
  block as it is, after rollback; a writer thread lending its store survives.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storm.exceptions import IntegrityError

from _items import Item, create_unique_items, names
from _threads import in_thread
from sqlite_storemgr import ConfigError, StoreManager, StoreManagerError
from sqlite_storemgr.backends import sqlite as backend
from sqlite_storemgr.uri import (
    FOREIGN_KEYS, JOURNAL_MODES, LOCK_POLICIES, STRATEGIES, SYNCHRONOUS)

pytestmark = pytest.mark.filterwarnings(
    "error::pytest.PytestUnhandledThreadExceptionWarning")

NAME = "db"


class CustomError(Exception):
    pass


class CustomBaseError(BaseException):
    pass


def make_duplicate_error():
    return None  # marker: the unit raises IntegrityError through a UNIQUE violation


EXCEPTIONS = {
    "ValueError": lambda: ValueError("bad value"),
    "KeyError": lambda: KeyError("missing"),
    "custom-Exception": lambda: CustomError("custom"),
    "IntegrityError": make_duplicate_error,
    "KeyboardInterrupt": lambda: KeyboardInterrupt(),
    "SystemExit": lambda: SystemExit(7),
    "GeneratorExit": lambda: GeneratorExit(),
    "custom-BaseException": lambda: CustomBaseError("custom base"),
}


@pytest.fixture
def setup(make_manager, db_path, strategy):
    mgr = make_manager(strategy, name=NAME, schema=create_unique_items, timeout=2, batch=8)
    mgr.submit_write(insert, 1, "first").result(timeout=10)
    return mgr, db_path, strategy


def insert(store, key: int, name: str) -> int:
    store.execute("INSERT INTO item (id, name) VALUES (?, ?)", (key, name))
    return key


def outcome(call):
    """('raised', e) if the call itself raised, else ('future', e) or ('result', value)."""
    try:
        future = call()
    except BaseException as error:  # noqa: BLE001 - every kind is the point here
        return "raised", error
    try:
        return "result", future.result(timeout=10)
    except BaseException as error:  # noqa: BLE001
        return "future", error


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", list(EXCEPTIONS))
def test_a_unit_raising_any_exception(setup, kind):
    mgr, path, strategy = setup
    exception = EXCEPTIONS[kind]()

    def unit(store):
        insert(store, 2, "from the failing unit")
        if exception is None:
            insert(store, 3, "first")  # UNIQUE(name): IntegrityError from SQLite
        raise exception

    where, error = in_thread(lambda: outcome(lambda: mgr.submit_write(unit)))
    if exception is None:
        assert where == "future"
        assert isinstance(error, IntegrityError), repr(error)
        assert "UNIQUE" in str(error)
    else:
        assert error is exception  # the very exception, not a wrapper
        base_only = not isinstance(exception, Exception)
        if base_only and strategy in ("mutex", "threadlocal"):
            assert where == "raised"
        else:
            assert where == "future"
    assert names(path) == ["first"]  # nothing of the unit committed
    # The manager keeps working, on the same thread and on others.
    assert mgr.submit_write(insert, 4, "after").result(timeout=10) == 4
    assert in_thread(lambda: mgr.submit_write(insert, 5, "other thread").result(10)) == 5
    assert names(path) == ["first", "after", "other thread"]
    if strategy in ("queue", "single"):
        restarts = mgr.stats(NAME)["writer_restarts"]
        assert restarts == (0 if isinstance(exception, Exception) or exception is None else 1)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", list(EXCEPTIONS))
def test_a_write_block_raising_any_exception(setup, kind):
    mgr, path, strategy = setup
    exception = EXCEPTIONS[kind]()

    def block():
        try:
            with mgr.write(NAME) as store:
                insert(store, 2, "from the failing block")
                if exception is None:
                    insert(store, 3, "first")
                raise exception
        except BaseException as error:  # noqa: BLE001
            return error
        return None

    error = in_thread(block)
    if exception is None:
        assert isinstance(error, IntegrityError), repr(error)
    else:
        assert error is exception
    assert names(path) == ["first"]
    assert mgr.submit_write(insert, 4, "after").result(timeout=10) == 4
    assert names(path) == ["first", "after"]
    if strategy in ("queue", "single"):
        assert mgr.stats(NAME)["writer_restarts"] == 0  # the lending writer survived


@pytest.mark.timeout(20)
def test_a_unit_returning_anything_bound_to_its_store_fails_and_commits_nothing(
        make_manager, db_path, strategy):
    mgr = make_manager(strategy, name=NAME, schema=create_unique_items)

    def add_and_return(store):
        item = Item()
        item.id = 10
        item.name = "leaky"
        store.add(item)
        return item

    def fetch_and_return(store):
        return store.get(Item, 11)

    def nest_and_return(store):
        return {"found": [(1, {store.get(Item, 11): "deep"})]}

    def insert_and_find(store):
        store.execute("INSERT INTO item (id, name) VALUES (12, 'never')")
        return store.find(Item)

    def insert_and_query(store):
        store.execute("INSERT INTO item (id, name) VALUES (12, 'never')")
        return [store.execute("SELECT name FROM item")]

    bound = {add_and_return: "Item", fetch_and_return: "Item", nest_and_return: "Item",
             insert_and_find: "ResultSet", insert_and_query: "Result"}
    for unit, kind in bound.items():
        if unit is fetch_and_return:
            mgr.submit_write(insert, 11, "stored").result(timeout=10)
        for submit in (mgr.submit_write, mgr.submit_read):
            if submit == mgr.submit_read and unit not in (fetch_and_return, nest_and_return):
                continue  # a read unit may not write at all
            error = submit(unit).exception(timeout=10)
            assert isinstance(error, StoreManagerError), repr(error)
            assert kind in str(error) and "bound to the unit's store" in str(error)
            assert "plain values" in str(error)
    # The Result of a statement that returns no rows reads nothing: it may be returned.
    assert mgr.submit_write(insert, 13, "kept").result(timeout=10) == 13
    assert mgr.submit_write(lambda store: store.execute(
        "DELETE FROM item WHERE id = 13")).result(timeout=10) is not None
    cyclic: list = [1, "two", (3.0, None)]
    cyclic.append(cyclic)
    assert mgr.submit_write(lambda store: cyclic).result(timeout=10) is cyclic
    assert names(db_path) == ["stored"]  # the added object was rolled back with its unit
    # The writer's cache forgot it too, and the writer goes on.
    assert mgr.submit_write(lambda store: store.get(Item, 10)).result(timeout=10) is None
    assert mgr.submit_write(lambda store: store.get(Item, 11).name).result(timeout=10) \
        == "stored"
    assert mgr.stats(NAME).get("writer_restarts", 0) == 0


# -- re-entrant units ------------------------------------------------------------------

@pytest.mark.timeout(20)
def test_units_started_inside_a_unit_join_it_and_never_deadlock(setup):
    mgr, path, strategy = setup

    def inner_read(store):
        return store.execute("SELECT count(*) FROM item").get_one()[0]

    def outer(store):
        insert(store, 2, "outer")
        seen = {}
        seen["write"] = mgr.submit_write(insert, 3, "inner submit").result(timeout=5)
        with mgr.write(NAME) as block_store:
            insert(block_store, 4, "inner block")
            seen["same store"] = block_store is store
        with mgr.write(NAME, savepoint=True) as block_store:
            insert(block_store, 5, "inner savepoint block")
        seen["read"] = mgr.submit_read(inner_read).result(timeout=5)
        with mgr.read(NAME) as read_store:
            seen["read block"] = inner_read(read_store)
        seen["get_store"] = inner_read(mgr.get_store(NAME))
        seen["nested twice"] = mgr.submit_write(
            lambda inner: mgr.submit_write(insert, 6, "two deep").result(timeout=5)
        ).result(timeout=5)
        return seen

    seen = in_thread(lambda: mgr.submit_write(outer).result(timeout=10))
    assert seen["write"] == 3
    assert seen["same store"] is True
    assert seen["nested twice"] == 6
    # Under every strategy reads inside a unit join it and see its writes.
    assert seen["read"] == seen["read block"] == seen["get_store"] == 5
    assert names(path) == ["first", "outer", "inner submit", "inner block",
                           "inner savepoint block", "two deep"]


@pytest.mark.timeout(20)
def test_a_write_block_with_units_inside_never_deadlocks(setup):
    mgr, path, strategy = setup

    def block():
        with mgr.write(NAME) as store:
            insert(store, 2, "block")
            first = mgr.submit_write(insert, 3, "unit in block").result(timeout=5)
            with mgr.write(NAME):
                second = mgr.submit_write(insert, 4, "two deep").result(timeout=5)
        return first, second

    assert in_thread(block) == (3, 4)
    assert names(path) == ["first", "block", "unit in block", "two deep"]


# -- option text never reaches SQL --------------------------------------------------------

OPTION_WORDS = {
    "strategy": STRATEGIES, "on_locked": LOCK_POLICIES, "journal_mode": JOURNAL_MODES,
    "synchronous": SYNCHRONOUS, "foreign_keys": FOREIGN_KEYS,
}
# Every statement the library itself runs on a connection: fixed words and numbers only.
OWN_STATEMENT = re.compile(
    r"^(PRAGMA (journal_mode|synchronous|foreign_keys|query_only|busy_timeout) = [a-z0-9]+"
    r"|PRAGMA cache_size = [0-9]+"
    r"|PRAGMA data_version|BEGIN( IMMEDIATE)?|COMMIT|ROLLBACK"
    r"|(SAVEPOINT|RELEASE|ROLLBACK TO) storemgr_sp[0-9]+)$")
MARKER = "zq'x;DROP TABLE t"


def cased(word: str):
    return st.sampled_from([word, word.upper(), word.title()])


option_value = st.one_of(
    st.sampled_from(sorted(OPTION_WORDS)).flatmap(
        lambda option: st.tuples(st.just(option), st.sampled_from(OPTION_WORDS[option]).flatmap(
            cased))),
    st.tuples(st.sampled_from(["timeout"]), st.sampled_from(["0.5", "2", "1e0", "3.25"])),
    st.tuples(st.sampled_from(["batch", "queue_size"]),
              st.integers(1, 500).map(str)),
    st.tuples(st.sampled_from(sorted(OPTION_WORDS) + ["timeout", "batch"]),
              st.sampled_from([MARKER, "wal;" + MARKER, "1;" + MARKER, MARKER + "%00"])),
)


@pytest.mark.timeout(60)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=st.lists(option_value, max_size=5, unique_by=lambda pair: pair[0]))
def test_no_option_text_ever_reaches_sql(options, tmp_path_factory, monkeypatch):
    directory = tmp_path_factory.mktemp("fuzz")
    path = directory / "fuzz.db"
    uri = f"sqlite:{path}"
    if options:
        uri += "?" + "&".join(f"{key}={value}" for key, value in options)
    statements: list[str] = []
    real_connect = backend.dbapi.connect

    def tracing_connect(*args, **kwargs):  # the real connection, with SQLite's trace on
        connection = real_connect(*args, **kwargs)
        connection.set_trace_callback(statements.append)
        return connection

    monkeypatch.setattr(backend.dbapi, "connect", tracing_connect)
    mgr = StoreManager()
    try:
        try:
            mgr.configure(NAME, uri)
        except ConfigError as error:
            assert any(MARKER in value for _, value in options), (uri, error)
            assert list(directory.iterdir()) == []  # nothing opened, nothing created
            return
        assert not any(MARKER in value for _, value in options), uri
        mgr.submit_write(lambda store: store.execute(
            "CREATE TABLE IF NOT EXISTS t (x INTEGER)")).result(timeout=10)
        mgr.submit_write(lambda store: store.execute("INSERT INTO t VALUES (1)")).result(10)
        assert mgr.submit_read(
            lambda store: store.execute("SELECT count(*) FROM t").get_one()[0]).result(10) == 1
    finally:
        mgr.close(timeout=10)
        monkeypatch.undo()
    own = [statement for statement in statements
           if not statement.startswith(("CREATE TABLE IF NOT EXISTS t", "INSERT INTO t",
                                        "SELECT count(*) FROM t"))]
    assert own, "the trace saw nothing"
    bad = [statement for statement in own if not OWN_STATEMENT.match(statement)]
    assert bad == [], (uri, bad)
    assert all(MARKER not in statement for statement in statements)
