"""What a call is checked and planned with, before anything is published.

The task's attributes as the option table reads them (:func:`task_attrs`), the cache
key under which a call's plan is reused, where in Celery's in-process canvas a call
stands (chain, chord, group), and the JSON round trip that Celery's serializer would
do to the arguments.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from functools import lru_cache
from types import CodeType, FrameType
from typing import Any

import celery
from celery import Task
from celery.canvas import Signature, _chain, _chord, group
from kombu.serialization import dumps, loads

from ..config import Settings
from ..publish import options as _options
from ..publish.request import TaskAttrs

_ATTRS = (
    "default_retry_delay", "retry_backoff", "retry_backoff_max", "retry_jitter", "max_retries",
)


def _declared(task: Task, name: str) -> bool:
    """Did the task (its decorator or a base below Celery's Task) set ``name`` itself?"""
    cls: Any = type(task)
    try:
        return _declared_on(cls, name, getattr(cls, name, None))
    except TypeError:  # an unhashable attribute value: look without the cache
        return _declared_on.__wrapped__(cls, name, None)


@lru_cache(maxsize=1024)
def _declared_on(cls: Any, name: str, value: Any) -> bool:
    # ``value`` is part of the cache key: a class attribute changed later is seen.
    for klass in cls.__mro__:
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
        deferred=bool(getattr(task, "body_at_delivery", False)),
    )


#: Plans kept per task (one per settings and option set in use); a task that sees more
#: starts over rather than grow without bound.
_MAX_PLANS = 256


def _plan_key(
    task: Task,
    merged: Mapping[str, Any],
    settings: Settings,
    link: Any,
    link_error: Any,
    display: str | None,
) -> tuple[Any, ...] | None:
    """Everything :func:`plan_publish` reads but the task id, as a cache key; ``None``
    when the plan cannot be reused (it depends on the clock, or a value is unhashable).

    Each value's type is part of the key: ``1 == True`` would otherwise let a cached
    plan stand in for an option the table rejects.
    """
    if merged.get("expires") is not None:  # the expiry time is computed from "now"
        return None
    retry_kwargs = getattr(task, "retry_kwargs", None)
    if isinstance(retry_kwargs, Mapping):
        retry_kwargs = tuple((k, type(v), v) for k, v in retry_kwargs.items())
    attrs = (
        task.name, task.max_retries, task.default_retry_delay, task.rate_limit,
        task.acks_late, getattr(task, "retry_backoff", False),
        getattr(task, "retry_backoff_max", 600), getattr(task, "retry_jitter", True),
        retry_kwargs, getattr(task, "autoretry_for", None), link, link_error, display,
    )
    key = (
        # A plan made before reset_warnings() would skip the warnings its options give.
        _options.warnings_generation,
        id(settings),
        tuple(merged.items()),
        tuple(map(type, merged.values())),
        attrs,
        tuple(map(type, attrs)),
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key


# Celery's in-process canvas: which apply() is running us decides chain/chord/group.
_SIGNATURE_APPLY: CodeType = Signature.apply.__code__
_GROUP_APPLY: CodeType = group.apply.__code__
_CHAIN_APPLY: CodeType = _chain.apply.__code__
_CHORD_APPLY: CodeType = _chord.apply.__code__
_CELERY_DIR = os.path.dirname(os.path.abspath(celery.__file__)) + os.sep


def _canvas_step() -> str | None:
    """``"chain"`` or ``"chord"`` when Celery's canvas applies this task in-process in a
    place where production would hand it a continuation, else ``None``.

    Production rejects the ``chain=``/``chord=`` option a canvas passes to the first
    task of a chain (any step but the last) and to a chord's header tasks; Celery's
    eager canvas calls ``Task.apply`` without those options, so look at which canvas
    ``apply`` is on the stack, stopping at the first frame outside Celery.
    """
    frame: FrameType | None = sys._getframe(2)  # apply()'s caller
    in_group = False
    for _ in range(32):
        if frame is None:
            return None
        code = frame.f_code
        if code is _GROUP_APPLY:
            in_group = True
        elif code is _CHORD_APPLY:
            return "chord" if in_group else None  # the header, not the body
        elif code is _CHAIN_APPLY:
            return None if _last_step(frame.f_locals) else "chain"
        elif code is not _SIGNATURE_APPLY and not os.path.abspath(
            code.co_filename
        ).startswith(_CELERY_DIR):
            return None
        frame = frame.f_back
    return None


def _last_step(local: Mapping[str, Any]) -> bool:
    """Is ``_chain.apply`` (its frame's locals) applying its last step? Production accepts
    a QStash task there: the previous step's worker publishes it with an empty chain."""
    index, last = local.get("index"), local.get("last_index")
    if isinstance(index, int) and isinstance(last, int):  # Celery 5.7 skips empty groups
        return index >= last
    chain_sig, step = local.get("self"), local.get("task")  # older: `for task in self.tasks`
    tasks: Any = getattr(chain_sig, "tasks", None)
    return bool(tasks) and step is tasks[-1]


def _routed_queue(app: Any, task: Task, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
    """The queue ``task_routes`` gives this call, if any (Celery's own router decides)."""
    route = app.amqp.router.lookup_route(task.name, args or (), kwargs or {}, options, task)
    if not route:
        return None
    queue = route.get("queue") if isinstance(route, Mapping) else route
    return getattr(queue, "name", queue)


class _NotPlain(Exception):
    pass


_SCALARS = (str, int, bool, type(None))


def _json_copy(value: Any) -> Any:
    """What a JSON round trip gives back, for plain JSON data; raises _NotPlain otherwise."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise _NotPlain
        return value
    if kind is list or kind is tuple:
        return [_json_copy(item) for item in value]
    if kind is dict:
        if not all(type(key) is str for key in value):
            raise _NotPlain
        return {key: _json_copy(item) for key, item in value.items()}
    raise _NotPlain


def _roundtrip(args: Any, kwargs: Any, serializer: str) -> tuple[Any, Any]:
    """Celery serialises args on the way to a worker; do the same so the body sees what it would.

    Plain JSON data (the usual ids and strings) is copied directly, which gives the
    same result as kombu's dumps/loads for a fraction of the cost.
    """
    if serializer == "json":
        try:
            return _json_copy(list(args or ())), _json_copy(dict(kwargs or {}))
        except _NotPlain:
            pass
    content_type, encoding, payload = dumps(  # type: ignore[no-untyped-call]
        (list(args or ()), dict(kwargs or {})), serializer=serializer
    )
    a, k = loads(payload, content_type, encoding, accept=[content_type])  # type: ignore[no-untyped-call]
    return a, k
