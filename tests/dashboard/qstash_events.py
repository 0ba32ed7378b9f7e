"""Builders for realistic QStash log entries and a respx fake of the read-side API.

Shapes follow ``GET /v2/events`` (qstash-api.md §1.5) and ``GET /v2/dlq`` (§1.6):
bodies are base64 in log entries and plain text in DLQ messages; the forwarded
``X-Celery-Task`` header carries the task name and the label the task id.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import respx

T0 = 1_715_000_000_000  # ms

EMAIL = {
    "to": {"email": "ada@example.com"},
    "from": {"email": "hello@acme.example"},
    "subject": "Welcome, Ada",
    "text": "hi",
}
SENT = {
    "success": True,
    "message": "Email queued successfully",
    "data": {"emailId": "em_123", "status": "queued"},
}
BOOM = {"success": False, "message": "Internal server error",
        "error": {"message": "Internal server error", "code": "SERVER_ERROR"}}


def b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


def event(state: str, at: int, *, task_id: str = "task-1", message_id: str = "msg_1",
          name: str = "app.send_welcome", body: Any = None, **extra: Any) -> dict[str, Any]:
    """One log entry of ``task_id``'s message at ``T0 + at`` ms."""
    entry: dict[str, Any] = {
        "time": T0 + at,
        "messageId": message_id,
        "state": state,
        "url": "https://api.autosend.com/v1/mails/send",
        "method": "POST",
        "header": {
            "Content-Type": ["application/json"],
            "X-Celery-Task": [name],
            "Authorization": ["REDACTED:abc123"],
        },
        "body": b64(EMAIL if body is None else body),
        "maxRetries": 3,
        "createdAt": T0,
        "notBefore": T0,
        "label": task_id,
        "labels": [task_id],
    }
    entry.update(extra)
    return entry


def response(status: int, body: Any) -> dict[str, Any]:
    return {"responseStatus": status, "responseBody": b64(body)}


def delivered_events(task_id: str = "task-1", message_id: str = "msg_1") -> list[dict[str, Any]]:
    """created -> active -> error -> retry -> active -> delivered."""
    kw = {"task_id": task_id, "message_id": message_id}
    return [
        event("CREATED", 0, **kw),
        event("ACTIVE", 100, **kw),
        event("ERROR", 300, **kw, **response(500, BOOM), error="status 500"),
        event("RETRY", 300, **kw, nextDeliveryTime=T0 + 1300),
        event("ACTIVE", 1300, **kw),
        event("DELIVERED", 1500, **kw, **response(200, SENT)),
    ]


def failed_events(task_id: str = "task-2", message_id: str = "msg_2") -> list[dict[str, Any]]:
    """created -> active -> error -> retry -> active -> error -> failed."""
    kw = {"task_id": task_id, "message_id": message_id}
    return [
        event("CREATED", 0, **kw),
        event("ACTIVE", 100, **kw),
        event("ERROR", 200, **kw, **response(500, BOOM), error="status 500"),
        event("RETRY", 200, **kw, nextDeliveryTime=T0 + 1200),
        event("ACTIVE", 1200, **kw),
        event("ERROR", 1300, **kw, **response(500, BOOM), error="status 500"),
        event("FAILED", 1300, **kw, **response(500, BOOM), dlqId=f"{T0 + 1300}-0"),
    ]


def canceled_events(task_id: str = "task-3", message_id: str = "msg_3") -> list[dict[str, Any]]:
    kw = {"task_id": task_id, "message_id": message_id}
    return [
        event("CREATED", 0, **kw, notBefore=T0 + 3_600_000),
        event("CANCEL_REQUESTED", 50, **kw),
        event("CANCELED", 60, **kw),
    ]


def pending_events(task_id: str = "task-4", message_id: str = "msg_4",
                   name: str = "app.send_receipt") -> list[dict[str, Any]]:
    return [event("CREATED", 500, task_id=task_id, message_id=message_id, name=name,
                  notBefore=T0 + 3_600_000)]


def dlq_message(task_id: str = "task-2", dlq_id: str = f"{T0 + 1300}-0") -> dict[str, Any]:
    return {
        "dlqId": dlq_id,
        "messageId": "msg_2",
        "url": "https://api.autosend.com/v1/mails/send",
        "method": "POST",
        "header": {"X-Celery-Task": ["app.send_welcome"], "Authorization": ["REDACTED:abc"]},
        "body": json.dumps(EMAIL),
        "maxRetries": 1,
        "notBefore": T0,
        "createdAt": T0,
        "label": task_id,
        "labels": [task_id],
        "responseStatus": 500,
        "responseHeader": {},
        "responseBody": json.dumps(BOOM),
    }


