"""Django's tests/test_sqlite.py with both databases on the sqlite_storemgr engine.

The strategy comes from STOREMGR_DJANGO_STRATEGY (default: queue).
"""

import os

_OPTIONS = {"strategy": os.environ.get("STOREMGR_DJANGO_STRATEGY", "queue"), "timeout": 5}

DATABASES = {
    "default": {"ENGINE": "sqlite_storemgr.django", "OPTIONS": dict(_OPTIONS)},
    "other": {"ENGINE": "sqlite_storemgr.django", "OPTIONS": dict(_OPTIONS)},
}

SECRET_KEY = "django_tests_secret_key"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
]

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

USE_TZ = False
