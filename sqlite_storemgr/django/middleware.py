"""``MIDDLEWARE`` path of the request-scoped transaction middleware."""

from sqlite_storemgr.integrations.django.middleware import TransactionMiddleware

__all__ = ["TransactionMiddleware"]
