"""Programs over `StoreManager`'s public API: their model, their generator, their interpreter.

Used by ``tests/test_differential.py`` (not a test module itself).

- The model: a `Program` is a list of steps, each run by one of 2-3 logical threads
  (``T0``..``T2``) or by the test itself (`Close`).  Units of work are `Body` objects:
  a few operations (inserts and updates by raw SQL or by Storm objects, reads, nested
  units, a check-then-insert helper), then maybe a deliberate `Boom`.  Every step
  renders itself as the Python it stands for, so a failing example reads as a script.
- The generator: `programs()`, a Hypothesis strategy.  It only generates what the
  contract decides: a held Storm object is read again (by `Peek`, and after each
  `Submit` or `WriteBlock` of its thread) only while no other thread may have written
  since its thread last refreshed it (a get/find through ``get_store``), since the
  contract promises fresh cached objects on get/find and after the thread's own
  writes, not at every attribute access.
- The interpreter: `run_program()` runs a program on a fresh file under one strategy,
  one real thread per logical thread, each step sent to its thread and awaited before
  the next is sent, so the interleaving is the program's order and the run is
  deterministic.  It returns the observations: every step's value (plain data) or
  exception (by type name), what every read saw, and the final rows of the file read
  through a plain pysqlite3 connection.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

import pysqlite3.dbapi2 as dbapi
from hypothesis import strategies as st
from storm.locals import Int, Unicode

from sqlite_storemgr import StoreManager

SCHEMA = "CREATE TABLE item (id INTEGER PRIMARY KEY, v TEXT)"
SEED_ROWS = [(1, "a"), (2, "a")]  # from the start, so reads and updates have something to see
KEYS = (1, 2, 3)
VALUES = ("b", "c", "d")  # never the seed's value: a first update always shows
STEP_TIMEOUT = 10.0  # seconds; every wait of the harness is bounded by it
ERROR_MODULES = ("builtins", "storm.exceptions", "sqlite_storemgr.errors",
                 "concurrent.futures._base", __name__)


class Item:
    __storm_table__ = "item"
    id = Int(primary=True)
    v = Unicode()

    def __init__(self, id: int, v: str):
        self.id = id
        self.v = v


class Boom(Exception):
    """The deliberate failure of a unit or a read."""


# -- the model ----------------------------------------------------------------------


def read_all(store: Any, key: int) -> tuple:
    """Every way to read: a Storm get and find (through the cache), then raw SQL."""
    item = store.get(Item, key)
    found = [(item.id, item.v) for item in store.find(Item).order_by(Item.id)]
    rows = [tuple(row) for row in store.execute("SELECT id, v FROM item ORDER BY id")]
    return None if item is None else item.v, found, rows


def read_text(via: str, key: int) -> str:
    if via == "get_store":
        return f"read_all(mgr.get_store(), {key})"
    if via == "read_block":
        return f"with mgr.read() as r: read_all(r, {key})"
    return f"mgr.submit_read(read_all, {key}).result()"


@dataclass(frozen=True)
class Insert:
    key: int
    value: str
    how: str  # "sql" or "storm"

    def lines(self) -> list[str]:
        if self.how == "sql":
            return [f'store.execute("INSERT INTO item (id, v) VALUES (?, ?)", '
                    f'({self.key}, {self.value!r}))']
        return [f"store.add(Item({self.key}, {self.value!r}))"]


@dataclass(frozen=True)
class Update:
    key: int
    value: str
    how: str  # "sql" or "storm"

    def lines(self) -> list[str]:
        if self.how == "sql":
            return [f'store.execute("UPDATE item SET v = ? WHERE id = ?", '
                    f'({self.value!r}, {self.key})).rowcount']
        return [f"store.get(Item, {self.key}).v = {self.value!r}  # if found"]


@dataclass(frozen=True)
class InnerRead:
    """A read inside a unit: it joins the unit and sees its writes."""
    via: str  # "get_store", "read_block", "submit_read"
    key: int

    def lines(self) -> list[str]:
        return [read_text(self.via, self.key)]


@dataclass(frozen=True)
class FailingRead:
    """A read inside a unit that raises (caught): it must not doom the unit."""
    via: str  # "read_block", "submit_read"

    def lines(self) -> list[str]:
        if self.via == "read_block":
            return ["try: with mgr.read() as r: raise Boom", "except Boom: pass"]
        return ["try: mgr.submit_read(raise_boom).result()", "except Boom: pass"]


@dataclass(frozen=True)
class Ensure:
    """The check-then-insert helper: read inside the unit, insert only if absent."""
    key: int
    value: str
    check: str  # "read_block", "submit_read", "get_store"

    def lines(self) -> list[str]:
        return [f"ensure(mgr, {self.key}, {self.value!r}, check={self.check!r})  "
                "# read, then submit_write(INSERT).result() if absent; errors caught"]


@dataclass(frozen=True)
class Body:
    """A unit's code: its operations, then ``raise Boom`` if ``fails``."""
    ops: tuple
    fails: bool

    def lines(self) -> list[str]:
        lines = [line for op in self.ops for line in op.lines()]
        return lines + (["raise Boom"] if self.fails else ["return count_rows(store)"])


