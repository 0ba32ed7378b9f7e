"""``QStashTask`` and ``@autosend_task``: a Celery task whose call publishes one email.

The task body runs at call time, in the caller's process, and returns the email.
``apply_async`` then validates it and publishes one QStash message addressed to
AutoSend. Everything Celery's own ``apply_async`` does that matters without a
broker is kept: the argument check, task-level defaults, ``ignore_result``, the
publish signals, a passed ``task_id``, the args' JSON round trip, and eager mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from celery import Task, shared_task
from celery import states as celery_states
from celery._state import _task_stack
from celery.exceptions import TaskRevokedError
from celery.result import EagerResult, denied_join_result
from celery.signals import after_task_publish, before_task_publish
from kombu.serialization import dumps, loads
from kombu.utils.uuid import uuid

from .config import Settings, load_settings
from .email import coerce_email
from .errors import UnsupportedOption
from .options import PublishPlan, TaskAttrs, plan_publish
from .result import QStashAsyncResult
from .transports import EagerTransport, get_transport
from .transports.eager import eager_forced

__all__ = ["QStashTask", "autosend_task"]

_ATTRS = (
    "default_retry_delay", "retry_backoff", "retry_backoff_max", "retry_jitter", "max_retries",
)


def _declared(task: Task, name: str) -> bool:
    """Did the task (its decorator or a base below Celery's Task) set ``name`` itself?"""
    for klass in type(task).__mro__:
        if klass is Task or klass.__module__.startswith("celery."):
            return False
        if name in vars(klass):
            return True
    return False


def task_attrs(task: Task) -> TaskAttrs:
    return TaskAttrs(
        name=task.name,
        max_retries=task.max_retries,
        default_retry_delay=task.default_retry_delay,
        # Not Task attributes unless set: Celery's autoretry reads them with these defaults.
        retry_backoff=getattr(task, "retry_backoff", False),
        retry_backoff_max=getattr(task, "retry_backoff_max", 600),
        retry_jitter=getattr(task, "retry_jitter", True),
        rate_limit=task.rate_limit,
        retry_kwargs=dict(getattr(task, "retry_kwargs", None) or {}),
        autoretry_for=tuple(getattr(task, "autoretry_for", None) or ()),
        acks_late=bool(task.acks_late) and _declared(task, "acks_late"),
        declared=frozenset(name for name in _ATTRS if _declared(task, name)),
    )


@dataclass(frozen=True)
class _Eager:
    task_id: str
    plan: PublishPlan
    settings: Settings


# Hands the validated plan from apply_async to __call__ across Celery's eager machinery.
_eager: ContextVar[_Eager | None] = ContextVar("celery_qstash_eager", default=None)


class QStashTask(Task):  # type: ignore[misc]
    """Base class: ``@app.task(base=QStashTask)`` or ``Celery(task_cls=QStashTask)``."""

    #: Not a real task; concrete tasks are made by the decorators.
    abstract = True

    def AsyncResult(self, task_id: str, **kwargs: Any) -> QStashAsyncResult:
        return QStashAsyncResult(task_id, app=self._get_app(), task_name=self.name, **kwargs)

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
        if self.soft_time_limit and self.time_limit and self.soft_time_limit > self.time_limit:
            raise ValueError("soft_time_limit must be less or equal than time_limit")
        if args is not None and not isinstance(args, (list, tuple)):
            raise TypeError("task args must be a list or tuple")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError("task keyword arguments must be a mapping")
        if self.typing:
            check = getattr(self, "__header__", None)
            if check is not None:
                check(*(args or ()), **(kwargs or {}))

        merged = dict(self._get_exec_options(), **options)
        merged.setdefault("ignore_result", self.ignore_result)
        if not merged.get("queue") and app.conf.task_routes:
            merged["queue"] = _routed_queue(app, self, args, kwargs, merged)
        if producer is not None:
            merged["producer"] = producer
        task_id = task_id or uuid()
        settings = load_settings(app.conf)
        now = time.time()
        plan = plan_publish(
            task=task_attrs(self),
            task_id=task_id,
            options=merged,
            settings=settings,
            now=now,
            link=link,
            link_error=link_error,
            shadow=shadow or self.shadow_name(args, kwargs, merged),
        )
        if plan.is_expired(now):
            return self._expired(task_id, eager=bool(app.conf.task_always_eager) or eager_forced())

        if app.conf.task_always_eager or eager_forced():
            token = _eager.set(_Eager(task_id, plan, settings))
            try:
                if not app.conf.task_always_eager:
                    # Forced by the pytest plugin: what Celery's eager branch does, without
                    # changing the app's conf (another thread may be using the app). An
                    # error propagates, as it would from a production call.
                    args, kwargs = _roundtrip(
                        args, kwargs, merged.get("serializer") or self.serializer
                    )
                    with denied_join_result():
                        return self.apply(
                            args, kwargs, task_id=task_id, link=link, link_error=link_error,
                            shadow=shadow, throw=True, **options,
                        )
                # Celery's own eager path: JSON round trip of the args, task_eager_propagates,
                # task_store_eager_result, an EagerResult. __call__ below does the sending.
                return super().apply_async(
                    args, kwargs, task_id=task_id, shadow=shadow, **options
                )
            finally:
                _eager.reset(token)

        args, kwargs = _roundtrip(args, kwargs, merged.get("serializer") or self.serializer)
        rendered = self._render(task_id, args, kwargs)
        email = coerce_email(rendered, default_from=settings.default_from)
        transport = get_transport(settings)

        protocol = {
            "lang": "py",
            "task": self.name,
            "id": task_id,
            "shadow": plan.display_name,
            "eta": None,
            "retries": 0,
            "timelimit": [merged.get("time_limit"), merged.get("soft_time_limit")],
            "root_id": task_id,
            "parent_id": None,
            "origin": "celery-qstash",
            "ignore_result": plan.ignore_result,
        }
        # As in Celery, the signal sees the call's headers merged in, and what a handler
        # adds (trace context from OpenTelemetry, Sentry, Datadog) travels with the message.
        headers = {**protocol, **plan.headers}
        embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
        body = (list(args), dict(kwargs), embed)
        signal_common = {"body": body, "exchange": "", "routing_key": plan.queue or ""}
        before_task_publish.send(
            sender=self.name,
            headers=headers,
            properties={"correlation_id": task_id, "reply_to": ""},
            declare=[],
            retry_policy=merged.get("retry_policy"),
            **signal_common,
        )
        added = {
            k: v for k, v in headers.items() if k not in protocol and plan.headers.get(k) != v
        }
        sent = transport.publish(
            plan.request(email, settings, extra_headers=added),
            retry=merged.get("retry", app.conf.task_publish_retry),
            retry_policy={
                **(app.conf.task_publish_retry_policy or {}),
                **(merged.get("retry_policy") or {}),
            },
        )
        after_task_publish.send(sender=self.name, headers=headers, **signal_common)

        result = self.AsyncResult(task_id, message_id=sent.message_id)
        result.ignored = plan.ignore_result
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if not request.is_eager or request.called_directly:
            return super().__call__(*args, **kwargs)  # a plain function call: return the email
        pending = _eager.get()
        if pending is not None and request.id == pending.task_id:
            plan, settings = pending.plan, pending.settings
        else:
            # Eager canvas (group, chord) and task.apply() call Task.apply directly,
            # without our apply_async: plan with the task's own defaults.
            settings = load_settings(self._get_app().conf)
            plan = plan_publish(
                task=task_attrs(self),
                task_id=request.id,
                options={},
                settings=settings,
                now=time.time(),
            )
        # Celery's tracer already pushed this request (id, is_eager); run the body in it.
        email = coerce_email(self.run(*args, **kwargs), default_from=settings.default_from)
        sent = EagerTransport().publish(plan.request(email, settings, eager=True))
        return sent.response

    def _render(self, task_id: str, args: Any, kwargs: Any) -> Any:
        """Run the body with a request context, as a worker would (self.request.id works)."""
        _task_stack.push(self)
        self.push_request(
            id=task_id, args=args, kwargs=kwargs, called_directly=False, is_eager=False
        )
        try:
            return self.run(*args, **kwargs)
        finally:
            self.pop_request()
            _task_stack.pop()

    def _expired(self, task_id: str, *, eager: bool) -> Any:
        exc = TaskRevokedError(
            "expired: the message would be delivered after its expiry time, so it was not published"
        )
        if eager:
            return EagerResult(task_id, exc, celery_states.REVOKED, name=self.name)
        result = self.AsyncResult(task_id)
        result.mark_revoked_locally(exc)
        return result

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``delay`` once the current Django transaction commits (as Celery's DjangoTask)."""
        _on_commit(lambda: self.delay(*args, **kwargs))

    def apply_async_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``apply_async`` once the current Django transaction commits."""
        _on_commit(lambda: self.apply_async(*args, **kwargs))


def _routed_queue(app: Any, task: Task, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
    """The queue ``task_routes`` gives this call, if any (Celery's own router decides)."""
    route = app.amqp.router.lookup_route(task.name, args or (), kwargs or {}, options, task)
    if not route:
        return None
    queue = route.get("queue") if isinstance(route, Mapping) else route
    return getattr(queue, "name", queue)


def _on_commit(fn: Callable[[], Any]) -> None:
    try:
        from django.conf import settings
        from django.db import transaction
    except ImportError:  # no Django: there is no transaction to wait for
        fn()
        return
    if not settings.configured:  # Django installed but not in use by this app
        fn()
        return
    transaction.on_commit(fn)


def _roundtrip(args: Any, kwargs: Any, serializer: str) -> tuple[Any, Any]:
    """Celery serialises args on the way to a worker; do the same so the body sees what it would."""
    content_type, encoding, payload = dumps(  # type: ignore[no-untyped-call]
        (list(args or ()), dict(kwargs or {})), serializer=serializer
    )
    a, k = loads(payload, content_type, encoding, accept=[content_type])  # type: ignore[no-untyped-call]
    return a, k


def autosend_task(*args: Any, **options: Any) -> Any:
    """``shared_task`` for email tasks: bare (``@autosend_task``) or with options.

    The task body returns an :class:`~celery_qstash.Email`, a
    :class:`~celery_qstash.BulkEmail` or a dict of AutoSend fields.
    """
    base = options.setdefault("base", QStashTask)
    if not (isinstance(base, type) and issubclass(base, QStashTask)):
        raise UnsupportedOption("base", "autosend_task needs a QStashTask subclass as base")
    return shared_task(*args, **options)
