"""Batch publishing: many tasks, one ``/v2/batch`` request per 100 messages.

Three ways in, one path out:

* ``task.delay_many(iterable_of_args, **options)`` (and ``.map``/``.starmap``/``.chunks``);
* ``group(task.s(...) for ...).apply_async()``: Celery's group calls each member's
  ``apply_async``; while it does, :func:`collecting` makes ``QStashTask.apply_async``
  hand its prepared request to a collector instead of publishing, and the collector
  publishes them all once the group has gone through every member.

Every task is prepared (body run, email and options validated, ``before_task_publish``
sent) before the first request goes out, so one bad task publishes nothing. A message
QStash refuses inside a batch marks only its own result with a
:class:`~celery_qstash.errors.PublishError`; if nothing at all was accepted, the first
error is raised, as a single ``.delay()`` would raise it. Eager mode validates
everything the same way and then puts every email in the outbox.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

from celery import Task, canvas
from celery import states as celery_states
from celery.result import GroupResult
from celery.signals import after_task_publish
from kombu.utils.uuid import uuid

from ..config import Settings, call_conf
from ..email import MAX_BULK_RECIPIENTS, AnyEmail, BulkEmail
from ..errors import PublishError, UnsupportedOption
from ..publish.plan import PublishPlan
from ..publish.request import MAX_TASK_ID, PublishRequest
from ..publish.transports.base import PublishResult
from ..publish.transports.batch import BatchOutcome, QStashBatchTransport
from ..publish.transports.eager import EagerTransport, eager_forced
from ..publish.transports.qstash import client_for
from ..status.result import eager_result

__all__ = [
    "Prepared",
    "adelay_many",
    "apublish_prepared",
    "collecting",
    "current_collector",
    "delay_many",
    "get_batch_transport",
    "is_eager",
    "result_for",
    "split_plan",
    "starmap_items",
]

log = logging.getLogger("celery_qstash.tasks.batch")


@dataclass
class Prepared:
    """One task ready to publish: validated request and the publish signal to send after."""

    task: Any
    plan: PublishPlan
    #: One request, or one per AutoSend-sized part of a large BulkEmail.
    requests: list[PublishRequest]
    retry: bool
    retry_policy: dict[str, Any]
    #: ``after_task_publish`` keyword arguments (``None`` in eager mode: Celery sends none).
    after_signal: dict[str, Any] | None = field(default=None)

    def published(self) -> None:
        if self.after_signal is not None:
            after_task_publish.send(**self.after_signal)

    @property
    def task_id(self) -> str:
        return self.plan.task_id

    @property
    def request(self) -> PublishRequest:
        """The request of a task that is one message."""
        if len(self.requests) != 1:
            raise ValueError(f"task {self.task_id} is {len(self.requests)} messages")
        return self.requests[0]


def split_plan(plan: PublishPlan, email: AnyEmail) -> list[tuple[PublishPlan, AnyEmail]]:
    """A plan per message: one, or one per 100 recipients of a large BulkEmail, each with
    its own task id (``<task id>.<n>``), so each has its own idempotency key and label."""
    if not isinstance(email, BulkEmail):
        return [(plan, email)]
    parts = email.split()
    if len(parts) == 1:
        return [(plan, email)]
    if len(plan.task_id) + len(f".{len(parts)}") > MAX_TASK_ID:
        raise UnsupportedOption(
            "task_id",
            f"a BulkEmail of {len(email.recipients)} recipients is published as {len(parts)} "
            f"messages named <task id>.<n>; give a task id of at most "
            f"{MAX_TASK_ID - len(str(len(parts))) - 1} characters",
        )
    return [
        (replace(plan, task_id=f"{plan.task_id}.{n}"), part)
        for n, part in enumerate(parts, start=1)
    ]


def is_eager(app: Any) -> bool:
    """Eager mode: the app's ``task_always_eager``, or forced by the pytest plugin."""
    return bool(app.conf.task_always_eager) or eager_forced()


def get_batch_transport(settings: Settings) -> QStashBatchTransport:
    """The batch transport for these settings (ConfigurationError without a token)."""
    return QStashBatchTransport(
        client_for(settings), timeout=settings.publish_timeout, secrets=settings.secrets
    )


