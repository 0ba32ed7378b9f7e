"""The Celery message a deferred task travels as: QStash carries it to the receiver.

It holds what a Celery worker reads from a protocol-2 message (celery/app/amqp.py
``as_task_v2``: the task name, id, args, kwargs, retries, eta, expires, the canvas
fields ``callbacks``/``errbacks``/``chain``/``chord``, root and parent ids, group), as JSON, plus
``delivery``: a nonce of this publish, the receiver's duplicate-ledger key (each
``self.retry()`` publishes anew under the same task id, so the task id alone would
swallow Celery's retries). The body is what QStash signs, so the receiver trusts it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from ..errors import UnsupportedOption

__all__ = [
    "ANSWER_KIND",
    "MESSAGE_KEYS",
    "MESSAGE_KIND",
    "TASK_RUN",
    "firing_id",
    "is_task_message",
    "json_arguments",
    "task_answer",
    "task_message",
]

#: The body's marker and version; a receiver refuses a version it does not know.
MESSAGE_KIND = "celery-qstash/task@1"
#: The receiver's dispatch kind for a task delivery.
TASK_RUN = "task.run"
#: Marks the receiver's answer to a task delivery, which QStash's logs keep: how status
#: reads a deferred task's outcome (``status``) and return value (``result``).
ANSWER_KIND = "celery-qstash/result@1"


def task_answer(response: Any) -> dict[str, Any] | None:
    """The receiver's answer to a task delivery, if ``response`` is one."""
    if isinstance(response, dict) and response.get("kind") == ANSWER_KIND:
        return response
    return None

#: Request fields that travel as they are (each a JSON value Celery's tracer reads), and
#: ``schedule``: the message is a QStash schedule's, sent again on every firing (each
#: firing's task id is ``<id>.<QStash message id>``).
MESSAGE_FIELDS = ("root_id", "parent_id", "group", "group_index", "callbacks", "errbacks",
                  "chain", "chord", "shadow", "eta", "expires", "ignore_result", "headers",
                  "schedule", "replaced_task_nesting")
#: Every key a message may have (``retry_budget``: QStash's retries, added by the plan);
#: the receiver refuses any other (a message of another version is not guessed at).
MESSAGE_KEYS = frozenset({"kind", "task", "id", "args", "kwargs", "retries", "delivery",
                          "retry_budget", *MESSAGE_FIELDS})


def is_task_message(body: Any) -> bool:
    return isinstance(body, dict) and body.get("kind") == MESSAGE_KIND


def task_message(
    name: str, task_id: str, args: Any, kwargs: Any, *, retries: int = 0,
    **fields: Any,
) -> dict[str, Any]:
    """The JSON body for one publish of ``name``; ``fields`` are :data:`MESSAGE_FIELDS`."""
    unknown = set(fields) - set(MESSAGE_FIELDS)
    if unknown:  # a programming error of ours, not the user's
        raise TypeError(f"not a message field: {sorted(unknown)}")
    message: dict[str, Any] = {
        "kind": MESSAGE_KIND,
        "task": name,
        "id": task_id,
        "args": list(args),
        "kwargs": dict(kwargs),
        "retries": retries,
        "delivery": os.urandom(12).hex(),
    }
    message.update({k: v for k, v in fields.items() if v is not None})
    return message


def json_arguments(task: str, args: Any, kwargs: Mapping[str, Any]) -> None:
    """Refuse, at the call site, an argument JSON cannot carry, naming its position.

    A deferred task's arguments cross the network as JSON (QStash carries text); kombu's
    bare "Object of type set is not JSON serializable" names neither the argument nor
    the fix.
    """
    for where, value in [*((f"args[{i}]", v) for i, v in enumerate(args)),
                         *((f"kwargs[{k!r}]", v) for k, v in kwargs.items())]:
        problem = _not_json(value)
        if problem:
            raise UnsupportedOption(
                where,
                f"{task}: {problem}; a deferred task's arguments travel as JSON: pass "
                "lists, dicts, strings, numbers, booleans or None (an id instead of a "
                "model instance, a list instead of a set, text instead of bytes)",
            )


def _not_json(value: Any) -> str | None:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"{type(value).__name__} is not JSON ({exc})"
    if json.loads(text) != value and not isinstance(value, (tuple, list)):
        return f"{type(value).__name__} does not survive JSON unchanged"
    return None


def firing_id(body: Mapping[str, Any], message_id: str) -> str:
    """The task id of a delivery: the message's own, or for a schedule's message (the
    same body every firing) one per firing, from QStash's message id."""
    task_id = str(body.get("id"))
    return f"{task_id}.{message_id}" if body.get("schedule") else task_id
