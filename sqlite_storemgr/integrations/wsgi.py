"""Request-scoped transactions for WSGI: `TransactionMiddleware`.

Each request is one unit of work per database it writes to: it commits when the
application raised nothing, answered a status that is not 5xx and its body was
produced to the end (before the last chunk goes out), and rolls back otherwise.
Its write transaction opens lazily, at its first write unit.  See docs/wsgi.md.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, Callable, Iterable, Iterator

from ..errors import TransactionDoomedError
from ..scopes import push_thread_hook, remove_thread_hook
from ..units import commit_step

__all__ = ["TransactionMiddleware", "RequestScope", "RequestFailed"]

log = logging.getLogger("sqlite_storemgr.integrations.wsgi")

_local = threading.local()
_NOTHING = object()
_ERROR_BODY = b"Internal Server Error: the request's transaction could not be committed\n"


class RequestFailed(Exception):
    """Internal reason given to the request's write scopes when they roll back."""


def default_commit_status(status: str) -> bool:
    """Commit unless the status is a 5xx."""
    return not status.lstrip().startswith("5")


def _scopes() -> list["RequestScope"]:
    scopes = getattr(_local, "scopes", None)
    if scopes is None:
        scopes = _local.scopes = []
    return scopes


class RequestScope:
    """The transactions of one request on one manager, in one thread."""

    def __init__(self, manager: Any, names: frozenset[str] | None = None):
        self.manager = manager
        self.names = names
        self.thread = threading.get_ident()
        self.opened: list[tuple[Any, Any, Any]] = []  # (strategy, context manager, store)
        self.doomed_by: BaseException | None = None
        self.running = False
        self.ended = False

    def _strategies(self) -> list[Any]:
        return [self.manager.strategy(name) for name in self.manager.names()
                if self.names is None or name in self.names]

    def _thread_stores(self) -> list[Any]:
        """The stores this thread already has for the manager (none is created)."""
        stores = [strategy.current_store() for strategy in self._strategies()]
        return [store for store in stores if store is not None]

    def begin(self) -> None:
        self._tidy()
        _scopes().append(self)
        push_thread_hook(self.hook)

    def doom(self, cause: BaseException) -> None:
        if self.doomed_by is None:
            self.doomed_by = cause

    def hook(self, manager: Any, strategy: Any) -> None:
        """A write unit on ``strategy`` is starting in this request: begin its transaction."""
        if manager is not self.manager or self.ended:
            return
        if self.names is not None and strategy.name not in self.names:
            return
        if any(opened is strategy for opened, _, _ in self.opened):
            return
        if not strategy.joins_foreign_transaction:
            if strategy.unit_store() is not None:  # already inside a unit of that writer
                return
        elif strategy.get_store().is_nested():
            # A transaction is under way on the store: loose writes of this request
            # (committed with it at the end) or another scope's (left to it).
            return
        scope = strategy.write()
        store = scope.__enter__()
        self.opened.append((strategy, scope, store))

    def end(self, success: bool) -> None:
        """Commit (``success``) or roll back every write transaction of the request, then tidy."""
        if self.ended:
            return
        self.ended = True
        remove_thread_hook(self.hook)
        scopes = _scopes()
        if self in scopes:
            scopes.remove(self)
        loose = self._loose_stores()
        first_error: BaseException | None = None
        if self.doomed_by is not None and success:
            first_error = TransactionDoomedError(
                f"the request's transaction is doomed: an application called inside it "
                f"failed with {self.doomed_by!r}; it was rolled back")
            first_error.__cause__ = self.doomed_by
            success = False
        if success:
            try:  # the vote: every database flushed and not doomed, before any commits
                for store in [store for _, _, store in self.opened] + [s for _, s in loose]:
                    store.prepare_commit()
            except Exception as error:
                first_error, success = error, False
        for strategy, scope, store in reversed(self.opened):
            try:
                if success:
                    scope.__exit__(None, None, None)
                else:
                    failed = RequestFailed("the request failed; its transaction is rolled back")
                    scope.__exit__(RequestFailed, failed, None)
            except RequestFailed:
                pass
            except BaseException as error:
                first_error = first_error or error
                success = False
        for strategy, store in loose:
            try:
                if success:
                    commit_step(store, strategy.policy)
                else:
                    store.rollback()
            except BaseException as error:
                first_error = first_error or error
                success = False
        self.opened.clear()
        try:
            self._tidy()
        except BaseException as error:
            first_error = first_error or error
        if first_error is not None:
            raise first_error

    def _loose_stores(self) -> list[tuple[Any, Any]]:
        """Caller-thread stores holding uncommitted changes of this request outside any unit."""
        opened = [strategy for strategy, _, _ in self.opened]
        loose = []
        for strategy in self._strategies():
            if not strategy.joins_foreign_transaction or strategy in opened:
                continue
            store = strategy.current_store()
            if store is not None and not store.in_unit and store.has_uncommitted_changes():
                loose.append((strategy, store))
        return loose

    def _tidy(self) -> None:
        """End read snapshots and drop the Storm caches of this thread's stores."""
        for store in self._thread_stores():
            if store.is_nested():
                continue  # another scope's transaction (a zope one): not ours to end
            if store.connection.in_transaction:
                store.rollback()  # a read snapshot; rollback() also drops the cache
            else:
                store.invalidate()


class _Response:
    """Records the status the application gave; passes everything on to the server."""

    def __init__(self, start_response: Callable[..., Any]):
        self.server_start_response = start_response
        self.status: str | None = None
        self.wrote = False  # the legacy write() callable sent body bytes

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
                       ) -> Callable[[bytes], object]:
        self.status = status
        write = self.server_start_response(status, headers, exc_info)

        def write_through(data: bytes) -> Any:
            if data:
                self.wrote = True
            return write(data)
        return write_through


