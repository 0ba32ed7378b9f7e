"""Celery results read from QStash's logs: ``QStashAsyncResult`` and ``QStashBackend``.

``result_backend = "celery_qstash.status.result:QStashBackend"`` (or ``"qstash://"``) makes
``AsyncResult(task_id)`` anywhere in the app answer from QStash's logs API, found
by the label the task id was published with. One logs request per state read;
Celery caches the meta once the state is final.

QStash state -> Celery state: see :data:`celery_qstash.status.STATE_MAP`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from celery import states
from celery.backends.base import BaseBackend
from celery.exceptions import TaskRevokedError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult, EagerResult

from ..clock import utc_moment
from ..config import load_settings
from ..errors import DeliveryFailed
from ..publish.options import canvas_error, chord_backend_error
from ..publish.transports.aio import async_client_for
from ..publish.transports.qstash import client_for
from .query import PAGE_SIZE, TASK_PAGES, NotFound, StatusClient
from .records import TaskRecord, record_from_events

__all__ = ["EagerAsyncResult", "QStashAsyncResult", "QStashBackend", "meta_from_record",
           "with_email_fate"]

log = logging.getLogger("celery_qstash.status.result")


def _iso(ts: float | None) -> str | None:
    moment = None if ts is None else utc_moment(ts)
    return None if moment is None else moment.isoformat()


def meta_from_record(task_id: str, record: TaskRecord | None) -> dict[str, Any]:
    """Celery's result meta for a task, from its QStash record."""
    if record is None:
        return {"task_id": task_id, "status": states.PENDING, "result": None,
                "traceback": None, "children": [], "date_done": None, "retries": 0}
    state = record.state
    result: Any = None
    if state == states.SUCCESS:
        result = record.result
    elif state in (states.FAILURE, states.RETRY):
        answer = record.answer
        if answer and answer.get("exc_type"):
            # A deferred task's own exception, as Celery's backends store it (rebuilt
            # by the backend's exception_to_python; the message text as it was raised).
            result = {k: answer.get(k) for k in ("exc_type", "exc_module", "exc_message")}
        else:
            result = DeliveryFailed(
                record.response_status, record.error_message or record.qstash_state
            )
    elif state == states.REVOKED:
        result = TaskRevokedError(f"QStash message {record.message_id} was {record.qstash_state}")
    return {
        "task_id": task_id,
        "status": state,
        "result": result,
        "traceback": None,
        "children": [],
        "date_done": _iso(record.updated) if state in states.READY_STATES else None,
        "retries": record.retries,
        "name": record.name,
        "queue": record.queue,
        "message_id": record.message_id,
    }


