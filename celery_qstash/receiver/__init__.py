"""The signed receiver for QStash callbacks: an email's outcome, back in the Celery app.

With QStash the task body runs at call time, so "after the email went out" can only
come from QStash's callbacks. Point ``qstash_callback_url`` at this receiver (every
publish then carries ``Upstash-Callback`` and ``Upstash-Failure-Callback``) and mount it:

    asgi_app(celery_app)                       # any ASGI server or framework
    wsgi_app(celery_app)                       # any WSGI server
    fastapi_route(app, "/qstash/callback", celery_app)    # FastAPI / Starlette
    flask_route(app, "/qstash/callback", celery_app)      # Flask
    path("qstash/callback/", include("celery_qstash.contrib.django.urls"))   # Django

On a delivery the task's ``on_success`` runs, Celery's ``task_success`` is sent, then
:data:`celery_qstash.signals.email_delivered`. When the retries are exhausted (the
failure callback), ``on_failure``, ``task_failure`` with :class:`DeliveryFailed` and
:data:`celery_qstash.signals.email_failed`. A failed attempt with retries left sends
``task_retry``. Handlers run with the task's request pushed (``self.request.id`` works);
``args``/``kwargs`` are empty: they were used up rendering the email and never reach QStash.

One core, thin adapters. :class:`CallbackReceiver` takes a plain :class:`ReceivedRequest`
(method, URL, headers, body) and returns a :class:`ReceiverResponse`; it imports no web
framework. Each request goes through four steps:

1. **verify**: ``Upstash-Signature`` with the SDK's ``qstash.Receiver`` (current and
   next signing keys, the URL the receiver is reached at, the body's hash). Anything
   else is a 401 and nothing runs.
2. **classify**: the verified request becomes a :class:`Delivery` of one *kind*.
3. **deduplicate**: on the callback's own ``Upstash-Message-Id`` (QStash delivers at
   least once) and on the signature's ``jti`` (the message id header is not signed, so
   a replayed request under a new id is caught by its token), within QStash's 10-minute
   deduplication window by default.
4. **dispatch**: the handler registered for that kind in :attr:`CallbackReceiver.handlers`.

Kinds today are ``"email.callback"`` (after each attempt) and ``"email.failure"``
(retries exhausted, message in the DLQ). The dispatch table is how the receiver grows
into running any Celery task's body at delivery time: a publish for an ordinary task
would send the Celery message (name, id, args, kwargs) to this receiver as the
*destination* with a kind header; :func:`classify` returns ``"task.run"`` for it, and a
handler registered under that kind runs the task's body through Celery's tracer
(``task.apply(args, kwargs, task_id=...)``), so signals, ``on_success`` and retries
(a non-2xx answer lets QStash retry) behave as on a worker. Verification and
deduplication already apply to every kind.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

import jwt
from billiard.einfo import ExceptionInfo  # type: ignore[import-untyped]
from celery.signals import task_failure, task_retry, task_success
from qstash import Receiver
from qstash.errors import SignatureError

from ..clock import Clock, SystemClock
from ..config import load_settings
from ..errors import ConfigurationError, DeliveryFailed
from ..publish.options import TASK_NAME_HEADER
from ..signals import email_delivered, email_failed

__all__ = [
    "DEDUP_WINDOW_SECONDS",
    "MAX_BODY_BYTES",
    "CallbackLedger",
    "CallbackReceiver",
    "Delivery",
    "MemoryLedger",
    "ReceivedRequest",
    "ReceiverResponse",
    "asgi_app",
    "classify",
    "fastapi_route",
    "flask_route",
    "wsgi_app",
]

log = logging.getLogger("celery_qstash.receiver")

#: QStash's documented deduplication window; a redelivered callback comes within it.
DEDUP_WINDOW_SECONDS = 600.0
#: A callback carries AutoSend's answer and the source body (QStash caps messages at 1 MB,
#: base64 grows that by a third); anything larger is not a QStash callback.
MAX_BODY_BYTES = 4 * 1024 * 1024

EMAIL_CALLBACK = "email.callback"
EMAIL_FAILURE = "email.failure"


@dataclass(frozen=True)
class ReceivedRequest:
    """What an adapter hands the core: header names are matched case-insensitively."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass(frozen=True)
class ReceiverResponse:
    status: int
    payload: dict[str, Any]

    @property
    def content(self) -> bytes:
        return json.dumps(self.payload).encode()

    @property
    def reason(self) -> str:
        return _REASONS.get(self.status, "OK")


_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 405: "Method Not Allowed",
    413: "Content Too Large", 503: "Service Unavailable",
}


@dataclass(frozen=True)
class Delivery:
    """A verified, decoded request of one kind."""

    kind: str
    message_id: str
    body: dict[str, Any]
    request: ReceivedRequest = field(repr=False)


