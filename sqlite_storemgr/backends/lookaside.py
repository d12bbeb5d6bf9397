"""Open pysqlite3 connections without SQLite's per-connection lookaside memory.

SQLite gives every connection a lookaside pool for small allocations (about 43 KiB of
heap), which is most of an idle reader store's footprint; ``sqlite3_db_config`` can turn
it off right after the open, but pysqlite3 does not expose the call.  We reach it through
ctypes, with the connection's ``sqlite3 *`` taken from SQLite itself: an automatic
extension records the handle of each connection this thread opens.  Where any of that is
unavailable, connections keep their lookaside.  See docs/sqlite-backend.md.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from typing import Any, Callable

import pysqlite3._sqlite3 as _extension

__all__ = ["connect_without_lookaside"]

_log = logging.getLogger(__name__)
_SQLITE_DBCONFIG_LOOKASIDE = 1001
_opened_here = threading.local()  # .handle: the sqlite3 * of this thread's latest open

_OnOpen = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


def _record(handle: int, error_message: int, api: int) -> int:
    """SQLite calls this at the end of every open in this process (an automatic extension)."""
    _opened_here.handle = handle
    return 0


_record_handle = _OnOpen(_record)  # kept referenced: SQLite holds the C pointer for good


def _load_library() -> Any:
    """The SQLite library pysqlite3 runs on, with our hook registered; None if unusable."""
    if sys.platform != "linux":  # the variadic call below is plain integer passing there
        return None
    try:
        library = ctypes.CDLL(_extension.__file__)
        library.sqlite3_db_config.restype = ctypes.c_int
        if library.sqlite3_auto_extension(_record_handle) != 0:
            return None
    except (OSError, AttributeError) as error:
        _log.debug("reader connections keep SQLite's lookaside: %s", error)
        return None
    return library


_library = _load_library()


def _handle_in(raw: Any) -> int | None:
    """The ``sqlite3 *`` a pysqlite3 connection holds: its first field after the object header."""
    return ctypes.c_void_p.from_address(id(raw) + object.__basicsize__).value


def connect_without_lookaside(connect: Callable[[], Any]) -> Any:
    """``connect()`` (a pysqlite3 connect), then the new connection's lookaside turned off.

    Only when SQLite itself named the connection just opened on this thread and the
    Python object holds that same handle; otherwise the connection is returned as it is.
    """
    if _library is None:
        return connect()
    _opened_here.handle = None
    raw = connect()
    handle = _opened_here.handle
    if handle is not None and handle == _handle_in(raw):
        code = _library.sqlite3_db_config(ctypes.c_void_p(handle), _SQLITE_DBCONFIG_LOOKASIDE,
                                          ctypes.c_void_p(0), 0, 0)
        if code != 0:
            _log.debug("SQLite kept this connection's lookaside (code %d)", code)
    return raw
