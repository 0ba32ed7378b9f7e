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

from __future__ import annotations

import base64
import json
import math
import re
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import pairwise
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from celery import states
from qstash import QStash
from qstash.errors import QStashError

from ..errors import DeliveryFailed

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
    "flower_task",
    "is_secret_name",
    "parse_since",
    "record_from_events",
    "redact_headers",
    "safe_url",
    "sort_records",
]

#: QStash log state -> Celery state (documented in the README).
STATE_MAP: dict[str, str] = {
    "CREATED": states.PENDING,
    "ACTIVE": states.STARTED,
    "RETRY": states.RETRY,
    "ERROR": states.RETRY,
    "DELIVERED": states.SUCCESS,
    "FAILED": states.FAILURE,
    "CANCEL_REQUESTED": states.REVOKED,
    "CANCELED": states.REVOKED,
}
FINAL_QSTASH_STATES = frozenset({"DELIVERED", "FAILED", "CANCELED"})
#: The states a filter can name (``--state``, the tasks page, ``/api/tasks?state=``):
#: Celery's, as the map above gives them, and QStash's own.
CELERY_STATES = tuple(dict.fromkeys(STATE_MAP.values()))
QSTASH_STATES = tuple(STATE_MAP)
KNOWN_STATES = frozenset(CELERY_STATES + QSTASH_STATES + ("ALL",))

# QStash logs forwarded headers without their ``Upstash-Forward-`` prefix (that is
# what the destination receives); accept the prefixed spelling too.
_TASK_HEADERS = ("X-Celery-Task", "Upstash-Forward-X-Celery-Task")


def celery_state(qstash_state: str | None) -> str:
    """Unknown or missing states read as PENDING, as an unknown task id does in Celery."""
    return str(STATE_MAP.get(qstash_state or "", states.PENDING))


def _b64json(value: str | None) -> Any:
    if not value:
        return None
    try:
        raw = base64.b64decode(value)
    except ValueError:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _task_name(headers: Any) -> str | None:
    for name in _TASK_HEADERS:
        value = _header(headers, name)
        if value:
            return unquote(value)  # sent percent-encoded outside printable ASCII
    return None


def _labels(event: dict[str, Any]) -> list[str]:
    """An event's labels (``labels``, or the single ``label`` of older answers)."""
    labels = event.get("labels")
    if isinstance(labels, list) and labels:
        return [str(x) for x in labels]
    return [str(event["label"])] if event.get("label") else []


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, dict):
        return None
    for key, value in headers.items():
        if key.lower() == name.lower():
            if isinstance(value, list):
                return str(value[0]) if value else None
            return str(value)
    return None


@dataclass
class CallbackRecord:
    """A ``link`` (``kind="callback"``) or ``link_error`` (``"failure_callback"``)
    message QStash published after one of the task's attempts."""

    kind: str
    message_id: str
    url: str
    qstash_state: str
    response_status: int | None = None
    error: str | None = None
    updated: float | None = None
    source_message_id: str | None = None

    @property
    def state(self) -> str:
        return celery_state(self.qstash_state)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message_id": self.message_id, "url": safe_url(self.url),
                "state": self.state, "qstash_state": self.qstash_state,
                "response_status": self.response_status, "error": self.error,
                "updated": self.updated}


@dataclass
class TaskRecord:
    """One Celery task as QStash's events describe it (times are epoch seconds).

    Everything but :attr:`callbacks` comes from the task's own message (the email):
    a callback's outcome never changes the task's state.
    """

    task_id: str
    message_id: str
    name: str | None
    qstash_state: str
    url: str
    recipient: str | None = None
    subject: str | None = None
    created: float | None = None
    started: float | None = None
    updated: float | None = None
    next_delivery: float | None = None
    retries: int = 0
    response_status: int | None = None
    response: Any = None
    error: str | None = None
    queue: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[CallbackRecord] = field(default_factory=list)

    @property
    def state(self) -> str:
        return celery_state(self.qstash_state)

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES

    @property
    def result(self) -> Any:
        """AutoSend's response ``data`` on success; its error text otherwise."""
        if isinstance(self.response, dict):
            if self.state == states.SUCCESS and isinstance(self.response.get("data"), dict):
                return self.response["data"]
            return self.response
        return self.response

    @property
    def error_message(self) -> str | None:
        """AutoSend's error message (either documented shape), else QStash's error."""
        return _error_text(self.response) or self.error