@dataclass(frozen=True)
class Inner:
    """A nested unit inside a running one (its exception caught and recorded)."""
    kind: str  # "submit", "write", "savepoint"
    body: Body

    def lines(self) -> list[str]:
        inner = ["    " + line for line in self.body.lines()]
        if self.kind == "submit":
            return ["try: mgr.submit_write(inner).result()  where inner(store):", *inner]
        savepoint = "savepoint=True" if self.kind == "savepoint" else ""
        return [f"try: with mgr.write({savepoint}) as store:", *inner]


@dataclass(frozen=True)
class Read:
    thread: int
    via: str  # "get_store", "read_block", "submit_read"
    key: int

    def lines(self) -> list[str]:
        return [read_text(self.via, self.key)]


@dataclass(frozen=True)
class Hold:
    """Get a Storm object through ``get_store`` and keep it for later steps."""
    thread: int
    key: int
    handle: int

    def lines(self) -> list[str]:
        return [f"h{self.handle} = mgr.get_store().get(Item, {self.key}); h{self.handle}.v"]


@dataclass(frozen=True)
class Peek:
    """Read the attributes of objects held since earlier steps (those the contract keeps fresh)."""
    thread: int
    handles: tuple

    def lines(self) -> list[str]:
        return [peek_text(self.handles)]


def peek_text(handles: tuple) -> str:
    return ", ".join(f"h{handle}.v" for handle in handles)


@dataclass(frozen=True)
class Submit:
    """``submit_write(unit).result()``, then the thread's fresh held objects read again."""
    thread: int
    body: Body
    peeks: tuple

    def lines(self) -> list[str]:
        then = [f"then {peek_text(self.peeks)}"] if self.peeks else []
        return ["mgr.submit_write(unit).result()  where unit(store):",
                *("    " + line for line in self.body.lines()), *then]


@dataclass(frozen=True)
class WriteBlock:
    """A ``write()`` block, then the thread's fresh held objects read again."""
    thread: int
    body: Body
    peeks: tuple

    def lines(self) -> list[str]:
        then = [f"then {peek_text(self.peeks)}"] if self.peeks else []
        return ["with mgr.write() as store:", *("    " + line for line in self.body.lines()),
                *then]


@dataclass(frozen=True)
class ReturnsBound:
    """A unit that returns something bound to its store (a write unit inserts a row first)."""
    thread: int
    key: int
    what: str  # "object", "resultset", "list", "dict"
    submit: str  # "submit_write" or "submit_read"

    RETURNS = {"object": "store.get(Item, {key})", "resultset": "store.find(Item)",
               "list": "[store.get(Item, {key})]", "dict": "{{'item': store.get(Item, {key})}}"}

    def lines(self) -> list[str]:
        returned = self.RETURNS[self.what].format(key=self.key)
        insert = [f"    store.add(Item({self.key}, 'bound'))"] if self.submit == "submit_write" else []
        return [f"mgr.{self.submit}(unit).result()  where unit(store):", *insert,
                f"    return {returned}"]


@dataclass(frozen=True)
class Callback:
    """A done-callback of one unit submits another; the test awaits that one's future."""
    thread: int
    first: Body
    second: Body

    def lines(self) -> list[str]:
        return ["f = mgr.submit_write(first); f.add_done_callback(lambda _: "
                "later.append(mgr.submit_write(second))); f.result()",
                "where first(store):", *("    " + line for line in self.first.lines()),
                "and second(store):", *("    " + line for line in self.second.lines()),
                "then the test thread: later.pop().result()"]


