"""The email callbacks: an email's outcome turned into ``on_success``/``on_failure``,
Celery's signals and ours."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from billiard.einfo import ExceptionInfo  # type: ignore[import-untyped]
from celery.signals import task_failure, task_retry, task_success

from ..errors import DeliveryFailed
from ..publish.request import TASK_NAME_HEADER
from ..signals import email_delivered, email_failed
from ..status.records import error_text
from .request import Delivery, ReceiverResponse

if TYPE_CHECKING:
    from .core import CallbackReceiver


log = logging.getLogger("celery_qstash.receiver")


def _source_header(body: Mapping[str, Any], name: str) -> str | None:
    """A header of the source message, as QStash's callback body reports it."""
    headers = body.get("sourceHeader")
    if not isinstance(headers, Mapping):
        return None
    for wanted in (name.lower(), f"upstash-forward-{name.lower()}"):
        for key, value in headers.items():
            if str(key).lower() == wanted:
                if isinstance(value, list):
                    value = value[0] if value else None
                return unquote(str(value)) if value is not None else None
    return None


def _decoded_response(body: Mapping[str, Any]) -> Any:
    """AutoSend's answer: the callback carries it base64-encoded."""
    raw = body.get("body")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        data = base64.b64decode(raw, validate=False)
    except (binascii.Error, ValueError):
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return data.decode("utf-8", "replace")


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # None, "x", 1e400 (inf)
        return default


@dataclass(frozen=True)
class _Outcome:
    task: Any  # None: no task of this app sent it (the Django email backend's messages)
    name: str
    task_id: str
    status: int
    response: Any
    retried: int
    max_retries: int
    source_message_id: str | None

    @property
    def sender(self) -> Any:
        return self.task if self.task is not None else self.name


def _outcome(receiver: CallbackReceiver, delivery: Delivery) -> _Outcome | ReceiverResponse:
    body = delivery.body
    # A scheduled message (celery-qstash beat sync) has no fixed task id: each run is
    # known by its QStash message id, as the status pages know it.
    task_id = _source_header(body, "Idempotency-Key") or body.get("sourceMessageId")
    name = _source_header(body, TASK_NAME_HEADER) or _source_header(body, "X-Celery-Task")
    if not task_id or not name:
        # Answer 200: QStash would otherwise retry a callback no deploy of this app can use.
        log.warning(
            "QStash callback for message %s ignored: it names no celery-qstash task",
            body.get("sourceMessageId"),
        )
        return ReceiverResponse(
            200, {"outcome": "ignored", "reason": "not a celery-qstash message"}
        )
    task = receiver.find_task(name)
    if task is None:
        # The Django email backend's messages, or a task this deploy does not have: no
        # on_success or Celery signal to run, but email_delivered / email_failed still go.
        log.info("QStash callback for %r (id %s): no such task in this app; only "
                 "email_delivered/email_failed are sent", name, task_id)
    return _Outcome(
        task=task,
        name=name,
        task_id=task_id,
        status=_int(body.get("status")),
        response=_decoded_response(body),
        retried=_int(body.get("retried")),
        max_retries=_int(body.get("maxRetries")),
        source_message_id=str(body["sourceMessageId"]) if body.get("sourceMessageId") else None,
    )


@contextmanager
def _task_request(out: _Outcome) -> Iterator[None]:
    """Handlers see ``task.request`` as on a worker (id, retries)."""
    if out.task is None:
        yield
        return
    out.task.push_request(
        id=out.task_id, args=[], kwargs={}, retries=out.retried, is_eager=False,
        called_directly=False, hostname="qstash", delivery_info={
            "qstash_message_id": out.source_message_id,
        },
    )
    try:
        yield
    finally:
        out.task.pop_request()


def _guarded(what: str, fn: Callable[[], Any]) -> None:
    """A handler that raises is logged, as a worker logs it; the other handlers still run."""
    try:
        fn()
    except Exception:
        log.exception("%s raised", what)


