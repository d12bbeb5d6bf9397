"""The command line (``python -m sqlite_storemgr``), driven through subprocesses."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading

import pytest

from _children import ROOT, child_env
from sqlite_storemgr.uri import STRATEGIES

ENV = child_env()
CEILING = "serial ceiling (raw, 1 thread)"
SMALL_BENCH = ("--units", "300", "--threads", "4")
BENCH_INSTALL = "pip install 'sqlite_storemgr[bench]'"


def storemgr(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sqlite_storemgr", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV, **kwargs)


def main_without(module: str, *args: str) -> subprocess.CompletedProcess:
    """``cli.main(args)`` in a subprocess where ``module`` cannot be imported (not installed)."""
    code = (f"import sys; sys.modules[{module!r}] = None; "
            f"from sqlite_storemgr.tools.cli import main; sys.exit(main({list(args)!r}))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=50, env=ENV)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def refusal(result: subprocess.CompletedProcess) -> str:
    """The one stderr line of a command refused with exit status 2 and no output."""
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout == ""
    line, = result.stderr.splitlines()  # one line: no traceback
    assert line.startswith("storemgr: ")
    return line


def pyproject_version() -> str:
    with open(os.path.join(ROOT, "pyproject.toml")) as file:
        return re.search(r'(?m)^version = "([^"]+)"', file.read())[1]


def make_database(path, rows: int = 0, journal_mode: str = "wal") -> None:
    """A database with ``rows`` rows of ~200 bytes, an index, 1 KiB pages."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA page_size = 1024")
    connection.execute(f"PRAGMA journal_mode = {journal_mode}")
    connection.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, payload TEXT)")
    connection.execute("CREATE INDEX item_name ON item (name)")
    connection.executemany("INSERT INTO item (name, payload) VALUES (?, ?)",
                           ((f"item {i:06d}", f"{i:08d}" * 25) for i in range(rows)))
    connection.close()


# -- help ------------------------------------------------------------------