@dataclass(frozen=True)
class Exit:
    """The logical thread's real thread ends; a new one takes its place."""
    thread: int

    def lines(self) -> list[str]:
        return ["(this thread exits; a new thread takes its place)"]


@dataclass(frozen=True)
class Close:
    """The test closes the manager and opens a new one on the same file.

    (Every program ends with a close too, whose outcome is observed.)
    """

    def lines(self) -> list[str]:
        return ["mgr.close(); mgr = StoreManager() on the same file"]


@dataclass(frozen=True)
class Program:
    threads: int
    steps: tuple

    def script(self) -> str:
        out = [f"# {self.threads} threads; item starts as {SEED_ROWS}",
               "# read_all(store, k) = (store.get(Item, k).v, [(i.id, i.v) for i in "
               "store.find(Item).order_by(Item.id)], SELECT id, v FROM item ORDER BY id)"]
        for index, step in enumerate(self.steps):
            who = "test" if isinstance(step, Close) else f"T{step.thread}"
            first, *rest = step.lines()
            out.append(f"{index:2}  {who}: {first}")
            out.extend(f"          {line}" for line in rest)
        return "\n".join(out)


# -- the generator ------------------------------------------------------------------

keys = st.sampled_from(KEYS)
values = st.sampled_from(VALUES)
hows = st.sampled_from(("sql", "storm"))
reads_vias = st.sampled_from(("get_store", "read_block", "submit_read"))
fails = st.sampled_from((False, False, False, True))


