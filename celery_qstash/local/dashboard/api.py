"""Flower's JSON API at Flower's paths, answered from QStash's logs.

Scripts written for Flower keep working: same paths, same query parameters,
same field names (see :func:`celery_qstash.status.flower_task` for what each
field holds here and which are always ``null``). Each handler's docstring is its
reference, with an example request and response, as Flower's are. A few
``/api/dlq`` endpoints that Flower does not have expose the dead letter queue.

Errors are JSON ``{"error": "..."}``: 400 for a bad parameter, 404 for an
unknown id, 502 when QStash cannot be reached or refuses.

``/api/task/result?timeout=`` waits on the event loop, never in the thread pool
the other handlers share: each poll runs in a worker thread from a small pool of
its own, and between polls the wait holds no thread at all. At most
:data:`MAX_RESULT_WAITS` requests wait at once; past that a request answers the
task's current state at once, as ``timeout=0`` would (Flower's clients already
handle a not-ready answer, and a 503 would only make them retry sooner). Every answer goes out
through :func:`.common.json_response`, which scrubs the configured secrets
(QStash token, AutoSend key) from any text AutoSend or QStash sent back.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread
from celery import states
from starlette.requests import Request
from starlette.responses import JSONResponse

from ...clock import Clock, SystemClock
from ...status import SORT_KEYS, NotFound, TaskFilter, TaskRecord, flower_task, sort_records
from .common import (
    BadRequest,
    async_upstream_errors,
    email_fate_of,
    get_status,
    int_param,
    json_response,
    upstream_errors,
)

__all__ = [
    "MAX_RESULT_WAITS",
    "ResultWaits",
    "dlq_delete",
    "dlq_list",
    "dlq_retry",
    "queue_lengths",
    "result_body",
    "task_info",
    "task_result",
    "task_revoke",
    "task_types",
    "tasks",
    "timeout_param",
    "wait_for_record",
]

#: ``/api/task/result?timeout=`` polls QStash this often, and never longer than the cap.
RESULT_POLL_INTERVAL = 0.5
RESULT_TIMEOUT_CAP = 60.0
#: Result requests that may wait at once (past it: the current state at once).
MAX_RESULT_WAITS = 100
#: Worker threads the waits' polls may use at once, out of the pool all handlers share.
RESULT_POLL_THREADS = 4


class ResultWaits:
    """The result long-polls in flight for one app, capped at ``limit``."""

    def __init__(self, limit: int = MAX_RESULT_WAITS, clock: Clock | None = None) -> None:
        self.limit = limit
        self.clock: Clock = clock or SystemClock()
        self.active = 0
        self._changed = threading.Condition()
        self._threads: anyio.CapacityLimiter | None = None

    def enter(self) -> bool:
        """Take a waiting slot; False when all ``limit`` are taken."""
        with self._changed:
            if self.active >= self.limit:
                return False
            self.active += 1
            self._changed.notify_all()
            return True

    def leave(self) -> None:
        with self._changed:
            self.active -= 1
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until ``count`` requests are waiting (for tests and diagnostics)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.active >= count, timeout)

    @property
    def threads(self) -> anyio.CapacityLimiter:
        # Made on first use: a limiter belongs to the running event loop.
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(RESULT_POLL_THREADS)
        return self._threads


def _flower_time(value: str | None, name: str) -> float | None:
    """Flower's ``received_start``/``received_end``: ``%Y-%m-%d %H:%M`` in the server's local
    time (Flower converts with ``time.mktime``; so do we)."""
    if not value:
        return None
    try:
        return time.mktime(datetime.strptime(value, "%Y-%m-%d %H:%M").timetuple())
    except ValueError:
        raise BadRequest(f"{name} must look like 2024-05-01 13:45") from None


def _timeline(record: TaskRecord) -> list[dict[str, Any]]:
    return [
        {
            "time": int(ev["time"]) / 1000 if ev.get("time") else None,
            "state": ev.get("state"),
            "message_id": ev.get("messageId"),
            "response_status": ev.get("responseStatus"),
            "error": ev.get("error"),
            "next_delivery": int(ev["nextDeliveryTime"]) / 1000
            if ev.get("nextDeliveryTime")
            else None,
        }
        for ev in record.events
    ]


@upstream_errors
def tasks(request: Request) -> JSONResponse:
    """List tasks.

    **Example request**::

        GET /api/tasks?limit=2&state=SUCCESS&sort_by=-received HTTP/1.1

    **Example response** (an object keyed by task id, in the requested order)::

        HTTP/1.1 200 OK
        Content-Type: application/json

        {
          "5f0c…": {
            "uuid": "5f0c…", "name": "app.send_welcome", "state": "SUCCESS",
            "received": 1715000000.12, "sent": 1715000000.12, "started": 1715000000.31,
            "succeeded": 1715000000.52, "failed": null, "retried": null, "revoked": null,
            "retries": 0, "result": "{'emailId': 'em_…'}", "exception": null,
            "traceback": null, "timestamp": 1715000000.52, "runtime": 0.21, "eta": null,
            "expires": null, "args": null, "kwargs": null, "worker": null,
            "routing_key": null, "exchange": null, "client": null, "clock": null,
            "qstash_state": "DELIVERED", "message_id": "msg_…", "recipient": "ada@…", …
          }
        }

    :query limit: maximum number of tasks
    :query offset: skip first n tasks (a negative offset counts as 0)
    :query sort_by: sort tasks by attribute (name, state, received, started; ``-`` for
        descending); any other value is ignored, as Flower does
    :query taskname: filter tasks by task name (``All`` = any)
    :query state: filter tasks by state (Celery or QStash state; comma list; ``All`` = any)
    :query received_start: filter tasks by received date (``%Y-%m-%d %H:%M``, server local time)
    :query received_end: filter tasks by received date (``%Y-%m-%d %H:%M``, server local time)
    :query search: Flower-style search (free text, ``name:``, ``state:``, ``recipient:``…)
    :query workername: accepted and ignored (there are no workers)
    :statuscode 200: no error
    :statuscode 400: invalid query parameter
    :statuscode 401: unauthorized request
    """
    q = request.query_params
    limit = int_param(q.get("limit"), "limit")
    offset = _offset(q.get("offset"))
    name = q.get("taskname") or None
    sort_by = q.get("sort_by") or None
    flt = TaskFilter(
        state=q.get("state"),
        name=None if name == "All" else name,
        since=_flower_time(q.get("received_start"), "received_start"),
        until=_flower_time(q.get("received_end"), "received_end"),
        search=q.get("search") or None,
    )
    records = get_status(request).tasks(flt, pages=_pages(request))
    if sort_by is not None and sort_by.removeprefix("-") in SORT_KEYS:
        records = sort_records(records, sort_by)
    window = records[offset:] if limit is None else records[offset: offset + limit]
    return json_response(request, {r.task_id: flower_task(r) for r in window})


def _offset(value: str | None) -> int:
    """Flower's ``offset``: an integer; a negative one counts from the first task."""
    if value in (None, ""):
        return 0
    try:
        return max(int(value), 0)
    except ValueError:
        raise BadRequest("offset must be an integer") from None