def _email_summary(body: Any) -> tuple[str | None, str | None]:
    """(recipient, subject) of an AutoSend request body (single or bulk send)."""
    recipient = subject = None
    if isinstance(body, dict):
        subject = body.get("subject") if isinstance(body.get("subject"), str) else None
        to = body.get("to")
        if isinstance(to, dict):
            recipient = to.get("email")
        elif isinstance(body.get("recipients"), list):
            people = body["recipients"]
            if len(people) == 1 and isinstance(people[0], dict):
                recipient = people[0].get("email")
            else:
                recipient = f"{len(people)} recipients"
    return recipient, subject


def _chronological(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first. QStash lists events newest first, and within one millisecond its
    order is the only truth (a zero-delay retry's RETRY and next ACTIVE share a ms):
    input already ordered by time keeps its order; anything else is sorted by
    time, then by where a state falls in one attempt."""
    times = [int(e.get("time", 0)) for e in events]
    pairs = list(pairwise(times))
    if all(a >= b for a, b in pairs):
        return events[::-1]
    if all(a <= b for a, b in pairs):
        return events
    return sorted(events, key=lambda e: (int(e.get("time", 0)), _RANK.get(e.get("state", ""), 0)))


#: QStash's callback body names its source ``sourceMessageId``; the callbacks page's
#: example spells it ``sourceMessasgeId``: both are read.
_SOURCE_KEYS = ("sourceMessageId", "sourceMessasgeId")


def _source_id(body: Any) -> str | None:
    """The source message id in a callback body, or ``None`` for any other body."""
    if isinstance(body, dict):
        for key in _SOURCE_KEYS:
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
    return None


def _callback_kind(body: Any) -> str | None:
    """``"callback"``/``"failure_callback"`` for QStash's callback body, else ``None``."""
    if _source_id(body) is not None:
        return "failure_callback" if "dlqId" in body else "callback"
    return None


_Events = list[dict[str, Any]]


def _split(events: _Events) -> tuple[_Events, dict[str, tuple[str, _Events]]]:
    """The task's own events, and its callbacks' events by message id (with their kind).

    A message is a callback when its body is QStash's callback body, or when its URL
    is a ``callback``/``failureCallback`` one of the other messages declares.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        groups.setdefault(str(ev.get("messageId")), []).append(ev)
    declared: dict[str, str] = {}
    for ev in events:
        for name, what in (("callback", "callback"), ("failureCallback", "failure_callback")):
            if isinstance(ev.get(name), str) and ev[name]:
                declared.setdefault(ev[name], what)
    own: list[dict[str, Any]] = []
    callbacks: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for message_id, group in groups.items():
        kind: str | None = next(
            (k for k in (_callback_kind(_b64json(ev.get("body"))) for ev in group
                         if ev.get("body")) if k), None)
        if kind is None:
            url = next((str(ev["url"]) for ev in group if ev.get("url")), "")
            # Only another message's declaration counts (a task is never its own callback).
            own_declared = {ev.get("callback") for ev in group} | {
                ev.get("failureCallback") for ev in group}
            if url in declared and url not in own_declared:
                kind = declared[url]
        if kind is None:
            own.extend(group)
        else:
            callbacks[message_id] = (kind, group)
    return own, callbacks


def _callback_record(message_id: str, kind: str, events: list[dict[str, Any]]) -> CallbackRecord:
    ordered = _chronological(events)
    last = ordered[-1]
    body = next((_b64json(e.get("body")) for e in ordered if e.get("body")), None)
    record = CallbackRecord(
        kind=kind,
        message_id=message_id,
        url=str(last.get("url", "")),
        qstash_state=str(last.get("state")),
        updated=int(last["time"]) / 1000 if last.get("time") else None,
        source_message_id=_source_id(body),
    )
    for event in ordered:
        if event.get("responseStatus") is not None:
            record.response_status = int(event["responseStatus"])
        if event.get("error"):
            record.error = str(event["error"])
    return record


def build_record(events: Iterable[dict[str, Any]]) -> TaskRecord | None:
    """Fold one task's raw events (any order) into a record; ``None`` if there are none.

    Callback messages among them are set apart (:attr:`TaskRecord.callbacks`): the
    record's state, response and retries are the task's own message's.
    """
    own, callbacks = _split(list(events))
    record = _fold(own)
    if record is not None:
        record.callbacks = sorted(
            (_callback_record(mid, kind, group) for mid, (kind, group) in callbacks.items()),
            key=lambda c: c.updated or 0.0,
        )
    return record


def _fold(events: list[dict[str, Any]]) -> TaskRecord | None:
    ordered = _chronological(list(events))
    if not ordered:
        return None
    first, last = ordered[0], ordered[-1]
    header = next((e.get("header") for e in ordered if e.get("header")), None)
    body = next((_b64json(e.get("body")) for e in ordered if e.get("body")), None)
    recipient, subject = _email_summary(body)
    labels = last.get("labels") or ([last["label"]] if last.get("label") else [])
    record = TaskRecord(
        task_id=str(labels[0]) if labels else str(last.get("messageId")),
        message_id=str(last.get("messageId")),
        name=_task_name(header),
        qstash_state=str(last.get("state")),
        url=str(last.get("url", "")),
        recipient=recipient,
        subject=subject,
        created=int(first["time"]) / 1000 if first.get("time") else None,
        updated=int(last["time"]) / 1000 if last.get("time") else None,
        queue=last.get("queueName") or None,
        events=ordered,
    )
    for event in ordered:
        state = event.get("state")
        if state == "ACTIVE" and record.started is None:
            record.started = int(event["time"]) / 1000
        if state == "ERROR":
            record.retries += 1
        if event.get("responseStatus") is not None:
            record.response_status = int(event["responseStatus"])
            record.response = _b64json(event.get("responseBody"))
        if event.get("error"):
            record.error = str(event["error"])
    if record.qstash_state == "FAILED" and record.retries:
        record.retries -= 1  # the last failed attempt is not a retry
    # A delayed (countdown/eta) message that has not been tried yet is due at notBefore.
    nxt = last.get("nextDeliveryTime") or (
        last.get("notBefore") if record.qstash_state == "CREATED" else None
    )
    if nxt and record.qstash_state not in FINAL_QSTASH_STATES:
        record.next_delivery = int(nxt) / 1000
    return record


# Same-millisecond events still sort in the order they happen.
_RANK = {
    "CREATED": 0, "ACTIVE": 1, "ERROR": 2, "RETRY": 3, "CANCEL_REQUESTED": 4,
    "DELIVERED": 5, "FAILED": 5, "CANCELED": 5,
}


def record_from_events(task_id: str, events: Iterable[dict[str, Any]]) -> TaskRecord | None:
    """The task's record from a logs answer filtered by its label (``None`` if it has none).

    Events are kept only if they carry the label, in case a server ignores the filter.
    """
    if not task_id:
        return None
    return build_record(e for e in events if task_id in _labels(e))


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
        events, _ = self.events(label=task_id, count=1000)
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
        self, *, pages: int = 10, count: int = 1000, **filters: Any
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
        return _error_text(self.response) or self.error

    @property
    def is_callback(self) -> bool:
        return self.kind != "email"

    @property
    def what(self) -> str:
        """What failed, in words: ``email``, ``link callback`` or ``link_error callback``."""
        return {"callback": "link callback", "failure_callback": "link_error callback"}.get(
            self.kind, "email")


def _error_text(body: Any) -> str | None:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str) and err:
            return err
        if body.get("message"):
            return str(body["message"])
    if isinstance(body, str) and body:
        return body
    return None


def _plain_json(text: Any) -> Any:
    if not isinstance(text, str) or not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


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


# -- filtering, sorting, time ---------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: The earliest time a ``datetime`` can hold (an ISO ``--since`` cannot go further back).
_EARLIEST = datetime(1, 1, 1, tzinfo=timezone.utc).timestamp()
_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)


def parse_since(text: str, *, now: float | None = None) -> float:
    """``10m``, ``2h``, ``1d``, ``30s``, ``1w`` ago, or an ISO date/time, as epoch seconds.

    A naive ISO time is UTC. Raises ``ValueError`` for anything else, a duration
    too large to count back from now included.
    """
    match = _AGO.match(text)
    if match:
        current = time.time() if now is None else now
        then = current - float(match.group(1)) * _UNITS[match.group(2).lower()]
        if not math.isfinite(then) or then < _EARLIEST:
            raise ValueError(f"{text.strip()[:20]!r}... is too large a duration")
        return then
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration like 10m, 2h, 1d nor an ISO date/time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _states(value: str | None) -> frozenset[str]:
    """Flower's ``state`` filter: ``All``/empty is none; a comma list matches any of them."""
    if not value:
        return frozenset()
    wanted = {part.strip().upper() for part in value.split(",") if part.strip()}
    return frozenset() if "ALL" in wanted else frozenset(wanted)


@dataclass(frozen=True)
class TaskFilter:
    """What the CLI's flags, the tasks page's form and ``GET /api/tasks`` filter on.

    ``state`` accepts Celery states (``SUCCESS``) and QStash states (``DELIVERED``),
    comma-separated for several; ``name`` is an exact task name; ``since``/``until``
    bound the time QStash accepted the task (epoch seconds); ``search`` is Flower's
    search box: whitespace-separated terms that must all match, either
    ``name:``/``state:``/``recipient:``/``subject:``/``id:`` qualifiers or free text
    found (case-insensitively) in the id, name, recipient, subject or state.
    """

    state: str | None = None
    name: str | None = None
    since: float | None = None
    until: float | None = None
    search: str | None = None

    def matches(self, record: TaskRecord) -> bool:
        wanted = _states(self.state)
        if wanted and record.state not in wanted and record.qstash_state not in wanted:
            return False
        if self.name and record.name != self.name:
            return False
        created = record.created if record.created is not None else 0.0
        if self.since is not None and created < self.since:
            return False
        if self.until is not None and created > self.until:
            return False
        return not self.search or _search_matches(self.search, record)


_QUALIFIERS: dict[str, Callable[[TaskRecord], Sequence[str | None]]] = {
    "name": lambda r: [r.name],
    "state": lambda r: [r.state, r.qstash_state],
    "recipient": lambda r: [r.recipient],
    "subject": lambda r: [r.subject],
    "id": lambda r: [r.task_id, r.message_id],
}


def _search_matches(query: str, record: TaskRecord) -> bool:
    try:
        terms = shlex.split(query)
    except ValueError:  # an unbalanced quote: search for the words as typed
        terms = query.split()
    for term in terms:
        key, sep, value = term.partition(":")
        if sep and key.lower() in _QUALIFIERS:
            fields, needle = _QUALIFIERS[key.lower()](record), value.lower()
            if key.lower() == "state":  # exact, as Flower's state: qualifier
                if needle.upper() not in {f for f in fields if f}:
                    return False
                continue
        else:
            fields = [record.task_id, record.message_id, record.name, record.recipient,
                      record.subject, record.state]
            needle = term.lower()
        if not any(needle in f.lower() for f in fields if f):
            return False
    return True


#: Flower's ``sort_by`` keys (a ``-`` prefix sorts descending).
SORT_KEYS: dict[str, Callable[[TaskRecord], Any]] = {
    "name": lambda r: r.name or "",
    "state": lambda r: r.state,
    "received": lambda r: r.created or 0.0,
    "started": lambda r: r.started or 0.0,
}


def sort_records(records: Iterable[TaskRecord], sort_by: str | None) -> list[TaskRecord]:
    """Sort as Flower's ``sort_by`` does; ``None``/empty keeps newest-first order."""
    if not sort_by:
        return list(records)
    reverse = sort_by.startswith("-")
    key = SORT_KEYS.get(sort_by.lstrip("-"))
    if key is None:
        raise ValueError(f"sort_by must be one of {', '.join(SORT_KEYS)} (optionally with '-')")
    return sorted(records, key=key, reverse=reverse)


# -- presentation helpers shared by the CLI and the dashboard -------------------

_SECRET_HEADER = re.compile(r"authorization|token|key|signature|secret|cookie", re.I)
REDACTED = "[redacted]"


#: Names that match the pattern but that we set ourselves with a public value (the task id).
_PUBLIC_NAMES = frozenset({"idempotency-key", "upstash-forward-idempotency-key"})


def is_secret_name(name: str) -> bool:
    """Does a header or parameter name suggest its value is a secret?"""
    return name.lower() not in _PUBLIC_NAMES and bool(_SECRET_HEADER.search(name))


def redact_headers(headers: Any) -> dict[str, str]:
    """Headers as ``name -> value`` with every secret-bearing value replaced.

    A header whose name mentions authorization, token, key, signature, secret or
    cookie is never shown, whatever its value (QStash's own ``REDACTED:<hash>``
    included: the hash of a short key can be brute-forced).
    """
    out: dict[str, str] = {}
    if not isinstance(headers, dict):
        return out
    for name, value in headers.items():
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        out[str(name)] = REDACTED if is_secret_name(str(name)) else text
    return out


def safe_url(url: str) -> str:
    """A destination URL fit to show: no userinfo, no fragment, secret-looking query
    parameters (``api_key``, ``token``...) replaced by :data:`REDACTED`."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    pairs = [(k, REDACTED if is_secret_name(k) else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(pairs), ""))


def _first_time(record: TaskRecord, *wanted: str) -> float | None:
    for event in record.events:
        if event.get("state") in wanted and event.get("time"):
            return int(event["time"]) / 1000
    return None


def _last_time(record: TaskRecord, *wanted: str) -> float | None:
    found = None
    for event in record.events:
        if event.get("state") in wanted and event.get("time"):
            found = int(event["time"]) / 1000
    return found


def _eta(record: TaskRecord) -> float | None:
    """When a delayed (countdown/eta) task is due: ``notBefore`` later than creation."""
    for event in record.events:
        not_before, created = event.get("notBefore"), event.get("createdAt") or event.get("time")
        if not_before and created and int(not_before) > int(created):
            return int(not_before) / 1000
    return None


def flower_task(record: TaskRecord) -> dict[str, Any]:
    """A task in the shape of Flower's ``/api/tasks`` values (``celery.events.state.Task``).

    Times are epoch floats as in Flower. QStash has no worker, exchange, client
    or Lamport clock: those are ``None``. ``args``/``kwargs`` are ``None`` as
    well: the task's arguments are consumed when the task body renders the
    email at call time and never reach QStash, so "unknown" is the honest
    value (Flower's ``"[]"`` would claim there were none). ``result`` and
    ``exception`` are repr strings, as Flower's are; ``routing_key`` is the
    QStash queue, if any.
    """
    state = record.state
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    if state == states.SUCCESS:
        result = repr(record.result)
    elif state in (states.FAILURE, states.RETRY):
        exc = _delivery_failed(record)
        exception = repr(exc)
        result = exception
        if state == states.FAILURE:
            traceback = f"celery_qstash.errors.DeliveryFailed: {exc}"
    succeeded = _last_time(record, "DELIVERED")
    last_attempt = _last_time(record, "ACTIVE")
    # Flower's runtime is the successful run's duration: here, the delivering attempt's.
    runtime = (
        round(succeeded - last_attempt, 3)
        if succeeded is not None and last_attempt is not None
        else None
    )
    return {
        "uuid": record.task_id,
        "name": record.name,
        "state": state,
        "received": record.created,
        "sent": record.created,
        "started": record.started,
        "succeeded": succeeded,
        "failed": _last_time(record, "FAILED"),
        "retried": _last_time(record, "RETRY"),
        "revoked": _first_time(record, "CANCEL_REQUESTED", "CANCELED"),
        "rejected": None,
        "retries": record.retries,
        "result": result,
        "exception": exception,
        "traceback": traceback,
        "timestamp": record.updated,
        "runtime": runtime,
        "eta": _eta(record),
        "expires": None,
        "args": None,
        "kwargs": None,
        "worker": None,
        "routing_key": record.queue,
        "exchange": None,
        "client": None,
        "clock": None,
        "root_id": record.task_id,
        "parent_id": None,
        # Not in Flower: what only QStash knows, for scripts that want it.
        "qstash_state": record.qstash_state,
        "message_id": record.message_id,
        "recipient": record.recipient,
        "subject": record.subject,
        "next_delivery": record.next_delivery,
        "response_status": record.response_status,
        # link/link_error calls, apart: they never change the task's state.
        "callbacks": [c.as_dict() for c in record.callbacks],
    }


def _delivery_failed(record: TaskRecord) -> DeliveryFailed:
    return DeliveryFailed(record.response_status, record.error_message or record.qstash_state)
