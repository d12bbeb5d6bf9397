"""TransactionMiddleware under a real waitress server: one transaction per request.

Every test runs a waitress server on 127.0.0.1 (port 0) in this process and
talks to it with http.client from several threads.  What a request committed
is checked with an outside pysqlite3 connection on the database file.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs

import pysqlite3.dbapi2 as dbapi
import pytest
from waitress import wasyncore
from waitress.server import create_server

from sqlite_storemgr import (
    DatabaseLockedError, TransactionControlError, TransactionDoomedError)
from sqlite_storemgr.integrations.wsgi import TransactionMiddleware
from _items import Boom, Item, failing, insert, names


class App:
    """The application under test; what it does is chosen by the query string."""

    def __init__(self, manager, strategy):
        self.manager = manager
        self.strategy = strategy
        self.stores = []          # every read store a request touched (for the snapshot check)
        self.stores_lock = threading.Lock()
        self.held = {}            # a Storm object kept across requests (for the cache check)
        self.stream_events = {}   # name -> "finished" | "closed early"
        self.stream_started = threading.Event()
        self.errors = []

    def __call__(self, environ, start_response):
        query = {key: values[0] for key, values in parse_qs(environ["QUERY_STRING"]).items()}
        path = environ["PATH_INFO"]
        if path == "/add":
            return self.add(query, start_response)
        if path == "/count":
            return self.respond(start_response, "200 OK", {"names": self.read_names()})
        if path == "/hold":
            return self.hold(query, start_response)
        if path == "/stream":
            return self.stream(query, start_response)
        if path == "/commit-inside":
            with self.manager.write("main") as store:
                store.execute("INSERT INTO item (name) VALUES ('commit-inside')")
            try:  # the block ended, but the request's transaction is still running
                store.commit()
            except TransactionControlError as error:
                return self.respond(start_response, "409 Conflict", {"error": str(error)})
            return self.respond(start_response, "200 OK", {})
        return self.respond(start_response, "404 Not Found", {})

    def respond(self, start_response, status, body):
        payload = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(payload)))])
        return [payload]

    def read_names(self):
        if self.strategy == "single":
            return self.manager.submit_read(
                lambda store: sorted(item.name for item in store.find(Item))).result()
        store = self.manager.get_store("main")
        with self.stores_lock:
            self.stores.append(store)
        return sorted(item.name for item in store.find(Item))

    def add(self, query, start_response):
        name, via, fail = query["name"], query.get("via", "write"), query.get("fail", "none")
        for part in ("a", "b"):  # two units: they must commit together or not at all
            row = f"{name}-{part}"
            if via == "write":
                with self.manager.write("main") as store:
                    store.execute("INSERT INTO item (name) VALUES (?)", (row,))
            elif via == "submit":
                assert self.manager.submit_write(insert(row)).result(timeout=10) == row
            elif via == "store":  # direct writes through the thread's store
                self.manager.get_store("main").add(Item()).name = row
            elif via == "savepoint":
                with self.manager.write("main", savepoint=True) as store:
                    store.execute("INSERT INTO item (name) VALUES (?)", (row,))
            time.sleep(0.002)
        if fail == "raise":
            raise Boom(name)
        if fail == "500":
            return self.respond(start_response, "500 Internal Server Error", {"name": name})
        if fail == "doom":  # an inner unit fails; the application swallows it and says 200
            error = self.manager.submit_write(failing("inner failure")).exception(timeout=10)
            assert isinstance(error, Boom)
        if fail == "savepoint":  # fails alone: the request still commits
            try:
                with self.manager.write("main", savepoint=True) as store:
                    store.execute("INSERT INTO item (name) VALUES ('lost in savepoint')")
                    raise Boom("savepoint")
            except Boom:
                pass
        if fail == "400":
            return self.respond(start_response, "400 Bad Request", {"name": name})
        return self.respond(start_response, "200 OK", {"name": name})

    def hold(self, query, start_response):
        """Keep a Storm object across requests: its data must not be served from the cache."""
        if self.strategy == "single":
            return self.respond(start_response, "404 Not Found", {})
        if "load" in query:
            self.held["item"] = self.manager.get_store("main").find(
                Item, Item.name == query["load"]).one()
        return self.respond(start_response, "200 OK", {"name": self.held["item"].name})

    def stream(self, query, start_response):
        name = query["name"]
        with self.manager.write("main") as store:
            store.execute("INSERT INTO item (name) VALUES (?)", (name,))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        events, started = self.stream_events, self.stream_started

        def body():
            try:
                for _ in range(int(query.get("chunks", "400"))):
                    started.set()
                    yield b"x" * 16384
                    time.sleep(0.01)
                events[name] = "finished"
            except GeneratorExit:
                events[name] = "closed early"
                raise
        return body()


class Server:
    """A waitress server on 127.0.0.1, its loop run in a thread of this process until close().

    The loop is our own rather than ``server.run()``: stopping it then needs no message
    through waitress's trigger pipe, which a server that closed itself (its error handler
    closes the trigger too) no longer has, and the loop thread closes every dispatcher itself.
    """

    def __init__(self, app, threads=4):
        self.server = create_server(app, host="127.0.0.1", port=0, threads=threads,
                                    clear_untrusted_proxy_headers=True)
        self.port = self.server.effective_port
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        dispatchers = self.server._map
        try:
            while dispatchers and not self.stopping.is_set():
                wasyncore.loop(timeout=0.05, map=dispatchers, count=1)
        finally:
            wasyncore.close_all(dispatchers, ignore_all=True)

    def request(self, method, path, timeout=20):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def close(self):
        self.stopping.set()
        self.thread.join(5)
        assert not self.thread.is_alive(), "the server's loop did not stop within 5 s"
        self.server.task_dispatcher.shutdown(timeout=5)


@pytest.fixture
def setup(make_manager, db_path, strategy):
    manager = make_manager(strategy, timeout=10)
    app = App(manager, strategy)
    servers = []

    def serve(threads=4):
        server = Server(TransactionMiddleware(app, manager), threads)
        servers.append(server)
        return server
    yield manager, db_path, app, serve
    for server in servers:
        server.close()


def checkpoint_busy(path):
    """Whether some connection still pins the WAL (a read snapshot kept open)."""
    connection = dbapi.connect(str(path))
    try:
        busy, log, checkpointed = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy, log
    finally:
        connection.close()


@pytest.mark.timeout(60)
def test_concurrent_requests_commit_whole_and_failed_ones_leave_nothing(setup):
    manager, path, app, serve = setup
    server = serve(threads=6)
    vias = ["write", "submit"] + (["store"] if manager.stats("main")["strategy"]
                                  in ("mutex", "threadlocal") else [])
    fails = ["none", "raise", "500", "doom", "none", "400", "savepoint"]
    plan = [(f"r{i}", vias[i % len(vias)], fails[i % len(fails)]) for i in range(28)]

    def call(entry):
        name, via, fail = entry
        return entry, server.request("POST", f"/add?name={name}&via={via}&fail={fail}")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, plan))
        counts = list(pool.map(lambda _: server.request("GET", "/count"), range(12)))

    expected = []
    for (name, via, fail), (status, body) in results:
        if fail in ("raise", "500", "doom"):
            assert status == 500, (name, via, fail, status, body)
        else:
            assert status == (400 if fail == "400" else 200), (name, via, fail, status, body)
            expected += [f"{name}-a", f"{name}-b"]
        if fail == "doom":  # the application said 200; the doomed commit made it a 500
            assert b"could not be committed" in body
    assert all(status == 200 for status, _ in counts)
    assert sorted(names(path)) == sorted(expected)
    # No pooled thread keeps a transaction (a read snapshot) open after its request.
    for store in app.stores:
        assert not store.connection.in_transaction
    assert checkpoint_busy(path) == (0, 0)


@pytest.mark.timeout(30)
def test_nothing_is_committed_before_the_request_ends(setup):
    manager, path, app, serve = setup
    server = serve(threads=2)
    seen = {}
    original = app.add

    def add_and_look(query, start_response):
        response = original(query, start_response)
        seen[query["name"]] = sorted(names(path))  # after both units, before the request ended
        return response
    app.add = add_and_look
    assert server.request("POST", "/add?name=slow&via=submit")[0] == 200
    assert seen["slow"] == []
    assert sorted(names(path)) == ["slow-a", "slow-b"]


@pytest.mark.timeout(30)
def test_client_gone_mid_stream_rolls_back(setup):
    manager, path, app, serve = setup
    server = serve(threads=2)
    client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    client.sendall(b"GET /stream?name=streamed HTTP/1.1\r\nHost: x\r\n\r\n")
    assert client.recv(4096).startswith(b"HTTP/1.1 200")
    # Reset the connection (no FIN handshake): the server's next writes fail.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    deadline = time.monotonic() + 15
    while "streamed" not in app.stream_events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.stream_events.get("streamed") == "closed early"
    assert sorted(names(path)) == []
    # The worker threads are clean: a later request commits normally.
    assert server.request("GET", "/stream?name=whole&chunks=3")[0] == 200
    assert app.stream_events["whole"] == "finished"
    assert sorted(names(path)) == ["whole"]
    assert checkpoint_busy(path) == (0, 0)


@pytest.mark.timeout(30)
def test_no_snapshot_or_cached_object_survives_into_the_next_request(setup):
    manager, path, app, serve = setup
    if manager.stats("main")["strategy"] == "single":
        pytest.skip("single has no per-thread stores to cache anything")
    server = serve(threads=1)  # one worker thread: every request reuses its store
    assert server.request("POST", "/add?name=old")[0] == 200
    status, body = server.request("GET", "/hold?load=old-a")
    assert (status, json.loads(body)) == (200, {"name": "old-a"})
    assert json.loads(server.request("GET", "/count")[1])["names"] == ["old-a", "old-b"]
    outside = dbapi.connect(str(path))
    outside.execute("UPDATE item SET name = 'renamed' WHERE name = 'old-a'")
    outside.commit()
    outside.close()
    # The object held since the first request reloads: its cache was dropped between requests.
    assert json.loads(server.request("GET", "/hold")[1]) == {"name": "renamed"}
    assert json.loads(server.request("GET", "/count")[1])["names"] == ["old-b", "renamed"]
    assert checkpoint_busy(path) == (0, 0)


@pytest.mark.timeout(30)
def test_the_middleware_owns_the_transaction(setup):
    manager, path, app, serve = setup
    server = serve(threads=2)
    status, body = server.request("GET", "/commit-inside")
    assert status == 409
    assert "inside a unit of work" in json.loads(body)["error"]
    assert sorted(names(path)) == ["commit-inside"]  # 4xx commits what the request did


def call_app(app, path="/", query=""):
    """Call a WSGI application directly, the way a server would; returns (status, body)."""
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = status
        return lambda data: None
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query}
    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return seen["status"], body


@pytest.mark.timeout(30)
def test_a_wrapped_application_called_inside_a_request_joins_it(make_manager, tmp_path):
    path = tmp_path / "nested.db"
    manager = make_manager("threadlocal", path=path, timeout=5)

    def inner(environ, start_response):
        manager.submit_write(insert("inner")).result()
        status = "503 Service Unavailable" if environ["QUERY_STRING"] == "fail" else "200 OK"
        start_response(status, [])
        return [b"inner"]
    wrapped_inner = TransactionMiddleware(inner, manager)

    def outer(environ, start_response):
        before = sorted(names(path))
        manager.submit_write(insert("outer")).result()
        inner_status, _ = call_app(wrapped_inner, query=environ["QUERY_STRING"])
        assert sorted(names(path)) == before  # the inner request committed nothing by itself
        start_response("200 OK", [])
        return [inner_status.encode()]
    app = TransactionMiddleware(outer, manager)
    assert call_app(app) == ("200 OK", b"200 OK")
    assert sorted(names(path)) == ["inner", "outer"]
    # The inner application failed (5xx): the outer request is doomed.
    status, body = call_app(app, query="fail")
    assert status.startswith("500") and b"could not be committed" in body
    assert sorted(names(path)) == ["inner", "outer"]


@pytest.mark.timeout(30)
def test_a_response_never_closed_is_rolled_back_at_the_next_request(make_manager, tmp_path):
    path = tmp_path / "unclosed.db"
    manager = make_manager("mutex", path=path, timeout=1)

    def app(environ, start_response):
        manager.submit_write(insert(environ["QUERY_STRING"])).result()
        start_response("200 OK", [])
        return iter([b"one", b"two"])
    wrapped = TransactionMiddleware(app, manager)
    seen = []
    result = wrapped({"QUERY_STRING": "abandoned"}, lambda *args: seen.append(args))
    assert next(iter(result)) == b"one"  # a broken server: never finishes nor closes
    assert manager.get_store("main").connection.in_transaction
    assert call_app(wrapped, query="next")[0] == "200 OK"
    assert sorted(names(path)) == ["next"]
    # The mutex was released with the abandoned request: another thread can write.
    other = threading.Thread(target=lambda: manager.submit_write(insert("other")).result())
    other.start()
    other.join(5)
    assert sorted(names(path)) == ["next", "other"]


@pytest.mark.timeout(30)
def test_a_request_holding_the_mutex_makes_other_writers_wait_then_time_out(
        make_manager, tmp_path):
    """Under mutex the request keeps the write lock to its end; the wait is bounded."""
    path = tmp_path / "held.db"
    manager = make_manager("mutex", path=path, timeout=0.3)

    def app(environ, start_response):
        manager.submit_write(insert("request")).result()
        start_response("200 OK", [])
        return iter([b"a", b"b"])
    result = TransactionMiddleware(app, manager)({"QUERY_STRING": ""}, lambda *a: None)
    chunks = iter(result)
    assert next(chunks) == b"a"  # the request is still streaming: its transaction is open
    outcome = {}
    other = threading.Thread(target=lambda: outcome.setdefault(
        "error", manager.submit_write(insert("other")).exception()))
    other.start()
    other.join(5)
    assert isinstance(outcome["error"], DatabaseLockedError)
    assert "mutex" in str(outcome["error"])
    assert list(chunks) == [b"b"]
    result.close()
    assert sorted(names(path)) == ["request"]


@pytest.mark.timeout(30)
def test_doomed_request_whose_body_was_already_streaming_is_cut_short(make_manager, tmp_path):
    path = tmp_path / "cut.db"
    manager = make_manager("threadlocal", path=path, timeout=1)

    def app(environ, start_response):
        manager.submit_write(insert("kept?")).result()
        start_response("200 OK", [])

        def body():
            yield b"first"
            manager.submit_write(failing("inner failure")).exception()  # dooms, swallowed
            yield b"second"
        return body()
    result = TransactionMiddleware(app, manager)({"QUERY_STRING": ""}, lambda *a: None)
    chunks = iter(result)
    assert next(chunks) == b"first"
    with pytest.raises(TransactionDoomedError):
        next(chunks)
    result.close()
    assert sorted(names(path)) == []
    assert not manager.get_store("main").connection.in_transaction


@pytest.mark.timeout(30)
def test_a_request_whose_transaction_cannot_begin_gets_the_lock_error(make_manager, tmp_path):
    path = tmp_path / "busy.db"
    manager = make_manager("threadlocal", path=path, timeout=0.2)
    holder = dbapi.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another connection holds the write lock

    def app(environ, start_response):
        try:
            manager.submit_write(insert("request"))
        except DatabaseLockedError as error:
            start_response("503 Service Unavailable", [])
            return [str(error).encode()]
        start_response("200 OK", [])
        return [b"written"]
    try:
        status, body = call_app(TransactionMiddleware(app, manager))
        assert status == "503 Service Unavailable"
        assert b"database is locked" in body
        holder.execute("ROLLBACK")
        assert call_app(TransactionMiddleware(app, manager)) == ("200 OK", b"written")
        assert sorted(names(path)) == ["request"]
    finally:
        holder.close()
