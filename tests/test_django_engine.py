"""The Django engine: one connection and one transaction with Storm, under every strategy."""

from __future__ import annotations

import os
import threading

import pytest

from django_app.db import STORE, release_database, use_database
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.test import Client, override_settings
from django_app.models import Counter, Note, Tag

import sqlite_storemgr as sm
from _items import Boom, Item, rows as read_rows
from sqlite_storemgr import ConfigError, StrategyError, TransactionDoomedError
from sqlite_storemgr.integrations.django.config import database_spec
from sqlite_storemgr.uri import STRATEGIES

WRITER_STRATEGIES = ("queue", "single")


@pytest.fixture(params=STRATEGIES)
def strategy(request, tmp_path):
    use_database(tmp_path / "app.db", request.param, timeout=5)
    sm.submit_write(lambda store: store.execute(
        "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)"), name=STORE).result()
    yield request.param
    release_database()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "app.db")


def texts(path) -> list[str]:
    return sorted(row[0] for row in read_rows(path, "SELECT text FROM django_app_note"))


def storm_names(path) -> list[str]:
    return sorted(row[0] for row in read_rows(path, "SELECT name FROM item"))


def storm_and_django(store, fail=False):
    Note.objects.create(text="django")
    store.add(Item()).name = "storm"
    if fail:
        raise Boom("the unit fails")
    return Note.objects.count()


@pytest.mark.timeout(60)
def test_storm_and_django_commit_together_in_a_unit(strategy, path):
    assert sm.submit_write(storm_and_django, name=STORE).result() == 1
    assert texts(path) == ["django"] and storm_names(path) == ["storm"]


@pytest.mark.timeout(60)
def test_storm_and_django_roll_back_together_in_a_unit(strategy, path):
    with pytest.raises(Boom):
        sm.submit_write(storm_and_django, fail=True, name=STORE).result()
    assert texts(path) == [] and storm_names(path) == []


@pytest.mark.timeout(60)
def test_django_in_a_unit_uses_the_units_connection(strategy):
    def raw_connections(store):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return id(store.connection.raw), threading.get_ident()

    raw, thread = sm.submit_write(raw_connections, name=STORE).result()
    if strategy in WRITER_STRATEGIES:
        assert thread != threading.get_ident()  # fn ran on the writer, Django too
    else:
        assert raw == id(sm.get_store(STORE).connection.raw)


@pytest.mark.timeout(60)
def test_atomic_is_a_unit_that_storm_joins(strategy, path):
    with transaction.atomic():
        Note.objects.create(text="django")
        with sm.write(STORE) as store:
            store.add(Item()).name = "storm"
        assert texts(path) == [] and storm_names(path) == []  # nothing committed yet
    assert texts(path) == ["django"] and storm_names(path) == ["storm"]
    with pytest.raises(Boom):
        with transaction.atomic():
            Note.objects.create(text="gone")
            with sm.write(STORE) as store:
                store.add(Item()).name = "gone"
            raise Boom("roll both back")
    assert texts(path) == ["django"] and storm_names(path) == ["storm"]


@pytest.mark.timeout(60)
def test_atomic_savepoint_false_failure_dooms_the_unit(strategy, path):
    def unit(store):
        store.add(Item()).name = "storm"
        try:
            with transaction.atomic(savepoint=False):
                Note.objects.create(text="inner")
                raise Boom("inner failure, caught")
        except Boom:
            pass
        return "returned"

    with pytest.raises(TransactionDoomedError, match="doomed"):
        sm.submit_write(unit, name=STORE).result()
    assert texts(path) == [] and storm_names(path) == []
    assert sm.submit_write(storm_and_django, name=STORE).result() == 1  # the next unit is fine


@pytest.mark.timeout(60)
def test_atomic_savepoint_inside_a_unit_fails_alone(strategy, path):
    def unit(store):
        Note.objects.create(text="kept")
        try:
            with transaction.atomic():
                Note.objects.create(text="undone")
                raise Boom("inner failure")
        except Boom:
            pass
        store.add(Item()).name = "storm"
        return sorted(Note.objects.values_list("text", flat=True))

    assert sm.submit_write(unit, name=STORE).result() == ["kept"]
    assert texts(path) == ["kept"] and storm_names(path) == ["storm"]


