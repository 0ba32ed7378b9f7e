"""Running a deferred task's body at delivery, as a Celery worker would.

The verified message (:mod:`celery_qstash.publish.message`) becomes the request a
worker builds from a protocol-2 message (celery/worker/request.py), and the body runs
through Celery's own tracer (``build_tracer``), so ``task_prerun``/``task_postrun``/
``task_success``/``task_failure``/``task_retry``, ``on_success``/``on_failure``/
``on_retry``/``after_return``, the result backend, ``self.retry()``, ``link``/
``link_error`` and chains behave as on a worker. The answer tells QStash what to do:

=====================================  ======  ==========================================
the body                               answer  QStash
=====================================  ======  ==========================================
returned                               200     DELIVERED; the answer carries the result
called ``self.retry()``                200     the next attempt is already published
raised, retries left                   500     retries this message (the task's delay)
raised on the last attempt             500     FAILED, dead letter; ``on_failure`` ran
raised ``Reject``                      489     FAILED at once (``Upstash-NonRetryable-Error``)
raised ``Ignore``; or had expired      200     DELIVERED; nothing else runs
=====================================  ======  ==========================================

An answer never carries the task's arguments; a failure carries the exception's type
and message (what Celery's result backends store), with the app's secrets scrubbed.

A receiver given ``metrics=`` (a :class:`TaskObserver`, such as
:class:`celery_qstash.contrib.prometheus.ReceiverMetrics`) runs each body inside its
``observe(task name)``: that is where runtime and in-flight counts are measured.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from celery import _state as celery_state
from celery import states
from celery.app.task import Context
from celery.app.trace import build_tracer
from celery.backends.base import DisabledBackend
from celery.signals import task_revoked
from celery.utils.nodenames import gethostname

from ..config import load_settings
from ..errors import scrub
from ..publish.message import ANSWER_KIND, MESSAGE_KEYS, firing_id
from ..tasks.deferred import Attempt, DeferredTask, current_attempt
from .request import Delivery, ReceiverResponse

if TYPE_CHECKING:
    from .core import CallbackReceiver

__all__ = ["TaskObserver", "run_task"]

log = logging.getLogger("celery_qstash.receiver")

#: QStash's default retries when a message names none.
_QSTASH_DEFAULT_RETRIES = 3
_NON_RETRYABLE = {"Upstash-NonRetryable-Error": "true"}


class TaskObserver(Protocol):
    """Watches the task bodies a receiver runs (``CallbackReceiver(metrics=...)``)."""

    def observe(self, task_name: str) -> AbstractContextManager[object]:
        """Entered just before the body runs through Celery's tracer, left just after."""
        ...


def _refuse(status: int, error: str) -> ReceiverResponse:
    # 489 tells QStash not to retry: a message this app will never run is dead at once.
    headers = _NON_RETRYABLE if status == 489 else {}
    return ReceiverResponse(status, {"error": error}, headers=headers)


def _int_header(delivery: Delivery, name: str) -> int:
    try:
        return max(0, int(delivery.request.header(name) or 0))
    except ValueError:
        return 0


def _parsed(body: Mapping[str, Any]) -> str | None:
    """What is wrong with a message's fields, if anything (the body is signed, but a
    message from another version of this library may differ)."""
    unknown = sorted(str(k) for k in body if k not in MESSAGE_KEYS)
    if unknown:
        return f"message field {unknown[0]!r} is unknown"
    checks = (
        ("id", str), ("task", str), ("args", list), ("kwargs", dict), ("retries", int),
    )
    for name, kind in checks:
        if not isinstance(body.get(name), kind) or isinstance(body.get(name), bool):
            return f"message field {name!r} is missing or not a {kind.__name__}"
    for name in ("callbacks", "errbacks", "chain"):
        value = body.get(name)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, dict) for v in value)
        ):
            return f"message field {name!r} is not a list of signatures"
    if body.get("chord") is not None and not isinstance(body.get("chord"), dict):
        return "message field 'chord' is not a signature"
    nesting = body.get("replaced_task_nesting", 0)
    if not isinstance(nesting, int) or isinstance(nesting, bool) or nesting < 0:
        return "message field 'replaced_task_nesting' is not a whole number"
    return None


def _expired(body: Mapping[str, Any], now: float) -> bool:
    expires = body.get("expires")
    if not isinstance(expires, str):
        return False
    try:
        return datetime.fromisoformat(expires).timestamp() <= now
    except (ValueError, OverflowError):  # not ISO; a year-1 time with an offset
        return False


def _tracer(task: Any) -> Any:
    """Celery's worker tracer for ``task``, kept on the task as Celery's ``trace_task``
    keeps ``task.__trace__``."""
    tracer = task.__dict__.get("_celery_qstash_tracer")
    if tracer is None:
        tracer = build_tracer(task.name, task, app=task._get_app(), hostname=gethostname(),
                              eager=False, propagate=False)
        task.__dict__["_celery_qstash_tracer"] = tracer
    return tracer


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return {"repr": repr(value)[:1000]}
    return value


