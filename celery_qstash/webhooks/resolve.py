"""Which task sent the email a webhook is about.

AutoSend's events name the email (``emailId``, and ``batchId`` for a bulk send), never
our task. What the publish already knows links the two, looked up in this order:

1. **the event store's link**: the callback receiver writes ``email id -> task`` when
   QStash reports AutoSend's answer to a task's delivery (the ``Idempotency-Key`` it
   forwarded is the task id, the answer's ``emailId`` the email), and this module
   writes the links it finds below, so an email's later events (opens, clicks) are found
   at once;
2. **QStash's logs**: the ``DELIVERED`` event of the task's message keeps AutoSend's
   answer as its response body, and its label is the task id. The newest deliveries up
   to a few minutes after the event are read (at most :data:`LOG_PAGES` pages), so
   this is for an email's first events; what it finds becomes a link.

Neither found: the signal still fires, with ``task_id=None``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..config import load_settings
from ..errors import ConfigurationError
from ..publish.transports.qstash import client_for
from ..status import StatusClient
from ..status.records import _b64json, _labels, _task_name
from ..tasks.deferred import DeferredTask
from ..tasks.task import QStashTask
from .events import EmailEvent
from .store import EventStore

__all__ = ["LOG_PAGES", "find_task", "link_delivery", "sender_for"]

log = logging.getLogger("celery_qstash.webhooks")

#: Pages of QStash's logs (1000 events each) read to find one email's task.
LOG_PAGES = 3
#: How long after a delivery AutoSend's first events may come, for the logs' window.
AFTER_SECONDS = 300


def _keys(email_id: str | None, batch_id: str | None) -> list[str]:
    keys = [f"email:{email_id}"] if email_id else []
    return keys + ([f"batch:{batch_id}"] if batch_id else [])


def link_delivery(store: EventStore, response: Any, task_id: str, task_name: str | None) -> None:
    """Remember which task got this answer from AutoSend (its ``data``)."""
    if not isinstance(response, Mapping):
        return
    for key in _keys(_str(response.get("emailId")), _str(response.get("batchId"))):
        store.link(key, task_id, task_name)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def find_task(celery_app: Any, store: EventStore, event: EmailEvent, *,
              lookup_logs: bool = True) -> tuple[str, str | None] | None:
    """``(task id, task name)`` for the event's email, or ``None``."""
    keys = _keys(event.email_id, event.batch_id)
    if not keys:
        return None
    for key in keys:
        try:
            found = store.task_for(key)
        except Exception as exc:
            log.warning("event store lookup failed (%s): trying QStash's logs",
                        type(exc).__name__)
            break
        if found is not None:
            return found
    if not lookup_logs:
        return None
    found = _from_logs(celery_app, event)
    if found is not None:
        try:
            for key in keys:
                store.link(key, *found)
        except Exception as exc:
            log.warning("event store link failed (%s)", type(exc).__name__)
    return found


def _from_logs(celery_app: Any, event: EmailEvent) -> tuple[str, str | None] | None:
    try:
        client = StatusClient(client_for(load_settings(celery_app.conf)))
    except ConfigurationError:
        return None  # no QStash token here: only the store's links can say
    until = int((event.timestamp.timestamp() + AFTER_SECONDS) * 1000)
    try:
        for entry in client.iter_events(pages=LOG_PAGES, state="DELIVERED", toDate=str(until)):
            answer = _b64json(entry.get("responseBody"))
            data = answer.get("data") if isinstance(answer, Mapping) else None
            if not isinstance(data, Mapping):
                continue
            same_email = event.email_id and data.get("emailId") == event.email_id
            same_batch = event.batch_id and data.get("batchId") == event.batch_id
            labels = _labels(entry)
            if (same_email or same_batch) and labels:
                name = _task_name(entry.get("header"))
                if name is None:
                    record = client.task(labels[0], callbacks=False)
                    name = record.name if record is not None else None
                return labels[0], name
    except Exception as exc:  # QStash unreachable, refusing: the event still fires
        log.warning("QStash's logs could not be read to find email %s's task (%s)",
                    event.email_id, type(exc).__name__)
    return None


def sender_for(celery_app: Any, event: EmailEvent) -> Any:
    """The signal's sender: the app's task of that name if it is one of ours, else
    ``"autosend"``."""
    task = celery_app.tasks.get(event.task_name) if event.task_name else None
    return task if isinstance(task, (QStashTask, DeferredTask)) else "autosend"
