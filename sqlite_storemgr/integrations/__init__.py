"""What plugs the manager into other frameworks: WSGI, zope ``transaction``, SQLAlchemy.

Each module here uses the core's public surface (`StoreManager`, `Strategy`,
`ManagedStore`, the scope hooks of `sqlite_storemgr.scopes`); nothing in the
core imports them.
"""
