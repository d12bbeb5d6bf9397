"""The project's benchmark: every strategy against baselines, measured in one run.

Workloads (T threads, each unit one ~100-byte row):

- ``insert``: a unit is one INSERT;
- ``rmw``: a unit reads a counter and writes it back plus one (read-then-write);
  lost updates are the units acknowledged minus the final counter.

Baselines: the serial ceiling (raw pysqlite3, one thread, ``BEGIN IMMEDIATE;
INSERT; COMMIT`` per unit), the single-transaction upper bound, Storm as-is
(a Store per thread on Storm's stock SQLite backend), and peewee's
``SqliteQueueDatabase`` when peewee is installed.  Ratios are against the
serial ceiling of the same run, never absolute.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import pysqlite3.dbapi2 as dbapi

from .manager import StoreManager

PAYLOAD = "x" * 100
STRATEGIES = ("queue", "single", "mutex", "threadlocal")
SCHEMA = ("CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY, payload TEXT)",
          "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER)",
          "INSERT OR IGNORE INTO counter VALUES (1, 0)")


@dataclass
class Result:
    name: str
    units: int
    seconds: float
    failed: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    lost_updates: int | None = None
    ratio: float = 0.0

    @property
    def per_second(self) -> float:
        return (self.units - self.failed) / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def summary(self) -> dict:
        figures = asdict(self)
        del figures["latencies"]
        figures.update(per_second=round(self.per_second, 1),
                       p50_ms=round(self.percentile(0.5) * 1000, 3),
                       p99_ms=round(self.percentile(0.99) * 1000, 3),
                       ratio=round(self.ratio, 2), seconds=round(self.seconds, 3))
        return figures


def _prepare(path: str, synchronous: str) -> None:
    connection = dbapi.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = wal")
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    for statement in SCHEMA:
        connection.execute(statement)
    connection.close()


def _counter(path: str) -> int:
    connection = dbapi.connect(path)
    try:
        return connection.execute("SELECT n FROM counter WHERE id = 1").fetchone()[0]
    finally:
        connection.close()


def _threaded(name: str, threads: int, units: int, unit: Callable[[], None],
              setup: Callable[[], None] | None = None) -> Result:
    """Run ``unit`` ``units`` times spread over ``threads`` threads; count failures."""
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
        for _ in range(per_thread[index]):
            began = clock()
            try:
                unit()
            except Exception:
                failures[index] += 1
            record(clock() - began)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in workers:
        thread.join()
    seconds = time.perf_counter() - began
    return Result(name, units, seconds, sum(failures), [x for part in latencies for x in part])


def serial_ceiling(path: str, units: int, synchronous: str) -> Result:
    connection = dbapi.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    latencies = []
    began = time.perf_counter()
    for _ in range(units):
        unit_began = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO item (payload) VALUES (?)", (PAYLOAD,))
        connection.execute("COMMIT")
        latencies.append(time.perf_counter() - unit_began)
    result = Result("serial ceiling (raw, 1 thread)", units, time.perf_counter() - began,
                    latencies=latencies)
    connection.close()
    return result


def single_transaction(path: str, units: int, synchronous: str) -> Result:
    connection = dbapi.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    began = time.perf_counter()
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany("INSERT INTO item (payload) VALUES (?)", ((PAYLOAD,),) * units)
    connection.execute("COMMIT")
    result = Result("one transaction (upper bound)", units, time.perf_counter() - began)
    connection.close()
    return result


def _insert(store) -> None:
    store.execute("INSERT INTO item (payload) VALUES (?)", (PAYLOAD,), noresult=True)


def _increment(store) -> int:
    value = store.execute("SELECT n FROM counter WHERE id = 1").get_one()[0] + 1
    store.execute("UPDATE counter SET n = ? WHERE id = 1", (value,), noresult=True)
    return value


def strategy_run(path: str, strategy: str, threads: int, units: int, workload: str,
                 synchronous: str) -> Result:
    manager = StoreManager()
    manager.configure("bench", f"sqlite:{path}?strategy={strategy}&synchronous={synchronous}")
    fn = _increment if workload == "rmw" else _insert
    submit = manager.submit_write
    try:
        return _threaded(f"sqlite_storemgr {strategy}", threads, units,
                         lambda: submit(fn).result())
    finally:
        manager.close()


def storm_as_is(path: str, threads: int, units: int, workload: str, synchronous: str) -> Result:
    """Storm's stock SQLite backend, one Store per thread, ZStorm style, defaults."""
    from storm.databases.sqlite import SQLite
    from storm.store import Store
    from storm.uri import URI

    database = SQLite(URI(f"sqlite:{path}?synchronous={synchronous}&journal_mode=wal"))
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

    return _threaded("Storm as-is (Store per thread)", threads, units, unit,
                     setup=lambda: setattr(local, "store", Store(database)))


def peewee_queue(path: str, threads: int, units: int, workload: str,
                 synchronous: str) -> Result | None:
    """peewee's SqliteQueueDatabase: a writer thread, one statement per item."""
    try:
        from playhouse.sqliteq import SqliteQueueDatabase
    except ImportError:
        return None
    if workload == "rmw":
        return None  # one statement per item: a read-then-write unit cannot be expressed
    database = SqliteQueueDatabase(path, autostart=True, results_timeout=60,
                                   pragmas={"journal_mode": "wal", "synchronous": synchronous})
    sql = "INSERT INTO item (payload) VALUES (?)"
    try:
        return _threaded("peewee SqliteQueueDatabase", threads, units,
                         lambda: database.execute_sql(sql, (PAYLOAD,)).fetchall())
    finally:
        database.stop()
        database.close()


def run(threads: int = 16, units: int = 4000, workload: str = "insert",
        synchronous: str = "full", strategies: tuple[str, ...] = STRATEGIES,
        directory: str | None = None, progress: Callable[[str], None] = lambda _: None
        ) -> list[Result]:
    """Run the baselines and the strategies, each on a fresh database file."""
    results: list[Result] = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        def fresh(label: str) -> str:
            path = os.path.join(tmp, f"{len(results)}-{label.split()[0]}.db")
            _prepare(path, synchronous)
            progress(label)
            return path

        results.append(serial_ceiling(fresh("serial"), units, synchronous))
        results.append(single_transaction(fresh("single-tx"), units, synchronous))
        for strategy in strategies:
            path = fresh(strategy)
            result = strategy_run(path, strategy, threads, units, workload, synchronous)
            _lost(result, path, workload)
            results.append(result)
        path = fresh("storm")
        result = storm_as_is(path, threads, units, workload, synchronous)
        _lost(result, path, workload)
        results.append(result)
        result = peewee_queue(fresh("peewee"), threads, units, workload, synchronous)
        if result is not None:
            results.append(result)
    ceiling = results[0].per_second
    for result in results:
        result.ratio = result.per_second / ceiling if ceiling else 0.0
    return results


def _lost(result: Result, path: str, workload: str) -> None:
    if workload == "rmw":
        result.lost_updates = (result.units - result.failed) - _counter(path)


def format_table(results: list[Result]) -> str:
    header = f"{'setup':34} {'units/s':>10} {'x ceiling':>9} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5}"
    lines = [header, "-" * len(header)]
    for r in results:
        lost = "" if r.lost_updates is None else str(r.lost_updates)
        lines.append(f"{r.name:34} {r.per_second:10.0f} {r.ratio:9.2f} {r.failed:7d} "
                     f"{r.percentile(0.5) * 1000:8.3f} {r.percentile(0.99) * 1000:8.3f} {lost:>5}")
    return "\n".join(lines)
