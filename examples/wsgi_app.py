"""A threaded WSGI app on waitress, storing notes through sqlite_storemgr (strategy=queue).

Every waitress worker thread reads through its own read-only store (`get_store`);
writes go to the manager's writer thread (`submit_write`), which group-commits
the units of concurrent requests.  Routes:

    POST /notes         body: the note's text (UTF-8)  -> 201 {"id": N}
    GET  /notes/<id>    -> 200 {"id": N, "text": "..."}, or 404
    GET  /count         -> 200 {"count": N}
    GET  /stats         -> 200 the manager's figures (batches, queue depth, ...)

Run:

    python examples/wsgi_app.py [--port 0] [--db PATH] [--threads 8]

The first line on stdout is the URL it listens on (port 0 picks a free one).
SIGTERM or SIGINT stops the server, drains queued writes and closes the manager.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import tempfile

from storm.locals import Int, Unicode
from waitress.server import create_server

import sqlite_storemgr as sm

NOTE_PATH = re.compile(r"^/notes/(\d{1,18})$")
MAX_BODY = 64 * 1024


class Note:
    __storm_table__ = "note"
    id = Int(primary=True)
    text = Unicode()


def create_schema(store) -> None:
    store.execute("CREATE TABLE IF NOT EXISTS note (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")


def add_note(store, text: str) -> int:
    """A write unit: may run more than once, acts only through ``store``, returns a plain int."""
    note = Note()
    note.text = text
    store.add(note)
    store.flush()  # assigns the id
    return note.id


class App:
    """The WSGI callable; one StoreManager shared by every worker thread."""

    def __init__(self, manager: sm.StoreManager):
        self.manager = manager

    def __call__(self, environ, start_response):
        try:
            status, body = self.route(environ)
        except (sm.DatabaseLockedError, sm.QueueFullError) as error:
            status, body = "503 Service Unavailable", {"error": str(error)}
        except Exception as error:  # a bug: answer 500, keep serving
            status, body = "500 Internal Server Error", {"error": repr(error)}
        payload = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(payload)))])
        return [payload]

    def route(self, environ) -> tuple[str, dict]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path == "/notes" and method == "POST":
            return self.post_note(environ)
        match = NOTE_PATH.match(path)
        if match and method == "GET":
            note = self.manager.get_store("notes").get(Note, int(match.group(1)))
            if note is None:
                return "404 Not Found", {"error": f"no note {match.group(1)}"}
            return "200 OK", {"id": note.id, "text": note.text}
        if path == "/count" and method == "GET":
            return "200 OK", {"count": self.manager.get_store("notes").find(Note).count()}
        if path == "/stats" and method == "GET":
            return "200 OK", self.manager.stats("notes")
        return "404 Not Found", {"error": f"no route {method} {path}"}

    def post_note(self, environ) -> tuple[str, dict]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return "400 Bad Request", {"error": f"the body must be 0 to {MAX_BODY} bytes"}
        try:
            text = environ["wsgi.input"].read(length).decode("utf-8")
        except UnicodeDecodeError:
            return "400 Bad Request", {"error": "the body must be UTF-8 text"}
        note_id = self.manager.submit_write(add_note, text, name="notes").result()
        return "201 Created", {"id": note_id}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--db", help="SQLite file (default: a temporary one, removed at exit)")
    parser.add_argument("--threads", type=int, default=8, help="waitress worker threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    # Under load every request waits for a worker; waitress would log each one.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    scratch = None if args.db else tempfile.TemporaryDirectory(prefix="storemgr-wsgi-")
    path = args.db or os.path.join(scratch.name, "notes.db")  # scratch goes when main ends

    manager = sm.StoreManager()
    manager.configure("notes", f"sqlite:{os.path.abspath(path)}?strategy=queue&timeout=5")
    manager.submit_write(create_schema, name="notes").result()
    server = create_server(App(manager), host="127.0.0.1", port=args.port,
                           threads=args.threads, clear_untrusted_proxy_headers=True)

    def stop(signum, frame):
        raise KeyboardInterrupt  # waitress's run() shuts its workers down on this
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    print(f"http://127.0.0.1:{server.effective_port}", flush=True)
    print(f"database {path}, strategy=queue, {args.threads} waitress threads", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:  # arrived before run() took over
        pass
    finally:
        server.close()
        stats = manager.stats("notes")
        manager.close()  # drains queued writes, closes every store
    print(f"shut down cleanly: {stats['units_committed']} write units committed in "
          f"{stats['batches']} group commits, {stats['units_failed']} failed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
