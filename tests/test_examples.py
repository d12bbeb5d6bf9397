"""Smoke tests: every example runs as a subprocess, exits 0 and says what it checked."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from urllib.parse import urlsplit

import pysqlite3.dbapi2 as dbapi
import pytest

from _children import ROOT, child_env

EXAMPLES = os.path.join(ROOT, "examples")
ENV = child_env()


def run_example(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args],
                          capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.mark.timeout(60)
def test_demo_queue_prints_ok():
    result = run_example("demo.py", "queue")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "errors: 0" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "OK"


@pytest.mark.timeout(60)
def test_load_starts_the_app_and_every_acknowledged_post_is_readable():
    result = run_example("load.py", "--seconds", "2", "--threads", "8")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "errors: 0" in out
    assert "requests/s" in out
    verified = next(line for line in out.splitlines() if line.startswith("verified: "))
    readable, acknowledged = verified.split()[1].split("/")
    assert readable == acknowledged and int(acknowledged) > 0
    assert "app: exit status 0; shut down cleanly" in out
    assert out.strip().splitlines()[-1] == "OK"


@pytest.mark.timeout(30)
def test_load_refuses_a_server_that_is_not_on_loopback():
    result = run_example("load.py", "--url", "http://192.0.2.1:8080", "--seconds", "1")
    assert result.returncode != 0
    assert "not a loopback address" in result.stderr


class App:
    """examples/wsgi_app.py (or ``script``) as a subprocess on a free port."""

    def __init__(self, db: str, script: str = "wsgi_app.py", *options: str):
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(EXAMPLES, script), "--port", "0", "--db", db, *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        self.url = self.process.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.process.stderr.read()
        parts = urlsplit(self.url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        self.connection.request(method, path, body=body)
        response = self.connection.getresponse()
        return response.status, json.loads(response.read())

    def stop(self, signum: int) -> tuple[int, str]:
        self.connection.close()
        self.process.send_signal(signum)
        out, err = self.process.communicate(timeout=20)
        return self.process.returncode, out + err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_wsgi_app_routes_and_clean_shutdown(tmp_path, signum):
    db = str(tmp_path / "notes.db")
    app = App(db)
    try:
        status, body = app.request("POST", "/notes", "first note \N{SNOWMAN}".encode())
        assert status == 201 and isinstance(body["id"], int)
        note_id = body["id"]
        assert app.request("GET", f"/notes/{note_id}") == (
            200, {"id": note_id, "text": "first note \N{SNOWMAN}"})
        assert app.request("GET", f"/notes/{note_id + 1000}")[0] == 404
        assert app.request("GET", "/count") == (200, {"count": 1})
        assert app.request("GET", "/nowhere")[0] == 404
        assert app.request("POST", "/notes", b"\xff\xfe")[0] == 400
        if signum == signal.SIGTERM:  # load.py against an app it did not start
            result = run_example("load.py", "--url", app.url, "--seconds", "1",
                                 "--threads", "4")
            assert result.returncode == 0, result.stdout + result.stderr
            assert "errors: 0" in result.stdout
    finally:
        returncode, output = app.stop(signum)
    assert returncode == 0, output
    assert "shut down cleanly" in output
    # Every acknowledged note is in the file once the app is gone.
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("SELECT text FROM note WHERE id = ?",
                                  (note_id,)).fetchone() == ("first note \N{SNOWMAN}",)
    finally:
        connection.close()


@pytest.mark.timeout(60)
def test_job_pool_stores_every_result(strategy):
    result = run_example("job_pool.py", "--jobs", "300", "--workers", "6",
                         "--strategy", strategy)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "jobs done: 300" in out
    assert "results stored: 300" in out
    assert "errors: 0" in out
    assert "missing or wrong results: 0" in out


@pytest.mark.timeout(60)
def test_lock_policies_behave_as_documented():
    result = run_example("lock_policies.py", "--hold", "0.6", "--timeouts", "0.15,1.5")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "unexpected outcomes: 0" in out
    for policy in ("retry", "retry_commit", "rollback"):
        assert f"on_locked={policy}:" in out  # what the policy means
        # two cases (A, B) x two timeouts per policy
        assert sum(line.startswith(f"  on_locked={policy} ") for line in out.splitlines()) == 4
    assert "succeeded after" in out and "DatabaseLockedError after" in out


@pytest.mark.timeout(90)
def test_asyncio_app_under_load_then_clean_shutdown(tmp_path, strategy):
    pytest.importorskip("aiohttp")
    db = str(tmp_path / "notes.db")
    app = App(db, "asyncio_app.py", "--strategy", strategy)
    try:
        status, body = app.request("POST", "/notes", "async \N{SNOWMAN}".encode())
        assert status == 201 and isinstance(body["id"], int)
        assert app.request("GET", f"/notes/{body['id']}") == (
            200, {"id": body["id"], "text": "async \N{SNOWMAN}"})
        assert app.request("GET", f"/notes/{body['id'] + 1000}")[0] == 404
        assert app.request("GET", "/nowhere")[0] == 404
        assert app.request("POST", "/notes", b"\xff\xfe")[0] == 400
        load = run_example("load.py", "--url", app.url, "--seconds", "1.5", "--threads", "8")
    finally:
        returncode, output = app.stop(signal.SIGTERM)
    assert load.returncode == 0, load.stdout + load.stderr
    assert "errors: 0" in load.stdout
    verified = next(line for line in load.stdout.splitlines() if line.startswith("verified: "))
    readable, acknowledged = map(int, verified.split()[1].split("/"))
    assert readable == acknowledged > 0
    assert returncode == 0 and "shut down cleanly" in output and strategy in output, output
    connection = dbapi.connect(db)
    try:  # every acknowledged note, and the first one, are in the file once the app is gone
        assert connection.execute("SELECT count(*) FROM note").fetchone() == (acknowledged + 1,)
    finally:
        connection.close()


def readme_samples(section: str) -> str:
    """The python code blocks of the README's ``## section``, joined."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as readme:
        text = readme.read().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("section", [
    "Async API", "Metrics and stats", "Connection hooks", "Models, not only SQL"])
def test_a_readme_sample_runs_and_its_asserts_hold(tmp_path, section):
    code = readme_samples(section)
    assert "assert" in code
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stdout + result.stderr