class FakeQStash:
    """respx routes answering the read side of QStash from in-memory lists."""

    def __init__(self, router: respx.MockRouter, base: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.dlq: list[dict[str, Any]] = []
        self.queues: list[dict[str, Any]] = []
        self.cancelled: list[str] = []
        prefix = re.escape(base)
        self.events_route = router.get(url__regex=rf"^{prefix}/v2/events").mock(
            side_effect=self._events)
        self.cancel_route = router.delete(url__regex=rf"^{prefix}/v2/messages/[^/?]+$").mock(
            side_effect=self._cancel)
        self.dlq_route = router.get(url__regex=rf"^{prefix}/v2/dlq(\?.*)?$").mock(
            side_effect=self._dlq)
        self.retry_route = router.post(url__regex=rf"^{prefix}/v2/dlq/retry/[^/?]+$").mock(
            side_effect=self._retry)
        self.delete_route = router.delete(url__regex=rf"^{prefix}/v2/dlq/[^/?]+$").mock(
            side_effect=self._delete)
        self.queues_route = router.get(url__regex=rf"^{prefix}/v2/queues$").mock(
            side_effect=lambda request: httpx.Response(200, json=self.queues))
        self.schedules: list[dict[str, Any]] = []
        self.schedules_route = router.get(url__regex=rf"^{prefix}/v2/schedules$").mock(
            side_effect=lambda request: httpx.Response(200, json=self.schedules))
        self.pause_route = router.post(
            url__regex=rf"^{prefix}/v2/queues/[^/?]+/(pause|resume)$").mock(
            side_effect=self._pause)

    def _pause(self, request: httpx.Request) -> httpx.Response:
        *_, name, verb = request.url.path.split("/")
        for queue in self.queues:
            if queue["name"] == name:
                queue["paused"] = verb == "pause"
                return httpx.Response(200)
        return httpx.Response(404, json={"error": "queue not found"})

    def _events(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        label = params.get("label")
        found = [e for e in self.events if label is None or label in e.get("labels", [])]
        if params.get("url"):
            found = [e for e in found if e.get("url") == params["url"]]
        if params.get("fromDate"):
            found = [e for e in found if e["time"] >= int(params["fromDate"])]
        # Newest first, and within one ms the later event first, as QStash lists them
        # (the builders above write events oldest first).
        found = sorted(found, key=lambda e: e["time"])[::-1]
        # Pages of at most 100 (QStash's documented maximum), an opaque cursor to the next.
        count = min(int(params.get("count") or 100), 100)
        start = int(params.get("cursor") or 0)
        page = found[start:start + count]
        more = start + count < len(found)
        return httpx.Response(200, json={"events": page,
                                         **({"cursor": str(start + count)} if more else {})})

    def _cancel(self, request: httpx.Request) -> httpx.Response:
        message_id = request.url.path.rsplit("/", 1)[-1]
        known = {e["messageId"] for e in self.events}
        if message_id not in known:
            return httpx.Response(404, json={"error": "message not found"})
        self.cancelled.append(message_id)
        return httpx.Response(200, json={"cancelled": 1})

    def _dlq(self, request: httpx.Request) -> httpx.Response:
        label = request.url.params.get("label")
        found = [m for m in self.dlq if label is None or label in m.get("labels", [])]
        return httpx.Response(200, json={"messages": found})

    def _find_dlq(self, request: httpx.Request) -> dict[str, Any] | None:
        dlq_id = request.url.path.rsplit("/", 1)[-1]
        return next((m for m in self.dlq if m["dlqId"] == dlq_id), None)

    def _retry(self, request: httpx.Request) -> httpx.Response:
        entry = self._find_dlq(request)
        if entry is None:
            return httpx.Response(404, json={"error": "dlq message not found"})
        self.dlq.remove(entry)
        return httpx.Response(201, json={"messageId": "msg_retried"})

    def _delete(self, request: httpx.Request) -> httpx.Response:
        entry = self._find_dlq(request)
        if entry is None:
            return httpx.Response(404, json={"error": "dlq message not found"})
        self.dlq.remove(entry)
        return httpx.Response(200)


@contextmanager
def fake_qstash(base: str) -> Iterator[FakeQStash]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield FakeQStash(router, base)
