"""Settings of the sample site: Django's ORM and admin on the sqlite_storemgr engine.

The database file and the strategy come from the environment (``serve.py``
sets them from its options), so one project runs under every strategy.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("NOTES_SITE_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "notes",
]

DATABASES = {"default": {
    "ENGINE": "sqlite_storemgr.django",
    "NAME": os.environ.get("NOTES_SITE_DB", BASE_DIR / "notes.db"),
    "OPTIONS": {"strategy": os.environ.get("NOTES_SITE_STRATEGY", "queue"), "timeout": 5,
                "on_locked": "retry", "synchronous": "full", "store": "notes"},
}}

# The first: a request's writes (the admin's session and login, an ORM write outside
# atomic()) are one unit, committed when the view answered below 500.
MIDDLEWARE = [
    "sqlite_storemgr.django.middleware.TransactionMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "notes_site.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "loggers": {"django.request": {"level": "ERROR"}}}
