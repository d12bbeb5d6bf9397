"""SQLAlchemy Core on the thread's store connection: one connection, one transaction."""

from __future__ import annotations

import threading

import pysqlite3.dbapi2 as dbapi
import pytest
import sqlalchemy as sa

from sqlite_storemgr import ManagerClosedError, ReadOnlyStoreError, StoreManager, StrategyError
from sqlite_storemgr.sqlalchemy import SharedConnection, engine_for, store_of
from _items import Boom, Item, names


metadata = sa.MetaData()
item_table = sa.Table("item", metadata, sa.Column("id", sa.Integer, primary_key=True),
                      sa.Column("name", sa.String))


def make_manager(path, strategy):
    manager = StoreManager()
    manager.configure("main", f"sqlite:{path}?strategy={strategy}&timeout=3")
    manager.submit_write(lambda store: store.execute(
        "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)")).result()
    return manager


@pytest.fixture(params=["mutex", "threadlocal"])
def setup(request, tmp_path):
    path = tmp_path / "sa.db"
    manager = make_manager(path, request.param)
    engine = engine_for(manager, "main")
    yield manager, path, engine
    engine.dispose()
    manager.close()


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
def test_under_queue_sqlalchemy_writes_inside_units_and_reads_outside(tmp_path):
    path = tmp_path / "queue.db"
    manager = make_manager(path, "queue")
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
        manager.close()


@pytest.mark.timeout(20)
def test_engine_for_refuses_what_it_cannot_share(tmp_path):
    manager = make_manager(tmp_path / "single.db", "single")
    try:
        engine = engine_for(manager)
        with pytest.raises(StrategyError, match="submit_read"):
            engine.connect()
        with pytest.raises(TypeError, match="poolclass"):
            engine_for(manager, poolclass=sa.pool.QueuePool)
    finally:
        manager.close()


@pytest.mark.timeout(20)
def test_the_engine_is_refused_once_the_manager_closed(tmp_path):
    manager = make_manager(tmp_path / "closed.db", "threadlocal")
    engine = engine_for(manager, "main")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM item")).scalar() == 0
    manager.close()
    with pytest.raises(ManagerClosedError):
        with engine.connect() as conn:
            conn.execute(sa.text("INSERT INTO item (name) VALUES ('after close')"))
    engine.dispose()
