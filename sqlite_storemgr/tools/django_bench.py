"""``storemgr bench --django``: one request mix through Django's stock SQLite backend and
through the ``sqlite_storemgr.django`` engine under each strategy, in one run.

The requests go in-process through Django's WSGI handler (no sockets), from
``threads`` threads: every other request is ``POST /notes`` (the read-then-write
view of examples/django_site: in one ``transaction.atomic()`` it reads a
counter, writes it back plus one and inserts a note), the rest ``GET
/notes/<id>`` of a note seeded before the run.  A failed request is a
response of 500 or more, or an exception.  Lost updates are the POSTs
answered 201 minus the final counter.  The stock backend runs as Django's
docs recommend (``transaction_mode: IMMEDIATE``, a busy ``timeout``) with
WAL and the same ``synchronous`` set by ``init_command``; every setup gets a
fresh file and persistent connections (``CONN_MAX_AGE: None``).  Ratios are
against the stock backend of the same run.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import sys
import tempfile
from typing import Any

from ..errors import ConfigError
from ..uri import STRATEGIES
from .bench import DEFAULT_MAX_SECONDS, Progress, Result, _threaded

__all__ = ["run", "STOCK", "MIX", "DJANGO_INSTALL"]

DJANGO_INSTALL = "pip install 'sqlite_storemgr[django]'"
STOCK = "Django stock sqlite3 (IMMEDIATE)"
TIMEOUT = 5.0          # seconds: the stock backend's busy timeout and the engine's timeout
SEEDED_NOTES = 100     # notes the GET requests read
HOST = "bench.invalid"
MIX = ("half POST /notes (atomic: read a counter, write it + 1, insert a note), "
       "half GET /notes/<id>")

_current: dict[str, Any] = {"alias": None, "note": None, "counter": None}


class CurrentSetup:
    """Django database router: every query goes to the database of the setup running now."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        alias: str | None = _current["alias"]
        return alias

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self.db_for_read(model, **hints)


def post_note(request: Any) -> Any:
    """Read the counter, write it back plus one, add a note: one atomic block."""
    from django.db import transaction
    from django.http import HttpResponse

    note, counter_model = _current["note"], _current["counter"]
    with transaction.atomic(using=_current["alias"]):
        counter = counter_model.objects.get(name="notes")
        counter.value += 1
        counter.save(update_fields=["value"])
        note.objects.create(text=request.body.decode(), number=counter.value)
    return HttpResponse(status=201)


def get_note(request: Any, note_id: int) -> Any:
    from django.http import HttpResponse, JsonResponse

    found = _current["note"].objects.filter(pk=note_id).values("text", "number").first()
    return HttpResponse(status=404) if found is None else JsonResponse(found)


def _urlconf() -> type:
    """The URLconf: ``ROOT_URLCONF`` may be any hashable object with ``urlpatterns``."""
    from django.urls import path
    return type("BenchURLConf", (), {"urlpatterns": [
        path("notes", post_note), path("notes/<int:note_id>", get_note)]})


def _store(strategy: str) -> str:
    """The manager's name for the engine's database under ``strategy``."""
    return f"bench_{strategy}"


def _databases(directory: str, synchronous: str, strategies: tuple[str, ...]
               ) -> dict[str, dict[str, Any]]:
    """One database per setup, each its own file in ``directory``."""
    databases: dict[str, dict[str, Any]] = {"default": {}}
    databases["stock"] = {
        "ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(directory, "stock.db"),
        "CONN_MAX_AGE": None,
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": TIMEOUT,
                    "init_command": f"PRAGMA journal_mode = WAL; "
                                    f"PRAGMA synchronous = {synchronous.upper()}"}}
    for strategy in strategies:
        databases[strategy] = {
            "ENGINE": "sqlite_storemgr.django", "NAME": os.path.join(directory, f"{strategy}.db"),
            "CONN_MAX_AGE": None,
            "OPTIONS": {"strategy": strategy, "timeout": TIMEOUT, "synchronous": synchronous,
                        "store": _store(strategy)}}
    return databases


