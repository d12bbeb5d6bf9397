"""The sample Django site on waitress: migrate, serve with N threads, shut down cleanly.

    python examples/django_site/serve.py [--port 0] [--db PATH] [--threads 16]
                                         [--strategy queue|single|mutex|threadlocal]

The database is migrated first (``manage.py migrate``).  The first line on
stdout is the URL it listens on (port 0 picks a free one).  SIGTERM or
SIGINT stops the server, then closes the store manager (queued writes are
drained) and prints the figures of the run.  Load it with
``python examples/load.py --url URL --threads 16``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile

SITE = os.path.dirname(os.path.abspath(__file__))
STRATEGIES = ("queue", "single", "mutex", "threadlocal")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--db", help="SQLite file (default: a temporary one, removed at exit)")
    parser.add_argument("--threads", type=int, default=16, help="waitress worker threads")
    parser.add_argument("--strategy", choices=STRATEGIES, default="queue")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # every request waits under load
    scratch = None if args.db else tempfile.TemporaryDirectory(prefix="storemgr-django-")
    path = os.path.abspath(args.db or os.path.join(scratch.name, "notes.db"))

    sys.path.insert(0, SITE)
    os.environ["DJANGO_SETTINGS_MODULE"] = "notes_site.settings"
    os.environ["NOTES_SITE_DB"] = path
    os.environ["NOTES_SITE_STRATEGY"] = args.strategy
    import django
    django.setup()
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from waitress.server import create_server

    from notes.models import Counter, Note

    import sqlite_storemgr as sm

    call_command("migrate", verbosity=0)
    server = create_server(get_wsgi_application(), host="127.0.0.1", port=args.port,
                           threads=args.threads, clear_untrusted_proxy_headers=True)

    def stop(signum, frame):
        raise KeyboardInterrupt  # waitress's run() shuts its workers down on this
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    print(f"http://127.0.0.1:{server.effective_port}", flush=True)
    print(f"database {path}, strategy={args.strategy}, {args.threads} waitress threads",
          flush=True)
    try:
        server.run()
    except KeyboardInterrupt:  # arrived before run() took over
        pass
    finally:
        server.close()
        counted = Counter.objects.filter(name="notes").values_list("value", flat=True).first()
        notes = Note.objects.count()
        sm.close()  # drains queued writes, closes every store
    print(f"shut down cleanly: strategy={args.strategy}, {notes} notes, "
          f"notes counter {counted or 0}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
