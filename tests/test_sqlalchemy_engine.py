"""SQLAlchemy Core on the thread's store connection: one connection, one transaction."""

from __future__ import annotations

import threading

import pysqlite3.dbapi2 as dbapi
import pytest
import sqlalchemy as sa
from storm.exceptions import ClosedError

from sqlite_storemgr import ManagerClosedError, ReadOnlyStoreError, StrategyError
from sqlite_storemgr.integrations.sqlalchemy import SharedConnection, engine_for, store_of
from _items import CALLER_THREAD_STRATEGIES, Boom, Item, names


metadata = sa.MetaData()
item_table = sa.Table("item", metadata, sa.Column("id", sa.Integer, primary_key=True),
                      sa.Column("name", sa.String))


@pytest.fixture(params=CALLER_THREAD_STRATEGIES)
def strategy(request):
    return request.param


@pytest.fixture
def setup(make_manager, db_path, strategy):
    manager = make_manager(strategy, timeout=3)
    engine = engine_for(manager, "main")
    yield manager, db_path, engine
    engine.dispose()


@pytest.mark.timeout(20)
def test_the_engine_uses_pysqlite3_and_the_stores_own_connection(setup):
    manager, path, engine = setup
    assert engine.dialect.dbapi is dbapi
    assert type(engine.pool).__name__ == "NullPool"
    store = manager.get_store("main")
    with engine.connect() as conn:
        shared = conn.connection.dbapi_connection
        assert isinstance(shared, SharedConnection)
        assert store_of(conn) is store
        raw = store.connection._raw_connection
        assert shared.cursor().connection is raw and type(raw).__module__.startswith("pysqlite3")
        assert conn.execute(sa.text("SELECT sqlite_version()")).scalar() == dbapi.sqlite_version
    seen = {}

    def other_thread():
        with engine.connect() as conn:
            seen["store"] = store_of(conn)
            seen["own"] = manager.get_store("main")
    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(10)
    assert seen["store"] is seen["own"] and seen["store"] is not store


@pytest.mark.timeout(20)
def test_storm_and_sqlalchemy_commit_together(setup):
    manager, path, engine = setup
    with manager.write("main") as store:
        store.add(Item()).name = "storm"  # not flushed yet: SQLAlchemy must still see it
        with engine.begin() as conn:
            conn.execute(item_table.insert().values(name="sqlalchemy"))
            seen = sorted(conn.execute(sa.select(item_table.c.name)).scalars())
        assert seen == ["sqlalchemy", "storm"]
        assert sorted(names(path)) == []  # engine.begin() committed nothing by itself
    assert sorted(names(path)) == ["sqlalchemy", "storm"]


@pytest.mark.timeout(20)
def test_storm_and_sqlalchemy_roll_back_together(setup):
    manager, path, engine = setup
    with pytest.raises(Boom):
        with manager.write("main") as store:
            store.execute("INSERT INTO item (name) VALUES ('storm')")
            with engine.connect() as conn:
                conn.execute(item_table.insert().values(name="sqlalchemy"))
                conn.commit()  # does not end the store's transaction
            raise Boom("the unit fails")
    assert sorted(names(path)) == []
    assert not manager.get_store("main").connection.in_transaction


@pytest.mark.timeout(20)
def test_a_submit_write_unit_can_use_sqlalchemy(setup):
    manager, path, engine = setup

    def unit(store):
        store.execute("INSERT INTO item (name) VALUES ('storm')")
        with engine.connect() as conn:
            conn.execute(item_table.insert().values(name="sqlalchemy"))
        return "done"
    assert manager.submit_write(unit).result() == "done"
    assert sorted(names(path)) == ["sqlalchemy", "storm"]

    def failing(store):
        with engine.connect() as conn:
            conn.execute(item_table.insert().values(name="lost"))
        raise Boom("after the SQLAlchemy insert")
    assert isinstance(manager.submit_write(failing).exception(), Boom)
    assert sorted(names(path)) == ["sqlalchemy", "storm"]


@pytest.mark.timeout(20)
def test_storm_objects_are_invalidated_after_a_sqlalchemy_write(setup):
    manager, path, engine = setup
    with manager.write("main") as store:
        item = store.add(Item())
        item.name = "before"
        store.flush()
        assert store.get(Item, item.id).name == "before"  # cached
        with engine.connect() as conn:
            conn.execute(item_table.update().where(item_table.c.id == item.id)
                         .values(name="after"))
        assert item.name == "after"
        assert store.find(Item, Item.name == "after").one() is item
    assert sorted(names(path)) == ["after"]