@pytest.mark.timeout(60)
def test_nested_atomic_follows_djangos_rules(strategy, path):
    with transaction.atomic():
        Note.objects.create(text="outer")
        with pytest.raises(Boom):
            with transaction.atomic():
                Note.objects.create(text="savepoint")
                raise Boom("undo the savepoint only")
    assert texts(path) == ["outer"]
    with transaction.atomic():
        Note.objects.create(text="second")
        with pytest.raises(Boom):
            with transaction.atomic(savepoint=False):
                raise Boom("dooms the outer block")
        assert transaction.get_rollback()
    assert texts(path) == ["outer"]


@pytest.mark.timeout(60)
def test_on_commit_runs_after_the_real_commit(strategy, path):
    seen = []
    with transaction.atomic():
        Note.objects.create(text="a")
        transaction.on_commit(lambda: seen.append(("atomic", texts(path))))
    assert seen == [("atomic", ["a"])]

    def unit(store, fail):
        Note.objects.create(text="b" if not fail else "x")
        transaction.on_commit(lambda: seen.append(("unit", texts(path))))
        if fail:
            raise Boom("rolled back: no hook")
    sm.submit_write(unit, False, name=STORE).result()
    with pytest.raises(Boom):
        sm.submit_write(unit, True, name=STORE).result()
    assert seen == [("atomic", ["a"]), ("unit", ["a", "b"])]


@pytest.mark.timeout(60)
def test_storm_cache_is_fresh_after_a_django_write_in_the_unit(strategy):
    item_id = sm.submit_write(lambda store: store.add(Item()).__setattr__("name", "old")
                              or store.flush() or store.find(Item).one().id, name=STORE).result()

    def unit(store):
        item = store.get(Item, item_id)
        assert item.name == "old"  # cached now
        with connection.cursor() as cursor:
            cursor.execute("UPDATE item SET name = %s WHERE id = %s", ["new", item_id])
        return item.name

    assert sm.submit_write(unit, name=STORE).result() == "new"


@pytest.mark.timeout(60)
def test_loose_writes_and_read_your_writes(strategy, path):
    """Outside a unit and a request, an ORM write is its own unit under every strategy."""
    Note.objects.create(text="loose")
    assert texts(path) == ["loose"]
    sm.submit_write(lambda store: store.execute(
        "INSERT INTO django_app_note (text) VALUES ('storm')"), name=STORE).result()
    assert sorted(Note.objects.values_list("text", flat=True)) == ["loose", "storm"]
    if strategy != "single":  # reads leave no snapshot open on the thread's store
        assert not sm.get_store(STORE).connection.in_transaction


@pytest.mark.timeout(60)
def test_a_loose_write_in_a_request_is_refused_clearly_under_writer_strategies(strategy, path):
    client = Client(raise_request_exception=True)
    if strategy not in WRITER_STRATEGIES:
        assert client.get("/loose/", {"text": "direct"}).status_code == 200
        assert texts(path) == ["direct"]
        return
    with pytest.raises(StrategyError) as refused:
        client.get("/loose/")
    message = str(refused.value)
    assert "submit_write" in message and "TransactionMiddleware" in message
    assert "ATOMIC_REQUESTS" in message and "nothing was written" in message
    assert texts(path) == []
    assert client.get("/atomic/", {"text": "in atomic"}).status_code == 200
    assert texts(path) == ["in atomic"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["middleware", "atomic_requests"])