def weighted(*options: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the (weight, strategy) pairs, drawn in proportion to the weights.

    (Not ``st.one_of`` over repeated strategies: it keeps one copy of each.)
    """
    copies = [strategy for weight, strategy in options for _ in range(weight)]
    return st.sampled_from(copies).flatmap(lambda strategy: strategy)


data_ops = weighted((1, st.builds(Insert, keys, values, hows)),
                    (2, st.builds(Update, keys, values, hows)))
flat_ops = weighted((2, data_ops), (1, st.builds(InnerRead, reads_vias, keys)))
flat_bodies = st.builds(Body, st.lists(flat_ops, min_size=1, max_size=2).map(tuple), fails)
unit_ops = weighted(
    (3, flat_ops),
    (1, st.builds(Inner, st.sampled_from(("submit", "write", "savepoint")), flat_bodies)),
    (1, st.builds(Ensure, keys, values, reads_vias)),
    (1, st.builds(FailingRead, st.sampled_from(("read_block", "submit_read")))))
unit_bodies = weighted(
    (1, st.builds(Body, st.lists(data_ops, min_size=1, max_size=2).map(tuple), st.just(False))),
    (1, st.builds(Body, st.lists(unit_ops, min_size=1, max_size=3).map(tuple), fails)))


class Held:
    """What the generator knows of one held object: its key, and whether it is fresh."""

    def __init__(self, key: int):
        self.key = key
        self.fresh = True


class Generating:
    """The generator's state: each thread's held objects."""

    def __init__(self, threads: int):
        self.threads = threads
        self.held: list[list[Held]] = [[] for _ in range(threads)]

    def fresh_handles(self, thread: int) -> list[int]:
        return [index for index, held in enumerate(self.held[thread]) if held.fresh]

    def steps(self) -> st.SearchStrategy:
        threads = st.integers(0, self.threads - 1)
        peekable = [t for t in range(self.threads) if self.fresh_handles(t)]
        # Half the writes come from a thread holding objects: read-your-writes shows there.
        writers = weighted((1, threads), (1, st.sampled_from(peekable))) if peekable else threads
        options = [
            (3, st.builds(Read, threads, reads_vias, keys)),
            (3, writers.flatmap(lambda t: st.builds(
                Submit, st.just(t), unit_bodies, st.just(tuple(self.fresh_handles(t)))))),
            (2, writers.flatmap(lambda t: st.builds(
                WriteBlock, st.just(t), unit_bodies, st.just(tuple(self.fresh_handles(t)))))),
            (2, threads.flatmap(lambda t: st.builds(
                Hold, st.just(t), keys, st.just(len(self.held[t]))))),
            (1, st.builds(ReturnsBound, threads, keys,
                          st.sampled_from(("object", "resultset", "list", "dict")),
                          st.sampled_from(("submit_write", "submit_read")))),
            (1, st.builds(Callback, threads, unit_bodies, flat_bodies)),
            (1, st.builds(Exit, threads)),
            (1, st.just(Close())),
        ]
        if peekable:
            options.append((3, st.sampled_from(peekable).map(
                lambda t: Peek(t, tuple(self.fresh_handles(t))))))
        return weighted(*options)

    def after(self, step: Any) -> None:
        """Track held objects: stale after another thread may have written, fresh on get/find."""
        if isinstance(step, Close):
            self.held = [[] for _ in range(self.threads)]
        elif isinstance(step, Exit):
            self.held[step.thread] = []
        elif isinstance(step, Hold):
            self._refresh(step.thread, step.key)
            self.held[step.thread].append(Held(step.key))
        elif isinstance(step, Read) and step.via == "get_store":
            self._refresh(step.thread)
        elif isinstance(step, (Submit, WriteBlock, ReturnsBound, Callback)):
            # Any unit may write (a refused one too, were the refusal broken).  A callback's
            # second unit runs on behalf of no thread: it may stale its own thread's too.
            own = None if isinstance(step, Callback) else step.thread
            for thread, held in enumerate(self.held):
                if thread != own:
                    for item in held:
                        item.fresh = False

    def _refresh(self, thread: int, key: int | None = None) -> None:
        """A get of ``key`` (or a find: every key) through get_store refreshes those objects."""
        for item in self.held[thread]:
            if key is None or item.key == key:
                item.fresh = True


@st.composite
def programs(draw: Callable, max_steps: int = 24) -> Program:
    state = Generating(draw(st.sampled_from((2, 2, 3))))
    steps = []
    for _ in range(draw(st.integers(1, max_steps))):
        step = draw(state.steps())
        steps.append(step)
        state.after(step)
    return Program(state.threads, tuple(steps))


# -- the interpreter ----------------------------------------------------------------


def error_name(error: BaseException) -> str:
    """The exception's type as the program sees it: Storm's class for a wrapped DB-API error."""
    for kind in type(error).__mro__:
        if kind.__module__ in ERROR_MODULES:
            return kind.__name__
    return type(error).__name__


def plain(value: Any) -> Any:
    """The value as plain data; anything bound to a store becomes a marker naming its type."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    if isinstance(value, dict):
        return {plain(key): plain(item) for key, item in value.items()}
    return f"<{type(value).__name__}>"


def outcome(fn: Callable[[], Any]) -> tuple:
    """("ok", value as plain data) or ("raised", the exception's type name)."""
    try:
        return ("ok", plain(fn()))
    except Exception as error:
        return ("raised", error_name(error))


def value_of(store: Any, key: int) -> str | None:
    item = store.get(Item, key)
    return None if item is None else item.v


def count_rows(store: Any) -> int:
    return store.execute("SELECT count(*) FROM item").get_one()[0]


def raise_boom(store: Any = None) -> None:
    raise Boom()


class Worker:
    """One logical thread: a real thread that runs the jobs sent to it, one at a time."""

    def __init__(self) -> None:
        self._inbox: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            job = self._inbox.get()
            if job is None:
                return
            try:
                self._outbox.put(job())
            except BaseException as error:  # noqa: BLE001 - a harness bug, shown as such
                self._outbox.put(("harness error", repr(error)))

    def run(self, job: Callable[[], Any]) -> Any:
        self._inbox.put(job)
        return self._outbox.get(timeout=STEP_TIMEOUT)  # queue.Empty: the step hung

    def exit(self) -> None:
        self._inbox.put(None)
        self._thread.join(STEP_TIMEOUT)


def open_manager(path: str, strategy: str) -> StoreManager:
    manager = StoreManager()
    manager.configure("db", f"sqlite:{path}?strategy={strategy}&timeout=3&synchronous=off")
    return manager


def create_database(path: str) -> None:
    connection = dbapi.connect(path)
    with connection:
        connection.execute(SCHEMA)
        connection.executemany("INSERT INTO item (id, v) VALUES (?, ?)", SEED_ROWS)
    connection.close()


def final_rows(path: str) -> list[tuple]:
    connection = dbapi.connect(path, timeout=STEP_TIMEOUT)
    try:
        return connection.execute("SELECT id, v FROM item ORDER BY id").fetchall()
    finally:
        connection.close()


class Run:
    """One program under one strategy on a fresh file.

    ``reads_via_submit_read``: run the get_store reads outside units (`Read` through
    get_store, `Hold`, reading held objects again) through ``submit_read(fn)``, for a
    strategy that refuses ``get_store`` there; a held object is then its key (None if
    the row was absent, as the object would be).
    """

    def __init__(self, path: str, strategy: str, threads: int, reads_via_submit_read: bool):
        self.path = path
        self.strategy = strategy
        self.reads_via_submit_read = reads_via_submit_read
        create_database(path)
        self.mgr = open_manager(path, strategy)
        self.workers = [Worker() for _ in range(threads)]
        self.held: list[list[Any]] = [[] for _ in range(threads)]

    # The steps run by a logical thread: each returns its observation.

    def read(self, via: str, fn: Callable[..., Any], key: int, outermost: bool) -> Any:
        """``fn(store, key)`` through ``via`` (under the mapping, get_store's and read()'s
        outside a unit by submit_read)."""
        mgr = self.mgr
        if via != "submit_read" and outermost and self.reads_via_submit_read:
            return mgr.submit_read(fn, key).result(STEP_TIMEOUT)
        if via == "get_store":
            return fn(mgr.get_store(), key)
        if via == "read_block":
            with mgr.read() as store:
                return fn(store, key)
        return mgr.submit_read(fn, key).result(STEP_TIMEOUT)

    def hold(self, step: Hold) -> Any:
        held = self.held[step.thread]
        held.append(None)  # what a failed get holds
        if self.reads_via_submit_read:
            value = self.read("submit_read", value_of, step.key, outermost=True)
            held[-1] = step.key if value is not None else None
            return value
        held[-1] = self.mgr.get_store().get(Item, step.key)
        return None if held[-1] is None else held[-1].v

    def peek(self, thread: int, handles: tuple) -> list:
        held = self.held[thread]
        return [outcome(lambda: self.peek_one(held[handle])) for handle in handles]

    def peek_one(self, held: Any) -> Any:
        if held is None:
            return None
        if self.reads_via_submit_read:
            return self.read("submit_read", value_of, held, outermost=True)
        return held.v

    def submit(self, body: Body) -> tuple:
        unit = UnitOfWork(self, body)
        return outcome(lambda: self.mgr.submit_write(unit).result(STEP_TIMEOUT)), unit.trace

    def write_block(self, body: Body, savepoint: bool = False) -> tuple:
        trace: list = []

        def block() -> int:
            with self.mgr.write(savepoint=savepoint) as store:
                return run_body(self, store, body, trace)
        return outcome(block), trace

    def returns_bound(self, step: ReturnsBound) -> tuple:
        writes = step.submit == "submit_write"

        def unit(store: Any) -> Any:
            if writes:
                store.add(Item(step.key, "bound"))
            if step.what == "resultset":
                return store.find(Item)
            item = store.get(Item, step.key)
            return {"object": item, "list": [item], "dict": {"item": item}}[step.what]
        submit = self.mgr.submit_write if writes else self.mgr.submit_read
        return outcome(lambda: submit(unit).result(STEP_TIMEOUT))

    def callback(self, step: Callback) -> tuple:
        """``first``'s done-callback submits ``second``; returns that submit's future.

        Under a writer thread, ``first`` waits until its callback is registered, so the
        callback always runs on the writer thread (in the caller's thread the unit has
        finished before add_done_callback); the step ends once the callback submitted.
        """
        caller = threading.current_thread()
        registered, submitted = threading.Event(), threading.Event()
        later: list = []
        first = UnitOfWork(self, step.first, before=lambda: threading.current_thread() is caller
                           or registered.wait(STEP_TIMEOUT))

        def on_done(_: Any) -> None:
            try:
                later.append(self.mgr.submit_write(UnitOfWork(self, step.second)))
            except Exception as error:
                later.append(error)
            finally:
                submitted.set()

        future = self.mgr.submit_write(first)
        future.add_done_callback(on_done)
        registered.set()
        result = outcome(lambda: future.result(STEP_TIMEOUT))
        submitted.wait(STEP_TIMEOUT)
        return result, first.trace, later

    # Running a program.

    def step(self, step: Any) -> Any:
        """The observation of one step."""
        if isinstance(step, Close):
            return self.close(reopen=True)
        if isinstance(step, Exit):
            self.workers[step.thread].exit()
            self.workers[step.thread] = Worker()
            self.held[step.thread] = []
            return "exited"
        if isinstance(step, Callback):
            result, trace, later = self.workers[step.thread].run(lambda: self.callback(step))
            return result, trace, await_later(later)
        return self.workers[step.thread].run(lambda: self.job(step))

    def job(self, step: Any) -> Any:
        if isinstance(step, Read):
            return outcome(lambda: self.read(step.via, read_all, step.key, outermost=True))
        if isinstance(step, Hold):
            return outcome(lambda: self.hold(step))
        if isinstance(step, Peek):
            return self.peek(step.thread, step.handles)
        if isinstance(step, Submit):
            return (*self.submit(step.body), self.peek(step.thread, step.peeks))
        if isinstance(step, WriteBlock):
            return (*self.write_block(step.body), self.peek(step.thread, step.peeks))
        return self.returns_bound(step)

    def close(self, reopen: bool) -> Any:
        observed = outcome(lambda: self.mgr.close(STEP_TIMEOUT))
        self.held = [[] for _ in self.workers]
        self.mgr = open_manager(self.path, self.strategy) if reopen else None
        return observed

    def finish(self) -> Any:
        """Close the manager still open (the observation), then end the threads."""
        try:
            return self.close(reopen=False)
        finally:
            for worker in self.workers:
                worker.exit()


def await_later(later: list) -> Any:
    """The test thread awaits the future a done-callback submitted."""
    if not later:
        return ("raised", "callback never submitted")
    future = later[0]
    if isinstance(future, Exception):
        return ("raised", error_name(future))
    return outcome(lambda: future.result(STEP_TIMEOUT))


class UnitOfWork:
    """A unit ``fn(store)`` running a `Body`; ``trace`` keeps what its last run saw."""

    def __init__(self, run: Run, body: Body, before: Callable[[], Any] | None = None):
        self.run = run
        self.body = body
        self.before = before
        self.trace: list = []

    def __call__(self, store: Any) -> int:
        if self.before is not None:
            self.before()
        return run_body(self.run, store, self.body, self.trace)


def run_body(run: Run, store: Any, body: Body, trace: list) -> int:
    """Run ``body``'s operations into ``trace`` (a unit may run more than once: reset)."""
    del trace[:]
    for op in body.ops:
        trace.append(perform(run, store, op))
    if body.fails:
        raise Boom()
    return count_rows(store)


def perform(run: Run, store: Any, op: Any) -> Any:
    """One operation inside a unit; what it returned (a nested failure is caught)."""
    if isinstance(op, Insert):
        if op.how == "sql":
            store.execute("INSERT INTO item (id, v) VALUES (?, ?)", (op.key, op.value))
        else:
            store.add(Item(op.key, op.value))
        return None
    if isinstance(op, Update):
        if op.how == "sql":
            return store.execute("UPDATE item SET v = ? WHERE id = ?", (op.value, op.key)).rowcount
        item = store.get(Item, op.key)
        if item is not None:
            item.v = op.value
        return item is not None
    if isinstance(op, InnerRead):
        return outcome(lambda: run.read(op.via, read_all, op.key, outermost=False))
    if isinstance(op, FailingRead):
        return outcome(lambda: failing_read(run, op.via))
    if isinstance(op, Ensure):
        return outcome(lambda: ensure(run, op))
    return inner_unit(run, op)


def failing_read(run: Run, via: str) -> None:
    if via == "read_block":
        with run.mgr.read():
            raise Boom()
    run.mgr.submit_read(raise_boom).result(STEP_TIMEOUT)


def ensure(run: Run, op: Ensure) -> bool:
    """The check-then-insert helper: True if the row was there, else inserts it."""
    present = run.read(op.check, value_of, op.key, outermost=False) is not None
    if not present:
        run.mgr.submit_write(lambda store: store.execute(
            "INSERT INTO item (id, v) VALUES (?, ?)", (op.key, op.value))).result(STEP_TIMEOUT)
    return present


def inner_unit(run: Run, op: Inner) -> tuple:
    if op.kind == "submit":
        return run.submit(op.body)
    return run.write_block(op.body, savepoint=op.kind == "savepoint")


def run_program(program: Program, strategy: str, path: str,
                reads_via_submit_read: bool) -> list:
    """Every observation of ``program`` under ``strategy``, the file's final rows last."""
    run = Run(path, strategy, program.threads, reads_via_submit_read)
    observations: list = []
    try:
        for index, step in enumerate(program.steps):
            try:
                observations.append((index, run.step(step)))
            except queue.Empty:
                observations.append((index, "hung: no answer within STEP_TIMEOUT"))
                break
    finally:
        observations.append(("end", run.finish()))
    observations.append(("final", final_rows(path)))
    return observations
