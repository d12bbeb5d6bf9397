"""The project's benchmark: every strategy against baselines, measured in one run.

Workloads (T threads, each unit one ~100-byte row):

- ``insert``: a unit is one INSERT;
- ``rmw``: a unit reads a counter and writes it back plus one (read-then-write);
  lost updates are the units acknowledged minus the final counter;
- ``mixed``: ``insert`` units while 4 reader threads each read a row by primary
  key (pausing 1 ms between reads, like a handler doing other work) through
  ``get_store`` under ``queue``, else one ``submit_read`` snapshot (on the worker
  under ``single``); their p50/p99 under write load is reported next to the idle
  p99 they measured before the writers started.  Baselines have no readers.

Baselines: the serial ceiling (raw pysqlite3, one thread, ``BEGIN IMMEDIATE;
INSERT; COMMIT`` per unit; under ``rmw`` the counter's SELECT and UPDATE instead), the single-transaction upper bound, the thread
handoff bound (the same threads handing empty units to one worker thread: what
any writer thread costs before it runs any SQL), Storm as-is
(a Store per thread on Storm's stock SQLite backend), and peewee's
``SqliteQueueDatabase`` when peewee is installed.  Ratios are against the
serial ceiling of the same run, never absolute.  Given a PostgreSQL database,
the same setups run there (psycopg2 for the raw baselines, Storm's own
PostgreSQL backend for "Storm as-is"; no peewee).  A setup stops taking new
units after ``max_seconds`` (the units it got through are what it reports), so
a baseline that fails at its full lock timeout cannot stall the run.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import tempfile
import threading
import time
from _thread import allocate_lock
from collections import deque
from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import pysqlite3.dbapi2 as dbapi
from storm.store import Store

from ..errors import ConfigError
from ..manager import StoreManager
from ..uri import STRATEGIES, PostgresConfig
from ..work_items import LINGER_SECONDS

PAYLOAD = "x" * 100
WORKLOADS = ("insert", "rmw", "mixed")
BASELINES = ("transaction", "handoff", "bulk", "nolog", "storm", "peewee", "rss")
# (the serial ceiling always runs)
READERS = 4            # reader threads of the mixed workload
IDLE_READS = 200       # reads each reader times before the writers start
RSS_STORES = 200       # threads each holding an idle read store, for the RSS figure
READ_PAUSE = 0.001     # seconds a reader pauses between reads
DEFAULT_MAX_SECONDS = 10.0  # per threaded setup
WARM_WAL_PAGES = 1100  # past SQLite's default autocheckpoint of 1000 pages
Progress = Callable[[str, int, int], None]  # (label of the setup starting, done, total)
ITEM, COUNTER = "storemgr_bench_item", "storemgr_bench_counter"
TRANSACTION_ROW = "one transaction (upper bound)"
BULK_ROW = "sqlite_storemgr queue submit_many (bulk)"


@dataclass
class Result:
    name: str
    units: int
    seconds: float
    failed: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    lost_updates: int | None = None
    ratio: float = 0.0
    stopped_early: bool = False  # hit max_seconds: ``units`` is what it got through
    read_latencies: list[float] = field(default_factory=list, repr=False)
    idle_read_latencies: list[float] = field(default_factory=list, repr=False)
    reads_failed: int | None = None
    threads: int | None = None  # set on the threaded rows of a thread-count sweep

    @property
    def per_second(self) -> float:
        return (self.units - self.failed) / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        return _percentile(self.latencies, fraction)

    def summary(self) -> dict[str, Any]:
        figures = {key: value for key, value in asdict(self).items()
                   if not key.endswith("latencies")}
        reads = bool(self.read_latencies)
        figures.update(per_second=round(self.per_second, 1),
                       p50_ms=_ms(self.latencies, 0.5), p99_ms=_ms(self.latencies, 0.99),
                       read_p50_ms=_ms(self.read_latencies, 0.5) if reads else None,
                       read_p99_ms=_ms(self.read_latencies, 0.99) if reads else None,
                       idle_read_p99_ms=_ms(self.idle_read_latencies, 0.99) if reads else None,
                       ratio=round(self.ratio, 2), seconds=round(self.seconds, 3))
        return figures


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _ms(values: list[float], fraction: float) -> float:
    return round(_percentile(values, fraction) * 1000, 3)


class SQLiteTarget:
    """A fresh SQLite file per setup, in WAL mode at the chosen ``synchronous``, its WAL warm.

    In a database in use, commits overwrite a WAL file that a checkpoint has
    reset; in a fresh one every commit grows the file, and each fsync then
    also writes file-system metadata.  So that a setup of a few thousand
    units measures the steady state, as a long run would, every setup's WAL
    is first grown past the autocheckpoint size and checkpointed, and a
    connection held open until `close` (idle: it keeps no snapshot) stops
    SQLite from deleting the file in between.
    """

    begin = "BEGIN IMMEDIATE"

    def __init__(self, path: str, synchronous: str):
        self.path = path
        self.synchronous = synchronous
        self._keeper = keeper = self.connect()
        keeper.execute("PRAGMA journal_mode = wal").fetchall()
        for statement in (f"CREATE TABLE {ITEM} (id INTEGER PRIMARY KEY, payload TEXT)",
                          f"CREATE TABLE {COUNTER} (id INTEGER PRIMARY KEY, n INTEGER)",
                          f"INSERT INTO {COUNTER} VALUES (1, 0)",
                          "CREATE TABLE storemgr_bench_warmup (filler BLOB)",
                          "BEGIN",
                          "INSERT INTO storemgr_bench_warmup WITH RECURSIVE n(i) AS "
                          f"(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {WARM_WAL_PAGES}) "
                          "SELECT zeroblob(4000) FROM n",
                          "COMMIT",
                          "DROP TABLE storemgr_bench_warmup",
                          "PRAGMA wal_checkpoint(PASSIVE)"):
            keeper.execute(statement).fetchall()

    def close(self) -> None:
        self._keeper.close()

    def connect(self) -> Any:
        connection = dbapi.connect(self.path, isolation_level=None)
        connection.execute(f"PRAGMA synchronous = {self.synchronous}")
        return connection

    def sql(self, statement: str) -> str:
        return statement

    def manager_uri(self, strategy: str) -> str:
        return f"sqlite:{self.path}?strategy={strategy}&synchronous={self.synchronous}"

    def storm_database(self) -> Any:
        from storm.databases.sqlite import SQLite
        from storm.uri import URI
        return SQLite(URI(f"sqlite:{self.path}?synchronous={self.synchronous}&journal_mode=wal"))


class PostgresTarget:
    """Fresh benchmark tables per setup in a PostgreSQL database (``synchronous`` is moot)."""

    begin = "BEGIN"

    def __init__(self, config: PostgresConfig):
        self.config = config
        with closing(self.connect()) as connection:
            cursor = connection.cursor()
            for statement in (f"DROP TABLE IF EXISTS {ITEM}, {COUNTER}",
                              f"CREATE TABLE {ITEM} (id BIGSERIAL PRIMARY KEY, payload TEXT)",
                              f"CREATE TABLE {COUNTER} (id INTEGER PRIMARY KEY, n INTEGER)",
                              f"INSERT INTO {COUNTER} VALUES (1, 0)"):
                cursor.execute(statement)

    def connect(self) -> Any:
        from storm.databases.postgres import make_dsn

        from ..backends.postgres import psycopg2_module
        psycopg2 = psycopg2_module()
        from storm.uri import URI
        try:
            connection = psycopg2.connect(make_dsn(URI(self.config.storm_uri.split("?")[0])))
        except psycopg2.OperationalError as error:
            raise ConfigError(f"cannot connect to {self.config.describe()}: "
                              f"{str(error).strip()}") from None
        connection.autocommit = True
        return connection

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def close(self) -> None:
        """Nothing is held between setups."""

    def manager_uri(self, strategy: str) -> str:
        separator = "&" if "?" in self.config.storm_uri else "?"
        return f"{self.config.storm_uri}{separator}strategy={strategy}"

    def storm_database(self) -> Any:
        from storm.databases.postgres import Postgres
        from storm.uri import URI
        return Postgres(URI(self.config.storm_uri))


Target = SQLiteTarget | PostgresTarget


def _counter(target: Target) -> int:
    with closing(target.connect()) as connection:
        cursor = connection.cursor()
        cursor.execute(f"SELECT n FROM {COUNTER} WHERE id = 1")
        count: int = cursor.fetchone()[0]
        return count


def _threaded(name: str, threads: int, units: int, unit: Callable[[], object],
              setup: Callable[[], None] | None = None,
              teardown: Callable[[], None] | None = None, max_seconds: float = math.inf
              ) -> Result:
    """Run ``unit`` ``units`` times spread over ``threads`` threads; count failures.

    Each thread runs ``setup`` before and ``teardown`` after its units.  No
    thread starts a unit after ``max_seconds``.
    """
    per_thread = [units // threads + (i < units % threads) for i in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures = [0] * threads
    start = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        if setup is not None:
            setup()
        start.wait()
        clock = time.perf_counter
        record = latencies[index].append
        stop_at = clock() + max_seconds
        for _ in range(per_thread[index]):
            began = clock()
            if began > stop_at:
                break
            try:
                unit()
            except Exception:
                failures[index] += 1
            record(clock() - began)
        if teardown is not None:
            teardown()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in workers:
        thread.join()
    seconds = time.perf_counter() - began
    done = [x for part in latencies for x in part]
    return Result(name, len(done), seconds, sum(failures), done,
                  stopped_early=len(done) < units)


def _with_readers(run_writers: Callable[[], Result], read: Callable[[], None]) -> Result:
    """``run_writers()`` while `READERS` threads time ``read()``; idle reads come first."""
    idle: list[float] = []
    loaded: list[float] = []
    failed = [0]
    idle_done = threading.Barrier(READERS + 1)
    stop = threading.Event()

    def timed(into: list[float]) -> None:
        began = time.perf_counter()
        try:
            read()
        except Exception:
            failed[0] += 1
        into.append(time.perf_counter() - began)
        time.sleep(READ_PAUSE)

    def reader() -> None:
        mine_idle: list[float] = []
        mine_loaded: list[float] = []
        for _ in range(IDLE_READS):
            timed(mine_idle)
        idle_done.wait()
        while not stop.is_set():
            timed(mine_loaded)
        idle.extend(mine_idle)
        loaded.extend(mine_loaded)

    readers = [threading.Thread(target=reader) for _ in range(READERS)]
    for thread in readers:
        thread.start()
    try:
        idle_done.wait()
        result = run_writers()
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    result.read_latencies, result.idle_read_latencies = loaded, idle
    result.reads_failed = failed[0]
    return result


def serial_ceiling(target: Target, units: int, max_seconds: float = math.inf,
                   workload: str = "insert") -> Result:
    """One connection, one thread, one transaction per unit: what one writer can do.

    The unit is the workload's own (``rmw``: the counter read and written back), so
    a strategy's ratio compares the same work done serially and raw.
    """
    insert = target.sql(f"INSERT INTO {ITEM} (payload) VALUES (?)")
    read = f"SELECT n FROM {COUNTER} WHERE id = 1"
    update = target.sql(f"UPDATE {COUNTER} SET n = ? WHERE id = 1")
    latencies = []
    with closing(target.connect()) as connection:
        cursor = connection.cursor()
        began = time.perf_counter()
        stop_at = began + max_seconds
        for _ in range(units):
            unit_began = time.perf_counter()
            if unit_began > stop_at:
                break
            cursor.execute(target.begin)
            if workload == "rmw":
                cursor.execute(read)
                cursor.execute(update, (cursor.fetchone()[0] + 1,))
            else:
                cursor.execute(insert, (PAYLOAD,))
            cursor.execute("COMMIT")
            latencies.append(time.perf_counter() - unit_began)
        seconds = time.perf_counter() - began
    return Result("serial ceiling (raw, 1 thread)", len(latencies), seconds,
                  latencies=latencies, stopped_early=len(latencies) < units)


def handoff_bound(threads: int, units: int, max_seconds: float = math.inf) -> Result:
    """Threads hand empty units to one worker thread and wait for each: no SQL at all.

    What a writer thread costs before it runs any SQL: a queue append, a wake-up
    of the worker, a wake-up of the caller, each a pass of the GIL.  It is built
    the way the writer queue is (the worker lingers for the last batch's
    callers, then wakes the batch's first caller, and each woken caller the
    next), minus SQL, Storm and futures.  Where it is below the serial ceiling
    (a fast commit, as at ``synchronous=normal``), a writer thread cannot reach
    the ceiling either.
    """
    pending: deque[list[Any]] = deque()
    wake = threading.Condition()
    state = {"wanted": 1, "waiting": False, "stopping": False}

    def wait_for(count: int, timeout: float | None) -> None:
        state["wanted"], state["waiting"] = count, True
        wake.wait(timeout)
        state["waiting"] = False

    def worker() -> None:
        expected = 1
        while True:
            with wake:
                while not pending and not state["stopping"]:
                    wait_for(1, None)
                if not pending:
                    return
                if len(pending) < expected:  # linger for the last batch's callers, as ours does
                    wait_for(expected, LINGER_SECONDS)
                batch = list(pending)
                pending.clear()
                expected = len(batch)
            for waiter, after in zip(batch, batch[1:]):
                waiter[1] = after
            batch[0][0].release()

    def unit() -> None:
        waiter: list[Any] = [allocate_lock(), None]  # [its lock, the waiter to wake after it]
        waiter[0].acquire()
        with wake:
            pending.append(waiter)
            if state["waiting"] and len(pending) >= state["wanted"]:
                state["waiting"] = False
                wake.notify()
        waiter[0].acquire()
        if waiter[1] is not None:
            waiter[1][0].release()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        return _threaded("thread handoff, no SQL (bound)", threads, units, unit,
                         max_seconds=max_seconds)
    finally:
        with wake:
            state["stopping"] = True
            wake.notify()
        thread.join()


def single_transaction(target: Target, units: int) -> Result:
    with closing(target.connect()) as connection:
        cursor = connection.cursor()
        began = time.perf_counter()
        cursor.execute(target.begin)
        cursor.executemany(target.sql(f"INSERT INTO {ITEM} (payload) VALUES (?)"),
                           ((PAYLOAD,),) * units)
        cursor.execute("COMMIT")
        return Result(TRANSACTION_ROW, units, time.perf_counter() - began)


def _insert(store: Store) -> None:
    store.execute(f"INSERT INTO {ITEM} (payload) VALUES (?)", (PAYLOAD,), noresult=True)


def _read(store: Store) -> int:
    value: int = store.execute(f"SELECT n FROM {COUNTER} WHERE id = 1").get_one()[0]
    return value


def _increment(store: Store) -> int:
    value = _read(store) + 1
    store.execute(f"UPDATE {COUNTER} SET n = ? WHERE id = 1", (value,), noresult=True)
    return value


def strategy_run(target: Target, strategy: str, threads: int, units: int, workload: str,
                 max_seconds: float = math.inf) -> Result:
    manager = StoreManager()
    manager.configure("bench", target.manager_uri(strategy))
    fn = _increment if workload == "rmw" else _insert
    submit = manager.submit_write

    def writers() -> Result:
        return _threaded(f"sqlite_storemgr {strategy}", threads, units,
                         lambda: submit(fn).result(), max_seconds=max_seconds)

    def read() -> None:
        if strategy == "queue":  # a read-only store reads in autocommit, keeps no snapshot
            _read(manager.get_store("bench"))
        else:  # a writable store would keep its read snapshot open: one snapshot per read
            manager.submit_read(_read).result()

    try:
        result = _with_readers(writers, read) if workload == "mixed" else writers()
    finally:
        manager.close()
    return _lost(result, target, workload)


def bulk_run(target: Target, units: int) -> Result:
    """One producer hands every unit to ``queue`` at once (`submit_many`), then waits for all."""
    manager = StoreManager()
    manager.configure("bench", target.manager_uri("queue"))
    try:
        began = time.perf_counter()
        futures = manager.submit_many(_insert, [()] * units)
        failed = sum(future.exception() is not None for future in futures)
        seconds = time.perf_counter() - began
    finally:
        manager.close()
    return Result(BULK_ROW, units, seconds, failed)


def logging_off_run(target: Target, threads: int, units: int, workload: str,
                    max_seconds: float = math.inf) -> Result:
    """The ``queue`` setup again with ``logging.disable()``: what the logging costs when off
    (the default configuration's row is ``sqlite_storemgr queue``)."""
    logging.disable(logging.CRITICAL)
    try:
        result = strategy_run(target, "queue", threads, units, workload, max_seconds)
    finally:
        logging.disable(logging.NOTSET)
    result.name = "sqlite_storemgr queue, logging.disable()"
    return result


def reader_store_rss(target: SQLiteTarget, stores: int = RSS_STORES) -> float:
    """KiB of RSS per idle read store: ``stores`` threads each open one and read a row.

    Each thread first runs the same read on a connection of its own and closes it, so
    the stack and heap a thread touches by querying at all are in place before the
    first figure; the second is taken once each holds its store.  Freed heap is given
    back to the system before each figure (glibc's ``malloc_trim``).
    """
    manager = StoreManager()
    manager.configure("bench", target.manager_uri("queue"))
    go, opened, done = threading.Event(), threading.Barrier(stores + 1), threading.Event()
    started = threading.Barrier(stores + 1)
    read = f"SELECT n FROM {COUNTER} WHERE id = 1"

    def holder() -> None:
        with closing(target.connect()) as connection:
            connection.execute(read).fetchall()
        started.wait()
        go.wait()
        try:
            _read(manager.get_store("bench"))
        finally:
            opened.wait()
            done.wait()

    holders = [threading.Thread(target=holder) for _ in range(stores)]
    try:
        for thread in holders:
            thread.start()
        started.wait()
        before = _rss_bytes()
        go.set()
        opened.wait()
        after = _rss_bytes()
    finally:
        go.set()
        done.set()
        for thread in holders:
            thread.join()
        manager.close()
    return (after - before) / stores / 1024


def _rss_bytes() -> int:
    """This process's resident set size after freed heap is given back (Linux; else 0)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figure keeps freed heap
        pass
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def storm_as_is(target: Target, threads: int, units: int, workload: str,
                max_seconds: float = math.inf) -> Result:
    """Storm's stock backend, one Store per thread, ZStorm style, defaults."""
    from storm.store import Store

    database = target.storm_database()
    local = threading.local()
    fn = _increment if workload == "rmw" else _insert

    def unit() -> None:
        store = local.store
        try:
            fn(store)
            store.commit()
        except Exception:
            store.rollback()
            raise

    result = _threaded("Storm as-is (Store per thread)", threads, units, unit,
                       setup=lambda: setattr(local, "store", Store(database)),
                       teardown=lambda: local.store.close(), max_seconds=max_seconds)
    return _lost(result, target, workload)


def peewee_queue(target: SQLiteTarget, threads: int, units: int, workload: str,
                 max_seconds: float = math.inf) -> Result | None:
    """peewee's SqliteQueueDatabase: a writer thread, one statement per item."""
    try:
        from playhouse.sqliteq import SqliteQueueDatabase
    except ImportError:
        return None
    if workload == "rmw":
        return None  # one statement per item: a read-then-write unit cannot be expressed
    database = SqliteQueueDatabase(
        target.path, autostart=True, results_timeout=60,
        pragmas={"journal_mode": "wal", "synchronous": target.synchronous})
    sql = f"INSERT INTO {ITEM} (payload) VALUES (?)"
    try:
        return _threaded("peewee SqliteQueueDatabase", threads, units,
                         lambda: database.execute_sql(sql, (PAYLOAD,)).fetchall(),
                         max_seconds=max_seconds)
    finally:
        database.stop()
        database.close()


def run(threads: int | tuple[int, ...] = 16, units: int = 10000, workload: str = "insert",
        synchronous: str = "full", strategies: tuple[str, ...] = STRATEGIES,
        directory: str | None = None, progress: Progress = lambda *_: None,
        baselines: tuple[str, ...] = BASELINES, max_seconds: float = DEFAULT_MAX_SECONDS,
        postgres: PostgresConfig | None = None) -> list[Result]:
    """Run the serial ceiling, the baselines and the strategies, each on fresh tables.

    ``threads`` may be several counts (a sweep): the threaded setups then run
    at each count, their rows saying which.  On SQLite every setup gets a new
    file in a temporary directory (under ``directory``); with ``postgres`` every
    setup recreates the benchmark tables in that database.
    ``progress(label, done, total)`` is called before each setup and once at the end.
    """
    counts = (threads,) if isinstance(threads, int) else tuple(threads)
    steps: list[tuple[str, Callable[[Target], Result | None]]] = [
        ("serial ceiling", lambda target: serial_ceiling(target, units, max_seconds, workload))]
    if "transaction" in baselines:
        steps.append(("one transaction", lambda target: single_transaction(target, units)))
    if "bulk" in baselines:
        steps.append(("queue submit_many", lambda target: bulk_run(target, units)))
    for count in counts:
        steps += _threaded_steps(count, units, workload, strategies, baselines, max_seconds,
                                 postgres is not None, sweep=len(counts) > 1)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        for index, (label, step) in enumerate(steps):
            progress(label, index, len(steps))
            target = (PostgresTarget(postgres) if postgres is not None else
                      SQLiteTarget(os.path.join(tmp, f"{index}.db"), synchronous))
            try:
                result = step(target)
            finally:
                target.close()
            if result is not None:
                results.append(result)
        progress("done", len(steps), len(steps))
    ceiling = results[0].per_second
    for result in results:
        result.ratio = result.per_second / ceiling if ceiling else 0.0
    return results


def _threaded_steps(threads: int, units: int, workload: str, strategies: tuple[str, ...],
                    baselines: tuple[str, ...], max_seconds: float, postgres: bool, sweep: bool
                    ) -> list[tuple[str, Callable[[Target], Result | None]]]:
    """The setups that run at a thread count; in a sweep their rows carry the count."""
    threaded = (threads, units, workload, max_seconds)
    steps: list[tuple[str, Callable[[Target], Result | None]]] = []
    if "handoff" in baselines:
        steps.append(("thread handoff", lambda target: handoff_bound(threads, units, max_seconds)))
    steps += [(f"sqlite_storemgr {strategy}",
               lambda target, strategy=strategy: strategy_run(  # type: ignore[misc]  # binds the loop's strategy
                   target, strategy, *threaded))
              for strategy in strategies]
    if "nolog" in baselines:
        steps.append(("queue, logging off", lambda target: logging_off_run(target, *threaded)))
    if "storm" in baselines:
        steps.append(("Storm as-is", lambda target: storm_as_is(target, *threaded)))
    if "peewee" in baselines and workload != "rmw" and not postgres:
        steps.append(("peewee", lambda target: peewee_queue(  # not postgres: a SQLiteTarget
            target, *threaded)))  # type: ignore[arg-type]
    if not sweep:
        return steps

    def counted(step: Callable[[Target], Result | None]) -> Callable[[Target], Result | None]:
        def run_counted(target: Target) -> Result | None:
            result = step(target)
            if result is not None:
                result.threads = threads
            return result
        return run_counted

    return [(f"{label}, {threads} threads", counted(step)) for label, step in steps]


def measure_reader_rss(synchronous: str, directory: str | None = None) -> float:
    """`reader_store_rss` on a fresh SQLite file (in a temporary directory under ``directory``)."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        target = SQLiteTarget(os.path.join(tmp, "rss.db"), synchronous)
        try:
            return reader_store_rss(target)
        finally:
            target.close()


def logging_cost(results: list[Result]) -> list[tuple[int | None, float]]:
    """(threads, queue's rate with logging off / with the default configuration) per count."""
    rates = {(r.threads, r.name): r.per_second for r in results}
    return [(threads, rate / rates[(threads, "sqlite_storemgr queue")])
            for (threads, name), rate in rates.items()
            if name == "sqlite_storemgr queue, logging.disable()"
            and rates.get((threads, "sqlite_storemgr queue"))]


def _lost(result: Result, target: Target, workload: str) -> Result:
    if workload == "rmw":
        result.lost_updates = (result.units - result.failed) - _counter(target)
    return result


def format_table(results: list[Result], ratio_title: str = "x ceiling",
                 unit_title: str = "units/s") -> str:
    """One table; the lost-update and reader columns appear when the workload has them.

    ``ratio_title`` names what the ratios are against; ``unit_title`` what a unit is.
    """
    def ms(values: list[float], fraction: float) -> str:
        return f"{_percentile(values, fraction) * 1000:.3f}"

    columns: list[tuple[str, int, Callable[[Result], str]]] = [
        ("setup", -42, lambda r: r.name)]
    if any(r.threads is not None for r in results):
        columns.append(("threads", 7, lambda r: "" if r.threads is None else str(r.threads)))
    columns += [
        (unit_title, 10, lambda r: f"{r.per_second:.0f}{'*' if r.stopped_early else ''}"),
        (ratio_title, 9, lambda r: f"{r.ratio:.2f}"),
        ("failed", 7, lambda r: str(r.failed)),
        ("p50 ms", 8, lambda r: ms(r.latencies, 0.5)),
        ("p99 ms", 8, lambda r: ms(r.latencies, 0.99)),
    ]
    if any(r.lost_updates is not None for r in results):
        columns.append(("lost", 5,
                        lambda r: "" if r.lost_updates is None else str(r.lost_updates)))
    if any(r.read_latencies for r in results):
        columns += [
            ("read p50", 9, lambda r: ms(r.read_latencies, 0.5) if r.read_latencies else ""),
            ("read p99", 9, lambda r: ms(r.read_latencies, 0.99) if r.read_latencies else ""),
            ("idle p99", 9, lambda r: ms(r.idle_read_latencies, 0.99) if r.read_latencies else ""),
            ("rd fail", 7, lambda r: "" if r.reads_failed is None else str(r.reads_failed)),
        ]

    def row(texts: list[str]) -> str:  # a negative width aligns left
        return " ".join(text.ljust(-width) if width < 0 else text.rjust(width)
                        for text, (_, width, _) in zip(texts, columns)).rstrip()

    header = row([title for title, _, _ in columns])
    lines = [header, "-" * len(header)]
    lines += [row([cell(r) for _, _, cell in columns]) for r in results]
    if any(r.stopped_early for r in results):
        lines.append("* stopped after max_seconds; the rate is over the units it got through")
    if any(r.read_latencies for r in results):
        lines.append(f"read columns: {READERS} reader threads, ms per read under write load; "
                     "idle p99 measured before the writers started")
    return "\n".join(lines)
