"""The one query module: QStash's logs API -> task records with Celery states.

Status flows one way: QStash events (``GET /v2/events``, the path both official
SDKs use) -> :class:`TaskRecord` -> ``AsyncResult``, the CLI, the dashboard and
its Flower-compatible API. Nothing here keeps local state: real QStash and the
emulator answer the same questions.

A task is found by the ``Upstash-Label`` set to its task id at publish time; its
display name travels as the forwarded ``X-Celery-Task`` header.

**A task's state is its own message's.** A ``link``/``link_error`` callback is a
message of its own (QStash's callbacks page: "Callbacks publish a new message").
Whether QStash labels it like its source is documented nowhere (the docs, the
OpenAPI file and both SDKs' types and tests say nothing; there is no
``Upstash-Callback-Label`` header), so this module does not depend on it: a
callback is recognised by its body (QStash's callback body, with
``sourceMessageId``) or by its URL (the ``callback``/``failureCallback`` its source
declares), never changes the task's state, and is reported apart
(:attr:`TaskRecord.callbacks`). When the callbacks are not labelled, they are
found by URL and ``sourceMessageId``.
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
