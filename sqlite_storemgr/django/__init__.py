"""The engine path for Django settings: ``"ENGINE": "sqlite_storemgr.django"``.

The code lives in `sqlite_storemgr.integrations.django`; see docs/django.md.
"""