def _set_up_django(databases: dict[str, dict[str, Any]]) -> None:
    """Configure Django for this process: the bench's databases, views and models."""
    try:
        import django
        from django.conf import settings
    except ImportError:
        raise ConfigError(f"bench --django needs Django: {DJANGO_INSTALL}") from None
    if settings.configured:
        raise ConfigError("bench --django configures Django itself: run it in a process "
                          "whose Django settings are not configured yet")
    settings.configure(
        DATABASES=databases, DATABASE_ROUTERS=[f"{__name__}.CurrentSetup"],
        ROOT_URLCONF=_urlconf(), ALLOWED_HOSTS=[HOST], MIDDLEWARE=[], INSTALLED_APPS=[],
        USE_TZ=True, DEBUG=False, SECRET_KEY="bench-only",
        LOGGING={"version": 1, "disable_existing_loggers": False,  # failures are counted
                 "loggers": {"django.request": {"level": "CRITICAL"}}})
    django.setup()
    from django.db import models

    class Note(models.Model):
        text: models.TextField[str, str] = models.TextField()
        number: models.PositiveIntegerField[int, int] = models.PositiveIntegerField()

        class Meta:
            app_label = "storemgr_bench"

    class Counter(models.Model):
        name: models.CharField[str, str] = models.CharField(max_length=50, unique=True)
        value: models.PositiveIntegerField[int, int] = models.PositiveIntegerField(default=0)

        class Meta:
            app_label = "storemgr_bench"

    _current.update(note=Note, counter=Counter)


class _Client:
    """Requests into Django's WSGI handler in this process; raises on a failed one."""

    def __init__(self) -> None:
        from django.core.handlers.wsgi import WSGIHandler
        self.handler = WSGIHandler()
        self.numbers = itertools.count()
        self.posted = [0]

    def request(self) -> None:
        number = next(self.numbers)
        if number % 2 == 0:
            status = self._call("POST", "/notes", f"note {number}".encode())
            if status != 201:
                raise RuntimeError(f"POST /notes answered {status}")
            self.posted.append(1)
        else:
            status = self._call("GET", f"/notes/{number % SEEDED_NOTES + 1}", b"")
            if status != 200:
                raise RuntimeError(f"GET /notes/N answered {status}")

    def _call(self, method: str, path: str, body: bytes) -> int:
        answer: list[str] = []
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "",
            "QUERY_STRING": "", "SERVER_NAME": HOST, "SERVER_PORT": "80", "HTTP_HOST": HOST,
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "text/plain; charset=utf-8", "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False}
        response = self.handler(environ, lambda status, headers, exc_info=None:  # type: ignore[arg-type]  # records the status only
                                answer.append(status))
        try:
            b"".join(response)
        finally:
            response.close()  # sends request_finished, as a WSGI server does
        return int(answer[0].split()[0])


def _prepare(alias: str) -> None:
    """Tables, the counter at 0 and the seeded notes, in the setup's fresh file."""
    from django.db import connections
    note, counter = _current["note"], _current["counter"]
    with connections[alias].schema_editor() as editor:
        editor.create_model(note)
        editor.create_model(counter)
    counter.objects.create(name="notes")
    note.objects.bulk_create(note(text=f"seeded {i}", number=0) for i in range(SEEDED_NOTES))


def _release(alias: str) -> None:
    """Close this thread's connections; for the engine, let the manager close its database."""
    from django.db import connections

    import sqlite_storemgr as sm
    from ..integrations.django.config import forget_database

    connections.close_all()
    if alias != "stock":
        forget_database(sm.default_manager(), _store(alias))


def _setup(name: str, alias: str, threads: int, units: int, max_seconds: float) -> Result:
    from django.db import connections

    _current["alias"] = alias
    _prepare(alias)
    client = _Client()
    try:
        result = _threaded(name, threads, units, client.request,
                           teardown=connections.close_all, max_seconds=max_seconds)
        result.lost_updates = sum(client.posted) - _current["counter"].objects.get(
            name="notes").value
    finally:
        _release(alias)
    return result


def run(threads: int = 16, units: int = 10000, synchronous: str = "full",
        strategies: tuple[str, ...] = STRATEGIES, directory: str | None = None,
        progress: Progress = lambda *_: None, max_seconds: float = DEFAULT_MAX_SECONDS
        ) -> list[Result]:
    """The stock backend, then the engine under each strategy; ratios against the stock row."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        _set_up_django(_databases(tmp, synchronous, strategies))
        steps: list[tuple[str, str]] = [(STOCK, "stock")] + [
            (f"Django on sqlite_storemgr {strategy}", strategy) for strategy in strategies]
        results = []
        for index, (name, alias) in enumerate(steps):
            progress(name, index, len(steps))
            results.append(_setup(name, alias, threads, units, max_seconds))
        progress("done", len(steps), len(steps))
    stock = results[0].per_second
    for result in results:
        result.ratio = result.per_second / stock if stock else math.inf
    return results
