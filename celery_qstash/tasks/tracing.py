"""Running a task's body the way a Celery worker does: through Celery's tracer.

The eager path runs the body here (``apply()``, eager mode), with the request a
worker would build, Celery's signals, ``on_success``/``on_failure``/``after_return``
and the result backend; when nothing listens for what the tracer adds, a lean run
gives the same result without it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from billiard.einfo import ExceptionInfo, ExceptionWithTraceback  # type: ignore[import-untyped]
from celery import Task, signals
from celery import states as celery_states
from celery._state import _task_stack
from celery.app.task import Context
from celery.app.trace import build_tracer
from celery.app.trace import logger as _trace_logger
from celery.exceptions import Reject, Retry
from celery.loaders.base import BaseLoader
from celery.utils.functional import maybe_list
from celery.utils.nodenames import gethostname as _hostname
from kombu.utils.uuid import uuid

from ..errors import RetryNotSupported
from ..status.result import eager_result

#: What ``Task.push_request`` adds to a request it makes from ``Context()``.
_FRESH_REQUEST: tuple[dict[str, Any], ...] = ({}, {"headers": None})


def push_request_merged(task: Task, *args: Any, **kwargs: Any) -> None:
    """``Task.push_request`` as Celery 5.5 and later have it: the current request merged
    into the new one. An older Celery starts from nothing, so inside its tracer a task
    with its own ``__call__`` lost the worker's request (retries, hostname...)."""
    task.request_stack.push(Context(*args, **{**task.request.__dict__, **kwargs}))


def _push_request(task: Task, task_id: str, args: Any, kwargs: Any) -> None:
    """``task.push_request(id=..., args=..., kwargs=..., called_directly=False,
    is_eager=False)``.

    Celery's version merges the current request into the new one and then works out
    which of the keys are custom headers (building a set of Context's names each
    time); when the current request is a fresh one there is nothing to merge and none
    of these keys is a header, so the result is known: build it directly.
    """
    stack = task.request_stack
    current = stack.top
    if current is None:  # what Task.request reads then: the task's default request
        current = task._default_request
    if current is not None and (
        type(current) is not Context or current.__dict__ not in _FRESH_REQUEST
    ):
        task.push_request(
            id=task_id, args=args, kwargs=kwargs, called_directly=False, is_eager=False
        )
        return
    request = object.__new__(Context)
    request.__dict__.update(
        id=task_id, args=args, kwargs=kwargs, called_directly=False, is_eager=False,
        headers=None,
    )
    stack.push(request)


def _tracer(task: Task, app: Any, propagate: bool) -> Any:
    """Celery's eager tracer for ``task``, built once and kept while nothing it was built
    from has changed.

    ``Task.apply`` builds one per call. ``build_tracer`` reads, once, the task's class
    hooks, the signal receiver lists, whether its logger logs INFO and the task's
    request stack; the cached tracer is rebuilt whenever any of those is no
    longer what it was built with. A receiver list is compared by identity: Celery
    changes it in place (connect, disconnect, dropping dead receivers), which the tracer
    sees, so only a list replaced from outside needs a new tracer. What else it reads
    (deduplication of redelivered tasks, parent priority for callbacks, the process id
    it stores with a STARTED state) concerns a worker: an eager request is never
    redelivered, never tracked as started, and is given no callbacks here.
    """
    cls = type(task)
    key = (
        propagate, app, task.request_stack, task.resultrepr_maxsize,
        _trace_logger.isEnabledFor(logging.INFO),
        cls.__call__, cls.before_start, cls.on_success, cls.after_return, cls.run,
        getattr(task, "_orig_run", None),
    )
    receivers = (
        signals.task_prerun.receivers, signals.task_postrun.receivers,
        signals.task_success.receivers,
    )
    cached = task.__dict__.get("_celery_qstash_tracer")
    if cached is not None and cached[0] == key and all(
        a is b for a, b in zip(cached[1], receivers, strict=True)
    ):
        return cached[2]
    tracer = build_tracer(task.name, task, eager=True, propagate=propagate, app=app)
    task.__dict__["_celery_qstash_tracer"] = (key, receivers, tracer)
    return tracer


#: (task id, exception) the lean eager run's body raised, for Celery's tracer to meet.
_replay: ContextVar[tuple[str, BaseException] | None] = ContextVar(
    "celery_qstash_replay", default=None
)
_RAISED = object()


def _lean_possible(task: Task, app: Any, kwargs: Any) -> bool:
    """Is nothing listening for what Celery's eager tracer does around a successful body?

    Besides running the body (``__call__``) between pushing and popping the task and
    its request, and calling ``after_return``, the tracer only feeds consumers: the
    prerun/success/postrun signals, the INFO log line (with a ``saferepr`` of the result,
    computed even when nothing logs it), ``on_success``/``before_start`` overrides, the
    loader's task-init hook and, with ``task_store_eager_result``, the result backend.
    With none of them there, the success path of the tracer has no effect but those.
    """
    cls = type(task)
    # The task class whose own __call__/after_return the lean run reproduces; a
    # subclass that overrides either needs the real tracer.
    plain: Any = getattr(cls, "_lean_base", None)
    return (
        plain is not None
        and not signals.task_prerun.receivers
        and not signals.task_success.receivers
        and not signals.task_postrun.receivers
        and not _trace_logger.isEnabledFor(logging.INFO)
        and not task.store_eager_result
        and cls.__call__ is plain.__call__
        and cls.after_return is plain.after_return
        and cls.before_start is Task.before_start
        and cls.on_success is Task.on_success
        and type(app.loader).on_task_init is BaseLoader.on_task_init
        and isinstance(kwargs, Mapping)
    )


