"""What the API handlers and the pages share: the status client, parameters, errors."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from celery import states
from qstash.errors import QStashError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from ...errors import ConfigurationError, scrub, scrub_data
from ...status import StatusClient, TaskRecord
from ...webhooks.store import email_fate
from .html import e, layout

__all__ = [
    "BadRequest", "async_upstream_errors", "email_fate_of", "get_status", "int_param",
    "json_response",
    "page_errors", "upstream_errors",
]

log = logging.getLogger("celery_qstash.local.dashboard")

Handler = Callable[[Request], Response]
#: How the qstash SDK words a 400 (its QStashError carries no status attribute).
_QSTASH_400 = re.compile(r"Request failed with status: 400\b")
AsyncHandler = Callable[[Request], Awaitable[Response]]


class BadRequest(ValueError):
    """A query parameter is invalid: a 400 with this message."""


def get_status(request: Request) -> StatusClient:
    """The app's :class:`StatusClient` (built per request when given a factory)."""
    source = request.app.state.status
    return source if isinstance(source, StatusClient) else source()


def email_fate_of(request: Request, record: TaskRecord) -> dict[str, Any] | None:
    """What AutoSend's webhooks said became of a delivered task's email, from the
    dashboard's event store (``None`` without one, or before any event)."""
    store = request.app.state.event_store
    if store is None or record.state != states.SUCCESS:
        return None
    return email_fate(None, record.result, store=store)


def json_response(request: Request, body: Any, status_code: int = 200) -> JSONResponse:
    """Every JSON answer goes out through here: every string in ``body`` (AutoSend's
    answers, QStash's errors...) is scrubbed of the configured secrets first."""
    return JSONResponse(scrub_data(body, request.app.state.secrets), status_code=status_code)


def int_param(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if number < 0:
        raise BadRequest(f"{name} must not be negative")
    return number


def _failure(request: Request, exc: Exception) -> tuple[int, str]:
    """(status code, safe message) for what went wrong while answering ``request``."""
    if isinstance(exc, BadRequest):
        return 400, str(exc)
    if isinstance(exc, ConfigurationError):
        return 503, str(exc)
    # QStash refused or could not be reached: say so without leaking a secret.
    text = scrub(str(exc), request.app.state.secrets)
    log.warning("QStash request failed: %s", text)
    if isinstance(exc, QStashError) and _QSTASH_400.match(str(exc)):
        # QStash refused a value the caller passed through (a cursor, a filter): their 400.
        return 400, f"QStash refused the request: {text[:300]}"
    return 502, f"QStash request failed: {text[:300]}"


_UPSTREAM = (BadRequest, ConfigurationError, QStashError, httpx.HTTPError)


def _answering_failures(render: Callable[[int, str], Response]) -> Callable[[Handler], Handler]:
    """Bad parameters -> 400, QStash trouble -> 502, no token -> 503, shown by ``render``."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def wrapper(request: Request) -> Response:
            try:
                return handler(request)
            except _UPSTREAM as exc:
                return render(*_failure(request, exc))

        return wrapper

    return decorate


def _error_page(code: int, message: str) -> Response:
    body = f'<h1>Error {code}</h1><p class="error">{e(message)}</p>'
    return HTMLResponse(layout(f"Error {code}", body), status_code=code)


#: For JSON handlers: ``{"error": ...}`` with the status.
upstream_errors = _answering_failures(
    lambda code, message: JSONResponse({"error": message}, status_code=code)
)
#: For page handlers: the same, rendered as a page.
page_errors = _answering_failures(_error_page)


def async_upstream_errors(handler: AsyncHandler) -> AsyncHandler:
    """:data:`upstream_errors` for a handler that runs on the event loop."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except _UPSTREAM as exc:
            code, message = _failure(request, exc)
            return JSONResponse({"error": message}, status_code=code)

    return wrapper
