"""Status and results: QStash's logs API -> task records with Celery states.

Status flows one way: QStash events (``GET /v2/events``, the path both official
SDKs use) -> :mod:`.query` (the one query) -> :mod:`.records` (a :class:`TaskRecord`
with its Celery state) -> ``AsyncResult`` (:mod:`.result`), the CLI, the dashboard and
its Flower-compatible API (:mod:`.present`). Nothing here keeps local state: real QStash
and the emulator answer the same questions.
"""

from ..redaction import REDACTED, is_secret_name, redact_headers, safe_url
from .present import SORT_KEYS, TaskFilter, flower_task, parse_since, sort_records
from .query import DlqEntry, NotFound, QueueInfo, StatusClient, dlq_entry
from .records import (
    CELERY_STATES,
    FINAL_QSTASH_STATES,
    KNOWN_STATES,
    QSTASH_STATES,
    STATE_MAP,
    CallbackRecord,
    TaskRecord,
    build_record,
    celery_state,
    record_from_events,
)

__all__ = [
    "CELERY_STATES",
    "FINAL_QSTASH_STATES",
    "KNOWN_STATES",
    "QSTASH_STATES",
    "REDACTED",
    "SORT_KEYS",
    "STATE_MAP",
    "CallbackRecord",
    "DlqEntry",
    "NotFound",
    "QueueInfo",
    "StatusClient",
    "TaskFilter",
    "TaskRecord",
    "build_record",
    "celery_state",
    "dlq_entry",
    "flower_task",
    "is_secret_name",
    "parse_since",
    "record_from_events",
    "redact_headers",
    "safe_url",
    "sort_records",
]