@pytest.mark.timeout(20)
def test_sqlalchemy_writes_outside_a_unit_join_the_stores_transaction(setup):
    manager, path, engine = setup
    with engine.connect() as conn:
        conn.execute(item_table.insert().values(name="loose"))
        conn.commit()
    store = manager.get_store("main")
    assert store.connection.has_uncommitted_writes  # like a write through get_store
    assert sorted(names(path)) == []
    # A unit started now joins it (the nesting rules), and the store's commit decides.
    manager.submit_write(lambda store: store.execute("INSERT INTO item (name) VALUES ('unit')"))
    assert sorted(names(path)) == []
    store.commit()
    assert sorted(names(path)) == ["loose", "unit"]


@pytest.mark.timeout(20)
def test_under_queue_sqlalchemy_writes_inside_units_and_reads_outside(make_manager, tmp_path):
    path = tmp_path / "queue.db"
    manager = make_manager("queue", path=path, timeout=3)
    engine = engine_for(manager)
    try:
        with manager.write("main") as store:
            store.execute("INSERT INTO item (name) VALUES ('storm')")
            with engine.connect() as conn:
                assert store_of(conn) is store  # the writer's store, lent to this thread
                conn.execute(item_table.insert().values(name="sqlalchemy"))
        assert sorted(names(path)) == ["sqlalchemy", "storm"]

        def unit(store):  # runs on the writer thread
            with engine.connect() as conn:
                conn.execute(item_table.insert().values(name="in unit"))
        manager.submit_write(unit).result()
        with engine.connect() as conn:  # the thread's read-only store
            assert sorted(conn.execute(sa.select(item_table.c.name)).scalars()) == [
                "in unit", "sqlalchemy", "storm"]
            with pytest.raises(ReadOnlyStoreError, match="submit_write"):
                conn.execute(item_table.insert().values(name="refused"))
        assert sorted(names(path)) == ["in unit", "sqlalchemy", "storm"]
    finally:
        engine.dispose()


@pytest.mark.timeout(20)
def test_engine_for_refuses_what_it_cannot_share(make_manager, tmp_path):
    manager = make_manager("single", path=tmp_path / "single.db", timeout=3)
    engine = engine_for(manager)
    with pytest.raises(StrategyError, match="submit_read"):
        engine.connect()
    with pytest.raises(TypeError, match="poolclass"):
        engine_for(manager, poolclass=sa.pool.QueuePool)


@pytest.mark.timeout(20)
def test_the_engine_is_refused_once_the_manager_closed(make_manager, tmp_path):
    manager = make_manager("threadlocal", path=tmp_path / "closed.db", timeout=3)
    engine = engine_for(manager, "main")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM item")).scalar() == 0
    manager.close()
    with pytest.raises(ManagerClosedError):
        with engine.connect() as conn:
            conn.execute(sa.text("INSERT INTO item (name) VALUES ('after close')"))
    engine.dispose()


def close_from_another_thread(manager):
    """manager.close() as a shutdown thread runs it: from a thread other than the caller's."""
    closer = threading.Thread(target=manager.close)
    closer.start()
    closer.join(10)
    assert not closer.is_alive()


def outcome(attempt, path):
    """What ``attempt()`` raised, in words: "ClosedError" when it names the file."""
    try:
        attempt()
    except ClosedError as error:
        named = str(path) in str(error)
        return "ClosedError" if named else f"ClosedError not naming the file: {error}"
    except Exception as error:  # noqa: BLE001 - reported, compared below
        return f"{type(error).__name__}: {error}"
    return "no error"


