"""The Flower-style dashboard: HTML pages and Flower's JSON API, read from QStash.

``create_app(status)`` builds the Starlette app over a
:class:`~celery_qstash.status.StatusClient` (or a callable returning one);
``serve()`` runs it, on 127.0.0.1:8655 by default. The whole HTTP surface is the
route table below: pages live in :mod:`.views`, the JSON API in :mod:`.api`,
and both query QStash only through :mod:`celery_qstash.status`.

Safety: binding a non-loopback address without basic auth is refused unless
explicitly allowed; on loopback, requests must name a loopback host (so a web
page cannot reach the dashboard through DNS rebinding); state-changing POSTs
from another origin are refused; a body over 64 KB is a 413; pages may run no
script; result long-polls wait on the event loop, capped (see :mod:`.api`).
Needs the ``local`` extra (starlette, uvicorn).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets as _secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...clock import Clock, SystemClock
from ...devserver import DASHBOARD_PORT
from ...errors import ConfigurationError
from ...status import StatusClient
from .. import live
from ..serving import (
    LOOPBACK_HOSTS,
    BodyLimit,
    Notices,
    SameSiteGuard,
    is_loopback,
    local_hosts,
)
from . import api, launch, queues, views
from .html import task_path
from .metrics import Metrics, metrics_endpoint

__all__ = ["LOOPBACK_HOSTS", "check_bind", "create_app", "is_loopback", "local_hosts", "serve"]

StatusSource = StatusClient | Callable[[], StatusClient]

#: No dashboard request needs a body (its POSTs are bodiless forms); 64 KB is plenty.
MAX_BODY = 64 * 1024

_SECURITY_HEADERS = [
    # No inline script and no other origin: an escaping bug could show markup, never run
    # code. The one script is /live.js, which fetches its own page (connect-src 'self').
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
     b"img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: under no-referrer Chromium sends "Origin: null" on our
    # own form POSTs, which the cross-origin check would then refuse.
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class _Guard:
    """Basic auth and security headers (the Host and same-origin checks are SameSiteGuard's)."""

    def __init__(self, app: ASGIApp, *, auth: tuple[str, str] | None) -> None:
        self.app = app
        self.auth = auth

    def _authorized(self, header: str | None) -> bool:
        if self.auth is None:
            return True
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both compared, always, in constant time.
        ok_user = _secrets.compare_digest(user.encode(), self.auth[0].encode())
        ok_password = _secrets.compare_digest(password.encode(), self.auth[1].encode())
        return ok_user and ok_password

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal: Response | None = None
        if not self._authorized(headers.get("authorization")):
            refusal = PlainTextResponse(
                "Authentication required", status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="celery-qstash", charset="UTF-8"'},
            )

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  *_SECURITY_HEADERS]}
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_secured)
        else:
            await self.app(scope, receive, send_secured)


def _home(request: Request) -> Response:
    return RedirectResponse("/tasks", status_code=307)


def _flower_task_page(request: Request) -> Response:
    """Flower's task page path, ``/task/<id>``, leads to ours."""
    return RedirectResponse(task_path(request.path_params["task_id"]), status_code=307)


async def _healthcheck(request: Request) -> Response:
    # On the event loop: it answers even when every worker thread is busy.
    return PlainTextResponse("OK")


ROUTES = [
    Route("/", _home),
    Route("/healthcheck", _healthcheck),
    Route(live.SCRIPT_PATH, live.script),
    Route("/favicon.ico", live.favicon),
    # Pages
    Route("/tasks", views.tasks_page),
    # A task id may contain "/" (any printable but space and comma): the rest of the path.
    Route("/tasks/{task_id:path}/revoke", views.task_revoke, methods=["POST"]),
    Route("/tasks/{task_id:path}", views.task_page),
    Route("/task/{task_id:path}", _flower_task_page),
    Route("/dlq", views.dlq_page),
    Route("/dlq/bulk", views.dlq_bulk, methods=["POST"]),
    Route("/dlq/{dlq_id}/retry", views.dlq_retry, methods=["POST"]),
    Route("/dlq/{dlq_id}/delete", views.dlq_delete, methods=["POST"]),
    Route("/queues", queues.queues_page),
    Route("/queues/{name}", queues.queue_page),
    Route("/queues/{name}/{action}", queues.queue_action, methods=["POST"]),
    Route("/schedules", queues.schedules_page),
    Route("/schedules/{schedule_id}/{action}", queues.schedule_action, methods=["POST"]),
    # Flower's task API
    Route("/api/tasks", api.tasks),
    Route("/api/task/types", api.task_types),
    Route("/api/task/info/{task_id}", api.task_info),
    Route("/api/task/result/{task_id}", api.task_result),
    Route("/api/task/revoke/{task_id}", api.task_revoke, methods=["POST"]),
    Route("/api/queues/length", api.queue_lengths),
    Route("/api/task/async-apply/{taskname}", launch.async_apply, methods=["POST"]),
    Route("/api/task/send-task/{taskname}", launch.send_task, methods=["POST"]),
    Route("/api/task/apply/{taskname}", launch.apply, methods=["POST"]),
    # Flower's Prometheus metrics (and ours), counted from QStash's logs
    Route("/metrics", metrics_endpoint),
    # Not in Flower: the dead letter queue
    Route("/api/dlq", api.dlq_list),
    Route("/api/dlq/retry/{dlq_id}", api.dlq_retry, methods=["POST"]),
    Route("/api/dlq/delete/{dlq_id}", api.dlq_delete, methods=["POST"]),
]


