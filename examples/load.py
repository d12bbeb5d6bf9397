"""Load the notes app (examples/wsgi_app.py) from many threads, then check every write.

Each client thread keeps one HTTP/1.1 connection and mixes requests: POST a new
note, GET a note some thread was told was saved (it must be there, with its
text), and now and then GET /count.  The run is bounded in time and in count,
and only talks to the loopback interface.  Afterwards every acknowledged POST id
is read back.  Exit status 1 if any request failed or an acknowledged note is
missing.

    python examples/load.py [--threads 16] [--seconds 3] [--max-requests 100000]
    python examples/load.py --url http://127.0.0.1:8080   # an app already running

Without --url it starts the app itself (a subprocess on a free port, a temp
database) and stops it with SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wsgi_app.py")


class Client:
    """One keep-alive connection; `request` returns (status, decoded JSON body)."""

    def __init__(self, host: str, port: int):
        self.connection = http.client.HTTPConnection(host, port, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        try:
            self.connection.request(method, path, body=body)
            response = self.connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        except Exception:
            self.connection.close()  # the next request reconnects
            raise

    def close(self) -> None:
        self.connection.close()


class Load:
    """Shared tallies of one run; list.append and dict stores are atomic under the GIL."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.saved: dict[int, str] = {}     # acknowledged id -> text
        self.saved_ids: list[int] = []
        self.errors: list[str] = []
        self.requests = 0
        self.lock = threading.Lock()

    def error(self, message: str) -> None:
        self.errors.append(message)
        if len(self.errors) <= 5:
            print(f"error: {message}", file=sys.stderr, flush=True)

    def client_thread(self, index: int, stop_at: float, budget: int) -> None:
        client = Client(self.host, self.port)
        rng = random.Random(index)
        done = 0
        try:
            while done < budget and time.monotonic() < stop_at:
                done += 1
                try:
                    self.one_request(client, rng, index, done)
                except Exception as error:
                    self.error(f"thread {index}: {error!r}")
        finally:
            client.close()
            with self.lock:
                self.requests += done

    def one_request(self, client: Client, rng: random.Random, index: int, number: int) -> None:
        roll = rng.random()
        if roll < 0.5 or not self.saved_ids:
            text = f"note {number} from client {index} \N{SNOWMAN}"
            status, body = client.request("POST", "/notes", text.encode())
            if status != 201 or not isinstance(body.get("id"), int):
                return self.error(f"POST /notes -> {status} {body}")
            self.saved[body["id"]] = text
            self.saved_ids.append(body["id"])
        elif roll < 0.95:
            self.check_note(client, rng.choice(self.saved_ids))
        else:
            status, body = client.request("GET", "/count")
            if status != 200 or body.get("count", -1) < 0:
                self.error(f"GET /count -> {status} {body}")

    def check_note(self, client: Client, note_id: int) -> bool:
        status, body = client.request("GET", f"/notes/{note_id}")
        if status != 200 or body.get("text") != self.saved[note_id]:
            self.error(f"acknowledged note {note_id}: GET -> {status} {body}")
            return False
        return True

    def verify_all(self, threads: int) -> int:
        """Read back every acknowledged id over ``threads`` connections; the count readable."""
        ids = sorted(self.saved)
        readable = [0] * threads

        def verify(part: list[int], slot: int) -> None:
            client = Client(self.host, self.port)
            try:
                for note_id in part:
                    try:
                        readable[slot] += self.check_note(client, note_id)
                    except Exception as error:
                        self.error(f"verifying note {note_id}: {error!r}")
            finally:
                client.close()

        workers = [threading.Thread(target=verify, args=(ids[slot::threads], slot))
                   for slot in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        return sum(readable)


def loopback_address(url: str) -> tuple[str, int]:
    """Host and port of ``url``, refusing anything but the loopback interface."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise SystemExit(f"load.py: {url!r}: use http://127.0.0.1:PORT")
    addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port)}
    if not all(ipaddress.ip_address(address).is_loopback for address in addresses):
        raise SystemExit(f"load.py: {url!r} is not a loopback address; this tool only "
                         "loads a server on this machine")
    return parts.hostname, parts.port


def start_app() -> tuple[subprocess.Popen, str]:
    app = subprocess.Popen([sys.executable, APP, "--port", "0"], stdout=subprocess.PIPE,
                           text=True)
    url = app.stdout.readline().strip()
    if not url.startswith("http://"):
        app.kill()
        raise SystemExit(f"load.py: the app did not start (first line {url!r})")
    return app, url


def stop_app(app: subprocess.Popen) -> bool:
    """SIGTERM, then the app must exit 0 having said it shut down cleanly."""
    app.send_signal(signal.SIGTERM)
    try:
        rest, _ = app.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        app.kill()
        print("app: did not stop within 30 s of SIGTERM")
        return False
    clean = app.returncode == 0 and "shut down cleanly" in rest
    print(f"app: exit status {app.returncode}; {rest.strip().splitlines()[-1] if rest else ''}")
    return clean


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an app already running (default: start one)")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=100_000, help="over all threads")
    args = parser.parse_args(argv)
    if not (1 <= args.threads <= 256 and 0 < args.seconds <= 600 and args.max_requests > 0):
        parser.error("use 1-256 threads, 0-600 seconds and a positive --max-requests")

    app, url = (None, args.url) if args.url else start_app()
    load = Load(*loopback_address(url))
    print(f"loading {url} from {args.threads} threads for up to {args.seconds:g} s "
          f"(at most {args.max_requests} requests)", flush=True)
    clean_exit = True
    try:
        stop_at = time.monotonic() + args.seconds
        budgets = [args.max_requests // args.threads + (i < args.max_requests % args.threads)
                   for i in range(args.threads)]
        threads = [threading.Thread(target=load.client_thread, args=(i, stop_at, budgets[i]))
                   for i in range(args.threads)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - began
        acknowledged = len(load.saved)
        readable = load.verify_all(min(args.threads, 8))
    finally:
        if app is not None:
            clean_exit = stop_app(app)

    print(f"requests: {load.requests} in {seconds:.2f} s ({load.requests / seconds:.0f} "
          f"requests/s), {acknowledged} notes posted")
    print(f"errors: {len(load.errors)}")
    print(f"verified: {readable}/{acknowledged} acknowledged notes readable")
    ok = not load.errors and readable == acknowledged and clean_exit
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