def with_email_fate(conf: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with ``result["last_event"]``, what AutoSend's webhooks said last about the
    email (delivered, bounced with its reason, opened...), when an event store
    (``autosend_event_store_url``) has it. A copy: a cached meta is never changed."""
    result = meta.get("result")
    if meta.get("status") != states.SUCCESS or not isinstance(result, dict):
        return meta
    from ..webhooks.store import email_fate  # the webhooks package imports status

    fate = email_fate(conf, result)
    if fate is None:
        return meta
    fate.pop("events", None)
    return {**meta, "result": {**result, "last_event": fate}}


class QStashBackend(BaseBackend):  # type: ignore[misc]
    """A read-only result backend over QStash's logs API."""

    supports_native_join = False

    def __init__(
        self, app: Any, url: str | None = None, *, route_revokes: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(app, url=url, **kwargs)
        self._eager: dict[str, dict[str, Any]] = {}
        if route_revokes:
            _route_revokes(app, self)

    def _status(self) -> StatusClient:
        return StatusClient(client_for(load_settings(self.app.conf)))

    def get_task_meta(self, task_id: str, cache: bool = True) -> dict[str, Any]:
        """Celery's, with the email's latest fate (``result["last_event"]``) read afresh
        from the event store each time, even when Celery cached the SUCCESS meta."""
        return with_email_fate(self.app.conf, super().get_task_meta(task_id, cache=cache))

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        if task_id in self._eager:
            return self._eager[task_id]
        meta = meta_from_record(task_id, self._status().task(task_id, callbacks=False))
        if isinstance(meta["result"], dict) and "exc_type" in meta["result"]:
            meta["result"] = self.exception_to_python(meta["result"])
        return meta

    def _store_result(self, task_id: str, result: Any, state: str, traceback: Any = None,
                      request: Any = None, **kwargs: Any) -> Any:
        # Only eager mode (task_store_eager_result) stores anything: keep it in memory. On
        # the receiver, QStash's logs hold the outcome (the answer to the delivery).
        if request is not None and not getattr(request, "is_eager", False):
            return result
        self._eager[task_id] = {"task_id": task_id, "status": state, "result": result,
                                "traceback": traceback, "children": [],
                                "date_done": datetime.now(timezone.utc).isoformat()}
        return result

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> Any:
        """Refused before Celery sends its ``chord_unlock`` task to a broker: QStash's logs
        cannot join a chord. Deferred tasks join chords on a backend that counts their
        parts (Redis, a cache); an email task in the header is refused anyway (the same
        error as eager mode's)."""
        task = self.app.tasks.get(body.get("task")) if isinstance(body, Mapping) else None
        if getattr(task, "body_at_delivery", False):  # a DeferredTask: say what would work
            raise chord_backend_error("qstash:// cannot")
        raise canvas_error("chord")

    def _forget(self, task_id: str) -> None:
        self._eager.pop(task_id, None)

    def revoke(self, task_id: str, message_id: str | None = None) -> bool:
        """Cancel the task's QStash message. Like Celery's revoke, fire and forget: a task
        QStash does not know, or whose message is already gone (delivered), is a no-op.
        Returns whether a message was cancelled."""
        status = self._status()
        if message_id is None:
            record = status.task(task_id, callbacks=False)
            if record is None:
                log.debug("revoke %s: QStash knows no such task", task_id)
                return False
            message_id = record.message_id
        try:
            status.revoke(message_id)
        except NotFound:
            log.debug("revoke %s: message %s is already gone", task_id, message_id)
            return False
        return True


def _route_revokes(app: Any, backend: QStashBackend) -> None:
    """With QStash as the app's result backend, ``app.control.revoke`` (which a plain
    ``AsyncResult.revoke()`` calls) cancels QStash messages instead of broadcasting to
    workers that do not exist."""
    control = app.control
    if getattr(control, "_celery_qstash_revoke", False):
        return

    def revoke(task_id: str | list[str], destination: Any = None, terminate: bool = False,
               signal: Any = None, **kwargs: Any) -> None:
        for one in [task_id] if isinstance(task_id, str) else task_id:
            backend.revoke(one)

    control.revoke = revoke
    control._celery_qstash_revoke = True


_backends: weakref.WeakKeyDictionary[Any, QStashBackend] = weakref.WeakKeyDictionary()


def _backend_for(app: Any) -> QStashBackend:
    """One QStashBackend per app, for apps whose own result_backend is something else."""
    backend = _backends.get(app)
    if backend is None:
        backend = _backends[app] = QStashBackend(app, route_revokes=False)
    return backend


class QStashAsyncResult(AsyncResult):  # type: ignore[misc]
    """``AsyncResult`` whose state comes from QStash; ``message_id`` is QStash's id."""

    def __init__(self, id: str, backend: Any = None, task_name: str | None = None,
                 app: Any = None, parent: Any = None, message_id: str | None = None) -> None:
        super().__init__(id, backend=backend, task_name=task_name, app=app, parent=parent)
        if not isinstance(getattr(self, "backend", None), QStashBackend):
            # Works whatever result_backend the app has: status lives in QStash.
            self.backend = _backend_for(self.app)
        self.message_id = message_id

    def mark_locally(self, state: str, result: Any) -> None:
        """A task that was never published reads ``state`` without asking QStash:
        REVOKED (expired before its delivery time) or IGNORED (nothing to send)."""
        self._cache: dict[str, Any] | None = {
            "task_id": self.id, "status": state, "result": result,
            "traceback": None, "children": [], "date_done": None,
        }

    async def aget(
        self, timeout: float | None = None, interval: float = 0.5, propagate: bool = True
    ) -> Any:
        """``get()`` for asyncio code: polls QStash's logs over the loop's ``AsyncQStash``.

        Raises Celery's ``TimeoutError`` after ``timeout`` seconds; with ``propagate``
        a FAILURE raises its exception (``DeliveryFailed``, ``PublishError``) and a
        REVOKED task ``TaskRevokedError``, as ``get()`` does.
        """
        if getattr(self, "ignored", False):
            return None
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            meta = await self._aget_task_meta()
            if meta["status"] in states.READY_STATES or meta["status"] == states.IGNORED:
                self._cache = meta
                break
            if timeout is not None and loop.time() - start + interval > timeout:
                raise CeleryTimeoutError("The operation timed out.")
            await asyncio.sleep(interval)
        if propagate and meta["status"] in states.PROPAGATE_STATES:
            raise meta["result"]
        return meta["result"]

    async def _aget_task_meta(self) -> dict[str, Any]:
        cache = getattr(self, "_cache", None)
        if cache:
            return cache  # type: ignore[no-any-return]
        backend = self.backend
        if self.id in backend._eager:
            return backend._eager[self.id]
        client = async_client_for(load_settings(self.app.conf))
        events: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(TASK_PAGES):  # QStash pages its logs (100 at most): follow the cursor
            params = {"label": self.id, "count": str(PAGE_SIZE)}
            if cursor:
                params["cursor"] = cursor
            data = await client.http.request(path="/v2/events", method="GET", params=params)
            events.extend(data.get("events") or data.get("logs") or [])
            cursor = data.get("cursor") or None
            if not cursor:
                break
        meta = meta_from_record(self.id, record_from_events(self.id, events))
        return await asyncio.to_thread(with_email_fate, self.app.conf, meta)

    def ready(self) -> bool:
        # IGNORED is final for a task that was never published (Celery's READY_STATES
        # leave it out because a worker may still be running the task).
        cache = getattr(self, "_cache", None)
        if cache and cache["status"] == states.IGNORED:
            return True
        return bool(super().ready())

    def revoke(self, connection: Any = None, terminate: bool = False, signal: Any = None,
               wait: bool = False, timeout: float | None = None) -> None:
        """Cancel the QStash message (Celery's broadcast to workers has no meaning here)."""
        self.backend.revoke(self.id, self.message_id)
        self._cache = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id} message_id={self.message_id}>"


# Celery 5.3.6 gave EagerResult the task's name (``name=``); an older Celery takes none,
# and there an eager result reports no name, as Celery's own eager results do.
_EAGER_NAMED = "name" in inspect.signature(EagerResult.__init__).parameters


def eager_result(
    task_id: str, value: Any, state: str, *, name: str | None, traceback: Any = None,
    cls: type[EagerResult] = EagerResult,
) -> Any:
    """``cls(task_id, value, state, traceback=traceback, name=name)`` on any Celery 5.3+."""
    if _EAGER_NAMED:
        return cls(task_id, value, state, traceback=traceback, name=name)
    return cls(task_id, value, state, traceback=traceback)


class EagerAsyncResult(EagerResult):  # type: ignore[misc]
    """Eager mode's result for ``adelay``/``aapply_async``: an ``EagerResult`` with ``aget``."""

    @classmethod
    def of(cls, result: Any) -> Any:
        if not isinstance(result, EagerResult):
            return result
        return eager_result(result.id, result._result, result._state, name=result.name,
                            traceback=result.traceback, cls=cls)

    async def aget(
        self, timeout: float | None = None, interval: float = 0.5, propagate: bool = True
    ) -> Any:
        return self.get(timeout=timeout, propagate=propagate)
