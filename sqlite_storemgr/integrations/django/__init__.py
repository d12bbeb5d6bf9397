"""Django's ORM on the store manager: the engine behind ``ENGINE: "sqlite_storemgr.django"``.

`base.DatabaseWrapper` is the engine; `middleware.TransactionMiddleware`
makes a request's writes one unit.  Django imports ``sqlite_storemgr.django.base``,
a thin package re-exporting these.  See docs/django.md.
"""