@upstream_errors
def task_info(request: Request) -> JSONResponse:
    """Get a task's info.

    **Example request**::

        GET /api/task/info/5f0c… HTTP/1.1

    **Example response**: the fields of ``/api/tasks`` plus ``task-id``, the
    QStash event timeline and, with an event store, ``email``: what AutoSend's webhooks
    said became of the email (``{"event": "email.bounced", "fate": "bounced",
    "bounce_type": "Permanent", "reason": …, "timestamp": …, "events": [...]}``)::

        HTTP/1.1 200 OK

        {"task-id": "5f0c…", "uuid": "5f0c…", "name": "app.send_welcome",
         "state": "RETRY", "retries": 1, "exception": "DeliveryFailed(500, 'boom')", …,
         "events": [{"time": 1715000000.12, "state": "CREATED", "message_id": "msg_…",
                     "response_status": null, "error": null, "next_delivery": null}, …]}

    :statuscode 200: no error
    :statuscode 401: unauthorized request
    :statuscode 404: unknown task
    """
    task_id = request.path_params["task_id"]
    record = get_status(request).task(task_id)
    if record is None:
        return json_response(request, {"error": f"Unknown task '{task_id}'"}, status_code=404)
    return json_response(request, {"task-id": task_id, **flower_task(record),
                                   "events": _timeline(record),
                                   "email": email_fate_of(request, record)})


