"""The decorators: ``@autosend_task`` (email tasks) and ``@qstash_task`` (any task).

Both are ``shared_task`` with a base class: bound to the current app, bare or with
Celery's task options.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from ..errors import UnsupportedOption
from .deferred import DeferredEmailTask, DeferredTask
from .task import QStashTask

__all__ = ["autosend_task", "qstash_task"]


def autosend_task(*args: Any, deferred: bool = False, **options: Any) -> Any:
    """``shared_task`` for email tasks: bare (``@autosend_task``) or with options.

    The task body returns an :class:`~celery_qstash.Email`, a
    :class:`~celery_qstash.BulkEmail` or a dict of AutoSend fields. It runs at call time;
    with ``deferred=True`` it runs at delivery on the app's receiver, so the email shows
    the state at the moment of sending (a digest, a drip that may skip a step).
    """
    if deferred:
        base = options.setdefault("base", DeferredEmailTask)
        if not (isinstance(base, type) and issubclass(base, DeferredEmailTask)):
            raise UnsupportedOption(
                "base", "autosend_task(deferred=True) needs a DeferredEmailTask subclass as base"
            )
        return shared_task(*args, **options)
    base = options.setdefault("base", QStashTask)
    if not (isinstance(base, type) and issubclass(base, QStashTask)):
        raise UnsupportedOption("base", "autosend_task needs a QStashTask subclass as base")
    return shared_task(*args, **options)


def qstash_task(*args: Any, **options: Any) -> Any:
    """``@qstash_task`` / ``@qstash_task(bind=True, max_retries=3, ...)``: a Celery task
    (bound to the current app, like ``shared_task``) whose body runs at delivery."""
    options.setdefault("base", DeferredTask)
    if not (isinstance(options["base"], type) and issubclass(options["base"], DeferredTask)):
        raise TypeError("qstash_task(base=...) must be a DeferredTask subclass")
    return shared_task(*args, **options)
