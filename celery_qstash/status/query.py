"""The one query: QStash's logs, DLQ and queues APIs, read with the official SDK.

:class:`StatusClient` asks; :mod:`.records` folds what it gets into task records.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from qstash import QStash
from qstash.errors import QStashError

from .present import TaskFilter
from .records import (
    TaskRecord,
    _b64json,
    _callback_kind,
    _callback_record,
    _email_summary,
    _header,
    _plain_json,
    _source_id,
    _task_name,
    build_record,
    error_text,
    record_from_events,
)

#: QStash's documented maximum page of ``GET /v2/events`` (the OpenAPI document).
PAGE_SIZE = 100
#: Pages read for one task: its messages' events (a retried deferred task has several).
TASK_PAGES = 10


class StatusClient:
    """Reads and acts on task status through the official SDK's HTTP client.

    ``QStash.log.list`` prints every raw response to stdout (SDK 3.4 quirk), so the
    events endpoint is called through the SDK's ``http.request`` instead.
    """

    def __init__(self, client: QStash) -> None:
        self.client = client

    def events(
        self, *, count: int = 100, cursor: str | None = None, **filters: Any
    ) -> tuple[list[dict[str, Any]], str | None]:
        params: dict[str, Any] = {"count": str(count)}
        if cursor:
            params["cursor"] = cursor
        params.update({k: v for k, v in filters.items() if v is not None})
        data = self.client.http.request(path="/v2/events", method="GET", params=params)
        return list(data.get("events") or data.get("logs") or []), data.get("cursor") or None

    def task(self, task_id: str, *, callbacks: bool = True) -> TaskRecord | None:
        """Every event labelled with this task id (``None`` if there is none).

        One request, plus one per callback URL QStash did not label (``callbacks=False``
        skips those: a state read needs only the task's own message).

        An empty id is no task (QStash would ignore an empty ``label`` filter and
        answer with everyone's events). Events are kept only if they carry the
        label, in case a server ignores the filter.
        """
        if not task_id:
            return None
        # QStash pages its logs 100 events at a time (its documented maximum): follow the
        # cursor, as a task with retries (a deferred task's self.retry) has more.
        events = list(self.iter_events(label=task_id, pages=TASK_PAGES))
        record = record_from_events(task_id, events)
        if record is not None and callbacks:
            self._unlabelled_callbacks(record)
        return record

    def _unlabelled_callbacks(self, record: TaskRecord) -> None:
        """Find the task's callback messages by URL when QStash did not label them.

        One more request per declared callback URL that none of the labelled events
        answered for; kept are the messages whose callback body names one of the
        task's own messages as ``sourceMessageId``.
        """
        own_ids = {str(ev.get("messageId")) for ev in record.events}
        seen = {c.url for c in record.callbacks}
        declared: dict[str, str] = {}
        for ev in record.events:
            for name, kind in (("callback", "callback"), ("failureCallback", "failure_callback")):
                url = ev.get(name)
                if isinstance(url, str) and url and url not in seen:
                    declared.setdefault(url, kind)
        for url, kind in declared.items():
            events, _ = self.events(url=url, count=100)
            groups: dict[str, list[dict[str, Any]]] = {}
            for ev in events:
                groups.setdefault(str(ev.get("messageId")), []).append(ev)
            for message_id, group in groups.items():
                body = next((_b64json(e.get("body")) for e in group if e.get("body")), None)
                if _source_id(body) in own_ids:
                    record.callbacks.append(
                        _callback_record(message_id, _callback_kind(body) or kind, group)
                    )
        record.callbacks.sort(key=lambda c: c.updated or 0.0)

    def iter_events(
        self, *, pages: int = 10, count: int = PAGE_SIZE, **filters: Any
    ) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        for _ in range(pages):
            events, cursor = self.events(count=count, cursor=cursor, **filters)
            yield from events
            if not cursor:
                return

    def recent(self, *, pages: int = 5, since: float | None = None) -> list[TaskRecord]:
        """Recent celery-qstash tasks, newest first (grouped from recent events).

        ``since`` (epoch seconds) keeps the tasks QStash accepted since then.
        """
        filters: dict[str, Any] = {}
        if since is not None:
            filters["fromDate"] = str(max(0, int(since * 1000)))  # no event predates 1970
        groups: dict[str, list[dict[str, Any]]] = {}
        for event in self.iter_events(pages=pages, **filters):
            labels = event.get("labels") or [event.get("label") or event.get("messageId")]
            # A task retried from the DLQ is a new message with the same label (task id).
            groups.setdefault(str(labels[0]), []).append(event)
        if since is not None:
            # A task created before ``since`` has only its later events here: its record
            # would show the wrong creation time (and maybe no name), so it is left out.
            groups = {k: v for k, v in groups.items()
                      if any(e.get("state") == "CREATED" for e in v)}
        records = [r for r in map(build_record, groups.values()) if r is not None]
        records = [r for r in records if r.name is not None]  # ours: they carry X-Celery-Task
        records.sort(key=lambda r: r.created or 0, reverse=True)
        return records

    def revoke(self, message_id: str) -> None:
        """Cancel one QStash message (:class:`NotFound` when QStash no longer has it)."""
        with _not_found(f"message {message_id}"):
            self.client.message.cancel(message_id)

    def revoke_task(self, task_id: str) -> TaskRecord:
        """Cancel a task's newest message; :class:`NotFound` for an unknown task id."""
        record = self.task(task_id, callbacks=False)
        if record is None:
            raise NotFound(f"no QStash message is labelled with task id {task_id}")
        self.revoke(record.message_id)
        return record

    def tasks(self, flt: TaskFilter | None = None, *, pages: int = 5) -> list[TaskRecord]:
        """Recent tasks matching ``flt``, newest first: the CLI's and the dashboard's list.

        ``since`` goes to QStash as ``fromDate`` (fewer events to read); everything
        else is matched here, on whole records, because a task's state and name are
        only known once all its events are folded together.
        """
        flt = flt or TaskFilter()
        return [r for r in self.recent(pages=pages, since=flt.since) if flt.matches(r)]

    def task_types(self, *, pages: int = 5) -> list[str]:
        """The task names seen in recent events, sorted."""
        return sorted({r.name for r in self.recent(pages=pages) if r.name})

    # -- dead letter queue: SDK 3.4 has no retry, so all three go through ``http`` --

    def dlq(
        self, *, count: int = 100, cursor: str | None = None, task_id: str | None = None
    ) -> tuple[list[DlqEntry], str | None]:
        """One page of the DLQ, newest first as QStash returns it (``task_id`` = label filter)."""
        params: dict[str, str] = {"count": str(count)}
        if cursor:
            params["cursor"] = cursor
        if task_id:
            params["label"] = task_id
        data = self.client.http.request(path="/v2/dlq", method="GET", params=params)
        if not isinstance(data, dict):
            return [], None
        messages = [m for m in data.get("messages") or [] if isinstance(m, dict)]
        return [dlq_entry(m) for m in messages], data.get("cursor") or None

    def dlq_retry(self, dlq_id: str) -> str:
        """Republish a dead letter (same body and headers); returns the new message id."""
        with _not_found(f"DLQ message {dlq_id}"):
            data = self.client.http.request(path=f"/v2/dlq/retry/{_segment(dlq_id)}",
                                            method="POST")
        return str(data.get("messageId", "")) if isinstance(data, dict) else ""

    def dlq_delete(self, dlq_id: str) -> None:
        """Remove a dead letter for good."""
        with _not_found(f"DLQ message {dlq_id}"):
            self.client.http.request(
                path=f"/v2/dlq/{_segment(dlq_id)}", method="DELETE", parse_response=False
            )

    def queues(self) -> list[QueueInfo]:
        """QStash queues with their lag (messages waiting), as Flower's queue lengths."""
        data = self.client.http.request(path="/v2/queues", method="GET")
        rows = data if isinstance(data, list) else []
        return [
            QueueInfo(
                name=str(q.get("name", "")),
                messages=int(q.get("lag") or 0),
                parallelism=int(q.get("parallelism") or 1),
                paused=bool(q.get("paused")),
            )
            for q in rows
            if isinstance(q, dict)
        ]


def _segment(value: str) -> str:
    """``value`` as exactly one URL path segment (``../keys`` cannot climb out)."""
    return quote(value, safe="")


class NotFound(LookupError):
    """QStash does not know the task, message or DLQ entry (it answered 404)."""


_HTTP_STATUS = re.compile(r"status: (\d{3})")


@contextmanager
def _not_found(what: str) -> Iterator[None]:
    """Turn the SDK's "Request failed with status: 404" into :class:`NotFound`."""
    try:
        yield
    except QStashError as exc:
        match = _HTTP_STATUS.search(str(exc))
        if match and match.group(1) == "404":
            raise NotFound(f"QStash has no {what}") from exc
        raise


# -- DLQ and queues -------------------------------------------------------------


@dataclass
class DlqEntry:
    """One dead letter: a task whose retries ran out (times are epoch seconds).

    ``kind`` is ``"email"`` for the task's own message, ``"callback"`` or
    ``"failure_callback"`` for a ``link``/``link_error`` call that failed (the email
    itself may well have been sent: retrying such an entry calls the URL again and
    sends no email). For those, ``recipient``/``subject``/``name``/``task_id`` are the
    source email's, read from the callback body.
    """

    dlq_id: str
    message_id: str
    task_id: str
    name: str | None
    url: str
    recipient: str | None = None
    subject: str | None = None
    created: float | None = None
    failed: float | None = None
    response_status: int | None = None
    response: Any = None
    error: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    kind: str = "email"
    source_message_id: str | None = None

    @property
    def error_message(self) -> str | None:
        return error_text(self.response) or self.error

    @property
    def is_callback(self) -> bool:
        return self.kind != "email"

    @property
    def what(self) -> str:
        """What failed, in words: ``email``, ``link callback`` or ``link_error callback``."""
        return {"callback": "link callback", "failure_callback": "link_error callback"}.get(
            self.kind, "email")


_IDEMPOTENCY = ("Idempotency-Key", "Upstash-Forward-Idempotency-Key")


def dlq_entry(raw: dict[str, Any]) -> DlqEntry:
    """A DLQ message (``GET /v2/dlq``) as a :class:`DlqEntry`.

    Unlike log entries, DLQ bodies are plain text (``body``/``responseBody``) and
    only fall back to ``bodyBase64``/``responseBodyBase64`` for binary content.
    """
    body = _plain_json(raw.get("body")) if raw.get("body") else _b64json(raw.get("bodyBase64"))
    response = (
        _plain_json(raw.get("responseBody"))
        if raw.get("responseBody")
        else _b64json(raw.get("responseBodyBase64"))
    )
    labels = raw.get("labels") or ([raw["label"]] if raw.get("label") else [])
    dlq_id = str(raw.get("dlqId", ""))
    failed_ms = dlq_id.split("-", 1)[0]
    headers = raw.get("header") if isinstance(raw.get("header"), dict) else {}
    kind = _callback_kind(body) or "email"
    task_id = str(labels[0]) if labels else None
    name = _task_name(headers)
    source_id = None
    email_body = body
    if kind != "email" and isinstance(body, dict):
        # A callback's body carries its source (the email) and that message's headers:
        # the task id (its Idempotency-Key) and name come from there.
        source_id = _source_id(body)
        source_headers = body.get("sourceHeader")
        name = _task_name(source_headers) or name
        task_id = task_id or next(
            (v for v in (_header(source_headers, n) for n in _IDEMPOTENCY) if v), None)
        email_body = _b64json(body.get("sourceBody")) if body.get("sourceBody") else None
    recipient, subject = _email_summary(email_body)
    return DlqEntry(
        dlq_id=dlq_id,
        message_id=str(raw.get("messageId", "")),
        task_id=task_id or str(raw.get("messageId", "")),
        name=name,
        url=str(raw.get("url", "")),
        recipient=recipient,
        subject=subject,
        created=int(raw["createdAt"]) / 1000 if raw.get("createdAt") else None,
        failed=int(failed_ms) / 1000 if failed_ms.isdigit() else None,
        response_status=int(raw["responseStatus"]) if raw.get("responseStatus") else None,
        response=response,
        error=str(raw["error"]) if raw.get("error") else None,
        headers=dict(headers or {}),
        kind=kind,
        source_message_id=source_id,
    )


@dataclass(frozen=True)
class QueueInfo:
    """A QStash queue; ``messages`` is its lag (Flower's "messages" in the queue)."""

    name: str
    messages: int
    parallelism: int = 1
    paused: bool = False