HELP_TEXTS = {
    "main": ["--version", "bench", "info", "check"],
    "bench": ["--threads", "--units", "--workload", "--synchronous", "--strategies",
              "--baselines", "--max-seconds", "--json", "mixed", "--django"],
    "info": ["What a URI resolves to", "described without connecting",
             "uri a sqlite: URI naming an existing database file", "--json machine-readable"],
    "check": ["PRAGMA integrity_check on a SQLite file", "Exit status 1",
              "uri a sqlite: URI naming an existing database file", "--checkpoint truncate"],
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", HELP_TEXTS)
def test_help_works_for_every_command(command):
    out = ok(storemgr(*([] if command == "main" else [command]), "--help"))
    assert out.startswith("usage: storemgr")
    words = " ".join(out.split())  # argparse wraps at the terminal's width
    for text in HELP_TEXTS[command]:
        assert text in words


@pytest.mark.timeout(60)
def test_version_option_and_attribute():
    import sqlite_storemgr

    assert sqlite_storemgr.__version__ == pyproject_version()
    assert "__version__" in sqlite_storemgr.__all__
    result = storemgr("--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"storemgr {pyproject_version()}\n", "")


@pytest.mark.timeout(60)
def test_version_without_package_metadata_is_pyproject_s():
    code = ("import importlib.metadata as m\n"
            "def missing(name): raise m.PackageNotFoundError(name)\n"
            "m.version = missing\n"
            "import sqlite_storemgr; print(sqlite_storemgr.__version__)")
    out = ok(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=50, env=ENV))
    assert out == f"{pyproject_version()}\n"


def test_no_command_is_a_usage_error():
    result = storemgr()
    assert result.returncode == 2
    assert "usage:" in result.stderr


# -- bench -----------------------------------------------------------------

def bench_json(*args: str) -> dict:
    return json.loads(ok(storemgr("bench", *SMALL_BENCH, "--json", *args)))


def by_name(report: dict) -> dict[str, dict]:
    return {result["name"]: result for result in report["results"]}


@pytest.mark.timeout(120)
def test_bench_insert_json_has_the_ceiling_every_strategy_and_the_baselines():
    report = bench_json()
    results = by_name(report)
    assert report["workload"] == "insert" and report["threads"] == 4
    assert results[CEILING]["ratio"] == 1.0
    for strategy in STRATEGIES:
        result = results[f"sqlite_storemgr {strategy}"]
        assert result["failed"] == 0
        assert result["units"] == 300 and not result["stopped_early"]
        assert result["per_second"] > 0 and result["p99_ms"] >= result["p50_ms"] > 0
        assert result["lost_updates"] is None and result["read_p99_ms"] is None
    assert "one transaction (upper bound)" in results
    assert "Storm as-is (Store per thread)" in results
    handoff = results["thread handoff, no SQL (bound)"]
    assert handoff["units"] == 300 and handoff["failed"] == 0 and handoff["per_second"] > 0


@pytest.mark.timeout(120)
def test_bench_thread_sweep_runs_the_threaded_setups_at_each_count_in_one_table():
    report = bench_json("--threads", "1,3", "--strategies", "queue",
                        "--baselines", "transaction,handoff")
    assert report["threads"] == [1, 3]
    rows = [(result["name"], result["threads"]) for result in report["results"]]
    assert rows == [(CEILING, None), ("one transaction (upper bound)", None),
                    ("thread handoff, no SQL (bound)", 1), ("sqlite_storemgr queue", 1),
                    ("thread handoff, no SQL (bound)", 3), ("sqlite_storemgr queue", 3)]
    for result in report["results"][2:]:
        assert result["units"] == 300 and result["failed"] == 0
        assert result["p99_ms"] >= result["p50_ms"] > 0


@pytest.mark.timeout(120)
def test_bench_thread_sweep_table_has_a_threads_column():
    out = ok(storemgr("bench", "--units", "200", "--threads", "2,4", "--strategies", "queue",
                      "--baselines", "handoff"))
    lines = out.splitlines()
    assert lines[0].startswith("workload=insert threads=2,4 units=200 ")
    assert lines[1].split()[:3] == ["setup", "threads", "units/s"]
    counts = [line.split()[-6] for line in lines[3:]]  # the column before units/s
    assert [line[:30].strip() for line in lines[3:]] == [
        CEILING, "thread handoff, no SQL (bound)", "sqlite_storemgr queue",
        "thread handoff, no SQL (bound)", "sqlite_storemgr queue"]
    assert counts[1:] == ["2", "2", "4", "4"]


@pytest.mark.parametrize("threads", ["0", "4,x", "4,4", "4,,8"])
def test_bench_refuses_a_bad_thread_count(threads):
    result = storemgr("bench", "--threads", threads)
    assert result.returncode == 2
    assert f"argument --threads: invalid comma-separated positive int value: '{threads}'" \
        in result.stderr


@pytest.mark.timeout(120)
def test_bench_bulk_logging_and_reader_rss_figures():
    report = bench_json("--strategies", "queue",
                        "--baselines", "transaction,bulk,nolog,rss")
    results = by_name(report)
    bulk = results["sqlite_storemgr queue submit_many (bulk)"]
    assert bulk["units"] == 300 and bulk["failed"] == 0 and bulk["per_second"] > 0
    one = results["one transaction (upper bound)"]
    assert report["bulk_vs_transaction"] == pytest.approx(
        bulk["per_second"] / one["per_second"], rel=0.01)
    off = results["sqlite_storemgr queue, logging.disable()"]
    assert off["units"] == 300 and off["failed"] == 0
    cost, = report["logging_off_vs_default"]
    assert cost["threads"] is None and cost["ratio"] == pytest.approx(
        off["per_second"] / results["sqlite_storemgr queue"]["per_second"], abs=0.01)
    assert report["reader_store_rss_kib"] > 0


@pytest.mark.timeout(120)
def test_bench_table_prints_the_figures_under_it():
    out = ok(storemgr("bench", "--units", "200", "--threads", "2", "--strategies", "queue",
                      "--baselines", "transaction,bulk,nolog,rss"))
    notes = out.splitlines()[-3:]
    assert re.fullmatch(r"bulk: submit_many runs at \d+\.\d{3}x one transaction "
                        r"\(the upper bound\)", notes[0])
    assert re.fullmatch(r"logging: queue with logging\.disable\(\) / default configuration: "
                        r"\d+\.\d\d", notes[1])
    assert re.fullmatch(r"reader stores: -?\d+\.\d KiB RSS per idle thread store "
                        r"\(200 threads, each after one read\)", notes[2])


def test_bench_rss_on_postgres_is_refused_when_asked_for():
    line = refusal(storemgr("bench", "postgres://someone:pw@127.0.0.1:1/app",
                            "--baselines", "rss", "--units", "10"))
    assert line == ("storemgr: baseline rss cannot run: it measures SQLite read stores; "
                    "a PostgreSQL run has none")


@pytest.mark.timeout(120)
def test_bench_rmw_loses_no_update():
    results = by_name(bench_json("--workload", "rmw", "--baselines", "none"))
    assert CEILING in results
    assert len(results) == 1 + len(STRATEGIES)  # no baseline asked for
    for strategy in STRATEGIES:
        result = results[f"sqlite_storemgr {strategy}"]
        assert result["failed"] == 0
        assert result["lost_updates"] == 0


@pytest.mark.timeout(120)
def test_bench_mixed_reports_read_latency_under_load_and_idle():
    results = by_name(bench_json("--workload", "mixed", "--baselines", "none"))
    assert results[CEILING]["read_p99_ms"] is None
    for strategy in STRATEGIES:
        result = results[f"sqlite_storemgr {strategy}"]
        assert result["failed"] == 0 and result["reads_failed"] == 0
        assert result["read_p99_ms"] >= result["read_p50_ms"] > 0
        assert result["idle_read_p99_ms"] > 0


@pytest.mark.timeout(120)
def test_bench_table_has_the_read_columns_and_no_progress_when_not_a_terminal():
    result = storemgr("bench", "--units", "200", "--threads", "2", "--workload", "mixed",
                      "--baselines", "transaction", "--strategies", "queue,single")
    out = ok(result)
    header = next(line for line in out.splitlines() if line.startswith("setup"))
    for column in ("units/s", "x ceiling", "failed", "p50 ms", "p99 ms", "read p50",
                   "read p99", "idle p99"):
        assert column in header
    assert "lost" not in header  # only rmw has lost updates
    assert "sqlite_storemgr queue" in out and "sqlite_storemgr single" in out
    assert "sqlite_storemgr mutex" not in out
    assert result.stderr == ""  # stderr is a pipe: no progress output


@pytest.mark.timeout(60)
def test_bench_max_seconds_stops_a_setup_and_says_so():
    report = bench_json("--units", "1000000", "--threads", "2", "--strategies", "queue",
                        "--baselines", "none", "--max-seconds", "0.3")
    for result in report["results"]:  # the serial ceiling and the queue
        assert result["stopped_early"] and 0 < result["units"] < 1_000_000
        assert result["failed"] == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args, needle", [
    (["--strategies", "queue,fast"], "'fast'"),
    (["--baselines", "sqlite"], "'sqlite'"),
    (["--threads", "0"], "--threads"),
    (["--workload", "bulk"], "--workload"),
    (["--workload", "rmw", "--baselines", "peewee", "--units", "10"],
     "baseline peewee cannot run: peewee's SqliteQueueDatabase runs one statement per item"),
    (["postgres://someone@127.0.0.1:1/app", "--baselines", "storm,peewee", "--units", "10"],
     "baseline peewee cannot run: peewee's SqliteQueueDatabase runs on SQLite only"),
    (["--django", "--workload", "rmw"], "--workload and --baselines do not apply"),
    (["--django", "--baselines", "none"], "--workload and --baselines do not apply"),
    (["--django", "postgres://someone@127.0.0.1:1/app"], "bench --django runs on SQLite files"),
    (["--django", "--threads", "2,4"], "bench --django runs at one thread count"),
])
def test_bench_rejects_bad_options(args, needle):
    result = storemgr("bench", *args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


DJANGO_SETUPS = ["Django stock sqlite3 (IMMEDIATE)"] + [
    f"Django on sqlite_storemgr {strategy}" for strategy in STRATEGIES]


@pytest.mark.timeout(120)
def test_bench_django_has_the_stock_backend_and_every_strategy_none_of_ours_failing():
    pytest.importorskip("django")
    report = json.loads(ok(storemgr("bench", "--django", "--units", "120", "--threads", "4",
                                    "--json", timeout=110)))
    assert report["django"] is True and report["requests"] == 120
    assert "POST /notes" in report["mix"] and "GET /notes/<id>" in report["mix"]
    results = report["results"]
    assert [result["name"] for result in results] == DJANGO_SETUPS
    assert results[0]["ratio"] == 1.0 and results[0]["lost_updates"] == 0
    for result in results[1:]:
        assert (result["units"], result["failed"], result["lost_updates"]) == (120, 0, 0), result
        assert result["per_second"] > 0 and result["p50_ms"] <= result["p99_ms"]


@pytest.mark.timeout(120)
def test_bench_django_table_names_the_ratio_against_the_stock_backend():
    pytest.importorskip("django")
    out = ok(storemgr("bench", "--django", "--units", "40", "--threads", "2",
                      "--strategies", "queue,mutex", timeout=110))
    lines = out.splitlines()
    assert lines[0].startswith("django requests=40 threads=2 synchronous=full SQLite ")
    assert lines[1].split() == ["setup", "requests/s", "x", "stock", "failed", "p50", "ms",
                                "p99", "ms", "lost"]
    rows = [line for line in lines[3:] if line.startswith("Django")]
    assert [row[:38].strip() for row in rows] == [DJANGO_SETUPS[0],
                                                  "Django on sqlite_storemgr queue",
                                                  "Django on sqlite_storemgr mutex"]
    for row in rows[1:]:  # ours: no failed request, no lost update
        assert (row.split()[-4], row.split()[-1]) == ("0", "0"), row


@pytest.mark.timeout(60)
@pytest.mark.parametrize("baselines", ["peewee", "transaction,peewee"])
def test_bench_asked_for_peewee_without_it_fails_before_running(baselines):
    result = main_without("peewee", "bench", "--baselines", baselines, "--units", "10")
    assert refusal(result) == (f"storemgr: baseline peewee cannot run: peewee is not "
                               f"installed; {BENCH_INSTALL} brings it")


@pytest.mark.timeout(120)
def test_bench_default_baselines_without_peewee_say_they_skip_it():
    result = main_without("peewee", "bench", "--units", "100", "--threads", "2",
                          "--strategies", "queue", "--json")
    names = by_name(json.loads(ok(result)))
    assert result.stderr == (f"storemgr: skipping the peewee baseline: peewee is not "
                             f"installed; {BENCH_INSTALL} brings it\n")
    assert "Storm as-is (Store per thread)" in names
    assert not any("peewee" in name for name in names)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("uri, problem", [
    ("sqlite:missingdir/x.db", "the directory {!r} does not exist"),
    ("sqlite:notes.txt/x.db", "{!r} is not a directory"),
])
def test_bench_in_a_directory_that_is_not_one_says_so(tmp_path, uri, problem):
    (tmp_path / "notes.txt").write_text("not a directory\n")
    directory = os.path.join(os.path.realpath(tmp_path), uri[len("sqlite:"):-len("/x.db")])
    line = refusal(storemgr("bench", uri, "--units", "10", cwd=tmp_path))
    assert line == (f"storemgr: bench: {problem.format(directory)}; "
                    "name a file in an existing directory")


def read_progress(master: int, chunks: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child side closed
            return
        if not chunk:
            return
        chunks.append(chunk)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
def test_bench_shows_progress_on_a_terminal(rich):
    """stderr on a pseudo-terminal: a rich bar, or plain lines when rich cannot be imported."""
    master, slave = os.openpty()
    hide_rich = "" if rich else "sys.modules['rich'] = None; "
    code = (f"import sys; {hide_rich}from sqlite_storemgr.tools.cli import main; "
            "sys.exit(main(['bench', '--units', '200', '--threads', '2', "
            "'--strategies', 'queue', '--baselines', 'none']))")
    chunks: list[bytes] = []
    reader = threading.Thread(target=read_progress, args=(master, chunks))
    reader.start()
    try:
        result = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=slave, text=True, timeout=60, env=ENV)
    finally:
        os.close(slave)
        reader.join(10)
        os.close(master)
    assert result.returncode == 0
    progress = b"".join(chunks).decode(errors="replace")
    if rich:  # drawn with terminal control sequences; the label may change between frames
        assert "\x1b[" in progress and "2/2" in progress
    else:
        assert "[2/2] running: sqlite_storemgr queue" in progress
    assert "sqlite_storemgr queue" in result.stdout  # the table itself goes to stdout


# -- info ------------------------------------------------------------------

def info_pragmas(uri: str) -> dict:
    report = json.loads(ok(storemgr("info", uri, "--json")))
    return report["pragmas"]


@pytest.mark.timeout(60)
def test_info_shows_the_default_pragmas_in_effect(tmp_path):
    make_database(tmp_path / "app.db")
    out = ok(storemgr("info", f"sqlite:{tmp_path / 'app.db'}"))
    for text in ("journal_mode=wal, synchronous=full, foreign_keys=on, busy_timeout_ms=5000",
                 "strategy     queue", "on_locked    retry"):
        assert text in out
    assert "sqlite=" in out and "storm=" in out


@pytest.mark.timeout(60)
def test_info_json_follows_the_uri_options(tmp_path):
    path = tmp_path / "app.db"
    make_database(path)
    pragmas = info_pragmas(f"sqlite:{path}?synchronous=normal&timeout=0.3&foreign_keys=off")
    assert pragmas == {"journal_mode": "wal", "synchronous": "normal", "foreign_keys": "off",
                       "busy_timeout_ms": 300}
    pragmas = info_pragmas(f"sqlite:{path}?synchronous=off&timeout=12")
    assert pragmas["synchronous"] == "off" and pragmas["busy_timeout_ms"] == 12000
    assert info_pragmas(f"sqlite:{path}?synchronous=extra")["synchronous"] == "extra"


@pytest.mark.timeout(60)
def test_info_neither_creates_nor_changes_the_database(tmp_path):
    missing = tmp_path / "missing.db"
    result = storemgr("info", f"sqlite:{missing}")
    assert result.returncode != 0 and "no database file" in result.stderr
    assert not missing.exists()
    path = tmp_path / "app.db"
    make_database(path)  # a WAL database
    assert info_pragmas(f"sqlite:{path}?journal_mode=delete")["journal_mode"] == "wal"
    assert info_pragmas(f"sqlite:{path}")["journal_mode"] == "wal"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("query, names", [
    ("bogus=1", ["'bogus'", "timeout"]),
    ("synchronous=sometimes", ["synchronous", "'sometimes'", "normal, full"]),
    ("timeout=-1", ["timeout", "'-1'"]),
])
def test_info_with_a_bad_option_fails_naming_it(tmp_path, query, names):
    result = storemgr("info", f"sqlite:{tmp_path / 'app.db'}?{query}")
    assert result.returncode != 0
    for name in names:
        assert name in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(60)
@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["info", "check"])
@pytest.mark.parametrize("kind", ["text", "directory"])
def test_info_and_check_refuse_what_is_not_a_database_file(tmp_path, command, kind):
    path = tmp_path / "notes"
    if kind == "text":
        path.write_text("these are not the pages you are looking for\n" * 200)
    else:
        path.mkdir()
    line = refusal(storemgr(command, f"sqlite:{path}"))
    assert str(path) in line
    assert ("file is not a database" if kind == "text" else
            f"{str(path)!r} is a directory, not a database file") in line


