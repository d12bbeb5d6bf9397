"""The exception types of sqlite_storemgr.

Every error the library raises on its own account derives from
`StoreManagerError`, except `DatabaseLockedError`, which derives from Storm's
`OperationalError` so that code catching Storm's "database is locked" keeps
working.
"""

from __future__ import annotations

from storm.exceptions import ClosedError, OperationalError


class StoreManagerError(Exception):
    """Base class of the errors raised by sqlite_storemgr itself."""


class ConfigError(StoreManagerError, ValueError):
    """A bad URI or option; the message names the option, the value and what is allowed."""


class DatabaseLockedError(OperationalError):
    """The write lock could not be had within the deadline set by ``timeout``."""

    def __init__(self, message: str, waited: float = 0.0, attempts: int = 0):
        super().__init__(message)
        self.waited = waited
        self.attempts = attempts


READ_ONLY_MESSAGE = (
    "this store is read-only; write with submit_write(fn) or a write() block")


class ReadOnlyStoreError(StoreManagerError):
    """A write through a store that is read-only under the configured strategy."""


class ManagerClosedError(StoreManagerError):
    """The manager (or one of its databases) was used after ``close()``."""


class WrongThreadError(StoreManagerError):
    """A per-thread store was used from a thread that did not create it."""


class StrategyError(StoreManagerError):
    """An operation that the configured strategy does not offer (the message says what to use)."""


class TransactionDoomedError(StoreManagerError):
    """An inner unit failed, so the transaction it joined was rolled back instead of committed."""


class TransactionControlError(StoreManagerError):
    """``store.commit()`` or ``store.rollback()`` was called inside a unit, which owns its transaction."""


class QueueFullError(StoreManagerError):
    """The writer queue stayed full for the whole ``timeout``: the writer cannot keep up."""


class WriterBrokenError(StoreManagerError):
    """The writer thread died; pending units failed with the cause given as ``__cause__``."""


class DatabaseMovedError(StoreManagerError, OperationalError):
    """The database file was deleted, moved or replaced while a connection had it open.

    Writes through such a connection go to the old file, not to the path: they
    are refused (never acknowledged).  Close the manager and configure it again.
    """


class ForkLockedError(DatabaseLockedError):
    """This process was forked while a transaction on the file was open: it can never write it."""


class InheritedConnectionError(ClosedError):
    """A connection inherited from the parent process by ``os.fork()``: the child must not use it."""
