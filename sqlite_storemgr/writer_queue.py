"""The writer thread: one per database, owning the only write connection.

Callers enqueue work items (`work_items.WorkItems`) and get a `UnitFuture`; the
writer loop takes them in order: a run of units becomes one batch
(`writer_batch.Batch`, group commit), a lease request lends the writer's store
to a ``write()`` block, `STOP` ends the loop once everything before it ran.
If the writer dies (a unit
raising ``BaseException``, a connection that cannot be opened), every pending
future fails (the culprit with its own exception, the others with
`WriterBrokenError` caused by it) and the next submit starts a fresh writer.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from . import lifecycle
from .errors import StrategyError, WriterBrokenError
from .futures import UnitFuture
from .retry import LockPolicy
from .stores import ManagedStore
from .threadlocal import close_store
from .units import joined_block, resolved_future, run_joined
from .work_items import STOP, WorkItem, WorkItems
from .writer_batch import Batch, LeaseRequest, WriterFigures, WriteUnit, serve_lease

log = logging.getLogger(__name__)
# The parent's writer stores, kept referenced in a forked child so no destructor closes them.
_abandoned_after_fork: list[ManagedStore | None] = []


class WriterQueue:
    """A bounded queue of work items served by one writer thread."""

    def __init__(self, open_store: Callable[[], ManagedStore], policy: LockPolicy,
                 batch: int, queue_size: int, timeout: float, name: str):
        self._open_store = open_store
        self._policy = policy
        self._timeout = timeout
        self.name = name
        self.figures = WriterFigures()
        self._work = WorkItems(queue_size, batch, timeout, name)
        self._reset()
        lifecycle.track(self)
        lifecycle.drain_at_exit(self)

    def _reset(self) -> None:
        """No writer, nothing queued: the state at start and in a forked child."""
        self._work.reset()
        self._thread: threading.Thread | None = None
        self._thread_ident: int | None = None
        self._store: ManagedStore | None = None
        self._doing: Batch | LeaseRequest | None = None  # the item the writer works on now
        self._lent_to: int | None = None  # the thread running a batch for the writer, if any

    # -- the caller's side -------------------------------------------------

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...] = (),
               kwargs: dict[str, Any] | None = None, reads: bool = False) -> UnitFuture:
        """Enqueue ``fn(store, *args, **kwargs)``; waits up to ``timeout`` if the queue is full.

        ``reads``: a read unit, refused any write.  Inside a unit of this
        writer the unit runs at once, joining it (nested).
        """
        store = self.unit_store()
        if store is not None:
            return resolved_future(run_joined, store, fn, args, kwargs)
        future = UnitFuture()
        future.runner = self
        self._put(WriteUnit(fn, args, kwargs or {}, future, reads))
        return future

    def submit_many(self, fn: Callable[..., Any], args_list: list[tuple[Any, ...]]
                    ) -> list[UnitFuture]:
        """Enqueue ``fn(store, *args)`` for each ``args`` in order, one future each.

        The units are queued under one lock hold per run that fits in the queue,
        waking the writer once per run, not per unit; a caller waiting on the
        futures in order is woken once per batch.  Units that could not be queued
        (the queue stayed full for ``timeout``, or it closed) get their futures
        failed with that error (it is raised if none was queued).  Inside a unit of
        this writer each joins it.
        """
        store = self.unit_store()
        if store is not None:
            return [resolved_future(run_joined, store, fn, args) for args in args_list]
        units = []
        for args in args_list:
            future = UnitFuture()
            future.runner = self
            units.append(WriteUnit(fn, args, {}, future))
        queued, error = self._work.put_many(units, self._start_writer_if_none)
        if error is not None and not queued:
            raise error  # nothing queued: refused at once, as `submit` would
        for unit in units[queued:]:
            unit.future.set_running_or_notify_cancel()
            unit.future.set_exception(error)
        return [unit.future for unit in units]

    def _put(self, item: WorkItem) -> None:
        self._work.put(item, self._start_writer_if_none)

    def _start_writer_if_none(self) -> None:
        if self._thread is None:
            thread = threading.Thread(
                target=self._run, name=f"storemgr-writer-{self.name}", daemon=True)
            thread.start()  # if this raises, no dead thread is recorded as the writer
            self._thread = thread
            if self.figures.restarts:
                log.warning("the writer of %r restarted (restart %d) after it died",
                            self.name, self.figures.restarts)
            else:
                log.info("the writer of %r started", self.name)

    def unit_store(self) -> ManagedStore | None:
        """The writer's store if a unit of it runs in the caller's call stack, else None.

        Decided by the store, not the thread: the writer thread outside a unit
        (running done-callbacks after COMMIT, say) submits like any caller.
        """
        store = self._store
        if store is not None and store.in_unit and store.owner == threading.get_ident():
            return store
        return None

    def refuse_waiting_on_itself(self) -> None:
        """Raise instead of hanging if the writer thread (or a caller running a batch for
        it, `run_for_waiter`) would wait for its own work."""
        if threading.get_ident() in (self._thread_ident, self._lent_to):
            raise StrategyError(
                f"the writer thread of {self.name!r} would wait for itself: code it runs "
                "outside a unit (a done-callback) may submit_write() but not wait for the "
                "result or open a write() block; wait in another thread")

    @contextmanager
    def lease(self, savepoint: bool = False) -> Iterator[ManagedStore]:
        """Borrow the writer's store for one write transaction in the calling thread.

        Inside a unit of this writer it joins that unit instead (see `joined_block`).
        """
        store = self.unit_store()
        if store is not None:
            with joined_block(store, savepoint):
                yield store
            return
        self.refuse_waiting_on_itself()
        request = LeaseRequest(UnitFuture())
        request.future.runner = self
        self._put(request)
        with request.borrowed() as store:
            yield store

    def run_for_waiter(self) -> None:
        """Called by a thread about to wait for one of its units: if the writer thread is
        parked with units queued, run them here as its batch instead of waking it.

        A lone caller then pays no thread handoff (two switches per unit); order,
        group commit and the batch's rules are the writer's own.  Not in the main
        thread, where a signal handler's exception would land in the batch.
        """
        if threading.current_thread() is threading.main_thread():
            return
        batch = self._work.lend()
        if batch is None:
            return
        store = self._store
        self._lent_to = threading.get_ident()
        try:
            with store.lent():  # type: ignore[union-attr]  # set while the writer is parked
                batch.run(store, self._policy, self._timeout, self.figures)  # type: ignore[arg-type]
        except BaseException as error:  # the writer dies of it, as if it had run the batch
            batch.died = error
        finally:
            self._lent_to = None
        self._work.give_back(batch if batch.died is not None else None)

    # -- the writer's side -------------------------------------------------

    def _run(self) -> None:
        """The writer loop: take the next item, do it, until the stop item or death."""
        self._thread_ident = threading.get_ident()
        store = None
        try:
            try:
                store = self._store = self._open_store()
            except Exception as error:
                self._die(error, opened=False)
                return
            while (item := self._work.take()) is not STOP:
                self._doing = item
                if isinstance(item, LeaseRequest):
                    serve_lease(store, self._policy, item, self.figures)
                elif item.died is not None:
                    raise item.died  # a batch a waiting caller ran for the writer
                else:
                    item.run(store, self._policy, self._timeout, self.figures)
                self._doing = None
        except BaseException as error:
            self._die(error)
        finally:
            with self._work.lock:
                if self._store is store:  # not yet a restarted writer's store
                    self._store = None
            if store is not None:
                close_store(store)

    def _die(self, cause: BaseException, opened: bool = True) -> None:
        """Fail every pending future and leave the queue ready to restart a writer.

        A writer that could not open its connection fails each pending unit with
        the reason itself, as a unit opening its own store under ``mutex`` would.
        """
        broken = WriterBrokenError(
            f"the writer thread of {self.name!r} died: {cause!r}; "
            "pending units failed, the next submit starts a new writer")
        broken.__cause__ = cause
        doing = self._doing
        culprit = doing.running if isinstance(doing, Batch) else None
        with self._work.lock:
            pending: list[WriteUnit | LeaseRequest] = (
                doing.units if isinstance(doing, Batch) else [doing] if doing else [])  # type: ignore[assignment]  # the dead batch's list, extended
            pending += self._work.clear()
            self._thread = self._thread_ident = self._store = self._doing = None
            self.figures.restarts += 1
        if opened:
            log.error("the writer thread of %r died; %d pending unit(s) failed, the next "
                      "submit starts a new writer", self.name, len(pending), exc_info=cause)
        else:
            log.error("the writer of %r could not open its connection; %d pending unit(s) "
                      "failed with the reason, the next submit tries again", self.name,
                      len(pending), exc_info=cause)
        for item in pending:
            if isinstance(item, LeaseRequest):
                item.ready.set()
            future = item.future
            if future.done():
                continue  # failed already (its deadline passed), or cancelled and told
            if future.running() or future.set_running_or_notify_cancel():
                future.set_exception(cause if item is culprit or not opened else broken)
                self.figures.failed += not getattr(item, "reads", False)

    # -- lifecycle and figures ---------------------------------------------

    def after_fork_in_child(self) -> None:
        """No writer thread exists in a forked child; the next submit starts one.

        The parent's queued units are the parent's to run; the old writer's
        store is left untouched (it is the parent's connection).
        """
        _abandoned_after_fork.append(self._store)
        self._reset()

    def close(self, timeout: float | None = None) -> bool:
        """Stop taking units, drain the queue, stop the writer; False if it outlived ``timeout``."""
        with self._work.lock:
            self._work.close(writer_running=self._thread is not None)
            thread = self._thread
        if thread is None or self.unit_store() is not None:
            return True  # the writer finishes the unit under way here, then drains and stops
        thread.join(timeout)
        return not thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """The writer's figures, read without its lock: a signal handler may ask for them
        while the thread it interrupted holds that lock (in `submit`, say)."""
        return self.figures.report(self._work.items)