class TransactionMiddleware:
    """Wrap a WSGI application so that each request is one transaction per database.

    ``names`` limits it to some of the manager's databases (default: all).
    ``commit_status(status) -> bool`` decides by the status line (default:
    commit unless 5xx).  See docs/wsgi.md for the rules.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], manager: Any,
                 names: Iterable[str] | None = None,
                 commit_status: Callable[[str], bool] = default_commit_status):
        self.app = app
        self.manager = manager
        self.names = None if names is None else frozenset(names)
        self.commit_status = commit_status

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        outer = self._outer_scope()
        if outer is not None:
            return self._joined(outer, environ, start_response)
        scope = RequestScope(self.manager, self.names)
        scope.begin()
        response = _Response(start_response)
        scope.running = True
        try:
            result = self.app(environ, response.start_response)
        except BaseException:
            scope.running = False
            _end_quietly(scope)
            raise
        scope.running = False
        return _ScopedBody(result, scope, response, self.commit_status)

    def _outer_scope(self) -> RequestScope | None:
        """The running request of this manager in this thread; ends one left unclosed."""
        for scope in reversed(list(_scopes())):
            if scope.manager is not self.manager:
                continue
            if scope.running:
                return scope
            log.error("a request's response was never closed by the server; "
                      "rolling its transaction back before the next request")
            _end_quietly(scope)
        return None

    def _joined(self, outer: RequestScope, environ: dict[str, Any],
                start_response: Callable[..., Any]) -> Iterable[bytes]:
        response = _Response(start_response)
        try:
            result = self.app(environ, response.start_response)
        except BaseException as error:
            outer.doom(error)
            raise
        return _JoinedBody(result, outer, response, self.commit_status)


def _end_quietly(scope: RequestScope) -> None:
    """Roll back; an error doing so is logged (the request failed already)."""
    try:
        scope.end(False)
    except Exception:
        log.exception("rolling back a failed request's transaction failed")


def _close(result: Any) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


class _ScopedBody:
    """The response body: reads one chunk ahead, ends the request's transactions."""

    def __init__(self, result: Iterable[bytes], scope: RequestScope, response: _Response,
                 commit_status: Callable[[str], bool]):
        self._result = result
        self._iterator: Iterator[bytes] | None = None
        self._scope = scope
        self._response = response
        self._commit_status = commit_status
        self._pending: Any = _NOTHING
        self._handed = False      # a chunk went to the server
        self._finished = False    # the transactions ended
        self._inner_closed = False

    def __iter__(self) -> "_ScopedBody":
        return self

    def __next__(self) -> bytes:
        if self._finished:
            raise StopIteration
        scope = self._scope
        scope.running = True
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            if self._pending is _NOTHING:
                self._pending = next(self._iterator, _NOTHING)
            following = _NOTHING
            if self._pending is not _NOTHING:  # read one ahead: is this the last chunk?
                following = next(self._iterator, _NOTHING)
        except BaseException:
            scope.running = False
            self._fail()
            raise
        scope.running = False
        if following is not _NOTHING:
            chunk: bytes
            chunk, self._pending = self._pending, following
            self._handed = True
            return chunk
        last, self._pending = self._pending, _NOTHING
        return self._finish(last)

    def _finish(self, last: Any) -> bytes:
        """The body is at its end: commit or roll back, then hand over the last chunk."""
        self._finished = True
        status = self._response.status
        try:
            self._close_inner()
            success = status is not None and self._commit_status(status)
        except BaseException:
            _end_quietly(self._scope)
            raise
        try:
            self._scope.end(success)
        except Exception as error:
            if self._handed or self._response.wrote:
                raise
            log.error("the request's transaction could not be committed: %r", error,
                      exc_info=True)
            self._response.server_start_response(
                "500 Internal Server Error",
                [("Content-Type", "text/plain; charset=utf-8"),
                 ("Content-Length", str(len(_ERROR_BODY)))], sys.exc_info())
            self._handed = True
            return _ERROR_BODY
        if last is _NOTHING:
            raise StopIteration
        self._handed = True
        body: bytes = last
        return body

    def _fail(self) -> None:
        self._finished = True
        try:
            self._close_inner()
        finally:
            _end_quietly(self._scope)

    def _close_inner(self) -> None:
        if not self._inner_closed:
            self._inner_closed = True
            _close(self._result)

    def close(self) -> None:
        """Called by the server; before the end of the body it means the request failed."""
        if self._finished:
            self._close_inner()
            return
        if threading.get_ident() != self._scope.thread:
            log.error("the response was closed in another thread than the request's; its "
                      "transaction is rolled back when that thread starts its next request")
            self._close_inner()
            return
        self._fail()


class _JoinedBody:
    """The body of an application called inside a running request: its failure dooms it."""

    def __init__(self, result: Iterable[bytes], outer: RequestScope, response: _Response,
                 commit_status: Callable[[str], bool]):
        self._result = result
        self._iterator: Iterator[bytes] | None = None
        self._outer = outer
        self._response = response
        self._commit_status = commit_status
        self._done = False

    def __iter__(self) -> "_JoinedBody":
        return self

    def __next__(self) -> bytes:
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            return next(self._iterator)
        except StopIteration:
            self._check_status()
            raise
        except BaseException as error:
            self._done = True
            self._outer.doom(error)
            raise

    def _check_status(self) -> None:
        if self._done:
            return
        self._done = True
        status = self._response.status
        if status is None or not self._commit_status(status):
            self._outer.doom(RequestFailed(f"an inner application answered {status!r}"))

    def close(self) -> None:
        try:
            _close(self._result)
        finally:
            if not self._done:  # closed before its end
                self._done = True
                self._outer.doom(RequestFailed("an inner application's body was not finished"))