@pytest.mark.timeout(60)
def test_info_on_a_postgres_uri_shows_its_configuration_without_connecting():
    report = json.loads(ok(storemgr("info", "postgres://someone:secret@localhost/app"
                                            "?isolation=serializable&timeout=2", "--json")))
    assert report["database"] == "postgres database 'app' on localhost"
    assert report["isolation"] == "serializable" and report["timeout"] == 2.0
    assert "pragmas" not in report
    assert "secret" not in json.dumps(report)


POSTGRES_MEANING = {
    "threadlocal": ["the default on PostgreSQL", "its own connection, concurrently",
                    "serialization failure", "deadlock", "lock_timeout", "on_locked"],
    "mutex": ["per-database mutex", "serialization failure", "deadlock", "lock_timeout"],
    "queue": ["one writer thread", "never conflict", "read-only store in autocommit mode"],
    "single": ["one worker thread runs every read and write"],
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", POSTGRES_MEANING)
def test_info_on_postgres_says_what_the_strategy_means_there(strategy):
    """Nothing listens on port 1: were info to connect, it would fail."""
    query = "" if strategy == "threadlocal" else f"?strategy={strategy}"
    out = ok(storemgr("info", f"postgres://someone@127.0.0.1:1/app{query}"))
    meaning = next(line for line in out.splitlines() if line.startswith("meaning"))
    assert f"strategy     {strategy}" in out
    assert "BEGIN IMMEDIATE" not in meaning and "SQLite" not in meaning
    for text in POSTGRES_MEANING[strategy]:
        assert text in meaning


# -- check -----------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("command, uri", [("check", "postgres://someone@localhost/app"),
                                          ("check", "sqlite:"), ("bench", "sqlite:")])