def _bucket_key(prepared: Prepared, settings: Settings) -> tuple[Any, ...]:
    # One /v2/batch request carries messages for one QStash account and one retry rule.
    rule = prepared.retry_policy
    policy = json.dumps(rule, sort_keys=True, default=repr) if rule else ""
    return (settings, prepared.retry, policy)


def _buckets(
    items: Sequence[tuple[Prepared, Settings]],
) -> list[tuple[Settings, bool, list[Prepared]]]:
    buckets: dict[tuple[Any, ...], list[Prepared]] = {}
    for prepared, settings in items:
        buckets.setdefault(_bucket_key(prepared, settings), []).append(prepared)
    return [(settings, retry, group) for (settings, retry, _), group in buckets.items()]


def _record(
    outcomes: dict[str, BatchOutcome], group: Sequence[Prepared], sent: Sequence[BatchOutcome]
) -> None:
    answers = iter(sent)
    for prepared in group:
        accepted = False
        for request in prepared.requests:
            outcome = next(answers)
            outcomes[request.task_id] = outcome
            accepted = accepted or isinstance(outcome, PublishResult)
        if accepted:
            prepared.published()


def publish_prepared(items: Sequence[tuple[Prepared, Settings]]) -> dict[str, BatchOutcome]:
    """Publish prepared tasks through ``/v2/batch``; one outcome per task id."""
    outcomes: dict[str, BatchOutcome] = {}
    for settings, retry, group in _buckets(items):
        sent = get_batch_transport(settings).publish_many(
            [r for p in group for r in p.requests], retry=retry, retry_policy=group[0].retry_policy
        )
        _record(outcomes, group, sent)
    _raise_if_nothing_published(outcomes)
    return outcomes


async def apublish_prepared(
    items: Sequence[tuple[Prepared, Settings]],
) -> dict[str, BatchOutcome]:
    """:func:`publish_prepared` for asyncio code (the loop's ``AsyncQStash`` client)."""
    from ..publish.transports.aio import get_async_transport

    outcomes: dict[str, BatchOutcome] = {}
    for settings, retry, group in _buckets(items):
        sent = await get_async_transport(settings).publish_many(
            [r for p in group for r in p.requests], retry=retry, retry_policy=group[0].retry_policy
        )
        _record(outcomes, group, sent)
    _raise_if_nothing_published(outcomes)
    return outcomes


def _raise_if_nothing_published(outcomes: dict[str, BatchOutcome]) -> None:
    errors = [o for o in outcomes.values() if isinstance(o, PublishError)]
    if not errors:
        return
    if len(errors) == len(outcomes):
        # As a single .delay() would: nothing went out, so the caller hears about it.
        raise errors[0]
    log.warning(
        "%d of %d message(s) were not accepted by QStash; their results hold the PublishError",
        len(errors), len(outcomes),
    )


def _apply_outcome(result: Any, outcome: BatchOutcome | None) -> None:
    if isinstance(outcome, PublishResult):
        result.message_id = outcome.message_id
    elif isinstance(outcome, PublishError) and hasattr(result, "mark_locally"):
        # QStash did not accept it: the result reads FAILURE, get() raises the PublishError.
        result.mark_locally(celery_states.FAILURE, outcome)


# --- group(...).apply_async() --------------------------------------------------------


class Collector:
    """Prepared tasks of one group, published together when the group is done."""

    def __init__(self) -> None:
        self.items: list[tuple[Prepared, Settings]] = []

    def add(self, prepared: Prepared, settings: Settings) -> None:
        if len(prepared.requests) > 1:
            raise UnsupportedOption(
                "group",
                f"task {prepared.task_id} returned a BulkEmail of more than "
                f"{MAX_BULK_RECIPIENTS} recipients, which is {len(prepared.requests)} messages "
                "and cannot be one member's result; use .delay() or delay_many for it",
            )
        self.items.append((prepared, settings))

    def flush(self, results: Iterable[Any]) -> None:
        if not self.items:
            return
        outcomes = publish_prepared(self.items)
        for result in results:
            _apply_outcome(result, outcomes.get(getattr(result, "id", None) or ""))


