"""``DeferredTask`` and ``@qstash_task``: any Celery task, its body run at delivery.

A call publishes one QStash message whose destination is the app's receiver
(``qstash_receiver_url``) and whose body is the Celery message
(:mod:`celery_qstash.publish.message`). QStash waits (countdown, eta), retries, rate
limits and dead-letters it; the receiver runs the body through Celery's tracer with the
request a worker would build (:mod:`celery_qstash.receiver.execute`). The options map
onto QStash through the same table as an email task's (:mod:`celery_qstash.publish.options`);
what only a Celery worker reads (``chain``, ``link``/``link_error`` signatures, root and
parent ids, group, custom headers) travels in the message.

Eager mode (``task_always_eager``, the pytest plugin) runs the body in-process at call
time through Celery's own ``apply()``, after the same checks as a publish.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from celery import Celery, Task
from celery import states as celery_states
from celery.backends.base import Backend, DisabledBackend
from celery.exceptions import Ignore, Reject, Retry, TaskRevokedError
from celery.utils.functional import maybe_list
from kombu.utils.uuid import uuid

from ..config import call_conf, load_settings
from ..email import coerce_email, splitting_bulk
from ..errors import UnsupportedOption
from ..publish.message import json_arguments, task_message
from ..publish.options import APPLY_ASYNC_OPTIONS, chord_backend_error
from ..publish.plan import plan_publish
from ..publish.transports import get_transport
from ..publish.transports.eager import EagerTransport, eager_forced
from ..status.result import QStashAsyncResult, QStashBackend
from .batch import Prepared, current_collector, split_plan
from .planning import _canvas_step, _routed_queue, task_attrs
from .task import QStashTask
from .tracing import push_request_merged

__all__ = ["DeferredEmailTask", "DeferredTask"]

#: Options a worker's request carries that travel in the message, not as QStash headers.
_MESSAGE_OPTIONS = ("root_id", "parent_id", "group_id", "group_index", "chain", "headers")
#: Options Celery's ``Task.retry`` passes back (``Context.as_execution_options``) that
#: have no meaning here: no reply queue, no nesting of replaced tasks, no origin host.
_WORKER_ONLY = ("reply_to", "replaced_task_nesting", "origin", "is_eager")
#: (``replaced_task_nesting`` is read first: a ``self.replace()`` travels in the message.)


@dataclass
class Attempt:
    """One delivery being run on the receiver (set for the body's duration)."""

    final: bool
    #: Set when the body raised and QStash should retry this very message.
    requeue: bool = False
    #: What the body raised, when it did (the answer reports its type and message).
    error: BaseException | None = None


#: The delivery whose body is running in this context (None outside the receiver).
current_attempt: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "celery_qstash_attempt", default=None
)


def _signatures(option: str, value: Any) -> list[dict[str, Any]] | None:
    """``link``/``link_error`` as JSON signatures; a URL belongs to email tasks only."""
    if value is None or value is False:
        return None
    items = maybe_list(value)
    out = []
    for item in items:
        if not isinstance(item, Mapping):
            raise UnsupportedOption(
                option,
                f"a deferred task links Celery signatures (task.s(...)), got {item!r}; a URL "
                "callback is for email tasks",
            )
        out.append(dict(item))
    return out


def joins_chords(backend: Any) -> bool:
    """Does this result backend join a chord by itself, counting the header's parts as
    they finish (Redis; Celery's cache backend, DynamoDB: ``implements_incr``)? Any
    other starts Celery's ``chord_unlock`` task, which needs a broker and a worker; and
    QStash's logs (``qstash://``) cannot count."""
    if isinstance(backend, (QStashBackend, DisabledBackend)):
        return False
    apply_chord = getattr(backend.apply_chord, "__func__", None)
    return apply_chord is not None and apply_chord is not Backend.apply_chord


#: Celery's canvas tasks: publishing one publishes its tasks, each through its own class.
_CANVAS_TASKS = frozenset({"celery.chain", "celery.group", "celery.chord"})


def _check_chord_body(app: Any, body: Mapping[str, Any]) -> None:
    """Refuse, at the call site, a chord body the last header part could only hand to a
    broker: a plain Celery task of this app (the backend publishes it with its own
    ``apply_async``)."""
    name = body.get("task")
    task = app.tasks.get(name) if isinstance(name, str) else None
    if task is None or name in _CANVAS_TASKS or isinstance(task, (DeferredTask, QStashTask)):
        return
    hint = ("self.replace(group(...)) makes Celery's accumulate task the body of a chord; "
            "replace with a chord whose body is a deferred task instead"
            if name == "celery.accumulate" else
            "make it a deferred task (@qstash_task, or base=DeferredTask)")
    raise UnsupportedOption(
        "chord", f"the chord body {name} is a plain Celery task, which only a worker "
        f"behind a broker runs: {hint}")