@pytest.mark.timeout(20)
def test_every_way_into_the_connection_raises_closed_error_once_the_manager_closed_it(setup):
    """After close(), SQLAlchemy never reaches the closed pysqlite3 connection (nor None).

    Each path gets Storm's ClosedError naming the file, as Storm's own calls do:
    statements, the DB-API connection's attributes and methods that SQLAlchemy's
    dialect uses (``create_function``, ``isolation_level``), methods looked up
    before the close and called after it, and a cursor opened before it.
    """
    manager, path, engine = setup
    store = manager.get_store("main")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM item")).scalar() == 0
        shared = conn.connection.dbapi_connection
        early_cursor = shared.cursor()
        create_function = shared.create_function  # looked up now, called after the close
        setinputsizes = early_cursor.setinputsizes
        assert shared.isolation_level is None  # the store's autocommit mode, read through
        close_from_another_thread(manager)
        attempts = {
            "conn.execute": lambda: conn.execute(sa.text("SELECT count(*) FROM item")),
            "conn.exec_driver_sql": lambda: conn.exec_driver_sql("SELECT 1"),
            "shared.cursor()": shared.cursor,
            "shared.create_function": lambda: shared.create_function("f", 1, len),
            "create_function looked up before": lambda: create_function("f", 1, len),
            "shared.isolation_level": lambda: shared.isolation_level,
            "shared.in_transaction": lambda: shared.in_transaction,
            "early_cursor.execute": lambda: early_cursor.execute("SELECT 1"),
            "early_cursor.description": lambda: early_cursor.description,
            "early_cursor.connection": lambda: early_cursor.connection,
            "setinputsizes looked up before": lambda: setinputsizes([]),
            "store.connection.raw": lambda: store.connection.raw,
        }
        outcomes = {what: outcome(attempt, path) for what, attempt in attempts.items()}
        assert outcomes == dict.fromkeys(attempts, "ClosedError")
        early_cursor.close()  # cleanup after the close stays quiet, as SQLAlchemy needs
    # leaving the block (SQLAlchemy's rollback and close) raised nothing either
    with pytest.raises(ManagerClosedError):  # and a new connection is refused
        engine.connect()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("warm", [False, True], ids=["first-connect", "later-connect"])
def test_connecting_to_a_closed_store_raises_closed_error_naming_the_file(setup, warm):
    """SQLAlchemy's connect-time setup (the dialect's ``create_function``; on the
    engine's first connection also its ``initialize`` queries) on a store closed
    meanwhile: ClosedError, not AttributeError on None."""
    manager, path, engine = setup
    if warm:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    manager.get_store("main").close()  # the thread's store, closed (by the manager or itself)
    assert outcome(engine.connect, path) == "ClosedError"
    assert outcome(engine.connect, path) == "ClosedError"  # no half-initialized engine left


@pytest.mark.timeout(20)
@pytest.mark.parametrize("warm", [False, True], ids=["first-connect", "later-connect"])
def test_a_close_landing_inside_sqlalchemys_connect_setup_raises_closed_error(setup, warm):
    """The race behind the stress test's AttributeError, made deterministic.

    engine.connect() takes the thread's store (the manager is still open), then
    another thread's close() lands before SQLAlchemy's connect-time setup (the
    dialect's on_connect calls ``create_function`` on the DB-API connection)."""
    manager, path, engine = setup
    if warm:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    manager.get_store("main")

    def close_meanwhile(dbapi_connection, connection_record):
        close_from_another_thread(manager)
    sa.event.listen(engine, "connect", close_meanwhile, insert=True)  # before the dialect's
    assert outcome(engine.connect, path) == "ClosedError"
    with pytest.raises(ManagerClosedError):
        engine.connect()


@pytest.mark.timeout(20)
def test_a_close_landing_before_a_statements_cursor_raises_closed_error_not_statement_error(setup):
    """SQLAlchemy wraps an error raised while it makes a statement's cursor in its
    StatementError; the store's ClosedError must come through as it is."""
    manager, path, engine = setup
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))

        def close_meanwhile(*args):  # the compiled statement is ready; its cursor is not
            close_from_another_thread(manager)
        sa.event.listen(engine, "before_execute", close_meanwhile)
        assert outcome(lambda: conn.execute(sa.text("SELECT 1")), path) == "ClosedError"


@pytest.mark.timeout(20)
def test_a_connection_used_from_another_thread_raises_wrong_thread_error_as_it_is(setup):
    manager, path, engine = setup
    seen = {}
    with engine.connect() as conn:
        def other_thread():
            seen["outcome"] = outcome(lambda: conn.execute(sa.text("SELECT 1")), path)
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(10)
    assert seen["outcome"].startswith("WrongThreadError: store 'main' belongs to another thread")


def test_sqlalchemy_reads_outside_a_unit_keep_no_snapshot(make_manager, strategy):
    """Like Storm's reads through get_store: autocommit outside units, nothing pinned."""
    manager = make_manager(strategy, schema=lambda store: store.execute(
        "CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT)"))
    engine = engine_for(manager, "main")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM note")).scalar() == 0
        assert not manager.get_store("main").connection.in_transaction
        other = threading.Thread(target=lambda: manager.submit_write(
            lambda store: store.execute("INSERT INTO note (text) VALUES ('x')")).result())
        other.start()
        other.join(10)
        assert conn.execute(sa.text("SELECT count(*) FROM note")).scalar() == 1
        with manager.read("main"):
            with pytest.raises(ReadOnlyStoreError):
                conn.execute(sa.text("INSERT INTO note (text) VALUES ('no')"))