_collector: ContextVar[Collector | None] = ContextVar("celery_qstash_collector", default=None)


def current_collector() -> Collector | None:
    """The group being collected in this context, if any."""
    return _collector.get()


@contextmanager
def collecting() -> Iterator[Collector]:
    collector = Collector()
    token = _collector.set(collector)
    try:
        yield collector
    finally:
        _collector.reset(token)


_original_apply_tasks = canvas.group._apply_tasks


def _batched_apply_tasks(self: Any, tasks: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
    """Celery's ``group._apply_tasks``, with QStash members published as one batch.

    Celery's ``group.apply_async`` lists this generator at once, so consuming it
    whole before yielding changes nothing for other tasks.
    """
    with collecting() as collector:
        results = list(_original_apply_tasks(self, tasks, *args, **kwargs))
    collector.flush(results)
    yield from results


if not getattr(canvas.group._apply_tasks, "_celery_qstash", False):
    _batched_apply_tasks._celery_qstash = True  # type: ignore[attr-defined]
    canvas.group._apply_tasks = _batched_apply_tasks


# --- task.delay_many(...) ------------------------------------------------------------


def starmap_items(items: Iterable[Any]) -> list[tuple[Any, ...]]:
    """Each item as a tuple of positional arguments (a clear TypeError otherwise)."""
    out: list[tuple[Any, ...]] = []
    for index, item in enumerate(items):
        if not isinstance(item, (tuple, list)):
            raise TypeError(
                f"delay_many: item {index} is {type(item).__name__}, not a tuple of positional "
                f"arguments; write ({item!r},) for a single argument (or use task.map(...))"
            )
        out.append(tuple(item))
    return out


#: A prepared task, or the result of one that publishes nothing (expired, nothing to send).
Slot = tuple[str, "Prepared | Any"]


def prepare_many(
    task: Any, calls: Sequence[tuple[Any, ...]], options: dict[str, Any], *, eager: bool
) -> tuple[Settings, list[Slot]]:
    """Plan, render and validate every call, in order; publish nothing."""
    if options.get("task_id") is not None:
        raise UnsupportedOption(
            "task_id",
            "delay_many gives every message its own task id; to choose them, use "
            "group(task.s(...).set(task_id=...) for ...)",
        )
    app = task._get_app()
    conf = call_conf(app.conf)  # once for the whole batch: each message reads the same
    settings = conf.settings
    if not eager:
        settings.require_token()
        settings.require_api_key()
    now = time.time()
    slots: list[Slot] = []
    # Without task_routes the options do not depend on the arguments: merge them once.
    shared = None if conf.routes else task._merged_options((), None, None, options, conf=conf)
    # ...and unless a shadow_name reads them, neither does the plan: plan the first call,
    # then give each other call its own task id (dedup id, label, Idempotency-Key).
    template: PublishPlan | None = None
    plan_once = shared is not None and (
        getattr(task.shadow_name, "__func__", None) is Task.shadow_name
    )
    for args in calls:
        task._check_call(args, None)
        task_id = uuid()
        merged = dict(shared) if shared is not None else task._merged_options(
            args, None, None, options, conf=conf
        )
        if template is not None:
            plan = template.with_task_id(task_id)
        else:
            plan = task._plan(task_id, merged, settings, now, args, None)
            template = plan if plan_once else None
        if plan.is_expired(now):
            slots.append((task_id, task._expired(task_id, eager=eager)))
            continue
        prepared = task._prepare(plan, settings, merged, args, None, eager=eager, conf=conf)
        if prepared is None:  # nothing to send: the body returned None or raised Ignore
            ignored = (
                eager_result(task_id, None, celery_states.IGNORED, name=task.name) if eager
                else task._ignored(task_id)
            )
            slots.append((task_id, ignored))
            continue
        slots.append((task_id, prepared))
    return settings, slots


def _to_publish(slots: Sequence[Slot], settings: Settings) -> list[tuple[Prepared, Settings]]:
    return [(p, settings) for _, p in slots if isinstance(p, Prepared)]


def delay_many(task: Any, items: Iterable[Any], options: dict[str, Any]) -> GroupResult:
    """See :meth:`celery_qstash.QStashTask.delay_many`."""
    app = task._get_app()
    eager = is_eager(app)
    calls = starmap_items(items)
    settings, slots = prepare_many(task, calls, options, eager=eager)
    if eager:
        outbox = EagerTransport()
        results: list[Any] = []
        for task_id, prepared in slots:
            if not isinstance(prepared, Prepared):
                results.append(prepared)
                continue
            eager_results = [
                eager_result(r.task_id, outbox.publish(r).response, celery_states.SUCCESS,
                             name=task.name)
                for r in prepared.requests
            ]
            results.append(
                eager_results[0] if len(eager_results) == 1
                else app.GroupResult(task_id, eager_results)
            )
        return app.GroupResult(uuid(), results)

    outcomes = publish_prepared(_to_publish(slots, settings))
    return _group_result(task, slots, outcomes)


async def adelay_many(task: Any, items: Iterable[Any], options: dict[str, Any]) -> GroupResult:
    """See :meth:`celery_qstash.QStashTask.adelay_many`."""
    if is_eager(task._get_app()):
        return delay_many(task, items, options)  # nothing leaves the process: nothing to await
    settings, slots = prepare_many(task, starmap_items(items), options, eager=False)
    outcomes = await apublish_prepared(_to_publish(slots, settings))
    return _group_result(task, slots, outcomes)


def _group_result(
    task: Any, slots: Sequence[Slot], outcomes: dict[str, BatchOutcome]
) -> GroupResult:
    results = [
        result_for(task, prepared, outcomes) if isinstance(prepared, Prepared) else prepared
        for _, prepared in slots
    ]
    return task._get_app().GroupResult(uuid(), results)


def result_for(task: Any, prepared: Prepared, outcomes: dict[str, BatchOutcome]) -> Any:
    """The task's result: a ``QStashAsyncResult``, or a ``GroupResult`` (id: the task id)
    of one result per part for a BulkEmail that went out as several messages."""
    parts = []
    for request in prepared.requests:
        result = task.AsyncResult(request.task_id)
        result.ignored = prepared.plan.ignore_result
        _apply_outcome(result, outcomes.get(request.task_id))
        parts.append(result)
    if len(parts) == 1:
        return parts[0]
    return task._get_app().GroupResult(prepared.task_id, parts)


def regroup(result: GroupResult, n: int, app: Any) -> GroupResult:
    """Celery's ``chunks`` shape: a group of groups of ``n``, each ``get()`` a list."""
    parts = [
        app.GroupResult(uuid(), list(result.results[i:i + n]))
        for i in range(0, len(result.results), n)
    ]
    return app.GroupResult(result.id, parts)


class BatchMap(canvas.xmap):  # type: ignore[misc]
    """``task.map(it)``: one message per item (``task(item)``), through ``/v2/batch``."""

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> GroupResult:
        task, it = self._unpack_args(self.kwargs)
        sig = canvas.maybe_signature(task, app=self._app)
        return sig.type.delay_many(
            [(item,) for item in it], **_call_options(options)
        )


class BatchStarmap(canvas.xstarmap):  # type: ignore[misc]
    """``task.starmap(it)``: one message per item (``task(*item)``), through ``/v2/batch``."""

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> GroupResult:
        task, it = self._unpack_args(self.kwargs)
        sig = canvas.maybe_signature(task, app=self._app)
        return sig.type.delay_many(list(it), **_call_options(options))


class BatchChunks(canvas.chunks):  # type: ignore[misc]
    """``task.chunks(it, n)``: one message per item; results grouped ``n`` at a time."""

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> GroupResult:
        task, it, n = self._unpack_args(self.kwargs)
        sig = canvas.maybe_signature(task, app=self._app)
        flat = sig.type.delay_many(list(it), **_call_options(options))
        return regroup(flat, int(n), sig.type._get_app())


def _call_options(options: dict[str, Any]) -> dict[str, Any]:
    # Set by Celery's signature machinery, not by the caller.
    return {k: v for k, v in options.items() if k not in ("route_name",) and v is not None}
