"""The Django engine under a pre-fork server: gunicorn loads the sample site in its master
(``--preload``), which reads and writes the database before forking two workers of eight
threads each; the load script then drives both workers.  The workers must not use the
master's connections or writer, and the two processes' writes must all land: the counter
exact, every acknowledged note readable, the file intact."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from _children import ROOT, child_env
from _items import rows

pytest.importorskip("gunicorn")

SITE = os.path.join(ROOT, "examples", "django_site")
LOAD = os.path.join(ROOT, "examples", "load.py")

# The app module gunicorn preloads in its master: Django set up, one read and one write
# unit there before the fork (under queue/single that starts the master's writer thread).
PRELOADED_APP = '''
from django.core.wsgi import get_wsgi_application
from django.db import transaction

application = get_wsgi_application()

from notes.models import Counter, Note  # noqa: E402 - after Django is set up

Note.objects.count()
with transaction.atomic():
    Counter.objects.get_or_create(name="preloaded")
'''


def start_gunicorn(tmp_path, db: str, strategy: str) -> tuple[subprocess.Popen, str]:
    (tmp_path / "prefork_app.py").write_text(PRELOADED_APP)
    env = {**child_env(), "NOTES_SITE_DB": db, "NOTES_SITE_STRATEGY": strategy,
           "DJANGO_SETTINGS_MODULE": "notes_site.settings",
           "PYTHONPATH": os.pathsep.join([SITE, str(tmp_path), child_env().get("PYTHONPATH", "")])}
    migrated = subprocess.run([sys.executable, os.path.join(SITE, "manage.py"), "migrate",
                               "--verbosity", "0"], cwd=SITE, env=env, capture_output=True,
                              text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2", "--threads", "8",
         "--bind", "127.0.0.1:0", "--graceful-timeout", "20", "prefork_app:application"],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    lines, booted, url = [], 0, None
    deadline = time.monotonic() + 60
    while (url is None or booted < 2) and time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", line)
        url = found[1] if found else url
        booted += "Booting worker" in line
    assert url and booted == 2, "".join(lines)
    return server, url


@pytest.mark.timeout(120)
def test_a_preforked_django_site_loses_no_write_and_shares_nothing_across_the_fork(
        tmp_path, strategy):
    db = str(tmp_path / "notes.db")
    server, url = start_gunicorn(tmp_path, db, strategy)
    try:
        load = subprocess.run([sys.executable, LOAD, "--url", url, "--threads", "16",
                               "--seconds", "2"],
                              env=child_env(), capture_output=True, text=True, timeout=80)
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=40)[0]
    assert load.returncode == 0, load.stdout + load.stderr + output[-3000:]
    assert "errors: 0" in load.stdout
    verified = next(line for line in load.stdout.splitlines() if line.startswith("verified: "))
    readable, acknowledged = map(int, verified.split()[1].split("/"))
    assert readable == acknowledged > 0
    assert server.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "InheritedConnectionError" not in output, output
    assert rows(db, "SELECT value FROM notes_counter WHERE name = 'notes'") == [(acknowledged,)]
    assert rows(db, "SELECT count(*), count(DISTINCT number), min(number), max(number) "
                    "FROM notes_note") == [(acknowledged, acknowledged, 1, acknowledged)]
    assert rows(db, "SELECT name FROM notes_counter WHERE name = 'preloaded'") == [("preloaded",)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
