"""Celery beat's ``beat_schedule`` mirrored as QStash schedules (``celery-qstash beat sync``)."""

from .beat import DEFAULT_PREFIX, sync

__all__ = ["DEFAULT_PREFIX", "sync"]
