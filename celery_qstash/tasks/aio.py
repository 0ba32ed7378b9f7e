"""asyncio call sites: ``await task.adelay(...)``, ``aapply_async(...)``, ``adelay_many(...)``.

The same plan, validation, signals, deadline and errors as the sync path; only the
HTTP round trip is awaited, over the SDK's ``AsyncQStash`` (one client per event
loop, no thread per call). The task body still runs in the caller, at call time,
as it does for ``.delay()``. Eager mode sends nothing over the network, so it takes
the sync path and returns an :class:`~celery_qstash.status.result.EagerAsyncResult`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from celery.result import GroupResult
from kombu.utils.uuid import uuid

from ..config import call_conf
from ..publish.transports.aio import get_async_transport
from ..status.result import EagerAsyncResult
from .batch import adelay_many as _adelay_many
from .batch import is_eager

__all__ = ["aapply_async", "adelay_many"]


async def aapply_async(
    task: Any,
    args: Any = None,
    kwargs: Any = None,
    task_id: str | None = None,
    link: Any = None,
    link_error: Any = None,
    shadow: str | None = None,
    **options: Any,
) -> Any:
    """See :meth:`celery_qstash.QStashTask.aapply_async`."""
    app = task._get_app()
    if is_eager(app):
        result = task.apply_async(
            args, kwargs, task_id=task_id, link=link, link_error=link_error, shadow=shadow,
            **options,
        )
        return EagerAsyncResult.of(result)
    task._check_call(args, kwargs)
    conf = call_conf(app.conf)
    merged = task._merged_options(
        args, kwargs, options.pop("producer", None), options, conf=conf
    )
    task_id = task_id or uuid()
    settings = conf.settings
    now = time.time()
    plan = task._plan(task_id, merged, settings, now, args, kwargs, link, link_error, shadow)
    if plan.is_expired(now):
        return task._expired(task_id, eager=False)
    prepared = task._prepare(plan, settings, merged, args, kwargs, conf=conf)
    if prepared is None:  # nothing to send: the body returned None or raised Ignore
        return task._ignored(task_id)
    sent = await get_async_transport(settings).publish(
        prepared.request, retry=prepared.retry, retry_policy=prepared.retry_policy
    )
    prepared.published()
    result = task.AsyncResult(task_id, message_id=sent.message_id)
    result.ignored = plan.ignore_result
    return result


async def adelay_many(task: Any, items: Iterable[Any], **options: Any) -> GroupResult:
    """See :meth:`celery_qstash.QStashTask.adelay_many`."""
    return await _adelay_many(task, items, options)
