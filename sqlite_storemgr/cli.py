"""``python -m sqlite_storemgr`` (also the ``storemgr`` command): bench, info, check."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import closing, contextmanager
from importlib import metadata
from typing import Callable, Iterator

import pysqlite3.dbapi2 as dbapi
import storm

from . import bench
from .backend import SQLiteDatabase
from .errors import ConfigError
from .uri import STRATEGIES, SYNCHRONOUS, PostgresConfig, SQLiteConfig, parse_uri

STRATEGY_MEANING = {
    "queue": "one writer thread owns the only write connection and group-commits queued "
             "units; every thread reads through its own read-only store",
    "single": "one worker thread runs every read and write; get_store is refused",
    "mutex": "each thread writes through its own store under a per-database mutex, "
             "BEGIN IMMEDIATE",
    "threadlocal": "each thread reads and writes through its own store, BEGIN IMMEDIATE; "
                   "SQLite's lock and the on_locked policy decide",
}


def _names(option: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list of names from ``allowed`` ("none" for none)."""
    names = () if text == "none" else tuple(name for name in text.split(",") if name)
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise ConfigError(f"option {option}: unknown name {unknown[0]!r}; "
                          f"use some of: {', '.join(allowed)} (comma-separated) or none")
    return names


def _bench(args: argparse.Namespace) -> int:
    strategies = _names("--strategies", args.strategies, STRATEGIES)
    baselines = _names("--baselines", args.baselines, bench.BASELINES)
    directory = postgres = None
    database = f"SQLite {dbapi.sqlite_version}"
    config = parse_uri(args.uri) if args.uri else None
    if isinstance(config, PostgresConfig):
        postgres = config  # every setup recreates the benchmark tables there
        database = config.describe()
    elif args.uri:
        config = _sqlite_file(args.uri, "bench")  # its directory holds the runs
        directory = os.path.dirname(os.path.abspath(config.path))
    with _progress(args) as progress:
        results = bench.run(args.threads, args.units, args.workload, args.synchronous,
                            strategies, directory, progress=progress, baselines=baselines,
                            max_seconds=args.max_seconds, postgres=postgres)
    if args.json:
        print(json.dumps({"workload": args.workload, "threads": args.threads,
                          "units": args.units, "synchronous": args.synchronous,
                          "database": database, "sqlite_version": dbapi.sqlite_version,
                          "results": [result.summary() for result in results]}, indent=2))
    else:
        print(f"workload={args.workload} threads={args.threads} units={args.units} "
              f"synchronous={args.synchronous} {database}")
        print(bench.format_table(results))
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


def _pragmas_in_effect(config: SQLiteConfig) -> dict:
    """The pragmas a manager's connection has, read without changing the file.

    The connection is opened read-only, so the file's journal mode is reported
    as it is rather than switched; a missing file is refused, not created.
    """
    if config.path is not None and not os.path.exists(config.path):
        raise ConfigError(f"no database file at {config.path!r}; info never creates one")
    database = SQLiteDatabase(config)
    connection = database.raw_connect(read_only=True)
    try:
        return {name: connection.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
    finally:
        connection.close()
        database.dispose()


def _info(args: argparse.Namespace) -> int:
    config = parse_uri(args.uri)
    sqlite = isinstance(config, SQLiteConfig)
    info = {
        "database": (config.path or ":memory:") if sqlite else config.describe(),
        "strategy": config.strategy, "timeout": config.timeout,
        "on_locked": config.on_locked, "batch": config.batch, "queue_size": config.queue_size,
        **({"pragmas": _pragmas_in_effect(config)} if sqlite else
           {"isolation": config.isolation}),
        "versions": {"sqlite": dbapi.sqlite_version, "pysqlite3": metadata.version("pysqlite3"),
                     "storm": storm.version},
        "meaning": STRATEGY_MEANING[config.strategy],
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
    if not os.path.exists(config.path):
        raise ConfigError(f"no database file at {config.path!r}")
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
        print(f"{config.path}: not a usable SQLite database: {error}")
        return 2
    wal_size = os.path.getsize(wal) if os.path.exists(wal) else 0
    ok = rows == ["ok"]
    print(f"integrity_check: {'ok' if ok else '; '.join(rows)}")
    print(f"wal_bytes: {wal_size}")
    return 0 if ok else 1


def _positive(kind: type) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` greater than 0."""
    def convert(text: str) -> float:
        value = kind(text)
        if not value > 0:
            raise ValueError(text)
        return value
    convert.__name__ = f"positive {kind.__name__}"  # argparse names it in its message
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="storemgr", description="Thread-safe Storm stores on SQLite: benchmark and inspect.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("bench", help="benchmark every strategy against baselines",
                              description=bench.__doc__.split("\n\n")[0])
    run.add_argument("uri", nargs="?", help="a sqlite: URI whose directory holds the runs "
                     "(default: a temporary directory), or a postgres:// URI whose database "
                     "gets the benchmark tables")
    run.add_argument("--threads", type=_positive(int), default=16)
    run.add_argument("--units", type=_positive(int), default=10000, help="units per setup")
    run.add_argument("--workload", choices=bench.WORKLOADS, default="insert",
                     help="insert: one INSERT per unit; rmw: read a counter, write it back "
                     "plus one; mixed: inserts while reader threads time their reads")
    run.add_argument("--synchronous", choices=SYNCHRONOUS, default="full")
    run.add_argument("--strategies", default=",".join(STRATEGIES),
                     help="comma-separated (default: all)")
    run.add_argument("--baselines", default=",".join(bench.BASELINES),
                     help="comma-separated, or none (default: all); the serial ceiling "
                     "always runs")
    run.add_argument("--max-seconds", type=_positive(float), default=bench.DEFAULT_MAX_SECONDS,
                     help="a setup starts no unit after this many seconds "
                     "(default: %(default)s)")
    run.add_argument("--json", action="store_true", help="machine-readable output")
    run.set_defaults(handler=_bench)

    info = commands.add_parser("info", help="resolved configuration and pragmas in effect")
    info.add_argument("uri")
    info.add_argument("--json", action="store_true")
    info.set_defaults(handler=_info)

    check = commands.add_parser("check", help="integrity check and WAL size")
    check.add_argument("uri")
    check.add_argument("--checkpoint", action="store_true", help="truncate the WAL")
    check.set_defaults(handler=_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"storemgr: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
