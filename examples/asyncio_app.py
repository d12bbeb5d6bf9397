"""The notes app of examples/wsgi_app.py on asyncio (aiohttp), through `awrite` and `aread`.

One event loop serves every request; no handler ever blocks it: under ``queue``
and ``single`` the units run on the manager's writer thread, under ``mutex`` and
``threadlocal`` on the manager's bounded thread pool.  Routes:

    POST /notes         body: the note's text (UTF-8)  -> 201 {"id": N}
    GET  /notes/<id>    -> 200 {"id": N, "text": "..."}, or 404
    GET  /count         -> 200 {"count": N}
    GET  /stats         -> 200 the manager's figures

Run, then load it (examples/load.py checks every acknowledged note afterwards):

    python examples/asyncio_app.py [--port 0] [--db PATH] [--strategy queue]
    python examples/load.py --url http://127.0.0.1:PORT

The first line on stdout is the URL it listens on (port 0 picks a free one).
SIGTERM or SIGINT stops the server, drains queued writes and closes the manager.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile

from aiohttp import web
from storm.locals import Int, Unicode

import sqlite_storemgr as sm

MAX_BODY = 64 * 1024
MANAGER = web.AppKey("manager", sm.StoreManager)


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


def note_text(store, note_id: int) -> str | None:
    note = store.get(Note, note_id)
    return None if note is None else note.text


def count_notes(store) -> int:
    return store.find(Note).count()


async def post_note(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY:
        return web.json_response({"error": f"the body must be 0 to {MAX_BODY} bytes"},
                                 status=400)
    try:
        text = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        return web.json_response({"error": "the body must be UTF-8 text"}, status=400)
    note_id = await request.app[MANAGER].awrite(add_note, text, name="notes")
    return web.json_response({"id": note_id}, status=201)


async def get_note(request: web.Request) -> web.Response:
    note_id = int(request.match_info["id"])
    text = await request.app[MANAGER].aread(note_text, note_id, name="notes")
    if text is None:
        return web.json_response({"error": f"no note {note_id}"}, status=404)
    return web.json_response({"id": note_id, "text": text})


async def count(request: web.Request) -> web.Response:
    return web.json_response(
        {"count": await request.app[MANAGER].aread(count_notes, name="notes")})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[MANAGER].stats("notes"))


@web.middleware
async def errors_as_json(request: web.Request, handler) -> web.StreamResponse:
    """Busy answers 503, a bug 500, a wrong route 404: always JSON, and the server goes on."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        return web.json_response({"error": error.reason}, status=error.status)
    except (sm.DatabaseLockedError, sm.QueueFullError) as error:
        return web.json_response({"error": str(error)}, status=503)
    except Exception as error:  # a bug: answer 500, keep serving
        return web.json_response({"error": repr(error)}, status=500)


def make_app(manager: sm.StoreManager) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=MAX_BODY)
    app[MANAGER] = manager
    app.add_routes([web.post("/notes", post_note),
                    web.get(r"/notes/{id:\d{1,18}}", get_note),
                    web.get("/count", count),
                    web.get("/stats", stats)])
    return app


async def serve(manager: sm.StoreManager, port: int) -> None:
    runner = web.AppRunner(make_app(manager), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host, bound = runner.addresses[0][:2]
    print(f"http://{host}:{bound}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # finishes the requests under way


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--db", help="SQLite file (default: a temporary one, removed at exit)")
    parser.add_argument("--strategy", default="queue",
                        choices=["queue", "single", "mutex", "threadlocal"])
    args = parser.parse_args(argv)
    scratch = None if args.db else tempfile.TemporaryDirectory(prefix="storemgr-asyncio-")
    path = args.db or os.path.join(scratch.name, "notes.db")  # scratch goes when main ends

    manager = sm.StoreManager()
    manager.configure("notes", f"sqlite:{os.path.abspath(path)}?strategy={args.strategy}"
                               "&timeout=5")
    manager.submit_write(create_schema, name="notes").result()
    try:
        asyncio.run(serve(manager, args.port))
    finally:
        figures = manager.stats("notes")
        manager.close()  # drains queued writes, closes every store
    print(f"shut down cleanly: {figures['units_committed']} write units committed, "
          f"{figures['units_failed']} failed (strategy={args.strategy})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