def test_check_and_bench_want_a_sqlite_file(command, uri):
    result = storemgr(command, uri)
    assert result.returncode == 2
    assert f"{command} " in result.stderr and ("sqlite: files" in result.stderr
                                               or "in-memory" in result.stderr)


@pytest.mark.timeout(60)
def test_bench_on_an_unreachable_postgres_server_fails_cleanly():
    result = storemgr("bench", "postgres://someone:pw@127.0.0.1:1/app", "--units", "10")
    assert result.returncode == 2
    assert "cannot connect to postgres database 'app' on 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr and "pw" not in result.stderr


@pytest.mark.timeout(60)
def test_bench_on_postgres_without_psycopg2_says_how_to_install_it():
    """The postgres extra is optional: its absence is a clear error, not a traceback."""
    result = main_without("psycopg2", "bench", "postgres://someone:pw@127.0.0.1:1/app",
                          "--units", "10")
    assert result.returncode == 2, result.stderr
    assert "pip install 'sqlite_storemgr[postgres]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_check_a_good_database(tmp_path):
    path = tmp_path / "good.db"
    make_database(path, rows=500)
    out = ok(storemgr("check", f"sqlite:{path}"))
    assert "integrity_check: ok" in out


@pytest.mark.timeout(60)
def test_check_a_corrupted_database_fails(tmp_path):
    path = tmp_path / "bad.db"
    make_database(path, rows=2000, journal_mode="delete")  # every page in the main file
    size = os.path.getsize(path)
    assert size > 100 * 1024
    with open(path, "r+b") as file:  # several whole pages in the middle
        file.seek(size // 2)
        file.write(bytes(range(256)) * 16)
    result = storemgr("check", f"sqlite:{path}")
    assert result.returncode != 0
    assert "integrity_check: ok" not in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_check_lists_what_integrity_check_found(tmp_path):
    """An index that no longer matches its table: the file opens, the check fails."""
    path = tmp_path / "index.db"
    make_database(path, rows=20)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA writable_schema = ON")
    connection.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX item_name ON item "
                       "(payload)' WHERE name = 'item_name'")
    connection.close()
    result = storemgr("check", f"sqlite:{path}")
    assert result.returncode == 1
    assert "integrity_check: row 1 missing from index item_name" in result.stdout


