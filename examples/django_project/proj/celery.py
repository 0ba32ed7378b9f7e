"""The project's Celery app: its conf is Django's settings in the ``CELERY_`` namespace,
so ``celery -A proj qstash status`` reads the same QStash settings as the email backend."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
