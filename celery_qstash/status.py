"""The one query module: QStash's logs API -> task records with Celery states.

Status flows one way: QStash events (``GET /v2/events``, the path both official
SDKs use) -> :class:`TaskRecord` -> ``AsyncResult``, the CLI, the dashboard and
its Flower-compatible API. Nothing here keeps local state: real QStash and the
emulator answer the same questions.

A task is found by the ``Upstash-Label`` set to its task id at publish time; its
display name travels as the forwarded ``X-Celery-Task`` header.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from celery import states
from qstash import QStash

__all__ = [
    "FINAL_QSTASH_STATES",
    "STATE_MAP",
    "StatusClient",
    "TaskRecord",
    "build_record",
    "celery_state",
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

_TASK_HEADER = "Upstash-Forward-X-Celery-Task"


def celery_state(qstash_state: str | None) -> str:
    """Unknown or missing states read as PENDING, as an unknown task id does in Celery."""
    return STATE_MAP.get(qstash_state or "", states.PENDING)


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
class TaskRecord:
    """One Celery task as QStash's events describe it (times are epoch seconds)."""

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
        body = self.response
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict) and err.get("message"):
                return str(err["message"])
            if body.get("message"):
                return str(body["message"])
        if isinstance(body, str) and body:
            return body
        return self.error


def build_record(events: Iterable[dict[str, Any]]) -> TaskRecord | None:
    """Fold one task's raw events (any order) into a record; ``None`` if there are none."""
    ordered = sorted(events, key=lambda e: (int(e.get("time", 0)), _RANK.get(e.get("state", ""), 0)))
    if not ordered:
        return None
    first, last = ordered[0], ordered[-1]
    header = next((e.get("header") for e in ordered if e.get("header")), None)
    body = next((_b64json(e.get("body")) for e in ordered if e.get("body")), None)
    recipient = subject = None
    if isinstance(body, dict):
        subject = body.get("subject") if isinstance(body.get("subject"), str) else None
        to = body.get("to")
        if isinstance(to, dict):
            recipient = to.get("email")
        elif isinstance(body.get("recipients"), list):
            people = body["recipients"]
            recipient = people[0].get("email") if len(people) == 1 else f"{len(people)} recipients"
    labels = last.get("labels") or ([last["label"]] if last.get("label") else [])
    record = TaskRecord(
        task_id=str(labels[0]) if labels else str(last.get("messageId")),
        message_id=str(last.get("messageId")),
        name=_header(header, _TASK_HEADER),
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
    nxt = last.get("nextDeliveryTime")
    if nxt and record.qstash_state not in FINAL_QSTASH_STATES:
        record.next_delivery = int(nxt) / 1000
    return record


# Same-millisecond events still sort in the order they happen.
_RANK = {
    "CREATED": 0, "ACTIVE": 1, "ERROR": 2, "RETRY": 3, "CANCEL_REQUESTED": 4,
    "DELIVERED": 5, "FAILED": 5, "CANCELED": 5,
}


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

    def task(self, task_id: str) -> TaskRecord | None:
        """One request: every event labelled with this task id."""
        events, _ = self.events(label=task_id, count=1000)
        return build_record(events)

    def iter_events(self, *, pages: int = 10, count: int = 1000, **filters: Any) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        for _ in range(pages):
            events, cursor = self.events(count=count, cursor=cursor, **filters)
            yield from events
            if not cursor:
                return

    def recent(self, *, pages: int = 5, since: float | None = None) -> list[TaskRecord]:
        """Recent celery-qstash tasks, newest first (grouped from recent events)."""
        filters: dict[str, Any] = {}
        if since is not None:
            filters["fromDate"] = str(int(since * 1000))
        groups: dict[str, list[dict[str, Any]]] = {}
        for event in self.iter_events(pages=pages, **filters):
            labels = event.get("labels") or [event.get("label") or event.get("messageId")]
            # A task retried from the DLQ is a new message with the same label (task id).
            groups.setdefault(str(labels[0]), []).append(event)
        records = [r for r in map(build_record, groups.values()) if r is not None]
        records = [r for r in records if r.name is not None]  # ours: they carry X-Celery-Task
        records.sort(key=lambda r: r.created or 0, reverse=True)
        return records

    def revoke(self, message_id: str) -> None:
        self.client.message.cancel(message_id)