@async_upstream_errors
async def task_result(request: Request) -> JSONResponse:
    """Get a task result.

    **Example request**::

        GET /api/task/result/5f0c…?timeout=5 HTTP/1.1

    **Example response**::

        HTTP/1.1 200 OK

        {"task-id": "5f0c…", "state": "SUCCESS", "result": {"emailId": "em_…"}}

    On failure ``result`` is the exception's repr and ``traceback`` its text::

        {"task-id": "…", "state": "FAILURE", "result": "DeliveryFailed(500, 'boom')",
         "traceback": "celery_qstash.errors.DeliveryFailed: AutoSend answered 500: boom"}

    An unknown id reads ``PENDING`` (as ``AsyncResult`` does). Until the task is
    ready there is no ``result`` key, as in Flower::

        {"task-id": "5f0c…", "state": "PENDING"}

    :query timeout: how long to wait for the task to be ready (seconds, at most 60;
        while 100 other requests wait, the current state is answered at once)
    :statuscode 200: no error
    :statuscode 400: invalid timeout
    :statuscode 401: unauthorized request
    """
    task_id = request.path_params["task_id"]
    timeout = timeout_param(request.query_params.get("timeout"))
    record = await wait_for_record(request, task_id, timeout)
    return json_response(request, result_body(task_id, record))


def timeout_param(raw: str | None, default: float = 0.0) -> float:
    """``?timeout=``: seconds, at most :data:`RESULT_TIMEOUT_CAP` (400 otherwise)."""
    try:
        timeout = min(float(raw), RESULT_TIMEOUT_CAP) if raw else default
    except ValueError:
        raise BadRequest("timeout must be a number of seconds") from None
    if math.isnan(timeout):
        raise BadRequest("timeout must be a number of seconds")
    return timeout


async def wait_for_record(request: Request, task_id: str, timeout: float) -> TaskRecord | None:
    """The task's record once it is ready, or as it is after ``timeout`` seconds (waiting on
    the event loop, within the app's :class:`ResultWaits`)."""
    status = get_status(request)
    waits: ResultWaits = request.app.state.result_waits

    async def poll() -> TaskRecord | None:
        return await anyio.to_thread.run_sync(status.task, task_id, limiter=waits.threads)

    record = await poll()
    if (record is None or not record.ready) and timeout > 0 and waits.enter():
        try:
            deadline = waits.clock.now() + timeout
            while (record is None or not record.ready) and waits.clock.now() < deadline:
                await anyio.sleep(RESULT_POLL_INTERVAL)
                record = await poll()
        finally:
            waits.leave()
    return record


def result_body(task_id: str, record: TaskRecord | None) -> dict[str, Any]:
    """Flower's answer about a task's result: ``task-id``, ``state`` and, once it is
    ready, ``result`` (and ``traceback`` on failure)."""
    state = record.state if record is not None else states.PENDING
    body: dict[str, Any] = {"task-id": task_id, "state": state}
    if record is not None and record.ready:
        info = flower_task(record)
        if state == states.SUCCESS:
            body["result"] = record.result
        elif state == states.FAILURE:
            body["result"] = info["exception"]
            body["traceback"] = info["traceback"]
        else:
            body["result"] = f"TaskRevokedError('QStash message {record.message_id} was "\
                             f"{record.qstash_state}')"
    return body


@upstream_errors
def task_revoke(request: Request) -> JSONResponse:
    """Revoke a task: cancel its QStash message.

    **Example request**::

        POST /api/task/revoke/5f0c… HTTP/1.1

    **Example response**::

        HTTP/1.1 200 OK

        {"message": "Revoked '5f0c…'", "cancelled": true}

    As in Flower (and Celery, where revoking is fire-and-forget), the answer is
    200 with this message whatever the task: unknown, already finished (SUCCESS,
    FAILURE or REVOKED), or finishing meanwhile. ``cancelled`` (not in Flower)
    tells scripts whether a QStash message was actually cancelled.

    ``terminate`` and ``signal`` are accepted and ignored: nothing runs a task
    body here, QStash only has a message to cancel.

    :statuscode 200: no error (see ``cancelled``)
    :statuscode 401: unauthorized request
    :statuscode 502: QStash cannot be reached or refuses
    """
    task_id = request.path_params["task_id"]
    status = get_status(request)
    record = status.task(task_id)
    cancelled = False
    if record is not None and not record.ready:
        try:
            status.revoke(record.message_id)
            cancelled = True
        except NotFound:  # delivered or cancelled meanwhile
            pass
    return json_response(request, {"message": f"Revoked '{task_id}'", "cancelled": cancelled})


