"""Flower's task-launching API: ``async-apply``, ``send-task`` and ``apply`` through QStash.

Each publishes exactly as a call in code does: the task's own ``apply_async`` (its
options checked against the one option table, its body run for an email task, the
message published through QStash), so what a script starts here is what the app would
start. Only the app's QStash tasks (``QStashTask`` and deferred tasks) can be started:
there is no broker behind the dashboard. They need the app (``celery-qstash dashboard
-A proj.celery:app``); without one every name is unknown.

The body is Flower's: ``{"args": [...], "kwargs": {...}}`` plus ``apply_async``'s options
at the top level (``"countdown": 5``), or gathered in ``"options"``. ``countdown`` is
seconds; ``eta`` and ``expires`` take Flower's ``%Y-%m-%d %H:%M:%S.%f`` or ISO 8601 (naive
= UTC), ``expires`` seconds too. Errors are JSON ``{"error": ...}``: 400 naming the bad
argument or option, 404 for an unknown task (with ``known``, the names that exist), 502
when QStash refuses or cannot be reached, 503 when a setting is missing.

These endpoints execute work, so the dashboard's guards apply as to revoke: basic auth
when configured, and a request from another origin is refused.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse

from ...errors import EmailValidationError, PublishError, UnsupportedOption
from ...tasks.deferred import DeferredTask
from ...tasks.task import QStashTask
from ..serving import JSONBodyError, parse_json
from .api import result_body, timeout_param, wait_for_record
from .common import BadRequest, async_upstream_errors, get_status, json_response

__all__ = ["APPLY_TIMEOUT", "FLOWER_DATE_FORMAT", "apply", "async_apply", "send_task"]

#: Flower's date format for ``eta`` and ``expires``.
FLOWER_DATE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
#: ``apply`` waits this long for the result when no ``?timeout=`` is given (seconds).
APPLY_TIMEOUT = 30.0


def known_tasks(celery_app: Any) -> dict[str, Any]:
    """The app's tasks that publish through QStash, by name."""
    if celery_app is None:
        return {}
    return {name: task for name, task in celery_app.tasks.items()
            if isinstance(task, (QStashTask, DeferredTask))}


def _when(name: str, value: Any, *, seconds: bool) -> Any:
    """``eta``/``expires``: a datetime from Flower's format or ISO 8601 (or seconds)."""
    if seconds and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _seconds(name, value)
    if isinstance(value, str):
        text = value.strip()
        for fmt in (FLOWER_DATE_FORMAT, None):
            try:
                moment = (datetime.strptime(text, fmt) if fmt
                          else datetime.fromisoformat(text.replace("Z", "+00:00")))
            except ValueError:
                continue
            return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        if seconds:
            try:
                return _seconds(name, float(value))
            except ValueError:
                pass
    also = " or a number of seconds" if seconds else ""
    raise BadRequest(f"{name} must be a date and time such as 2030-05-01T13:45:00Z{also}")


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise BadRequest(f"{name} must be a number of seconds")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a number of seconds") from None
    if not math.isfinite(number) or number < 0:
        raise BadRequest(f"{name} must be a finite, non-negative number of seconds")
    return number