def create_app(
    status: StatusSource,
    *,
    auth: tuple[str, str] | None = None,
    allowed_hosts: Sequence[str] | None = None,
    secrets: Iterable[str | None] = (),
    pages: int = 5,
    inbox_url: str | None = None,
    max_result_waits: int = api.MAX_RESULT_WAITS,
    clock: Clock | None = None,
    celery_app: Any = None,
    metrics_state: str | os.PathLike[str] | None = None,
    event_store: Any = None,
) -> Starlette:
    """The dashboard app.

    :param status: the query layer, or a callable building one per request.
    :param auth: ``(user, password)`` to require HTTP basic auth on everything.
    :param allowed_hosts: accepted ``Host`` names (``None``: any). :func:`serve`
        sets :data:`LOOPBACK_HOSTS` when it binds to loopback.
    :param secrets: values scrubbed from any upstream text a page shows
        (the QStash token and AutoSend key, typically).
    :param pages: how many pages of 1000 events a task list reads from QStash.
    :param inbox_url: the AutoSend sandbox's address, to link a task to its captured email
        (``celery-qstash dev`` sets it; ``None``: no link).
    :param max_result_waits: how many ``/api/task/result?timeout=`` requests may wait at
        once; past it a request answers the current state at once.
    :param event_store: where AutoSend's webhook events are kept
        (:mod:`celery_qstash.webhooks.store`): a task's page and ``/api/task/info`` then
        show what became of its email (``None``: only QStash's view).
    :param clock: what "now" is for relative times and the chart, and what result waits
        measure their timeout with (the system clock; a ``FakeClock`` in tests).
    :param celery_app: the app whose QStash tasks Flower's task-launching API may start
        (``None``: every task name is unknown there).
    :param metrics_state: a file where ``/metrics`` keeps its counts across restarts
        (``None``: they start at zero with each process, a counter reset to Prometheus).
    """
    if auth is not None and (not auth[0] or not auth[1]):
        raise ConfigurationError("auth", "basic auth needs a user name and a password")
    app = Starlette(routes=ROUTES)
    app.state.status = status
    app.state.secrets = tuple(s for s in secrets if s)
    app.state.pages = pages
    app.state.notices = Notices()  # what a page says after an action (no text in URLs)
    app.state.inbox_url = inbox_url.rstrip("/") if inbox_url else None
    app.state.clock = clock or SystemClock()
    app.state.event_store = event_store
    app.state.result_waits = api.ResultWaits(max_result_waits, app.state.clock)
    app.state.celery_app = celery_app
    app.state.metrics = Metrics(status, clock=app.state.clock, state_file=metrics_state)
    app.add_middleware(_Guard, auth=auth)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    # Added last, so it runs first: a foreign Host or origin is refused before anything else.
    app.add_middleware(SameSiteGuard, allowed_hosts=allowed_hosts)
    return app


def check_bind(host: str, auth: tuple[str, str] | None, allow_unauthenticated_public: bool) -> None:
    """Refuse to expose the dashboard beyond this machine without a password."""
    if auth is None and not allow_unauthenticated_public and not is_loopback(host):
        raise ConfigurationError(
            "host",
            f"refusing to serve the dashboard on {host} without authentication: anyone who "
            "can reach it could read task data and revoke tasks. Pass auth (--auth user:pass), "
            "bind to 127.0.0.1, or allow it explicitly (--allow-public).",
        )


def serve(
    host: str = "127.0.0.1",
    port: int = DASHBOARD_PORT,
    auth: tuple[str, str] | None = None,
    allow_unauthenticated_public: bool = False,
    *,
    status: StatusSource | None = None,
    conf: Any = None,
    inbox_url: str | None = None,
    celery_app: Any = None,
    metrics_state: str | os.PathLike[str] | None = None,
) -> None:
    """Run the dashboard until Ctrl-C (settings from ``conf``, a Celery ``app.conf``, and env;
    ``celery_app``'s conf when ``conf`` is not given)."""
    from ...config import load_settings
    from ...publish.transports.qstash import client_for
    from ...webhooks.store import configured_event_store
    from ..serving import run

    check_bind(host, auth, allow_unauthenticated_public)
    if conf is None and celery_app is not None:
        conf = celery_app.conf
    settings = load_settings(conf)
    if status is None:
        status = StatusClient(client_for(settings))  # ConfigurationError without a token
    app = create_app(
        status,
        auth=auth,
        allowed_hosts=local_hosts(host),
        secrets=settings.secrets,
        inbox_url=inbox_url,
        celery_app=celery_app,
        metrics_state=metrics_state,
        event_store=configured_event_store(conf),
    )
    shown = f"[{host}]" if ":" in host else host
    print(f"Dashboard is running at http://{shown}:{port} (QStash at {settings.qstash_url})",
          flush=True)
    run(app, host, port)
