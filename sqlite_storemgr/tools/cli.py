"""``python -m sqlite_storemgr`` (also the ``storemgr`` command): bench, info, check."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from contextlib import closing, contextmanager
from importlib import metadata
from typing import Any, Callable, Iterator, TypeVar

import pysqlite3.dbapi2 as dbapi
import storm

from .. import __version__
from . import bench, django_bench
from ..backends.sqlite import SQLiteDatabase
from ..errors import ConfigError
from ..uri import STRATEGIES, SYNCHRONOUS, PostgresConfig, SQLiteConfig, parse_uri

N = TypeVar("N", int, float)

SQLITE_MEANING = {
    "queue": "one writer thread owns the only write connection and group-commits queued "
             "units; every thread reads through its own read-only store",
    "single": "one worker thread runs every read and write; get_store is refused",
    "mutex": "each thread writes through its own store under a per-database mutex, "
             "BEGIN IMMEDIATE",
    "threadlocal": "each thread reads and writes through its own store, BEGIN IMMEDIATE; "
                   "SQLite's lock and the on_locked policy decide",
}
POSTGRES_LOCKED = ("a serialization failure, a deadlock or a lock not had within timeout "
                   "(lock_timeout) counts as locked, and the on_locked policy decides")
POSTGRES_MEANING = {
    "queue": "one writer thread owns the only write connection and group-commits queued "
             "units, so units never conflict with each other; every thread reads through "
             "its own read-only store in autocommit mode",
    "single": "one worker thread runs every read and write; get_store is refused",
    "mutex": "each thread writes through its own connection under a per-database mutex; "
             + POSTGRES_LOCKED,
    "threadlocal": "the default on PostgreSQL: each thread reads and writes through its own "
                   "connection, concurrently; " + POSTGRES_LOCKED,
}
PEEWEE_INSTALL = "pip install 'sqlite_storemgr[bench]'"


def _names(option: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list of names from ``allowed`` ("none" for none)."""
    names = () if text == "none" else tuple(name for name in text.split(",") if name)
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise ConfigError(f"option {option}: unknown name {unknown[0]!r}; "
                          f"use some of: {', '.join(allowed)} (comma-separated) or none")
    return names


def _peewee_problem(workload: str, postgres: bool) -> str | None:
    """Why the peewee baseline cannot run in this benchmark, or None when it can."""
    if postgres:
        return "peewee's SqliteQueueDatabase runs on SQLite only"
    if workload == "rmw":
        return ("peewee's SqliteQueueDatabase runs one statement per item: it cannot "
                "express a read-then-write unit")
    try:
        importlib.import_module("playhouse.sqliteq")
    except ImportError:
        return f"peewee is not installed; {PEEWEE_INSTALL} brings it"
    return None


def _baselines(args: argparse.Namespace, postgres: bool) -> tuple[str, ...]:
    """The baselines to run, decided before any runs.

    One asked for with --baselines that cannot run is an error; from the
    default list it is skipped with a note on stderr, never silently.
    """
    asked = args.baselines is not None
    baselines = (_names("--baselines", args.baselines, bench.BASELINES) if asked
                 else bench.BASELINES)
    if postgres and "rss" in baselines:
        problem: str | None = "it measures SQLite read stores; a PostgreSQL run has none"
        if asked:
            raise ConfigError(f"baseline rss cannot run: {problem}")
        print(f"storemgr: skipping the rss baseline: {problem}", file=sys.stderr)
        baselines = tuple(name for name in baselines if name != "rss")
    problem = _peewee_problem(args.workload, postgres) if "peewee" in baselines else None
    if problem is None:
        return baselines
    if asked:
        raise ConfigError(f"baseline peewee cannot run: {problem}")
    print(f"storemgr: skipping the peewee baseline: {problem}", file=sys.stderr)
    return tuple(name for name in baselines if name != "peewee")


def _run_directory(config: SQLiteConfig) -> str:
    """The existing directory of a ``sqlite:`` file, where bench makes its runs' files."""
    assert config.path is not None  # `_sqlite_file` refused the in-memory database
    directory = os.path.dirname(os.path.abspath(config.path))
    if not os.path.isdir(directory):
        problem = (f"{directory!r} is not a directory" if os.path.exists(directory)
                   else f"the directory {directory!r} does not exist")
        raise ConfigError(f"bench: {problem}; name a file in an existing directory")
    return directory


