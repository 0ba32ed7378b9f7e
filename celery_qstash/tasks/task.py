"""``QStashTask`` and ``@autosend_task``: a Celery task whose call publishes one email.

The task body runs at call time, in the caller's process, and returns the email.
``apply_async`` then validates it and publishes one QStash message addressed to
AutoSend. Everything Celery's own ``apply_async`` does that matters without a
broker is kept: the argument check, task-level defaults, ``ignore_result``, the
publish signals, a passed ``task_id``, the args' JSON round trip, and eager mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any, NamedTuple

from celery import Task
from celery import states as celery_states
from celery._state import _task_stack
from celery.exceptions import Ignore, TaskRevokedError
from celery.result import GroupResult, denied_join_result
from celery.signals import after_task_publish, before_task_publish
from kombu.utils.uuid import uuid

from ..config import CallConf, Settings, call_conf, load_settings
from ..email import coerce_email, splitting_bulk
from ..errors import RetryNotSupported
from ..publish.options import canvas_error, warn_once
from ..publish.plan import PublishPlan, plan_publish
from ..publish.transports import EagerTransport, get_transport
from ..publish.transports.eager import eager_forced
from ..signals import email_delivered
from ..status.result import QStashAsyncResult, eager_result
from .batch import (
    BatchChunks,
    BatchMap,
    BatchStarmap,
    Prepared,
    current_collector,
    delay_many,
    publish_prepared,
    result_for,
    split_plan,
)
from .planning import _MAX_PLANS, _canvas_step, _plan_key, _roundtrip, _routed_queue, task_attrs
from .tracing import _push_request, _replay, _run_body, _traced_apply, push_request_merged

__all__ = ["QStashTask"]

class _Eager(NamedTuple):
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
        task_id = task_id or uuid()
        conf = call_conf(app.conf)
        eager = conf.always_eager or eager_forced()
        plan, settings, now, merged = self._plan_call(
            app, args, kwargs, task_id,
            options if producer is None else {**options, "producer": producer},
            link=link, link_error=link_error, shadow=shadow, conf=conf,
        )
        if plan.is_expired(now):
            return self._expired(task_id, eager=eager)

        if eager:
            token = _eager.set(_Eager(task_id, plan, settings))
            try:
                # What Celery's eager branch of apply_async does (pydantic arguments
                # dumped, the args' serializer round trip, apply() with the task's
                # execution options under denied_join_result), without acquiring a
                # producer that sends nothing, and through the JSON fast path. The
                # serializer is JSON: the plan refused any other.
                dump = getattr(self, "_dump_pydantic_arguments", None)
                if dump is not None:
                    args, kwargs = dump(args, kwargs)
                args, kwargs = _roundtrip(
                    args, kwargs, merged.get("serializer") or self.serializer
                )
                eager_options = dict(self._get_exec_options(), **options)
                eager_options.setdefault("ignore_result", self.ignore_result)
                with denied_join_result():
                    return self.apply(
                        args, kwargs, task_id=task_id, link=link, link_error=link_error,
                        # Forced by the pytest plugin (the app's conf untouched, another
                        # thread may use it): an error propagates, as it would from a
                        # production call. Else task_eager_propagates decides, as in Celery.
                        throw=bool(conf.eager_propagates) if conf.always_eager else True,
                        **eager_options,
                    )
            finally:
                _eager.reset(token)

        prepared = self._prepare(plan, settings, merged, args, kwargs, conf=conf)
        if prepared is None:  # "nothing to send": returned None or raised Ignore
            if plan.delay or plan.not_before is not None:
                # The body already ran, now: whatever it did was not delayed.
                warn_once(
                    "countdown:ignored-body",
                    f"{self.name}: the body ran at call time and sent nothing, so countdown/"
                    "eta delayed nothing; for work that must happen later use @qstash_task, "
                    "or @autosend_task(deferred=True) for an email rendered at delivery",
                )
            return self._ignored(task_id)
        collector = current_collector()
        if collector is not None:  # inside group(...).apply_async(): published as one batch
            collector.add(prepared, settings)
            result = self.AsyncResult(task_id)
            result.ignored = plan.ignore_result
            return result
        if len(prepared.requests) > 1:  # a BulkEmail over AutoSend's cap: one message per part
            return result_for(self, prepared, publish_prepared([(prepared, settings)]))
        sent = get_transport(settings).publish(
            prepared.request, retry=prepared.retry, retry_policy=prepared.retry_policy
        )
        prepared.published()
        result = self.AsyncResult(task_id, message_id=sent.message_id)
        result.ignored = plan.ignore_result
        return result

    def _check_call(self, args: Any, kwargs: Any) -> None:
        """Celery's own call-time checks: limits, argument types, the signature."""
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

    def _merged_options(
        self,
        args: Any,
        kwargs: Any,
        producer: Any,
        options: Mapping[str, Any],
        *,
        conf: CallConf | None = None,
    ) -> dict[str, Any]:
        """The call's options over the task's defaults, with ``task_routes``' queue."""
        app = self._get_app()
        merged = dict(self._get_exec_options(), **options)
        merged.setdefault("ignore_result", self.ignore_result)
        routes = app.conf.task_routes if conf is None else conf.routes
        if routes and not merged.get("queue"):
            merged["queue"] = _routed_queue(app, self, args, kwargs, merged)
        if producer is not None:
            merged["producer"] = producer
        return merged

    def _plan(
        self,
        task_id: str,
        merged: Mapping[str, Any],
        settings: Settings,
        now: float,
        args: Any,
        kwargs: Any,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
    ) -> PublishPlan:
        display = shadow or self.shadow_name(args, kwargs, merged)
        key = _plan_key(self, merged, settings, link, link_error, display)
        plans: dict[Any, tuple[Settings, PublishPlan]] = self.__dict__.setdefault(
            "_celery_qstash_plans", {}
        )
        if key is not None:
            cached = plans.get(key)
            if cached is not None and cached[0] is settings:
                return cached[1].with_task_id(task_id)
        plan = plan_publish(
            task=task_attrs(self),
            task_id=task_id,
            options=merged,
            settings=settings,
            now=now,
            link=link,
            link_error=link_error,
            shadow=display,
        )
        if key is not None:
            if len(plans) >= _MAX_PLANS:
                plans.clear()
            plans[key] = (settings, plan)
        return plan

    def _prepare(
        self,
        plan: PublishPlan,
        settings: Settings,
        merged: Mapping[str, Any],
        args: Any,
        kwargs: Any,
        *,
        eager: bool = False,
        conf: CallConf | None = None,
    ) -> Prepared | None:
        """Run the body, validate the email, send ``before_task_publish``: ready to publish.

        Nothing is published here; a batch prepares every task before its first request.
        ``None``: nothing to send (the body returned ``None`` or raised ``Ignore``).
        """
        app = self._get_app()
        task_id = plan.task_id
        args, kwargs = _roundtrip(args, kwargs, merged.get("serializer") or self.serializer)
        with splitting_bulk():
            rendered = self._render(task_id, args, kwargs)
            if rendered is None:
                return None
            email = coerce_email(rendered, default_from=settings.default_from)
        parts = split_plan(plan, email)
        if not eager:
            settings.require_token()  # a missing token fails here, before the signal

        if eager:  # Celery's eager path sends no publish signals
            return Prepared(
                self, plan, [p.request(e, settings, eager=True) for p, e in parts], False, {}
            )
        if conf is None:
            conf = call_conf(app.conf)
        added: Mapping[str, Any] | None = None
        after_signal: dict[str, Any] | None = None
        # The signals' arguments are built only for a receiver to read: Celery's own
        # send returns at once without one, but building them is most of their cost.
        if before_task_publish.receivers or after_task_publish.receivers:
            added, after_signal = self._publish_signal(plan, merged, args, kwargs)
        return Prepared(
            task=self,
            plan=plan,
            requests=[p.request(e, settings, extra_headers=added) for p, e in parts],
            retry=bool(merged.get("retry", conf.publish_retry)),
            retry_policy={
                **(conf.publish_retry_policy or {}),
                **(merged.get("retry_policy") or {}),
            },
            after_signal=after_signal,
        )

    def _publish_signal(
        self, plan: PublishPlan, merged: Mapping[str, Any], args: Any, kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Send ``before_task_publish``; (the headers its receivers added, the arguments
        of ``after_task_publish``)."""
        task_id = plan.task_id
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
        return added, {"sender": self.name, "headers": headers, **signal_common}

    def delay_many(self, items: Iterable[Any], **options: Any) -> GroupResult:
        """Publish one message per item of ``items`` (each a tuple of positional args)
        through QStash's ``/v2/batch``, 100 per request; returns a ``GroupResult``.

        Every task is validated before the first request goes out. ``options`` are
        ``apply_async``'s and apply to every message; each message gets its own task id.
        """
        return delay_many(self, items, options)

    async def adelay(self, *args: Any, **kwargs: Any) -> Any:
        """``await task.adelay(...)``: ``delay`` over the SDK's ``AsyncQStash``."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(
        self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any
    ) -> Any:
        """``apply_async`` for asyncio code: same options, validation and errors."""
        from .aio import aapply_async

        return await aapply_async(self, args, kwargs, task_id, **options)

    async def adelay_many(self, items: Iterable[Any], **options: Any) -> GroupResult:
        """``delay_many`` for asyncio code."""
        from .aio import adelay_many

        return await adelay_many(self, items, **options)

    def map(self, it: Iterable[Any]) -> Any:
        """Like Celery's ``map``, but one message per item, published in batches."""
        return BatchMap(self.s(), it, app=self.app)

    def starmap(self, it: Iterable[Any]) -> Any:
        """Like Celery's ``starmap``, but one message per item, published in batches."""
        return BatchStarmap(self.s(), it, app=self.app)

    def chunks(self, it: Iterable[Any], n: int) -> Any:
        """Like Celery's ``chunks``: one message per item, results grouped ``n`` at a time."""
        return BatchChunks(self.s(), it, n, app=self.app)

    def apply(
        self,
        args: Any = None,
        kwargs: Any = None,
        link: Any = None,
        link_error: Any = None,
        task_id: str | None = None,
        retries: int | None = None,
        throw: bool | None = None,
        logfile: Any = None,
        loglevel: Any = None,
        headers: Any = None,
        **options: Any,
    ) -> Any:
        """Eager mode: run in-process into the outbox, validated as ``apply_async`` is.

        Outside eager mode there is no in-process way to send an email: ``apply()`` is
        ``apply_async()``. It publishes through QStash and returns a
        :class:`QStashAsyncResult` whose ``get()`` waits for AutoSend's answer.
        """
        app = self._get_app()
        if headers is not None:
            options["headers"] = headers
        pending = _eager.get()
        token = None
        from_apply_async = pending is not None and pending.task_id == task_id
        if not from_apply_async:
            # Our own eager apply_async planned the call already; anything else may be
            # Celery's canvas, or not eager at all.
            step = _canvas_step()
            if step is not None:
                # What production refuses: the QStash task would be handed a continuation.
                raise canvas_error(step)
            if not (app.conf.task_always_eager or eager_forced()):
                return self.apply_async(
                    args, kwargs, task_id=task_id, link=link, link_error=link_error, **options
                )
            # task.apply() itself or Celery's eager canvas (group, chord body): nothing
            # went through our apply_async, so validate here what it would have.
            task_id = task_id or uuid()
            plan, settings, now, merged = self._plan_call(
                app, args, kwargs, task_id,
                {k: v for k, v in options.items() if k != "shadow"},
                link=link, link_error=link_error, shadow=options.get("shadow"),
            )
            if plan.is_expired(now):
                return self._expired(task_id, eager=True)
            # Production serialises the args on the way to the body; so does this.
            args, kwargs = _roundtrip(args, kwargs, merged.get("serializer") or self.serializer)
            token = _eager.set(_Eager(task_id, plan, settings))
        try:
            # link/link_error are QStash callback URLs (validated above), not signatures
            # Celery's tracer could call: they are not handed to it.
            result = _traced_apply(
                self, app, args, kwargs, task_id=task_id, retries=retries, throw=throw,
                logfile=logfile, loglevel=loglevel, **options,
            )
        finally:
            if token is not None:
                _eager.reset(token)
        if result.state == celery_states.FAILURE and isinstance(result.result, BaseException):
            # Production runs the body and validates the email at the call site, so whatever
            # fails there raises, whatever task_eager_propagates says: a green eager suite
            # must mean the production call is accepted.
            raise result.result
        return result

    def retry(self, *args: Any, exc: BaseException | None = None, **kwargs: Any) -> Any:
        """Refused: the body runs before anything is published (see :class:`RetryNotSupported`).

        ``autoretry_for`` never gets here: the body runs without Celery's autoretry
        wrapper, so the original exception reaches the caller, as documented.
        """
        raise RetryNotSupported()

    def push_request(self, *args: Any, **kwargs: Any) -> None:
        push_request_merged(self, *args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if not request.is_eager or request.called_directly:
            return super().__call__(*args, **kwargs)  # a plain function call: return the email
        replay = _replay.get()
        if replay is not None and replay[0] == request.id:
            # The lean eager run (_lean_trace) already ran the body, which raised this:
            # Celery's tracer now gets the same exception, without a second run.
            _replay.set(None)
            raise replay[1]
        pending = _eager.get()
        if pending is not None and request.id == pending.task_id:
            plan, settings = pending.plan, pending.settings
        else:
            # Not reached through our apply (a custom tracer call): the task's own defaults.
            settings = load_settings(self._get_app().conf)
            plan = plan_publish(
                task=task_attrs(self),
                task_id=request.id,
                options={},
                settings=settings,
                now=time.time(),
            )
        # Celery's tracer already pushed this request (id, is_eager); run the body in it.
        with splitting_bulk():  # a BulkEmail may exceed AutoSend's cap here: it is split below
            rendered = _run_body(self, args, kwargs)
        if rendered is None:
            # Nothing to send: Celery's tracer turns Ignore into the IGNORED state.
            raise Ignore("nothing to send: the task returned None")
        with splitting_bulk():
            email = coerce_email(rendered, default_from=settings.default_from)
        outbox = EagerTransport()
        parts = [
            outbox.publish(p.request(e, settings, eager=True)) for p, e in split_plan(plan, email)
        ]
        if len(parts) > 1:  # a BulkEmail over AutoSend's cap: one message per part
            return [part.response for part in parts]
        sent = parts[0]
        if settings.callback_url and plan.callback == settings.callback_url:
            # In production the receiver would report this delivery: do it after Celery's
            # own on_success/task_success, as the receiver does (see after_return).
            _eager_delivery.set((request.id, sent.response))
        return sent.response

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        # Celery's tracer calls this after on_success and task_success (eager mode only
        # has a tracer here). An override should call super() to keep email_delivered.
        _report_eager_delivery(self, status, task_id)
        super().after_return(status, retval, task_id, args, kwargs, einfo)

    def _plan_call(
        self,
        app: Any,
        args: Any,
        kwargs: Any,
        task_id: str,
        options: dict[str, Any],
        *,
        link: Any,
        link_error: Any,
        shadow: str | None,
        conf: CallConf | None = None,
    ) -> tuple[PublishPlan, Settings, float, dict[str, Any]]:
        """Check a call and plan its publish, as production does: shared by ``apply_async``
        and eager ``apply()``/canvas, so eager mode refuses exactly what production does.

        The options are the task's own execution options (queue, serializer...) with the
        call's over them, ``ignore_result``, and the queue ``task_routes`` gives the call.
        """
        self._check_call(args, kwargs)
        if conf is None:
            conf = call_conf(app.conf)
        merged = self._merged_options(args, kwargs, None, options, conf=conf)
        settings = conf.settings
        now = time.time()
        plan = self._plan(task_id, merged, settings, now, args, kwargs, link, link_error, shadow)
        return plan, settings, now, merged

    def _render(self, task_id: str, args: Any, kwargs: Any) -> Any:
        """Run the body with a request context, as a worker would (self.request.id works).

        ``None`` means nothing to send (the body returned ``None`` or raised ``Ignore``).
        """
        if self.request_stack is None:
            _wait_until_bound(self)
        _task_stack.push(self)
        _push_request(self, task_id, args, kwargs)
        try:
            return _run_body(self, args, kwargs)
        except Ignore:
            return None
        finally:
            self.pop_request()
            _task_stack.pop()

    def _ignored(self, task_id: str) -> QStashAsyncResult:
        """Nothing was published: the result reads IGNORED, as Celery's eager Ignore does."""
        result = self.AsyncResult(task_id)
        result.mark_locally(celery_states.IGNORED, None)
        return result

    def _expired(self, task_id: str, *, eager: bool) -> Any:
        exc = TaskRevokedError(
            "expired: the message would be delivered after its expiry time, so it was not published"
        )
        if eager:
            return eager_result(task_id, exc, celery_states.REVOKED, name=self.name)
        result = self.AsyncResult(task_id)
        result.mark_locally(celery_states.REVOKED, exc)
        return result

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``delay`` once the current Django transaction commits (as Celery's DjangoTask)."""
        _on_commit(lambda: self.delay(*args, **kwargs))

    def apply_async_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``apply_async`` once the current Django transaction commits."""
        _on_commit(lambda: self.apply_async(*args, **kwargs))


#: (task id, AutoSend's response) of the eager call whose email_delivered is still due.
_eager_delivery: ContextVar[tuple[str, Any] | None] = ContextVar(
    "celery_qstash_eager_delivery", default=None
)


# The lean eager run (tracing._lean_possible) stands in for these two methods.
QStashTask._lean_base = QStashTask


def _report_eager_delivery(task: Task, status: str, task_id: str) -> None:
    """Eager mode is production without the network: with ``qstash_callback_url`` set,
    ``email_delivered`` follows ``on_success`` and ``task_success`` there too."""
    pending = _eager_delivery.get()
    if pending is None or pending[0] != task_id:
        return
    _eager_delivery.set(None)
    if status != celery_states.SUCCESS:
        return
    response = pending[1]
    data = response if isinstance(response, Mapping) else {}
    email_delivered.send(
        sender=task, task_id=task_id, email_id=data.get("emailId"),
        batch_id=data.get("batchId"), response=response, message_id=None,
    )


def _wait_until_bound(task: Task) -> None:
    """Celery registers a lazily created task before it binds it (``Celery._task_from_fun``),
    and another thread's first call can take it in between: an unbound task has no request
    stack yet. The binding is microseconds away; if it never comes, bind it here."""
    deadline = time.monotonic() + 1.0
    while type(task).request_stack is None:
        if time.monotonic() > deadline:
            type(task).bind(task._get_app())
            return
        time.sleep(0)  # yield the GIL to the thread that is binding it


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