#: The names ``Context._get_custom_headers`` leaves out of a request's custom headers,
#: which it gathers into a new set on every call.
_CONTEXT_NAMES = frozenset(
    {*Context.__dict__.keys(), "lang", "task", "argsrepr", "kwargsrepr", "compression"}
)


def _context(request: Mapping[str, Any], **more: Any) -> Context:
    """``Context(request, **more)``, the custom headers found with a set built once."""
    context = object.__new__(Context)
    context.update(request, **more)
    if context.headers is None:
        custom = {k: v for k, v in {**request, **more}.items() if k not in _CONTEXT_NAMES}
        context.headers = custom or None
    return context


def _lean_trace(
    task: Task, task_id: str, args: Any, kwargs: Any, request: dict[str, Any]
) -> Any:
    """Celery's tracer's success path (see :func:`_lean_possible`): the same request
    context, the body, ``after_return``. If the body raises, nothing of the tracer's
    failure handling is done here: the exception is kept in :data:`_replay` and
    :data:`_RAISED` returned, and Celery's own tracer then runs the call, its ``__call__``
    raising that exception at once (the body is not run twice)."""
    task_request = _context(request, args=args, called_directly=False, kwargs=kwargs)
    _task_stack.push(task)
    task.request_stack.push(task_request)
    try:
        try:
            retval = task(*args, **kwargs)
        except Exception as exc:  # Ignore, Reject and Retry included: Celery handles them
            _replay.set((task_id, exc))
            return _RAISED
        task.after_return(celery_states.SUCCESS, retval, task_id, args, kwargs, None)
        return retval
    finally:
        _task_stack.pop()
        task.request_stack.pop()


def _traced_apply(
    task: Task,
    app: Any,
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
    """Celery's ``Task.apply`` (celery/app/task.py), with the tracer kept between calls
    (:func:`_tracer`) instead of built for each one. The same request, the same result."""
    args = args or ()
    kwargs = kwargs or {}
    task_id = task_id or uuid()
    retries = retries or 0
    if throw is None:
        throw = app.conf.task_eager_propagates

    parent_task = _task_stack.top
    if parent_task and parent_task.request:
        parent_id = parent_task.request.id
        root_id = parent_task.request.root_id or task_id
    else:
        parent_id = None
        root_id = task_id

    target = app._tasks[task.name]
    request = {
        "id": task_id,
        "task": task.name,
        "parent_id": parent_id,
        "root_id": root_id,
        "retries": retries,
        "is_eager": True,
        "logfile": logfile,
        "loglevel": loglevel or 0,
        "hostname": _hostname(),
        "callbacks": maybe_list(link),
        "errbacks": maybe_list(link_error),
        "headers": headers,
        "timelimit": (
            None if task.time_limit is None and task.soft_time_limit is None
            else [task.time_limit, task.soft_time_limit]
        ),
        "ignore_result": options.get("ignore_result", task.ignore_result),
        "delivery_info": {
            "is_eager": True,
            "exchange": options.get("exchange"),
            "routing_key": options.get("routing_key"),
            "priority": options.get("priority"),
        },
    }
    if "stamped_headers" in options:
        request["stamped_headers"] = maybe_list(options["stamped_headers"])
        request["stamps"] = {
            header: maybe_list(options.get(header, [])) for header in request["stamped_headers"]
        }

    tb = None
    if _lean_possible(target, app, kwargs):
        outcome = _lean_trace(target, task_id, args, kwargs, request)
        if outcome is not _RAISED:
            return eager_result(task_id, outcome, celery_states.SUCCESS, name=task.name)
    try:
        ret = _tracer(target, app, bool(throw))(task_id, args, kwargs, request)
    finally:
        _replay.set(None)
    retval = ret.retval
    if isinstance(retval, ExceptionInfo):
        retval, tb = retval.exception, retval.traceback
        if isinstance(retval, ExceptionWithTraceback):
            retval = retval.exc
    if isinstance(retval, Retry) and retval.sig is not None:
        return retval.sig.apply(retries=retries + 1)
    state = celery_states.SUCCESS if ret.info is None else ret.info.state
    return eager_result(task_id, retval, state, name=task.name, traceback=tb)


def _run_body(task: Task, args: Any, kwargs: Any) -> Any:
    """The task body; Celery's own retry and reject exceptions become :class:`RetryNotSupported`
    (a retry from inside the body would publish the task again from the caller's process)."""
    # Celery's autoretry_for wraps run() and keeps the body as _orig_run; at call time a
    # retry would re-run the body in the caller, so QStash's delivery retries replace it.
    body = getattr(task, "_orig_run", task.run)
    try:
        return body(*args, **kwargs)
    except (Retry, Reject) as exc:
        raise RetryNotSupported(type(exc).__name__) from exc
