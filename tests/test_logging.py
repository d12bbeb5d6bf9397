"""Every log record the README's "Logging" section documents, produced and checked: its
logger, level and the figures in its message."""

from __future__ import annotations

import logging
import os
import threading
import time

import pysqlite3.dbapi2 as dbapi
import pytest

from _items import WRITER_THREAD_STRATEGIES, WriterKiller, insert
from sqlite_storemgr import ConfigError, DatabaseLockedError, StoreManager, WriterBrokenError
from sqlite_storemgr.uri import STRATEGIES

pytestmark = pytest.mark.timeout(60)


def records(caplog, logger: str, level: int = logging.DEBUG) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == logger and record.levelno >= level]


def sleepy(store, seconds):
    time.sleep(seconds)
    store.execute("INSERT INTO item (name) VALUES ('slow')")


@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_the_writer_logs_its_start_its_death_with_the_exception_and_its_restart(
        make_manager, strategy, caplog):
    caplog.set_level(logging.INFO, logger="sqlite_storemgr")
    manager = make_manager(strategy)
    assert records(caplog, "sqlite_storemgr.writer_queue", logging.INFO) == [
        "the writer of 'main' started"]

    def killer(store):
        raise WriterKiller("stop the writer")

    with pytest.raises(WriterKiller):
        manager.submit_write(killer).result(timeout=10)
    died = [record for record in caplog.records if record.levelno == logging.ERROR
            and record.name == "sqlite_storemgr.writer_queue"]
    assert len(died) == 1 and "died" in died[0].getMessage()
    assert isinstance(died[0].exc_info[1], WriterKiller)
    assert manager.submit_write(insert("after")).result(timeout=10) == "after"
    restarted = [record for record in caplog.records if record.levelno == logging.WARNING
                 and record.name == "sqlite_storemgr.writer_queue"]
    assert [record.getMessage() for record in restarted] == [
        "the writer of 'main' restarted (restart 1) after it died"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_locked_database_logs_each_retry_and_the_error(make_manager, db_path, strategy,
                                                         caplog):
    caplog.set_level(logging.DEBUG, logger="sqlite_storemgr")
    manager = make_manager(strategy, timeout=0.3)
    holder = dbapi.connect(str(db_path), timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises((DatabaseLockedError, WriterBrokenError)):
            manager.submit_write(insert("blocked")).result(timeout=10)
    finally:
        holder.rollback()
        holder.close()
    locked = records(caplog, "sqlite_storemgr.retry", logging.WARNING)
    assert len(locked) == 1 and locked[0].startswith("DatabaseLockedError: ")
    assert "timeout=0.3" in locked[0] and "attempt(s)" in locked[0]
    retries = records(caplog, "sqlite_storemgr.retry", logging.DEBUG)[:-1]
    assert all("retry" in message and "timeout=0.3" in message for message in retries)
    assert manager.stats()["retries"] == len(retries)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_slow_unit_is_logged_and_a_fast_one_is_not(make_manager, strategy, caplog):
    caplog.set_level(logging.WARNING, logger="sqlite_storemgr")
    manager = make_manager(strategy, slow_unit=0.1)
    manager.submit_write(insert("fast")).result(timeout=10)
    assert records(caplog, "sqlite_storemgr.units") == []
    manager.submit_write(sleepy, 0.25).result(timeout=10)
    slow = records(caplog, "sqlite_storemgr.units")
    assert len(slow) == 1 and "sleepy ran 0." in slow[0] and "slow_unit=0.1" in slow[0]
    with manager.write() as store:
        time.sleep(0.25)
        store.execute("INSERT INTO item (name) VALUES ('block')")
    assert len(records(caplog, "sqlite_storemgr.units")) == 2
    assert "write() block" in records(caplog, "sqlite_storemgr.units")[1]


def test_slow_unit_0_logs_no_unit(make_manager, caplog):
    caplog.set_level(logging.WARNING, logger="sqlite_storemgr")
    manager = make_manager("queue", slow_unit=0)
    manager.submit_write(sleepy, 0.05).result(timeout=10)
    assert records(caplog, "sqlite_storemgr.units") == []


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_close_logs_its_time_or_what_it_could_not_drain(tmp_path, strategy, caplog):
    caplog.set_level(logging.INFO, logger="sqlite_storemgr")
    drained = StoreManager()
    drained.configure("quick", f"sqlite:{tmp_path / 'quick.db'}?strategy={strategy}")
    drained.submit_write(lambda store: store.execute("CREATE TABLE t (id INTEGER)")).result()
    assert drained.close(timeout=10) is True
    closed = records(caplog, "sqlite_storemgr.manager", logging.INFO)
    assert len(closed) == 1 and closed[0].startswith("closed 'quick' in ")

    stuck = StoreManager()
    stuck.configure("stuck", f"sqlite:{tmp_path / 'stuck.db'}?strategy={strategy}")
    started, release = threading.Event(), threading.Event()

    def slow(store):
        started.set()
        release.wait(10)

    worker = threading.Thread(target=lambda: stuck.submit_write(slow).result())
    worker.start()
    assert started.wait(10)
    try:
        assert stuck.close(timeout=0.2) is False
    finally:
        release.set()
        worker.join(10)
    warned = records(caplog, "sqlite_storemgr.manager", logging.WARNING)
    assert len(warned) == 1 and warned[0].startswith("closing 'stuck' did not drain within 0.")
    assert "0 queued unit(s) left, or a unit still running" in warned[0]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_forked_child_logs_the_connections_it_set_aside(make_manager, strategy):
    manager = make_manager(strategy)
    if strategy != "single":
        manager.get_store("main").find  # a store of this thread: one connection to set aside
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("sqlite_storemgr.backends.forking")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # the child: report what it logged at the fork, then leave
            os.write(write_end, "\n".join(seen).encode())
            os._exit(0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        logged = pipe.read()
    os.waitpid(pid, 0)
    assert f"inherited from {os.getpid()}" in logged and "set aside" in logged


@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_a_writer_that_cannot_open_logs_it_and_hands_each_unit_the_reason(tmp_path, strategy,
                                                                          caplog):
    caplog.set_level(logging.INFO, logger="sqlite_storemgr")

    def refuse(raw, read_only):
        raise RuntimeError("no connection today")

    manager = StoreManager()
    manager.configure("main", f"sqlite:{tmp_path / 'db.sqlite'}?strategy={strategy}",
                      on_connect=refuse)
    try:
        errors = [future.exception(timeout=10) for future in
                  [manager.submit_write(insert(f"n{i}")) for i in range(3)]]
    finally:
        manager.close(timeout=10)
    assert all(isinstance(error, ConfigError) and "no connection today" in str(error)
               for error in errors), errors
    failed = [record for record in caplog.records if record.levelno == logging.ERROR
              and record.name == "sqlite_storemgr.writer_queue"]
    assert failed and "could not open its connection" in failed[0].getMessage()
    assert isinstance(failed[0].exc_info[1], ConfigError)