def _bench(args: argparse.Namespace) -> int:
    strategies = _names("--strategies", args.strategies, STRATEGIES)
    if args.django:
        return _bench_django(args, strategies)
    directory = postgres = None
    database = f"SQLite {dbapi.sqlite_version}"
    config = parse_uri(args.uri) if args.uri else None
    if isinstance(config, PostgresConfig):
        postgres = config  # every setup recreates the benchmark tables there
        database = config.describe()
    elif args.uri:
        directory = _run_directory(_sqlite_file(args.uri, "bench"))
    baselines = _baselines(args, postgres is not None)
    threads = args.threads[0] if len(args.threads) == 1 else args.threads
    with _progress(args) as progress:
        results = bench.run(threads, args.units, args.workload, args.synchronous,
                            strategies, directory, progress=progress, baselines=baselines,
                            max_seconds=args.max_seconds, postgres=postgres)
        rss = None
        if "rss" in baselines:
            progress("reader store RSS", 0, 1)
            rss = bench.measure_reader_rss(args.synchronous, directory)
    notes = _bench_notes(results, rss)
    if args.json:
        print(json.dumps({"workload": args.workload,
                          "threads": threads if isinstance(threads, int) else list(threads),
                          "units": args.units, "synchronous": args.synchronous,
                          "database": database, "sqlite_version": dbapi.sqlite_version,
                          "results": [result.summary() for result in results], **notes},
                         indent=2))
    else:
        counts = ",".join(map(str, args.threads))
        print(f"workload={args.workload} threads={counts} units={args.units} "
              f"synchronous={args.synchronous} {database}")
        print(bench.format_table(results))
        for line in _note_lines(notes):
            print(line)
    return 0


def _bench_notes(results: list[bench.Result], rss: float | None) -> dict[str, Any]:
    """The figures printed under the table: bulk against one transaction, logging's cost, RSS."""
    rates = {result.name: result.per_second for result in results if result.threads is None}
    bulk, one = rates.get(bench.BULK_ROW), rates.get(bench.TRANSACTION_ROW)
    return {"bulk_vs_transaction": round(bulk / one, 4) if bulk and one else None,
            "logging_off_vs_default": [{"threads": threads, "ratio": round(ratio, 3)}
                                       for threads, ratio in bench.logging_cost(results)],
            "reader_store_rss_kib": None if rss is None else round(rss, 1)}


def _note_lines(notes: dict[str, Any]) -> list[str]:
    lines = []
    if notes["bulk_vs_transaction"] is not None:
        lines.append(f"bulk: submit_many runs at {notes['bulk_vs_transaction']:.3f}x "
                     "one transaction (the upper bound)")
    for cost in notes["logging_off_vs_default"]:
        where = "" if cost["threads"] is None else f" at {cost['threads']} threads"
        lines.append(f"logging: queue with logging.disable() / default configuration"
                     f"{where}: {cost['ratio']:.2f}")
    if notes["reader_store_rss_kib"] is not None:
        lines.append(f"reader stores: {notes['reader_store_rss_kib']:.1f} KiB RSS per idle "
                     f"thread store ({bench.RSS_STORES} threads, each after one read)")
    return lines


def _bench_django(args: argparse.Namespace, strategies: tuple[str, ...]) -> int:
    """``bench --django``: the request mix of `django_bench` on the stock backend and ours."""
    if args.baselines is not None or args.workload != "insert":
        raise ConfigError("bench --django runs its own request mix against Django's stock "
                          "SQLite backend; --workload and --baselines do not apply")
    config = parse_uri(args.uri) if args.uri else None
    if isinstance(config, PostgresConfig):
        raise ConfigError("bench --django runs on SQLite files only")
    if len(args.threads) > 1:
        raise ConfigError("bench --django runs at one thread count; --threads 1,4,... "
                          "sweeps the other workloads")
    threads = args.threads[0]
    directory = _run_directory(_sqlite_file(args.uri, "bench")) if args.uri else None
    with _progress(args) as progress:
        results = django_bench.run(threads, args.units, args.synchronous, strategies,
                                   directory, progress=progress, max_seconds=args.max_seconds)
    if args.json:
        print(json.dumps({"django": True, "threads": threads, "requests": args.units,
                          "synchronous": args.synchronous, "sqlite_version": dbapi.sqlite_version,
                          "mix": django_bench.MIX,
                          "results": [result.summary() for result in results]}, indent=2))
    else:
        print(f"django requests={args.units} threads={threads} "
              f"synchronous={args.synchronous} SQLite {dbapi.sqlite_version}; {django_bench.MIX}")
        print(bench.format_table(results, ratio_title="x stock", unit_title="requests/s"))
    return 0