def _request(
    task: Any, body: Mapping[str, Any], delivery: Delivery, retried: int
) -> dict[str, Any]:
    """The request dict a worker builds (celery/worker/request.py), from the message."""
    return {
        "id": body["id"],
        "task": task.name,
        "root_id": body.get("root_id") or body["id"],
        "parent_id": body.get("parent_id"),
        "group": body.get("group"),
        "group_index": body.get("group_index"),
        # Every QStash attempt counts, as each self.retry() does: self.request.retries
        # rises across both, and Task.retry's max_retries check sees the total.
        "retries": body["retries"] + retried,
        "eta": body.get("eta"),
        "expires": body.get("expires"),
        "is_eager": False,
        "hostname": gethostname(),
        "callbacks": body.get("callbacks"),
        "errbacks": body.get("errbacks"),
        "chain": body.get("chain"),
        # A chord header's body: the result backend counts this part when the tracer
        # stores the result, and the last part publishes the body (Backend.mark_as_done).
        "chord": body.get("chord"),
        # How many self.replace() led here: a replacement's own retry or replace counts on.
        "replaced_task_nesting": body.get("replaced_task_nesting", 0),
        "shadow": body.get("shadow"),
        "headers": body.get("headers") or {},
        "timelimit": (task.time_limit, task.soft_time_limit),
        "ignore_result": bool(body.get("ignore_result", task.ignore_result)),
        "reply_to": None,
        "correlation_id": body["id"],
        "delivery_info": {
            "is_eager": False, "exchange": None, "routing_key": None, "priority": None,
            "redelivered": retried > 0,
        },
        "properties": {"correlation_id": body["id"]},
        "qstash_message_id": delivery.message_id,
    }


def run_task(receiver: CallbackReceiver, delivery: Delivery) -> ReceiverResponse:
    body = delivery.body
    problem = _parsed(body)
    if problem:
        return _refuse(400, problem)
    task = receiver.app.tasks.get(body["task"])
    if not isinstance(task, DeferredTask):
        # Only what this library published runs: never an arbitrary task of the app.
        return _refuse(489, "not a deferred task of this app")
    task_id = firing_id(body, delivery.message_id)
    if _expired(body, receiver.clock.now()):
        # What a worker does with an expired message (celery/worker/request.py revoked()):
        # REVOKED in the result backend, task_revoked, and the body never runs.
        request = Context(_request(task, {**body, "id": task_id}, delivery, 0))
        if not isinstance(task.backend, DisabledBackend):
            task.backend.mark_as_revoked(task_id, "expired", request=request,
                                         store_result=task.store_errors_even_if_ignored
                                         or not task.ignore_result)
        task_revoked.send(sender=task, request=request, terminated=False, signum=None,
                          expired=True)
        return ReceiverResponse(200, {"kind": ANSWER_KIND, "status": states.REVOKED})
    retried = _int_header(delivery, "Upstash-Retried")
    budget = body.get("retry_budget")
    budget = budget if isinstance(budget, int) and not isinstance(budget, bool) else (
        _QSTASH_DEFAULT_RETRIES)
    attempt = Attempt(final=retried >= budget)
    token = current_attempt.set(attempt)
    observer = receiver.metrics
    try:
        with _current_app(task._get_app()), (
            observer.observe(task.name) if observer is not None else nullcontext()
        ):
            retval, info, _, _ = _tracer(task)(
                task_id, body["args"], body["kwargs"],
                _request(task, {**body, "id": task_id}, delivery, retried),
            )
    finally:
        current_attempt.reset(token)
    return _answer(receiver, task, retval, info, attempt)


@contextmanager
def _current_app(app: Any) -> Iterator[None]:
    """The task's app is ``current_app`` while its body runs, as on a worker (which makes
    its app current in every thread). Celery code that looks the app up instead of being
    given it finds this one, not a fallback app without a result backend: Celery 5.3's
    Redis chord join (``GroupResult.restore(gid)``), a body's own ``current_app``."""
    previous = getattr(celery_state._tls, "current_app", None)
    celery_state._set_current_app(app)
    try:
        yield
    finally:
        celery_state._set_current_app(previous)


def _answer(
    receiver: CallbackReceiver, task: Any, retval: Any, info: Any, attempt: Attempt
) -> ReceiverResponse:
    state = states.SUCCESS if info is None else info.state
    if state == states.SUCCESS:
        return ReceiverResponse(200, {"kind": ANSWER_KIND, "status": state,
                                      "result": _jsonable(retval)})
    if state == states.IGNORED:
        return ReceiverResponse(200, {"kind": ANSWER_KIND, "status": state})
    if state == states.RETRY and not attempt.requeue:
        # self.retry() published the next attempt: this message is done.
        return ReceiverResponse(200, {"kind": ANSWER_KIND, "status": state})
    exc = attempt.error if attempt.error is not None else getattr(info, "retval", None)
    failure = _failure(receiver, task, exc)
    if state == states.REJECTED:
        return ReceiverResponse(489, {"kind": ANSWER_KIND, "status": state, **failure},
                                headers=_NON_RETRYABLE)
    return ReceiverResponse(500, {"kind": ANSWER_KIND, "status": state, **failure})


def _failure(receiver: CallbackReceiver, task: Any, exc: Any) -> dict[str, Any]:
    if not isinstance(exc, BaseException):
        return {}
    secrets = load_settings(receiver.app.conf).secrets
    message = scrub(str(exc), secrets)[:2000]
    return {"exc_type": type(exc).__name__, "exc_module": type(exc).__module__,
            "exc_message": [message]}
