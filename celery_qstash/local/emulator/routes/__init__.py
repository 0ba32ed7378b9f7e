"""The emulator's HTTP routes, one module per resource (QStash REST API v2, as the
official SDKs call it), plus the ``/_emulator`` control plane.

Handlers are thin: authenticate, parse (``api.py``), call the store or the loop,
return JSON (``wire.py`` shapes it).

The app is guarded like the other local servers (:mod:`celery_qstash.local.serving`):
a ``Host`` outside the allow-list is a 421, a state-changing request from another
origin a 403, a body over the limit a 413 before it is read whole, and every
JSON body goes through the one parser that turns any failure into a 400.
The v2 API takes the token as ``Authorization: Bearer`` or as QStash's documented
``?qstash_token=`` (https://upstash.com/docs/qstash/api/authentication); the
control plane's writes (reset, clock) take it only in the header, which a page
on another origin cannot set without a CORS preflight this server never grants.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio.to_thread
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.types import Scope

from celery_qstash.clock import FakeClock
from celery_qstash.local.serving import BodyLimit, SameSiteGuard

from ..api import Api, Handler, Route, _error
from ..errors import ApiError, BadRequest
from ..plans import QuotaExceeded
from . import dlq, flow, keys, logs, messages, publish, queues, schedules, topics

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from .. import Emulator

__all__ = ["build_app"]

class _AnyPath(Convertor[str]):
    """Starlette's ``path`` that also matches a newline: a destination with an encoded
    ``%0A`` (decoded into the routed path) is still a publish (OAS POST
    /v2/publish/{destination}) and gets the publish's own answer, not the router's bare
    404 (or, for ``POST /v2/schedules/...``, a 405 from the ``{id}`` routes)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("qstash_path", _AnyPath())

#: Order matters where paths overlap (``/v2/dlq/retry`` before ``/v2/dlq/{id}``).
QSTASH_ROUTES: list[Route] = [
    *publish.ROUTES, *messages.ROUTES, *logs.ROUTES, *dlq.ROUTES, *queues.ROUTES,
    *topics.ROUTES, *keys.ROUTES, *flow.ROUTES, *schedules.ROUTES,
]


#: A batch request may carry this many messages' worth of bytes (each message is
#: still held to the message limit). QStash documents no batch limit of its own.
BATCH_BODY_FACTOR = 10
#: ``/_emulator/clock/advance`` moves a fake clock at most this far at once (ten years).
MAX_ADVANCE_SECONDS = 10 * 365 * 86400


# -- control plane (reads and ticks open; reset and clock need the token) --------

async def reset(api: Api, request: Request) -> Response:
    api.user(request, header_only=True)
    api.emulator.reset()
    return JSONResponse({"reset": True})


async def health(api: Api, request: Request) -> Response:
    return JSONResponse({"status": "ok", "pending": api.store.messages.pending_count()})


async def tick(api: Api, request: Request) -> Response:
    # A tick makes HTTP calls (possibly back to this server): keep the event loop free.
    attempts = await anyio.to_thread.run_sync(api.emulator.tick)
    return JSONResponse({"attempts": attempts})


async def advance(api: Api, request: Request) -> Response:
    api.user(request, header_only=True)
    clock = api.emulator.clock
    if not isinstance(clock, FakeClock):
        raise BadRequest("the emulator runs on the system clock; nothing to advance")
    try:
        seconds = float(request.query_params.get("seconds", "0"))
    except ValueError:
        raise BadRequest("seconds must be a number") from None
    if not 0 <= seconds <= MAX_ADVANCE_SECONDS:  # also refuses nan and inf
        raise BadRequest(f"seconds must be between 0 and {MAX_ADVANCE_SECONDS}")
    now = clock.advance(seconds)
    api.emulator.loop.wake()
    return JSONResponse({"now": now})

#: QStash's docs (api/api-ratelimiting): no per-second limit on publishing endpoints.
_PUBLISHING = ("/v2/publish", "/v2/enqueue", "/v2/batch")


def _authed(api: Api, handler: Handler,
            path: str) -> Callable[[Request], Awaitable[Response]]:
    burst_limited = not path.startswith(_PUBLISHING)

    async def endpoint(request: Request) -> Response:
        try:
            user = api.user(request)
            quotas = api.emulator.quotas
            if quotas is not None and burst_limited:
                quotas.check_burst(user, api.emulator.clock.now())
            return await handler(api, request, user)
        except QuotaExceeded as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status,
                                headers=exc.headers)
        except ApiError as exc:
            return _error(exc.status, exc.message)

    return endpoint


def _plain(api: Api, handler: Callable[[Api, Request], Awaitable[Response]]
           ) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(api, request)
        except ApiError as exc:
            return _error(exc.status, exc.message)

    return endpoint


def build_app(emulator: Emulator,
              lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None
              ) -> Starlette:
    """The Starlette app: QStash v2 routes (order matters where paths overlap)."""
    api = Api(emulator)
    routes = [StarletteRoute(path, _authed(api, handler, path), methods=methods)
              for path, methods, handler in QSTASH_ROUTES]
    routes += [
        StarletteRoute("/_emulator/reset", _plain(api, reset), methods=["POST"]),
        StarletteRoute("/_emulator/health", _plain(api, health), methods=["GET"]),
        StarletteRoute("/_emulator/tick", _plain(api, tick), methods=["POST"]),
        StarletteRoute("/_emulator/clock/advance", _plain(api, advance), methods=["POST"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    def body_limit(scope: Scope) -> int:
        if scope.get("path") == "/v2/batch":
            return emulator.max_body * BATCH_BODY_FACTOR
        return emulator.max_body

    def too_large(limit: int) -> Response:
        return _error(413, f"request body is larger than the {limit}-byte limit")

    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error},
        middleware=[
            # Outermost first: a foreign Host or origin is refused before the body is read.
            Middleware(SameSiteGuard, allowed_hosts=emulator.allowed_hosts),
            Middleware(BodyLimit, limit=body_limit, too_large=too_large),
        ],
    )
    app.state.emulator = emulator
    return app

