"""The sample Django site (examples/django_site) on waitress, 16 threads, under the load script.

Each strategy gets a real server process on a fresh file: examples/load.py
drives it from 16 threads, a second process creates an admin user with
``manage.py`` while it serves, the admin is used over HTTP, and after a
SIGTERM the file must hold every acknowledged note and a counter that lost
no increment.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

import pytest

from _children import ROOT, child_env
from _items import rows

SITE = os.path.join(ROOT, "examples", "django_site")
LOAD = os.path.join(ROOT, "examples", "load.py")
ADMIN_PASSWORD = "example-admin-password"


class Site:
    """examples/django_site/serve.py as a subprocess on a free port, 16 waitress threads."""

    def __init__(self, db: str, strategy: str):
        self.env = {**child_env(), "NOTES_SITE_DB": db, "NOTES_SITE_STRATEGY": strategy,
                    "DJANGO_SETTINGS_MODULE": "notes_site.settings"}  # not the tests' own
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(SITE, "serve.py"), "--port", "0", "--db", db,
             "--strategy", strategy, "--threads", "16"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
        self.url = self.process.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.process.stderr.read()
        parts = urlsplit(self.url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict | None = None
                ) -> tuple[int, dict[str, str], str]:
        """(status, headers, body) of one request, keeping the cookies the site sets."""
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form)
            headers.update({"Content-Type": "application/x-www-form-urlencoded",
                            "Referer": self.url + path})
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        text = response.read().decode()
        for value in response.headers.get_all("Set-Cookie") or []:
            self.cookies.update({name: morsel.value
                                 for name, morsel in SimpleCookie(value).items()})
        return response.status, dict(response.headers), text

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        env = {**self.env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD}
        return subprocess.run([sys.executable, os.path.join(SITE, "manage.py"), *args],
                              cwd=SITE, env=env, capture_output=True, text=True, timeout=60)

    def stop(self) -> tuple[int, str]:
        self.connection.close()
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=30)
        return self.process.returncode, out + err


def admin_login(site: Site) -> None:
    status, _, page = site.request("GET", "/admin/login/?next=/admin/")
    assert status == 200, page
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    status, headers, page = site.request("POST", "/admin/login/?next=/admin/", {
        "csrfmiddlewaretoken": token, "username": "admin", "password": ADMIN_PASSWORD,
        "next": "/admin/"})
    assert status == 302 and headers["Location"] == "/admin/", (status, page[:2000])


@pytest.mark.timeout(110)
def test_django_site_under_load_counter_exact_admin_works(tmp_path, strategy):
    db = str(tmp_path / "notes.db")
    site = Site(db, strategy)
    try:
        created = site.manage("createsuperuser", "--noinput", "--username", "admin",
                              "--email", "admin@example.com")
        assert created.returncode == 0, created.stdout + created.stderr
        load = subprocess.run([sys.executable, LOAD, "--url", site.url, "--threads", "16",
                               "--seconds", "2"],
                              env=child_env(), capture_output=True, text=True, timeout=80)
        admin_login(site)
        status, _, changelist = site.request("GET", "/admin/notes/note/")
        status_counter, _, counter_page = site.request("GET", "/admin/notes/counter/")
    finally:
        returncode, output = site.stop()
    assert load.returncode == 0, load.stdout + load.stderr
    assert "errors: 0" in load.stdout
    verified = next(line for line in load.stdout.splitlines() if line.startswith("verified: "))
    readable, acknowledged = map(int, verified.split()[1].split("/"))
    assert readable == acknowledged > 0
    assert status == 200 and f"{acknowledged} notes" in changelist, changelist[-3000:]
    assert status_counter == 200 and f"notes = {acknowledged}" in counter_page
    assert returncode == 0, output
    assert (f"shut down cleanly: strategy={strategy}, {acknowledged} notes, "
            f"notes counter {acknowledged}") in output, output
    # The file: one note per acknowledged POST, numbered 1..N by the counter: none lost
    # (an increment lost to a race would number two notes alike), none twice.
    assert rows(db, "SELECT value FROM notes_counter WHERE name = 'notes'") == [(acknowledged,)]
    assert rows(db, "SELECT count(*), count(DISTINCT number), min(number), max(number) "
                    "FROM notes_note") == [(acknowledged, acknowledged, 1, acknowledged)]
    assert rows(db, "SELECT username, is_superuser FROM auth_user") == [("admin", 1)]
    assert rows(db, "SELECT count(*) FROM django_session") == [(1,)]