@pytest.mark.timeout(60)
def test_check_a_file_that_is_not_a_database_fails(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("these are not the pages you are looking for\n" * 200)
    line = refusal(storemgr("check", f"sqlite:{path}"))
    assert line == f"storemgr: {path}: not a usable SQLite database: file is not a database"


@pytest.mark.timeout(60)
def test_check_a_missing_file_fails_naming_it(tmp_path):
    result = storemgr("check", f"sqlite:{tmp_path / 'missing.db'}")
    assert result.returncode != 0
    assert "missing.db" in result.stderr
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.timeout(60)
def test_check_checkpoint_truncates_the_wal(tmp_path):
    path = tmp_path / "wal.db"
    wal = tmp_path / "wal.db-wal"
    make_database(path)
    # An open connection keeps the WAL file alive after check's own connection closes.
    keeper = sqlite3.connect(path, isolation_level=None)
    try:
        keeper.executemany("INSERT INTO item (name, payload) VALUES (?, ?)",
                           ((f"n{i}", "x" * 200) for i in range(300)))
        assert wal.stat().st_size > 0
        out = ok(storemgr("check", f"sqlite:{path}"))
        assert "integrity_check: ok" in out
        assert f"wal_bytes: {wal.stat().st_size}" in out and wal.stat().st_size > 0
        out = ok(storemgr("check", "--checkpoint", f"sqlite:{path}"))
        assert "integrity_check: ok" in out
        assert "wal_bytes: 0" in out
        assert wal.exists() and wal.stat().st_size == 0
        assert keeper.execute("SELECT count(*) FROM item").fetchone() == (300,)
    finally:
        keeper.close()