def test_request_paths_make_the_requests_writes_one_unit(strategy, path, how):
    client = Client(raise_request_exception=False)
    if how == "middleware":
        with override_settings(MIDDLEWARE=[
                "sqlite_storemgr.django.middleware.TransactionMiddleware"]):
            assert client.get("/loose/", {"text": "one"}).status_code == 200
            assert client.get("/fail/").status_code == 500  # a 500 answer rolls back
            assert client.get("/raise/").status_code == 500
            assert client.get("/count/").json() == {"notes": 1}
        assert texts(path) == ["one"]
        return
    connection.settings_dict["ATOMIC_REQUESTS"] = True  # what Django's handler reads
    try:
        assert client.get("/loose/", {"text": "one"}).status_code == 200
        assert client.get("/raise/").status_code == 500  # Django rolls back on an exception
        assert client.get("/count/").json() == {"notes": 1}
    finally:
        connection.settings_dict["ATOMIC_REQUESTS"] = False
    assert texts(path) == ["one"]


@pytest.mark.timeout(90)
def test_threads_read_then_write_without_lost_updates(strategy):
    Counter.objects.create(name="hits")

    @transaction.atomic
    def increment():
        counter = Counter.objects.get(name="hits")
        counter.value += 1
        counter.save()

    errors = []

    def worker():
        try:
            for _ in range(15):
                increment()
        except Exception as error:  # noqa: BLE001 - collected and asserted on
            errors.append(error)
        finally:
            connection.close()
    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert Counter.objects.get(name="hits").value == 90


@pytest.mark.timeout(60)
def test_migrate_on_a_fresh_file_keeps_foreign_keys_on(tmp_path):
    for strategy in STRATEGIES:
        path = tmp_path / f"{strategy}.db"
        use_database(path, strategy)
        try:
            tables = {row[0] for row in read_rows(
                str(path), "SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert {"django_migrations", "auth_user", "django_app_note", "django_app_tag"} <= tables
            with pytest.raises(IntegrityError, match="FOREIGN KEY"):
                with transaction.atomic():
                    Tag.objects.create(note_id=12345, label="dangling")
            assert not Tag.objects.exists()
        finally:
            release_database()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy_name", ["queue", "mutex"])
def test_management_commands_on_the_engine(tmp_path, strategy_name):
    use_database(tmp_path / "app.db", strategy_name)
    try:
        call_command("createsuperuser", interactive=False, username="admin",
                     email="a@example.com", verbosity=0)
        Note.objects.bulk_create([Note(text="x"), Note(text="y")])
        dump = tmp_path / "dump.json"
        call_command("dumpdata", "django_app", output=str(dump), verbosity=0)
        Note.objects.all().delete()
        call_command("loaddata", str(dump), verbosity=0)
        assert sorted(Note.objects.values_list("text", flat=True)) == ["x", "y"]
        client = Client()
        client.force_login(__import__("django.contrib.auth.models", fromlist=["User"])
                           .User.objects.get(username="admin"))
        assert client.get("/admin/").status_code == 200
    finally:
        release_database()


def test_options_are_checked_like_uri_options():
    base = {"NAME": "app.db"}
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        database_spec({**base, "OPTIONS": {"colour": "red"}}, "default")
    with pytest.raises(ConfigError, match="option strategy='fast' is not allowed"):
        database_spec({**base, "OPTIONS": {"strategy": "fast"}}, "default")
    with pytest.raises(ConfigError, match="option timeout='-1' is not allowed"):
        database_spec({**base, "OPTIONS": {"timeout": -1}}, "default")
    spec = database_spec({**base, "OPTIONS": {"strategy": "queue", "timeout": 5,
                                              "synchronous": "full", "store": "main"}}, "x")
    assert spec.store == "main" and spec.config.strategy == "queue"
    assert spec.config.path == os.path.abspath("app.db") and spec.config.timeout == 5
    assert database_spec({**base, "OPTIONS": {}}, "other").store == "other"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy_name", STRATEGIES)
def test_a_forked_child_uses_the_engine(tmp_path, strategy_name):
    path = str(tmp_path / "app.db")
    use_database(path, strategy_name)
    try:
        Note.objects.create(text="parent")
        pid = os.fork()
        if pid == 0:  # the child: its own connections; exit status says what happened
            code = 1
            try:
                Note.objects.create(text="child")
                code = 0 if Note.objects.count() == 2 else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert sorted(Note.objects.values_list("text", flat=True)) == ["child", "parent"]
    finally:
        release_database()
