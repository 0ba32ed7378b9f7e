"""Settings of the example project (development values; read the comments for production)."""

import os

import django

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "true").lower() == "true"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")

INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "proj.urls"
USE_TZ = True

# Each request runs in a transaction: the backend publishes after it commits.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB", ":memory:"),
        "ATOMIC_REQUESTS": True,
    }
}

# --- email through QStash and AutoSend ------------------------------------------------
# Django 6.1 names mail backends in MAILERS (EMAIL_BACKEND is deprecated there); the
# OPTIONS are the backend's keyword arguments (fail_silently, on_commit, using).
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "celery_qstash.contrib.django.EmailBackend"}}
else:
    EMAIL_BACKEND = "celery_qstash.contrib.django.EmailBackend"
DEFAULT_FROM_EMAIL = "Acme <hello@acme.example>"

# The CELERY_ namespace Celery's Django guide uses: the backend reads these, and so does
# the Celery app (proj/celery.py). Unset values fall back to the environment variables
# (QSTASH_TOKEN, QSTASH_URL, AUTOSEND_API_KEY; QSTASH_DEV=true for `celery-qstash dev`).
CELERY_QSTASH_TOKEN = os.environ.get("QSTASH_TOKEN")
CELERY_AUTOSEND_API_KEY = os.environ.get("AUTOSEND_API_KEY")
CELERY_QSTASH_EMAIL_ON_COMMIT = True  # False: publish at once, even inside atomic()