def _failure_info(exc: DeliveryFailed) -> ExceptionInfo:
    try:
        raise exc
    except DeliveryFailed:
        return ExceptionInfo()


def _email_callback(receiver: CallbackReceiver, delivery: Delivery) -> ReceiverResponse:
    out = _outcome(receiver, delivery)
    if isinstance(out, ReceiverResponse):
        return out
    if 200 <= out.status < 300:
        data = out.response.get("data") if isinstance(out.response, Mapping) else None
        retval = data if isinstance(data, dict) else out.response
        details = retval if isinstance(retval, Mapping) else {}
        with _task_request(out):
            if out.task is not None:
                _guarded(f"{out.name}.on_success",
                         lambda: out.task.on_success(retval, out.task_id, (), {}))
                task_success.send(sender=out.task, result=retval)
            email_delivered.send(
                sender=out.sender, task_id=out.task_id, email_id=details.get("emailId"),
                batch_id=details.get("batchId"), response=retval,
                message_id=out.source_message_id,
            )
        _guarded("linking the email to its task", lambda: _link(receiver, details, out))
        return ReceiverResponse(200, {"outcome": "delivered", "taskId": out.task_id})
    headers = delivery.body.get("header")
    final = out.retried >= out.max_retries or _non_retryable(headers)
    if final:
        # The failure callback reports the end; this one only says the last attempt failed.
        return ReceiverResponse(200, {"outcome": "final attempt failed", "taskId": out.task_id})
    if out.task is None:
        return ReceiverResponse(200, {"outcome": "retry", "taskId": out.task_id})
    exc = DeliveryFailed(out.status or None, (error_text(out.response) or "")[:500])
    einfo = _failure_info(exc)
    with _task_request(out):
        _guarded(f"{out.name}.on_retry",
                 lambda: out.task.on_retry(exc, out.task_id, (), {}, einfo))
        task_retry.send(sender=out.task, request=out.task.request, reason=exc, einfo=einfo)
    return ReceiverResponse(200, {"outcome": "retry", "taskId": out.task_id})


def _link(receiver: CallbackReceiver, answer: Mapping[str, Any], out: _Outcome) -> None:
    """Remember which task this email (or bulk batch) came from, for AutoSend's webhooks
    about it (:mod:`celery_qstash.webhooks`), in the event store they use."""
    # Imported here: the webhooks package mounts itself with this package's adapters.
    from ..webhooks.resolve import link_delivery
    from ..webhooks.store import event_store_for

    link_delivery(event_store_for(receiver.app), answer, out.task_id, out.name)


def _non_retryable(headers: Any) -> bool:
    if not isinstance(headers, Mapping):
        return False
    for key, value in headers.items():
        if str(key).lower() == "upstash-nonretryable-error":
            values = value if isinstance(value, list) else [value]
            return any(str(v).lower() == "true" for v in values)
    return False


def _email_failure(receiver: CallbackReceiver, delivery: Delivery) -> ReceiverResponse:
    out = _outcome(receiver, delivery)
    if isinstance(out, ReceiverResponse):
        return out
    message = (error_text(out.response) or "")[:500] or str(delivery.body.get("error") or "")
    exc = DeliveryFailed(out.status or None, message)
    einfo = _failure_info(exc)
    dlq_id = delivery.body.get("dlqId")
    with _task_request(out):
        if out.task is not None:
            _guarded(f"{out.name}.on_failure",
                     lambda: out.task.on_failure(exc, out.task_id, (), {}, einfo))
            task_failure.send(
                sender=out.task, task_id=out.task_id, exception=exc, args=(), kwargs={},
                traceback=einfo.tb, einfo=einfo,
            )
        email_failed.send(
            sender=out.sender, task_id=out.task_id, exception=exc, status=exc.status,
            message=message, dlq_id=dlq_id, message_id=out.source_message_id,
        )
    return ReceiverResponse(200, {"outcome": "failed", "taskId": out.task_id})