@upstream_errors
def task_types(request: Request) -> JSONResponse:
    """List the task names seen in recent QStash events.

    **Example request**::

        GET /api/task/types HTTP/1.1

    **Example response**::

        HTTP/1.1 200 OK

        {"task-types": ["app.send_receipt", "app.send_welcome"]}

    :statuscode 200: no error
    :statuscode 401: unauthorized request
    """
    return json_response(
        request, {"task-types": get_status(request).task_types(pages=_pages(request))}
    )


@upstream_errors
def queue_lengths(request: Request) -> JSONResponse:
    """Messages waiting in each QStash queue (a queue's ``lag``).

    Tasks published without a ``queue`` option go straight to QStash's publish
    endpoint and belong to no queue, so they are not counted here.

    **Example request**::

        GET /api/queues/length HTTP/1.1

    **Example response**::

        HTTP/1.1 200 OK

        {"active_queues": [{"name": "emails", "messages": 3}]}

    :statuscode 200: no error
    :statuscode 401: unauthorized request
    """
    rows = [{"name": q.name, "messages": q.messages} for q in get_status(request).queues()]
    return json_response(request, {"active_queues": rows})


@upstream_errors
def dlq_list(request: Request) -> JSONResponse:
    """List dead letters (not in Flower).

    **Example request**::

        GET /api/dlq?count=50 HTTP/1.1

    **Example response**::

        HTTP/1.1 200 OK

        {"cursor": null, "messages": [{"dlq_id": "1715000000000-0", "task-id": "5f0c…",
          "message_id": "msg_…", "name": "app.send_welcome", "recipient": "ada@…",
          "subject": "Welcome", "response_status": 500, "error": "boom",
          "created": 1714999990.0, "failed": 1715000000.0}]}

    :query count: page size (at most 100)
    :query cursor: the ``cursor`` of the previous page
    :statuscode 200: no error
    """
    count = int_param(request.query_params.get("count"), "count") or 100
    entries, cursor = get_status(request).dlq(
        count=min(count, 100), cursor=request.query_params.get("cursor") or None
    )
    messages = [
        {
            "dlq_id": d.dlq_id,
            "kind": d.kind,  # "email", or a "callback"/"failure_callback" that failed
            "task-id": d.task_id,
            "message_id": d.message_id,
            "name": d.name,
            "recipient": d.recipient,
            "subject": d.subject,
            "response_status": d.response_status,
            "error": d.error_message,
            "created": d.created,
            "failed": d.failed,
        }
        for d in entries
    ]
    return json_response(request, {"cursor": cursor, "messages": messages})


@upstream_errors
def dlq_retry(request: Request) -> JSONResponse:
    """Republish a dead letter (not in Flower).

    **Example request**::

        POST /api/dlq/retry/1715000000000-0 HTTP/1.1

    **Example response**::

        HTTP/1.1 200 OK

        {"message": "Retried '1715000000000-0'", "message_id": "msg_…"}

    :statuscode 200: no error
    :statuscode 404: unknown DLQ id
    """
    dlq_id = request.path_params["dlq_id"]
    try:
        message_id = get_status(request).dlq_retry(dlq_id)
    except NotFound as exc:
        return json_response(request, {"error": str(exc)}, status_code=404)
    return json_response(request, {"message": f"Retried '{dlq_id}'", "message_id": message_id})


@upstream_errors
def dlq_delete(request: Request) -> JSONResponse:
    """Delete a dead letter (not in Flower).

    **Example request**::

        POST /api/dlq/delete/1715000000000-0 HTTP/1.1

    **Example response**::

        HTTP/1.1 200 OK

        {"message": "Deleted '1715000000000-0'"}

    :statuscode 200: no error
    :statuscode 404: unknown DLQ id
    """
    dlq_id = request.path_params["dlq_id"]
    try:
        get_status(request).dlq_delete(dlq_id)
    except NotFound as exc:
        return json_response(request, {"error": str(exc)}, status_code=404)
    return json_response(request, {"message": f"Deleted '{dlq_id}'"})


def _pages(request: Request) -> int:
    return int(request.app.state.pages)