class CallbackLedger(Protocol):
    """Remembers callback message ids; share one (Redis, a database) across processes."""

    def claim(self, key: str, now: float) -> bool:
        """True the first time ``key`` is seen within the window, False for a repeat."""


class MemoryLedger:
    """An in-process ledger: enough for one process; bounded by the window and a size cap."""

    def __init__(self, window: float = DEDUP_WINDOW_SECONDS, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, key: str, now: float) -> bool:
        with self._lock:
            while self._seen:
                oldest, at = next(iter(self._seen.items()))
                if at > now - self.window and len(self._seen) < self.max_entries:
                    break
                del self._seen[oldest]
            if key in self._seen:
                return False
            self._seen[key] = now
            return True


def classify(request: ReceivedRequest, body: Any) -> str | None:
    """The kind of a verified request, or None if it is nothing this receiver handles."""
    if not isinstance(body, dict) or "sourceMessageId" not in body or "status" not in body:
        return None
    # The failure callback is the only one that carries the DLQ id.
    return EMAIL_FAILURE if "dlqId" in body else EMAIL_CALLBACK


Handler = Callable[["CallbackReceiver", Delivery], ReceiverResponse]


class CallbackReceiver:
    """Verify, classify, deduplicate and dispatch one QStash request (framework-free).

    ``url``: the public URL QStash calls and signs for (default ``qstash_callback_url``,
    else the URL the request reached, whose host is whatever the client says: set one
    of the two in production). Signing
    keys default to ``qstash_current_signing_key`` / ``qstash_next_signing_key``.
    """

    def __init__(
        self,
        celery_app: Any,
        *,
        url: str | None = None,
        current_signing_key: str | None = None,
        next_signing_key: str | None = None,
        ledger: CallbackLedger | None = None,
        clock: Clock | None = None,
        clock_tolerance: int = 0,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = celery_app
        self.url = url
        self._keys = (current_signing_key, next_signing_key)
        self.ledger: CallbackLedger = ledger or MemoryLedger()
        self.clock: Clock = clock or SystemClock()
        self.clock_tolerance = clock_tolerance
        self.max_body = max_body
        self.handlers: dict[str, Handler] = {
            EMAIL_CALLBACK: _email_callback,
            EMAIL_FAILURE: _email_failure,
        }

    # -- the four steps -----------------------------------------------------------

    def handle(self, request: ReceivedRequest) -> ReceiverResponse:
        if request.method.upper() != "POST":
            return ReceiverResponse(405, {"error": "QStash callbacks are POST requests"})
        if len(request.body) > self.max_body:
            return ReceiverResponse(413, {"error": f"body over {self.max_body} bytes"})
        try:
            keys, url = self._config(request)
        except ConfigurationError as exc:
            log.error("QStash callback refused: %s", exc)
            return ReceiverResponse(503, {"error": "receiver is not configured"})
        token_id = self._verified(request, keys, url)
        if token_id is None:
            return ReceiverResponse(401, {"error": "invalid or missing Upstash-Signature"})
        try:
            body = json.loads(request.body)
        except ValueError:
            return ReceiverResponse(400, {"error": "body is not JSON"})
        kind = classify(request, body)
        if kind is None or kind not in self.handlers:
            return ReceiverResponse(400, {"error": "not a QStash callback this receiver knows"})
        message_id = request.header("Upstash-Message-Id")
        if not message_id:
            return ReceiverResponse(400, {"error": "missing Upstash-Message-Id"})
        # Upstash-Message-Id is not signed: a captured request replayed under a fresh id
        # is caught by its token's own id (each delivery attempt is signed anew).
        now = self.clock.now()
        if not self.ledger.claim(token_id, now) or not self.ledger.claim(message_id, now):
            return ReceiverResponse(200, {"outcome": "duplicate", "messageId": message_id})
        return self.handlers[kind](self, Delivery(kind, message_id, body, request))

    def _config(self, request: ReceivedRequest) -> tuple[tuple[str, str], str]:
        """Signing keys and the URL signatures must name (settings are read per request)."""
        current, nxt = self._keys
        url = self.url
        if current is None or nxt is None or url is None:
            settings = load_settings(self.app.conf)
            current = current or settings.current_signing_key
            nxt = nxt or settings.next_signing_key or current
            # The Host header is the client's to choose: a configured URL is authoritative,
            # the URL the request reached is only trusted when nothing is configured.
            url = url or settings.callback_url or request.url
        if not current or not nxt:
            raise ConfigurationError(
                "qstash_current_signing_key",
                "no signing keys: set qstash_current_signing_key and qstash_next_signing_key "
                "(QSTASH_CURRENT_SIGNING_KEY / QSTASH_NEXT_SIGNING_KEY)",
            )
        return (current, nxt), url

    def _verified(
        self, request: ReceivedRequest, keys: tuple[str, str], url: str
    ) -> str | None:
        """The verified token's ledger key (its ``jti``), or None if it does not verify."""
        signature = request.header("Upstash-Signature")
        if not signature:
            return None
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return None
        try:
            Receiver(*keys).verify(
                signature=signature, body=text, url=url, clock_tolerance=self.clock_tolerance
            )
        except SignatureError as exc:
            # The SDK's reason names URLs and hashes, never a key: fine for an info log.
            log.info("QStash callback refused: %s", exc)
            return None
        # Verified just above, so reading its claims without the key is safe.
        claims = jwt.decode(signature, options={"verify_signature": False})
        return "jwt:" + str(claims.get("jti") or claims.get("body"))

    # -- shared by the email handlers ----------------------------------------------

    def find_task(self, name: str | None) -> Any:
        if not name:
            return None
        return self.app.tasks.get(name)


def _source_header(body: Mapping[str, Any], name: str) -> str | None:
    """A header of the source message, as QStash's callback body reports it."""
    headers = body.get("sourceHeader")
    if not isinstance(headers, Mapping):
        return None
    for wanted in (name.lower(), f"upstash-forward-{name.lower()}"):
        for key, value in headers.items():
            if str(key).lower() == wanted:
                if isinstance(value, list):
                    value = value[0] if value else None
                return unquote(str(value)) if value is not None else None
    return None


def _decoded_response(body: Mapping[str, Any]) -> Any:
    """AutoSend's answer: the callback carries it base64-encoded."""
    raw = body.get("body")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        data = base64.b64decode(raw, validate=False)
    except (binascii.Error, ValueError):
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


def _error_text(response: Any) -> str:
    if isinstance(response, Mapping):
        error = response.get("error")
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        if response.get("message"):
            return str(response["message"])
    if isinstance(response, str):
        return response[:500]
    return ""


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class _Outcome:
    task: Any  # None: no task of this app sent it (the Django email backend's messages)
    name: str
    task_id: str
    status: int
    response: Any
    retried: int
    max_retries: int
    source_message_id: str | None

    @property
    def sender(self) -> Any:
        return self.task if self.task is not None else self.name


def _outcome(receiver: CallbackReceiver, delivery: Delivery) -> _Outcome | ReceiverResponse:
    body = delivery.body
    # A scheduled message (celery-qstash beat sync) has no fixed task id: each run is
    # known by its QStash message id, as the status pages know it.
    task_id = _source_header(body, "Idempotency-Key") or body.get("sourceMessageId")
    name = _source_header(body, TASK_NAME_HEADER) or _source_header(body, "X-Celery-Task")
    if not task_id or not name:
        # Answer 200: QStash would otherwise retry a callback no deploy of this app can use.
        log.warning(
            "QStash callback for message %s ignored: it names no celery-qstash task",
            body.get("sourceMessageId"),
        )
        return ReceiverResponse(
            200, {"outcome": "ignored", "reason": "not a celery-qstash message"}
        )
    task = receiver.find_task(name)
    if task is None:
        # The Django email backend's messages, or a task this deploy does not have: no
        # on_success or Celery signal to run, but email_delivered / email_failed still go.
        log.info("QStash callback for %r (id %s): no such task in this app; only "
                 "email_delivered/email_failed are sent", name, task_id)
    return _Outcome(
        task=task,
        name=name,
        task_id=task_id,
        status=_int(body.get("status")),
        response=_decoded_response(body),
        retried=_int(body.get("retried")),
        max_retries=_int(body.get("maxRetries")),
        source_message_id=str(body["sourceMessageId"]) if body.get("sourceMessageId") else None,
    )


@contextmanager
def _task_request(out: _Outcome) -> Iterator[None]:
    """Handlers see ``task.request`` as on a worker (id, retries)."""
    if out.task is None:
        yield
        return
    out.task.push_request(
        id=out.task_id, args=[], kwargs={}, retries=out.retried, is_eager=False,
        called_directly=False, hostname="qstash", delivery_info={
            "qstash_message_id": out.source_message_id,
        },
    )
    try:
        yield
    finally:
        out.task.pop_request()


def _guarded(what: str, fn: Callable[[], Any]) -> None:
    """A handler that raises is logged, as a worker logs it; the other handlers still run."""
    try:
        fn()
    except Exception:
        log.exception("%s raised", what)


def _failure_info(exc: DeliveryFailed) -> ExceptionInfo:
    try:
        raise exc
    except DeliveryFailed:
        return ExceptionInfo()


def _email_callback(receiver: CallbackReceiver, delivery: Delivery) -> ReceiverResponse:
    out = _outcome(receiver, delivery)
    if isinstance(out, ReceiverResponse):
        return out
    if 200 <= out.status < 300:
        data = out.response.get("data") if isinstance(out.response, Mapping) else None
        retval = data if isinstance(data, dict) else out.response
        details = retval if isinstance(retval, Mapping) else {}
        with _task_request(out):
            if out.task is not None:
                _guarded(f"{out.name}.on_success",
                         lambda: out.task.on_success(retval, out.task_id, (), {}))
                task_success.send(sender=out.task, result=retval)
            email_delivered.send(
                sender=out.sender, task_id=out.task_id, email_id=details.get("emailId"),
                batch_id=details.get("batchId"), response=retval,
                message_id=out.source_message_id,
            )
        return ReceiverResponse(200, {"outcome": "delivered", "taskId": out.task_id})
    headers = delivery.body.get("header")
    final = out.retried >= out.max_retries or _non_retryable(headers)
    if final:
        # The failure callback reports the end; this one only says the last attempt failed.
        return ReceiverResponse(200, {"outcome": "final attempt failed", "taskId": out.task_id})
    if out.task is None:
        return ReceiverResponse(200, {"outcome": "retry", "taskId": out.task_id})
    exc = DeliveryFailed(out.status or None, _error_text(out.response))
    einfo = _failure_info(exc)
    with _task_request(out):
        _guarded(f"{out.name}.on_retry",
                 lambda: out.task.on_retry(exc, out.task_id, (), {}, einfo))
        task_retry.send(sender=out.task, request=out.task.request, reason=exc, einfo=einfo)
    return ReceiverResponse(200, {"outcome": "retry", "taskId": out.task_id})


def _non_retryable(headers: Any) -> bool:
    if not isinstance(headers, Mapping):
        return False
    for key, value in headers.items():
        if str(key).lower() == "upstash-nonretryable-error":
            values = value if isinstance(value, list) else [value]
            return any(str(v).lower() == "true" for v in values)
    return False


def _email_failure(receiver: CallbackReceiver, delivery: Delivery) -> ReceiverResponse:
    out = _outcome(receiver, delivery)
    if isinstance(out, ReceiverResponse):
        return out
    message = _error_text(out.response) or str(delivery.body.get("error") or "")
    exc = DeliveryFailed(out.status or None, message)
    einfo = _failure_info(exc)
    dlq_id = delivery.body.get("dlqId")
    with _task_request(out):
        if out.task is not None:
            _guarded(f"{out.name}.on_failure",
                     lambda: out.task.on_failure(exc, out.task_id, (), {}, einfo))
            task_failure.send(
                sender=out.task, task_id=out.task_id, exception=exc, args=(), kwargs={},
                traceback=einfo.tb, einfo=einfo,
            )
        email_failed.send(
            sender=out.sender, task_id=out.task_id, exception=exc, status=exc.status,
            message=message, dlq_id=dlq_id, message_id=out.source_message_id,
        )
    return ReceiverResponse(200, {"outcome": "failed", "taskId": out.task_id})


# -- adapters -----------------------------------------------------------------------


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
    """The receiver as an ASGI app (a class, so Starlette/FastAPI routes take it as is)."""

    def __init__(self, receiver: CallbackReceiver) -> None:
        self.receiver = receiver

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
            "headers": [(b"content-type", b"application/json")],
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
        return await asyncio.to_thread(self.receiver.handle, request)


def asgi_app(celery_app: Any, **options: Any) -> ReceiverASGI:
    """The receiver as an ASGI app; ``options`` go to :class:`CallbackReceiver`."""
    return ReceiverASGI(CallbackReceiver(celery_app, **options))


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


def wsgi_app(celery_app: Any, **options: Any) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """The receiver as a WSGI app; ``options`` go to :class:`CallbackReceiver`."""
    receiver = CallbackReceiver(celery_app, **options)

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
            [("Content-Type", "application/json"), ("Content-Length", str(len(content)))],
        )
        return [content]

    return app


def fastapi_route(
    app: Any, path: str, celery_app: Any, **options: Any
) -> ReceiverASGI:
    """Add a POST route at ``path`` to a FastAPI (or Starlette) app or router."""
    endpoint = asgi_app(celery_app, **options)
    app.add_route(path, endpoint, methods=["POST"], include_in_schema=False)
    return endpoint


def flask_route(
    app: Any, path: str, celery_app: Any, *, endpoint: str = "celery_qstash_callback",
    **options: Any,
) -> CallbackReceiver:
    """Add a POST view at ``path`` to a Flask app or blueprint."""
    receiver = CallbackReceiver(celery_app, **options)

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
                        content_type="application/json")

    app.add_url_rule(path, endpoint=endpoint, view_func=view, methods=["POST"])
    return receiver