def _call(body: Any) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """(args, kwargs, options) from Flower's request body."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object: {\"args\": [...], \"kwargs\": {...}}")
    body = dict(body)
    args = body.pop("args", [])
    kwargs = body.pop("kwargs", {})
    nested = body.pop("options", {})
    if not isinstance(args, list):
        raise BadRequest("args must be an array")
    if not isinstance(kwargs, dict):
        raise BadRequest("kwargs must be an object")
    if not isinstance(nested, dict):
        raise BadRequest("options must be an object")
    twice = sorted(set(nested) & set(body))
    if twice:
        raise BadRequest(f"{twice[0]} is given both at the top level and in options")
    options = {**body, **nested}
    if "countdown" in options:
        options["countdown"] = _seconds("countdown", options["countdown"])
    if "eta" in options:
        options["eta"] = _when("eta", options["eta"], seconds=False)
    if "expires" in options:
        options["expires"] = _when("expires", options["expires"], seconds=True)
    return args, kwargs, options


async def _launch(request: Request) -> tuple[Any, JSONResponse | None]:
    """Publish the named task as ``apply_async`` does: (its result, None) or (None, the
    error answer)."""
    name = request.path_params["taskname"]
    tasks = known_tasks(request.app.state.celery_app)
    task = tasks.get(name)
    if task is None:
        return None, json_response(
            request, {"error": f"Unknown task '{name}'", "known": sorted(tasks)},
            status_code=404)
    raw = await request.body()
    try:
        body = parse_json(raw) if raw.strip() else {}
    except JSONBodyError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    args, kwargs, options = _call(body)
    try:
        # A deferred task's app.send_task(name) is its apply_async; an email task's body
        # must run to make the email: every endpoint publishes through apply_async.
        result = await anyio.to_thread.run_sync(lambda: task.apply_async(args, kwargs,
                                                                         **options))
    except TypeError as exc:  # Celery's own argument check
        return None, json_response(request, {"error": f"args/kwargs: {exc}"}, 400)
    except (UnsupportedOption, EmailValidationError) as exc:  # they name what is wrong
        return None, json_response(request, {"error": str(exc)}, 400)
    except PublishError as exc:
        return None, json_response(request, {"error": f"QStash did not take the task: {exc}",
                                             "task-id": exc.task_id}, 502)
    return result, None


def _local_state(result: Any) -> str | None:
    """The state of a task that was never published (IGNORED, or expired: REVOKED)."""
    cache = getattr(result, "_cache", None)
    return str(cache["status"]) if isinstance(cache, dict) and cache.get("status") else None


async def _published(request: Request) -> JSONResponse:
    result, error = await _launch(request)
    if error is not None:
        return error
    task_id = str(result.id)
    state = _local_state(result)
    if state is None:
        record = await anyio.to_thread.run_sync(
            lambda: get_status(request).task(task_id, callbacks=False))
        state = str(result_body(task_id, record)["state"])
    return json_response(request, {"task-id": task_id, "state": state})


@async_upstream_errors
async def async_apply(request: Request) -> JSONResponse:
    """Execute a task: publish it through QStash.

    **Example request**::

        POST /api/task/async-apply/app.send_welcome HTTP/1.1
        Content-Type: application/json

        {"args": [42], "countdown": 5}

    **Example response**::

        HTTP/1.1 200 OK

        {"task-id": "abc300c7-2922-4069-97b6-a635cc2ac47c", "state": "PENDING"}

    All other top-level properties (or those in ``options``) go to ``apply_async``.

    :statuscode 200: published
    :statuscode 400: bad arguments or options (the error names which)
    :statuscode 401: unauthorized request
    :statuscode 404: unknown task (``known`` lists the task names)
    :statuscode 502: QStash refused the message or could not be reached
    """
    return await _published(request)


@async_upstream_errors
async def send_task(request: Request) -> JSONResponse:
    """Execute a task by name: Flower's ``Celery.send_task``; here the same publish as
    ``async-apply`` (the name must be one of the app's QStash tasks).

    **Example request**::

        POST /api/task/send-task/app.send_welcome HTTP/1.1

        {"args": [42]}

    **Example response**::

        HTTP/1.1 200 OK

        {"task-id": "c60be250-fe52-48df-befb-ac66174076e6", "state": "PENDING"}

    :statuscode 200: published
    :statuscode 400: bad arguments or options
    :statuscode 404: unknown task
    """
    return await _published(request)


@async_upstream_errors
async def apply(request: Request) -> JSONResponse:
    """Execute a task and wait for its result.

    **Example request**::

        POST /api/task/apply/app.send_welcome?timeout=20 HTTP/1.1

        {"args": [42]}

    **Example response**::

        HTTP/1.1 200 OK

        {"task-id": "c60be250-…", "state": "SUCCESS", "result": {"emailId": "em_…"}}

    ``?timeout=`` (seconds, default 30, at most 60) bounds the wait; a task not ready by
    then is answered with its current state and no ``result``, as ``/api/task/result``.

    :statuscode 200: published (see ``state``)
    :statuscode 400: bad arguments, options or timeout
    :statuscode 404: unknown task
    """
    timeout = timeout_param(request.query_params.get("timeout"), APPLY_TIMEOUT)
    result, error = await _launch(request)
    if error is not None:
        return error
    task_id = str(result.id)
    state = _local_state(result)
    if state is not None:
        return json_response(request, {"task-id": task_id, "state": state})
    record = await wait_for_record(request, task_id, timeout)
    return json_response(request, result_body(task_id, record))
