"""What Django imports as ``<ENGINE>.base``: the engine's `DatabaseWrapper`."""

from sqlite_storemgr.integrations.django.base import DatabaseWrapper

__all__ = ["DatabaseWrapper"]