def _backend_said(backend: Any) -> str:
    if isinstance(backend, QStashBackend):
        return "qstash:// cannot"
    if isinstance(backend, DisabledBackend):
        return "none is set"
    return f"{type(backend).__name__} cannot"


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts is not None else None


class DeferredTask(Task):  # type: ignore[misc]
    """Base class: ``@app.task(base=DeferredTask)``; the body runs on the app's receiver."""

    abstract = True
    #: Read by the option table (TaskAttrs.deferred): rows such as autoretry_for mean
    #: something here.
    body_at_delivery = True

    def AsyncResult(self, task_id: str, **kwargs: Any) -> Any:
        """The result from QStash's logs (``result_backend="qstash://"`` or none), else
        from the app's own Celery result backend, where the receiver's tracer stores it."""
        app = self._get_app()
        backend = app.backend
        if isinstance(backend, (QStashBackend, DisabledBackend)):
            return QStashAsyncResult(task_id, app=app, task_name=self.name, **kwargs)
        kwargs.pop("message_id", None)
        return app.AsyncResult(task_id, task_name=self.name, **kwargs)

    def apply_async(
        self,
        args: Any = None,
        kwargs: Any = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> Any:
        app = self._get_app()
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        if self.typing:  # Celery's own argument check, at the call site
            try:
                self.__header__(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"Arguments did not match the task's signature: {exc}") from None
        # A chord's header task carries the body's signature, as on a worker: when it
        # finishes, the result backend counts it and the last one publishes the body.
        chord_body = options.pop("chord", None)
        if chord_body is not None and not joins_chords(app.backend):
            raise chord_backend_error(_backend_said(app.backend))
        if chord_body is not None:
            _check_chord_body(app, chord_body)
        json_arguments(self.name, args, kwargs)
        task_id = task_id or uuid()
        conf = call_conf(app.conf)
        # The task's own execution options (its serializer, the app's task_serializer)
        # under the call's, and task_routes' queue, as Celery's apply_async merges them.
        options = dict(self._get_exec_options(), **options)
        if conf.routes and not options.get("queue"):
            options["queue"] = _routed_queue(app, self, args, kwargs, options)
        callbacks = _signatures("link", link)
        errbacks = _signatures("link_error", link_error)
        # chain and headers mean other things to the table (a refusal, forwarded HTTP
        # headers): here they are the worker's. The ids are the table's "internal" rows.
        carried: dict[str, Any] = {k: options.pop(k) for k in ("chain", "headers") if k in options}
        carried.update({k: options[k] for k in _MESSAGE_OPTIONS if k in options})
        # Task.replace() publishes the new signature under the replaced task's id.
        replaced = options.get("replaced_task_nesting")
        replaced = replaced if isinstance(replaced, int) and not isinstance(replaced, bool) else 0
        for name in _WORKER_ONLY:
            options.pop(name, None)
        if current_attempt.get() is not None and task_id == getattr(self.request, "id", None):
            # Celery's Task.retry() passes the running request back as options (its
            # delivery facts among them): keep what the option table knows.
            options = {k: v for k, v in options.items() if k in APPLY_ASYNC_OPTIONS}
        retries = int(options.pop("retries", 0) or 0)
        settings = conf.settings
        now = time.time()
        # The same table in eager mode: an option production would refuse is refused here.
        plan = plan_publish(
            task=task_attrs(self), task_id=task_id, options=options, settings=settings,
            now=now, link=False, link_error=False, shadow=shadow,
        )
        if conf.always_eager or eager_forced():
            # Celery's own eager run: no waiting (countdown/eta), self.retry() at once.
            for name in ("countdown", "eta", "expires"):
                options.pop(name, None)
            return self.apply(args, kwargs, task_id=task_id, link=link, link_error=link_error,
                              retries=retries, **options)
        if plan.is_expired(now):
            # Due after its expiry: never published, REVOKED (as a worker would mark it).
            result = self.AsyncResult(task_id)
            if hasattr(result, "mark_locally"):
                result.mark_locally(celery_states.REVOKED, TaskRevokedError(
                    "expired: the message would be delivered after its expiry time, so it "
                    "was not published"))
            return result
        message = task_message(
            self.name, task_id, args, kwargs, retries=retries,
            root_id=carried.get("root_id") or task_id,
            parent_id=carried.get("parent_id"),
            group=carried.get("group_id"),
            group_index=carried.get("group_index"),
            callbacks=callbacks,
            errbacks=errbacks,
            chain=[dict(s) for s in carried["chain"]] if carried.get("chain") else None,
            chord=dict(chord_body) if chord_body is not None else None,
            replaced_task_nesting=replaced or None,
            headers=dict(carried["headers"]) if carried.get("headers") else None,
            shadow=shadow,
            eta=_iso(plan.deliver_at(now)) if plan.delay or plan.not_before else None,
            expires=_iso(plan.expires_at),
        )
        request = plan.task_request(message, settings.require_receiver_url(), settings,
                                    attempt=retries, replaced=replaced)
        collector = current_collector()
        if collector is not None:  # inside group(...).apply_async(): one /v2/batch
            collector.add(Prepared(self, plan, [request], retry=True, retry_policy={}),
                          settings)
            return self.AsyncResult(task_id)
        sent = get_transport(settings).publish(request)
        return self.AsyncResult(task_id, message_id=sent.message_id)

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        # Eager mode is production without the network: a chord's header that production
        # would refuse (its backend cannot count the parts) is refused here too. Celery's
        # eager canvas runs the header through apply(), without the chord= option.
        if _canvas_step() == "chord":
            backend = self._get_app().backend
            if not joins_chords(backend):
                raise chord_backend_error(_backend_said(backend))
        return super().apply(*args, **kwargs)

    def push_request(self, *args: Any, **kwargs: Any) -> None:
        push_request_merged(self, *args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        attempt = current_attempt.get()
        try:
            return self.deliver(*args, **kwargs)
        except (Retry, Ignore, Reject):
            raise
        except Exception as exc:
            if attempt is not None:
                attempt.error = exc
            if attempt is None or attempt.final:
                raise
            # QStash retries this very message (the task's retry delay): Celery's tracer
            # records RETRY and sends task_retry; on_failure waits for the last attempt.
            attempt.requeue = True
            raise Retry(exc=exc, when=None) from exc

    def deliver(self, *args: Any, **kwargs: Any) -> Any:
        """The body, as a delivery runs it (a subclass adds what follows the body)."""
        return Task.__call__(self, *args, **kwargs)

    def send_task_instead(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """What ``app.send_task(name, ...)`` does for this task: the same publish."""
        options.pop("connection", None)
        options.pop("router", None)
        options.pop("result_cls", None)
        return self.apply_async(args, kwargs, **options)


def _route_send_task() -> None:
    """Make ``app.send_task(name, ...)`` of a deferred task publish through QStash.

    Celery's ``send_task`` goes straight to the broker, past every task class, and a
    task decorated on an app that is not finalized yet exists only as a promise, so no
    per-task hook sees the call in time. ``Celery.send_task`` is wrapped once: a name the
    app registers as a deferred task goes to that task's own ``apply_async``; every
    other name goes to Celery's as before.
    """
    original = Celery.send_task
    if getattr(original, "_celery_qstash", False):
        return

    def send_task(self: Any, name: str, args: Any = None, kwargs: Any = None,
                  **options: Any) -> Any:
        task = self.tasks.get(name) if isinstance(name, str) else None
        if isinstance(task, DeferredTask):
            return task.send_task_instead(args, kwargs, **options)
        return original(self, name, args, kwargs, **options)

    send_task._celery_qstash = True  # type: ignore[attr-defined]
    Celery.send_task = send_task


_route_send_task()


class DeferredEmailTask(DeferredTask):
    """``@autosend_task(deferred=True)``: the body runs at delivery and returns the email,
    rendered from the state at that moment; the email then goes to AutoSend through QStash
    (AutoSend's retries, rate limit and the DLQ stay QStash's). ``None`` or ``Ignore``
    sends nothing.

    The email's idempotency key is derived from the task id (``<task id>.email``: a
    redelivered task message renders again, and QStash and AutoSend answer the first
    send); for a scheduled firing, from the firing's own id.
    """

    abstract = True

    def deliver(self, *args: Any, **kwargs: Any) -> Any:
        rendered = super().deliver(*args, **kwargs)
        if rendered is None:
            raise Ignore("nothing to send: the task returned None")
        return send_rendered(self, rendered)


def send_rendered(task: Any, rendered: Any) -> Any:
    """Publish the email a deferred email task returned: to AutoSend through QStash, or
    to the eager outbox when the body ran in eager mode."""
    app = task._get_app()
    settings = load_settings(app.conf)
    # The email's own id, derived from the task's: its QStash deduplication id and label
    # and AutoSend's Idempotency-Key (stable across redeliveries of the task message, and
    # apart from the task message's own deduplication id, which is the task id).
    email_id = f"{task.request.id}.email"
    with splitting_bulk():
        email = coerce_email(rendered, default_from=settings.default_from)
    plan = plan_publish(task=task_attrs(task), task_id=email_id, options={},
                        settings=settings, now=time.time())
    eager = current_attempt.get() is None
    transport = EagerTransport() if eager else get_transport(settings)
    sent = [transport.publish(p.request(e, settings, eager=eager))
            for p, e in split_plan(plan, email)]
    if eager:
        return sent[0].response if len(sent) == 1 else [s.response for s in sent]
    ids = [s.message_id for s in sent]
    return {"email_message_id": ids[0]} if len(ids) == 1 else {"email_message_ids": ids}
