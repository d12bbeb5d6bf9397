"""A Django middleware that makes each request's writes one unit per database.

The WSGI `TransactionMiddleware`'s request scope, as a Django middleware
(``MIDDLEWARE = ["sqlite_storemgr.django.middleware.TransactionMiddleware",
...]``): the request's first write (an ORM write outside ``atomic()``, an
``atomic()`` block, ``submit_write``, ``write()``) begins the request's
transaction, later ones join it, and it commits when the view returned a
response below 500, else rolls back.  Under ``queue``/``single`` that
transaction leases the writer for the rest of the request.  A request that
only reads never takes the write lock.  A streaming response's body is
produced after the commit.
"""

from __future__ import annotations

from typing import Any, Callable

import sqlite_storemgr as sm

from ..wsgi import RequestScope

__all__ = ["TransactionMiddleware"]


class TransactionMiddleware:
    """Commit the request's writes when the view answered below 500; else roll back."""

    def __init__(self, get_response: Callable[[Any], Any]):
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        scope = RequestScope(sm.default_manager())
        scope.begin()
        try:
            response = self.get_response(request)
        except BaseException:
            scope.end(False)
            raise
        scope.end(response.status_code < 500)
        return response
