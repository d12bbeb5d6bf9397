"""``python -m sqlite_storemgr`` (also the ``storemgr`` command): bench, info, check."""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import metadata

import pysqlite3.dbapi2 as dbapi
import storm

from . import bench
from .backend import SQLiteDatabase
from .errors import ConfigError
from .uri import STRATEGIES, SYNCHRONOUS, parse_uri

STRATEGY_MEANING = {
    "queue": "one writer thread owns the only write connection and group-commits queued "
             "units; every thread reads through its own read-only store",
    "single": "one worker thread runs every read and write; get_store is refused",
    "mutex": "each thread writes through its own store under a per-database mutex, "
             "BEGIN IMMEDIATE",
    "threadlocal": "each thread reads and writes through its own store, BEGIN IMMEDIATE; "
                   "SQLite's lock and the on_locked policy decide",
}


def _bench(args: argparse.Namespace) -> int:
    strategies = tuple(name for name in args.strategies.split(",") if name)
    unknown = [name for name in strategies if name not in STRATEGIES]
    if unknown:
        raise ConfigError(f"unknown strategy {unknown[0]!r}; use some of: {', '.join(STRATEGIES)}")
    directory = None
    if args.uri:
        config = parse_uri(args.uri)
        if config.path is None:
            raise ConfigError("bench needs a file database; its directory holds the runs")
        directory = os.path.dirname(os.path.abspath(config.path))
    results = bench.run(args.threads, args.units, args.workload, args.synchronous,
                        strategies, directory, progress=_progress(args))
    if args.json:
        print(json.dumps({"workload": args.workload, "threads": args.threads,
                          "units": args.units, "synchronous": args.synchronous,
                          "sqlite_version": dbapi.sqlite_version,
                          "results": [result.summary() for result in results]}, indent=2))
    else:
        print(f"workload={args.workload} threads={args.threads} units={args.units} "
              f"synchronous={args.synchronous} SQLite {dbapi.sqlite_version}")
        print(bench.format_table(results))
    return 0


def _progress(args: argparse.Namespace):
    if args.json or not sys.stderr.isatty():
        return lambda label: None
    return lambda label: print(f"  running: {label}", file=sys.stderr)


def _info(args: argparse.Namespace) -> int:
    config = parse_uri(args.uri)
    database = SQLiteDatabase(config)
    connection = database.raw_connect()
    try:
        pragmas = {name: connection.execute(f"PRAGMA {name}").fetchone()[0]
                   for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
    finally:
        connection.close()
        database.dispose()
    info = {
        "database": config.path or ":memory:",
        "strategy": config.strategy, "timeout": config.timeout,
        "on_locked": config.on_locked, "batch": config.batch, "queue_size": config.queue_size,
        "pragmas": pragmas,
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
    config = parse_uri(args.uri)
    if config.path is None or not os.path.exists(config.path):
        raise ConfigError(f"no database file at {config.path or ':memory:'!r}")
    wal = config.path + "-wal"
    try:
        connection = dbapi.connect(config.path, isolation_level=None, timeout=config.timeout)
        rows = [row[0] for row in connection.execute("PRAGMA integrity_check").fetchall()]
        if args.checkpoint:
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                print("checkpoint: busy (a reader or writer is active); WAL not truncated")
        connection.close()
    except dbapi.DatabaseError as error:
        print(f"{config.path}: not a usable SQLite database: {error}")
        return 2
    wal_size = os.path.getsize(wal) if os.path.exists(wal) else 0
    ok = rows == ["ok"]
    print(f"integrity_check: {'ok' if ok else '; '.join(rows)}")
    print(f"wal_bytes: {wal_size}")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="storemgr", description="Thread-safe Storm stores on SQLite: benchmark and inspect.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("bench", help="benchmark every strategy against baselines",
                              description=bench.__doc__.split("\n\n")[0])
    run.add_argument("uri", nargs="?", help="sqlite: URI whose directory holds the runs "
                     "(default: a temporary directory)")
    run.add_argument("--threads", type=int, default=16)
    run.add_argument("--units", type=int, default=4000, help="units per setup")
    run.add_argument("--workload", choices=("insert", "rmw"), default="insert")
    run.add_argument("--synchronous", choices=SYNCHRONOUS, default="full")
    run.add_argument("--strategies", default=",".join(STRATEGIES),
                     help="comma-separated (default: all)")
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