@contextmanager
def _progress(args: argparse.Namespace) -> Iterator[bench.Progress]:
    """A rich progress bar on a terminal's stderr; plain lines without rich; else nothing."""
    if args.json or not sys.stderr.isatty():
        yield lambda label, done, total: None
        return
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, \
            TextColumn, TimeElapsedColumn
    except ImportError:
        def lines(label: str, done: int, total: int) -> None:
            if done < total:
                print(f"  [{done + 1}/{total}] running: {label}", file=sys.stderr)
        yield lines
        return
    # A low refresh rate: the bar's thread competes for the GIL with the measured threads.
    with Progress(SpinnerColumn(), TextColumn("{task.description:32}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True),
                  transient=True, refresh_per_second=2) as bar:
        task = bar.add_task("starting", total=None)
        yield lambda label, done, total: bar.update(
            task, description=label, completed=done, total=total)


def _sqlite_file(uri: str, command: str) -> SQLiteConfig:
    """The config of a ``sqlite:`` URI that names a file; anything else is refused."""
    config = parse_uri(uri)
    if not isinstance(config, SQLiteConfig):
        raise ConfigError(f"{command} works on sqlite: files; {config.describe()} is not one")
    if config.path is None:
        raise ConfigError(f"{command} needs a database file, not the in-memory database")
    return config


def _require_file(path: str, command: str) -> None:
    """Refuse ``path`` unless it is an existing file: the commands never create one."""
    if not os.path.exists(path):
        raise ConfigError(f"no database file at {path!r}; {command} never creates one")
    if os.path.isdir(path):
        raise ConfigError(f"{path!r} is a directory, not a database file")


def _pragmas_in_effect(config: SQLiteConfig) -> dict[str, Any]:
    """The pragmas a manager's connection has, by the names URIs use, read without changes.

    The connection is opened read-only, so the file's journal mode is reported
    as it is rather than switched; a missing file is refused, not created.
    """
    if config.path is not None:
        _require_file(config.path, "info")
    database = SQLiteDatabase(config)
    try:
        with closing(database.raw_connect(read_only=True)) as connection:
            journal_mode, synchronous, foreign_keys, busy_timeout = (
                connection.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout"))
    except dbapi.DatabaseError as error:  # Storm's message names the file and the reason
        raise ConfigError(str(error)) from None
    finally:
        database.dispose()
    return {"journal_mode": journal_mode, "synchronous": SYNCHRONOUS[synchronous],
            "foreign_keys": "on" if foreign_keys else "off", "busy_timeout_ms": busy_timeout}


def _info(args: argparse.Namespace) -> int:
    config = parse_uri(args.uri)
    sqlite = isinstance(config, SQLiteConfig)
    info = {
        "database": (config.path or ":memory:") if sqlite else config.describe(),
        "strategy": config.strategy, "timeout": config.timeout,
        "on_locked": config.on_locked, "batch": config.batch, "queue_size": config.queue_size,
        **({"pragmas": _pragmas_in_effect(config)} if isinstance(config, SQLiteConfig) else
           {"isolation": config.isolation}),
        "versions": {"sqlite": dbapi.sqlite_version, "pysqlite3": metadata.version("pysqlite3"),
                     "storm": storm.version},
        "meaning": (SQLITE_MEANING if sqlite else POSTGRES_MEANING)[config.strategy],
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            print(f"{key:12} {value}")
    return 0


def _check(args: argparse.Namespace) -> int:
    config = _sqlite_file(args.uri, "check")
    assert config.path is not None  # `_sqlite_file` refused the in-memory database
    _require_file(config.path, "check")
    wal = config.path + "-wal"
    try:
        with closing(dbapi.connect(config.path, isolation_level=None,
                                   timeout=config.timeout)) as connection:
            rows = [row[0] for row in connection.execute("PRAGMA integrity_check").fetchall()]
            if args.checkpoint:
                busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if busy:
                    print("checkpoint: busy (a reader or writer is active); WAL not truncated")
    except dbapi.DatabaseError as error:
        raise ConfigError(f"{config.path}: not a usable SQLite database: {error}") from None
    wal_size = os.path.getsize(wal) if os.path.exists(wal) else 0
    ok = rows == ["ok"]
    print(f"integrity_check: {'ok' if ok else '; '.join(rows)}")
    print(f"wal_bytes: {wal_size}")
    return 0 if ok else 1


def _positive(kind: type[N]) -> Callable[[str], N]:
    """An argparse type: a number of ``kind`` greater than 0."""
    def convert(text: str) -> N:
        value = kind(text)
        if not value > 0:
            raise ValueError(text)
        return value
    convert.__name__ = f"positive {kind.__name__}"  # argparse names it in its message
    return convert


def _thread_counts(text: str) -> tuple[int, ...]:
    """An argparse type: one thread count or several, comma-separated (a sweep)."""
    counts = tuple(_positive(int)(part) for part in text.split(","))
    if len(set(counts)) < len(counts):
        raise ValueError(text)
    return counts


_thread_counts.__name__ = "comma-separated positive int"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="storemgr", description="Thread-safe Storm stores on SQLite: benchmark and inspect.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("bench", help="benchmark every strategy against baselines",
                              description=bench.__doc__.split("\n\n")[0])
    run.add_argument("uri", nargs="?", help="a sqlite: URI whose directory holds the runs "
                     "(default: a temporary directory), or a postgres:// URI whose database "
                     "gets the benchmark tables")
    run.add_argument("--threads", type=_thread_counts, default=(16,),
                     help="threads per setup, or several counts comma-separated (e.g. "
                     "1,4,16,64,256): the threaded setups then run at each, one table")
    run.add_argument("--units", type=_positive(int), default=10000, help="units per setup")
    run.add_argument("--workload", choices=bench.WORKLOADS, default="insert",
                     help="insert: one INSERT per unit; rmw: read a counter, write it back "
                     "plus one; mixed: inserts while reader threads time their reads")
    run.add_argument("--synchronous", choices=SYNCHRONOUS, default="full")
    run.add_argument("--strategies", default=",".join(STRATEGIES),
                     help="comma-separated (default: all)")
    run.add_argument("--baselines",
                     help=f"comma-separated from {','.join(bench.BASELINES)}, or none "
                     "(default: all, skipping peewee with a note where it cannot run; asked "
                     "for, that is an error); the serial ceiling always runs")
    run.add_argument("--max-seconds", type=_positive(float), default=bench.DEFAULT_MAX_SECONDS,
                     help="a setup starts no unit after this many seconds "
                     "(default: %(default)s)")
    run.add_argument("--django", action="store_true",
                     help="instead: a Django request mix (in-process WSGI calls) through "
                     "Django's stock SQLite backend and the sqlite_storemgr.django engine "
                     "under each strategy; --units is the requests per setup")
    run.add_argument("--json", action="store_true", help="machine-readable output")
    run.set_defaults(handler=_bench)

    info = commands.add_parser(
        "info", help="resolved configuration and pragmas in effect",
        description="What a URI resolves to: its options, the pragmas a manager's connection "
                    "has on the file (read-only: the file is neither created nor converted), "
                    "the library versions, and what the strategy means there. A postgres:// "
                    "URI is described without connecting.")
    info.add_argument("uri", help="a sqlite: URI naming an existing database file (sqlite: "
                      "alone: the in-memory database), or a postgres:// URI")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(handler=_info)

    check = commands.add_parser(
        "check", help="integrity check and WAL size",
        description="PRAGMA integrity_check on a SQLite file, and the size of its WAL. Exit "
                    "status 1 when the check finds damage, 2 when the file cannot be checked.")
    check.add_argument("uri", help="a sqlite: URI naming an existing database file")
    check.add_argument("--checkpoint", action="store_true", help="truncate the WAL")
    check.set_defaults(handler=_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except ConfigError as error:
        print(f"storemgr: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
