"""The nesting state of a managed store: which thread uses it, the units under way on it,
whether a unit's own code or a read snapshot runs.  Only these methods change it."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from .errors import WrongThreadError

if TYPE_CHECKING:
    from .backends.sqlite import SQLiteConnection
    from typing_extensions import Self

T = TypeVar("T")


class UnitNesting:
    """Mixed into `ManagedStore`: units enter and leave it, user code runs through it."""

    name: str
    _connection: "SQLiteConnection"

    def _start_nesting(self) -> None:
        self._owner = threading.get_ident()
        self._unit_depth = 0
        self._in_user_code = False  # a unit's own code runs: it must not end the transaction
        self._reading = False  # inside a read() block or read unit

    @property
    def owner(self) -> int:
        """The thread that may use the store (the borrower, while it is `lent`)."""
        return self._owner

    @property
    def unit_depth(self) -> int:
        """How many units (or outer scopes) run on the store, one inside the other."""
        return self._unit_depth

    @property
    def in_user_code(self) -> bool:
        """Whether a unit's own code runs now (it may not commit or roll back)."""
        return self._in_user_code

    @property
    def reading(self) -> bool:
        """Whether a read snapshot (a ``read()`` block or read unit) is open."""
        return self._reading

    def check_thread(self) -> None:
        """Refuse use from a thread other than the owner."""
        if threading.get_ident() != self._owner:
            raise WrongThreadError(
                f"store {self.name!r} belongs to another thread; "
                f"call get_store({self.name!r}) in this thread to get its own store")

    @property
    def in_unit(self) -> bool:
        """Whether a unit (or an outer scope that owns the transaction) runs on this store."""
        return self._unit_depth > 0

    def is_nested(self) -> bool:
        """Whether a unit started now would join a transaction already under way."""
        return self._unit_depth > 0 or self.has_uncommitted_changes()

    def joins_reads(self) -> bool:
        """Whether a read started now would join a unit or a read snapshot under way."""
        return self._reading or self.is_nested()

    def enter_unit(self) -> None:
        """A unit (or outer scope) starts on this store: reads now join its transaction."""
        self._unit_depth += 1
        self._connection.reads_begin_transaction = True

    def leave_unit(self) -> None:
        self._unit_depth -= 1
        if not self._unit_depth:
            self._connection.reads_begin_transaction = False

    def run_user_code(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call a unit's own code, during which the store refuses commit() and rollback()."""
        outer, self._in_user_code = self._in_user_code, True  # `user_code`, minus its frames
        try:
            return fn(*args, **kwargs)
        finally:
            self._in_user_code = outer

    @contextmanager
    def user_code(self) -> Iterator[None]:
        """Around a unit's own code (a ``write()`` block's body): no commit(), no rollback()."""
        outer, self._in_user_code = self._in_user_code, True
        try:
            yield
        finally:
            self._in_user_code = outer

    @contextmanager
    def writes_refused(self, refused: bool) -> Iterator[None]:
        """Refuse (or allow) writes on the connection for a while: a read unit, a unit's frame."""
        connection = self._connection
        outer, connection.refuse_writes = connection.refuse_writes, refused
        try:
            yield
        finally:
            connection.refuse_writes = outer

    @contextmanager
    def snapshot(self) -> Iterator[Self]:
        """One read snapshot around a block that may not write; ended (rolled back) on exit."""
        connection = self._connection
        if connection.in_transaction:
            self.rollback()
        connection.begin_read()
        self._reading = connection.refuse_writes = True
        try:
            self.revalidate()
            yield self
        finally:
            self._reading = connection.refuse_writes = False
            self.rollback()

    @contextmanager
    def lent(self) -> Iterator[Self]:
        """Let the calling thread use the store for a block (the writer's ``write()`` lease)."""
        owner, self._owner = self._owner, threading.get_ident()
        try:
            yield self
        finally:
            self._owner = owner

    if TYPE_CHECKING:  # provided by ManagedStore
        def has_uncommitted_changes(self) -> bool: ...

        def rollback(self) -> None: ...

        def revalidate(self) -> None: ...
