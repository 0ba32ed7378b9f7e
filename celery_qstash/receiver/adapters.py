"""Thin adapters: the receiver as an ASGI app, a WSGI app, a FastAPI or a Flask route.

The plumbing takes anything that :class:`Handles` plain requests, so AutoSend's webhook
endpoint (:mod:`celery_qstash.webhooks`) is mounted by the same code.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from .core import CallbackReceiver
from .request import ReceivedRequest, ReceiverResponse

log = logging.getLogger("celery_qstash.receiver")

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


class Handles(Protocol):
    """What the adapters serve: a framework-free handler of plain requests."""

    @property
    def max_body(self) -> int: ...

    def handle(self, request: ReceivedRequest) -> ReceiverResponse: ...


def _scope_url(scope: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    scheme = scope.get("scheme", "http")
    host = headers.get("host")
    if not host:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] in (None, 80, 443) else f"{server[0]}:{server[1]}"
    # ASGI servers disagree on whether ``path`` already includes ``root_path``.
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    if root and not path.startswith(root):
        path = root + path
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


class ReceiverASGI:
    """A handler as an ASGI app (a class, so Starlette/FastAPI routes take it as is).

    Each request is handled in a thread (bodies and signal handlers are blocking code):
    asyncio's default pool, or with ``concurrency=N`` a pool of its own that runs at most
    N at once, as ``celery worker -c N`` runs at most N bodies (more wait their turn).
    """

    def __init__(self, receiver: Handles, *, concurrency: int | None = None) -> None:
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.receiver = receiver
        self.concurrency = concurrency
        self._pool = (ThreadPoolExecutor(concurrency, thread_name_prefix="qstash-receiver")
                      if concurrency is not None else None)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        response = await self._respond(scope, receive, headers)
        await send({
            "type": "http.response.start",
            "status": response.status,
            "headers": [(b"content-type", b"application/json"),
                        *((k.encode("latin-1"), v.encode("latin-1"))
                          for k, v in response.headers.items())],
        })
        await send({"type": "http.response.body", "body": response.content})

    async def _respond(
        self, scope: dict[str, Any], receive: Any, headers: dict[str, str]
    ) -> ReceiverResponse:
        limit = self.receiver.max_body
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return ReceiverResponse(413, {"error": f"body over {limit} bytes"})
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return ReceiverResponse(400, {"error": "client disconnected"})
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return ReceiverResponse(413, {"error": f"body over {limit} bytes"})
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        request = ReceivedRequest(
            scope["method"], _scope_url(scope, headers), headers, b"".join(chunks)
        )
        # Signal handlers are ordinary blocking code (ORMs, HTTP calls): off the event loop.
        if self._pool is None:
            return await asyncio.to_thread(self.receiver.handle, request)
        # As asyncio.to_thread does: the body sees the caller's context variables.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, context.run, self.receiver.handle, request)


def asgi_app(celery_app: Any, *, concurrency: int | None = None,
             **options: Any) -> ReceiverASGI:
    """The receiver as an ASGI app, running at most ``concurrency`` deliveries at once
    (see :class:`ReceiverASGI`); ``options`` go to :class:`CallbackReceiver`."""
    return ReceiverASGI(CallbackReceiver(celery_app, **options), concurrency=concurrency)


def _wsgi_url(environ: Mapping[str, Any]) -> str:
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME", "localhost")
        port = environ.get("SERVER_PORT")
        if port and (scheme, port) not in (("http", "80"), ("https", "443")):
            host = f"{host}:{port}"
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def wsgi_app(celery_app: Any, **options: Any) -> WSGIApp:
    """The receiver as a WSGI app; ``options`` go to :class:`CallbackReceiver`."""
    return wsgi_adapter(CallbackReceiver(celery_app, **options))


def wsgi_adapter(receiver: Handles) -> WSGIApp:
    """A handler as a WSGI app."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items() if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        length_text = environ.get("CONTENT_LENGTH") or "0"
        length = int(length_text) if length_text.isdigit() else -1
        if length < 0:
            response = ReceiverResponse(400, {"error": "invalid Content-Length"})
        elif length > receiver.max_body:
            response = ReceiverResponse(413, {"error": f"body over {receiver.max_body} bytes"})
        else:
            body = environ["wsgi.input"].read(length) if length else b""
            request = ReceivedRequest(
                environ.get("REQUEST_METHOD", "GET"), _wsgi_url(environ), headers, body
            )
            response = receiver.handle(request)
        content = response.content
        start_response(
            f"{response.status} {response.reason}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(content))),
             *response.headers.items()],
        )
        return [content]

    return app


def fastapi_route(
    app: Any, path: str, celery_app: Any, **options: Any
) -> ReceiverASGI:
    """Add a POST route at ``path`` to a FastAPI (or Starlette) app or router."""
    return add_asgi_route(app, path, asgi_app(celery_app, **options))


def add_asgi_route(app: Any, path: str, endpoint: ReceiverASGI) -> ReceiverASGI:
    """Add ``endpoint`` as a POST route to a FastAPI (or Starlette) app or router."""
    app.add_route(path, endpoint, methods=["POST"], include_in_schema=False)
    return endpoint


def flask_route(
    app: Any, path: str, celery_app: Any, *, endpoint: str = "celery_qstash_callback",
    **options: Any,
) -> CallbackReceiver:
    """Add a POST view at ``path`` to a Flask app or blueprint."""
    receiver = CallbackReceiver(celery_app, **options)
    add_flask_route(app, path, receiver, endpoint=endpoint)
    return receiver


def add_flask_route(app: Any, path: str, receiver: Handles, *, endpoint: str) -> None:
    """Add ``receiver`` as a POST view at ``path`` to a Flask app or blueprint."""

    def view() -> Any:
        from flask import Response, request

        limit = receiver.max_body
        too_large = ReceiverResponse(413, {"error": f"body over {limit} bytes"})
        if request.content_length is not None and request.content_length > limit:
            response = too_large
        else:
            # Never more than the limit in memory, even chunked (no Content-Length).
            body = request.stream.read(limit + 1)
            response = too_large if len(body) > limit else receiver.handle(ReceivedRequest(
                request.method, request.url, dict(request.headers), body,
            ))
        return Response(response.content, status=response.status,
                        content_type="application/json", headers=dict(response.headers))

    app.add_url_rule(path, endpoint=endpoint, view_func=view, methods=["POST"])
