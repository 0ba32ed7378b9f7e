"""Publish through the official ``qstash`` SDK.

One SDK client per (token, URL) per process, created on first use, so settings
that change between tests take effect and connections are reused otherwise.
The SDK's own retry is off: Celery's ``retry``/``retry_policy`` drive ours, which
retries only network errors and 5xx.

**One wall-clock deadline** (``qstash_publish_timeout``, 2 s by default) covers the
whole call. httpx's timeouts are per network operation, so a server that trickles
its answer a byte at a time could hold a request for ever; here every socket
operation (connect, each send, each read, TLS) gets at most what is left of the
deadline, so the sum cannot pass it. No thread is started for this.

**An unambiguous outcome.** Every attempt carries the same deduplication id (the
task id). When an attempt may have reached QStash but its answer was lost (a read
timeout, a dropped connection, a 5xx), a retry that QStash answers as a duplicate
means the first attempt was stored: the call succeeds. When no attempt gives a
definite answer, :class:`PublishError` has ``outcome_unknown=True`` and says that
calling again with the same ``task_id`` is safe (it will not send twice).

**Only QStash's answers count.** A 2xx without ``{"messageId": ...}``, or a 4xx
without QStash's ``{"error": ...}`` (an HTML page, another service's 404), is a
:class:`PublishError` saying the server at ``qstash_url`` does not look like QStash.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import ipaddress
import json
import re
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx
from qstash import QStash
from qstash.errors import QStashError, RateLimitExceededError

from ...clock import Clock, SystemClock
from ...config import Settings
from ...errors import PublishError, scrub
from ..request import PublishRequest
from .base import PublishResult

__all__ = ["DEFAULT_RETRY_POLICY", "QStashTransport", "client_for", "get_transport"]

#: Celery's own default ``task_publish_retry_policy`` (celery/app/defaults.py).
DEFAULT_RETRY_POLICY: dict[str, Any] = {
    "max_retries": 3,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 1,
}

_STATUS = re.compile(r"Request failed with status: (\d+), body: (.*)", re.S)

#: Network errors after which QStash certainly did not store the message: the
#: request never reached it.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


_NOT_A_PUBLISH_ANSWER = 'a success status but not QStash\'s {"messageId": ...}'


class NotQStash(Exception):
    """An answer that is not QStash's shape (a publish's ``{"messageId"}``, a batch's list)."""

    def __init__(self, status: int | None, snippet: str) -> None:
        self.status = status
        self.snippet = snippet
        super().__init__(status, snippet)


class _DeadlinePassed(httpx.ReadTimeout):
    """The publish call's wall-clock deadline passed while a request was under way."""


def _upstream_error(exc: QStashError) -> tuple[int | None, str]:
    """The HTTP status and QStash's ``{"error": ...}`` text out of an SDK exception."""
    if isinstance(exc, RateLimitExceededError) or type(exc).__name__.endswith("LimitExceededError"):
        return 429, str(exc)
    match = _STATUS.match(str(exc))
    if not match:
        return None, str(exc)
    status, body = int(match.group(1)), match.group(2)
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            body = parsed["error"]
    except ValueError:
        pass
    return status, body


def shown_url(url: str) -> str:
    """``url`` fit for an error message: no userinfo, query or fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal_hint(status: int | None) -> str:
    """What to check when QStash refuses the credentials: the setting, by both names."""
    if status in (401, 403):
        return (". QStash refused the token: check qstash_token / QSTASH_TOKEN "
                "(with `celery-qstash dev`, QSTASH_DEV=true sets the dev token)")
    return ""


def no_answer_hint(url: str) -> str:
    """What to say when nothing answers at QStash's ``url`` (a publish or a status read)."""
    shown = shown_url(url)
    if is_loopback(url):
        return (f"Nothing answers at {shown}: is `celery-qstash dev` running? "
                "(QSTASH_DEV=true points the shim at it)")
    return f"Nothing answers at {shown}: check qstash_url / QSTASH_URL"


class QStashTransport:
    """Send each request as one QStash message (publish, or enqueue for a queue)."""

    def __init__(
        self,
        client: QStash,
        *,
        timeout: float = 2.0,
        clock: Clock | None = None,
        secrets: tuple[str | None, ...] = (),
        url: str | None = None,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.clock = clock or SystemClock()
        self._secrets = secrets
        self.url = shown_url(url or str(getattr(client.http, "_base_url", "")))

    def publish(
        self,
        request: PublishRequest,
        *,
        retry: bool = True,
        retry_policy: dict[str, Any] | None = None,
    ) -> PublishResult:
        attempts = Attempts(self.clock, self.timeout, retry, retry_policy)
        token = _deadline.set((attempts.deadline, self.clock))
        try:
            while True:
                try:
                    return self._publish_once(request)
                except (httpx.HTTPError, QStashError, NotQStash) as exc:
                    failure = classify(exc)
                    if failure is None:
                        raise
                wait = attempts.failed(failure)
                if wait is None:
                    break
                self.clock.sleep(wait)
        finally:
            _deadline.reset(token)
        # Raised outside the except blocks, so the SDK's exception (whose text may
        # hold what QStash echoed back) is not kept as __context__.
        if failure.not_qstash:
            raise self._not_qstash(request, failure.status, failure.text)
        raise self._error(
            request, failure.status, failure.text, attempts.made,
            outcome_unknown=attempts.maybe_stored,
        )

    def _error(
        self,
        request: PublishRequest,
        status: int | None,
        text: str,
        attempts: int,
        *,
        outcome_unknown: bool = False,
    ) -> PublishError:
        # Scrub the whole text before shortening it: a cut could split a secret.
        text = scrub(text, (*self._secrets, request.authorization))[:500]
        where = f"HTTP {status}" if status is not None else f"network error talking to {self.url}"
        message = f"{where} after {attempts} attempt(s): {text}"
        if outcome_unknown:
            message = (
                f"QStash may or may not have stored task {request.task_id} ({message}). "
                f"Calling again with the same task_id ({request.task_id}) is safe: QStash "
                "deduplicates on it and AutoSend on its Idempotency-Key, so it will not "
                "send twice"
            )
        else:
            message = f"QStash did not accept task {request.task_id} ({message})"
        message += refusal_hint(status)
        if status is None and not outcome_unknown and is_loopback(self.url):
            message += ". " + no_answer_hint(self.url)
        return PublishError(
            message,
            status=status,
            error=text,
            task_id=request.task_id,
            outcome_unknown=outcome_unknown,
        )

    def _not_qstash(
        self, request: PublishRequest, status: int | None, snippet: str
    ) -> PublishError:
        snippet = scrub(snippet, (*self._secrets, request.authorization))[:200]
        shown = repr(snippet[:120]) if snippet else "an empty body"
        answer = snippet if status is None else f"HTTP {status} with {shown}"
        hint = (
            " (is `celery-qstash dev` running on that port? QSTASH_DEV=true points the shim at it)"
            if is_loopback(self.url)
            else ""
        )
        return PublishError(
            f"QStash did not accept task {request.task_id}: the server at {self.url} does not "
            f"look like QStash (it answered {answer}); "
            f"check qstash_url / QSTASH_URL{hint}",
            status=status,
            error=snippet,
            task_id=request.task_id,
        )

    def _publish_once(self, request: PublishRequest) -> PublishResult:
        common, extra = sdk_arguments(request)
        try:
            if request.queue:
                res: Any = self.client.message.enqueue(queue=request.queue, **common)
            else:
                res = self.client.message.publish(**extra, **common)
        # The SDK parses any 2xx as JSON: an answer that is not QStash's fails there
        # (not JSON, ``{}``, a list, a string...).
        except (ValueError, KeyError, TypeError, AttributeError):
            raise NotQStash(None, _NOT_A_PUBLISH_ANSWER) from None
        return publish_result(res)


def sdk_arguments(request: PublishRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """The SDK's ``enqueue`` arguments, and what ``publish`` takes on top.

    What ``publish_json``/``enqueue_json`` would send, with the body serialised once (the
    size check already did it): ``json.dumps(body)`` as ``application/json``.
    """
    common: dict[str, Any] = {
        "url": request.url,
        "body": request.body_text,
        "content_type": "application/json",
        "headers": request.sent_headers,
        "retries": request.retries,
        "retry_delay": request.retry_delay,
        "callback": request.callback,
        "failure_callback": request.failure_callback,
        "deduplication_id": request.deduplication_id,
        "timeout": request.timeout,
        "label": request.label,
    }
    if request.redact_headers:
        common["redact"] = {"header": list(request.redact_headers)}
    extra: dict[str, Any] = {
        "delay": request.delay,
        "not_before": request.not_before,
        "flow_control": request.flow_control.as_sdk() if request.flow_control else None,
    }
    return common, extra


def publish_result(res: Any) -> PublishResult:
    """The SDK's publish answer, checked to be QStash's ``{"messageId": ...}``."""
    try:
        message_id, deduplicated = res.message_id, res.deduplicated
    except AttributeError:
        raise NotQStash(None, _NOT_A_PUBLISH_ANSWER) from None
    if not isinstance(message_id, str) or not message_id:
        raise NotQStash(None, "a success status but no messageId")
    return PublishResult(message_id=message_id, deduplicated=bool(deduplicated))


def _is_qstash_error(exc: QStashError) -> bool:
    """QStash answers an error with ``{"error": "..."}`` (429s are named by the SDK)."""
    if isinstance(exc, RateLimitExceededError) or type(exc).__name__.endswith("LimitExceededError"):
        return True
    match = _STATUS.match(str(exc))
    if not match:
        return True
    try:
        parsed = json.loads(match.group(2))
    except ValueError:
        return False
    return isinstance(parsed, dict) and isinstance(parsed.get("error"), str)


def _snippet(exc: QStashError) -> str:
    match = _STATUS.match(str(exc))
    return " ".join((match.group(2) if match else "").split())


def _describe(exc: httpx.TransportError) -> str:
    if isinstance(exc, _DeadlinePassed):
        return "the publish deadline (qstash_publish_timeout) passed before QStash answered"
    return type(exc).__name__


class Attempts:
    """Celery's publish retry schedule under one deadline (shared by sync and async).

    ``failed()`` records a failed attempt (and whether any attempt may have reached
    QStash without its answer being read) and says how long to wait before the next,
    or ``None`` when there is no next: not retryable, retries used up, or no time
    left for another attempt to finish.
    """

    def __init__(
        self, clock: Clock, timeout: float, retry: bool, retry_policy: dict[str, Any] | None
    ) -> None:
        self.policy = {**DEFAULT_RETRY_POLICY, **(retry_policy or {})}
        limit = self.policy["max_retries"]
        # Celery's max_retries=None means "forever": here, until the time budget is spent.
        self.retries = (None if limit is None else int(limit)) if retry else 0
        self.clock = clock
        self.deadline = clock.now() + timeout
        self.attempt = 0
        self.maybe_stored = False

    def failed(self, failure: Failure) -> float | None:
        # Did an attempt possibly reach QStash without us reading its answer?
        self.maybe_stored = self.maybe_stored or failure.maybe_stored
        retryable = failure.retryable
        policy = self.policy
        interval = min(
            float(policy["interval_start"]) + self.attempt * float(policy["interval_step"]),
            float(policy["interval_max"]),
        )
        room = self.deadline - self.clock.now() - interval
        if not retryable or (self.retries is not None and self.attempt >= self.retries):
            return None
        if room < 0.1:  # only start another attempt if it still has time to finish
            return None
        self.attempt += 1
        return interval

    @property
    def made(self) -> int:
        return self.attempt + 1


@dataclass
class Failure:
    """What one failed request says, as the single-publish transport reads it."""

    status: int | None
    text: str
    retryable: bool
    #: The request may have reached QStash (its answer was lost, or a 5xx).
    maybe_stored: bool = False
    #: The server at qstash_url does not answer like QStash.
    not_qstash: bool = False


def classify(exc: BaseException) -> Failure | None:
    """The :class:`Failure` a publish request ended with, or ``None`` if it is not one."""
    if isinstance(exc, NotQStash):
        return Failure(exc.status, exc.snippet, False, not_qstash=True)
    if isinstance(exc, httpx.LocalProtocolError):  # our request is malformed: no retry
        return Failure(None, type(exc).__name__, False)
    if isinstance(exc, httpx.TransportError):
        return Failure(None, _describe(exc), True, maybe_stored=not isinstance(exc, _NOT_SENT))
    if isinstance(exc, asyncio.TimeoutError):  # the async deadline passed mid-request
        text = "the publish deadline (qstash_publish_timeout) passed before QStash answered"
        return Failure(None, text, True, maybe_stored=True)
    if isinstance(exc, QStashError):
        status, text = _upstream_error(exc)
        retryable = status is not None and status >= 500
        if status is not None and status < 500 and not _is_qstash_error(exc):
            return Failure(status, _snippet(exc), False, not_qstash=True)
        # A 5xx may come from a proxy after QStash stored the messages.
        return Failure(status, text, retryable, maybe_stored=retryable)
    return None


#: (deadline, clock) of the publish call running in this thread or task, if any.
_deadline: ContextVar[tuple[float, Clock] | None] = ContextVar(
    "celery_qstash_deadline", default=None
)

#: Reads (status, DLQ) are not on a web request's path; they get a roomier timeout.
READ_TIMEOUT = httpx.Timeout(10.0, connect=2.0)


def _left(timeout: float | None, error: type[Exception] = httpcore.ReadTimeout) -> float | None:
    """``timeout`` cut to what is left of the current publish call's deadline."""
    current = _deadline.get()
    if current is None:
        return timeout
    deadline, clock = current
    left = deadline - clock.now()
    if left <= 0:
        raise error("the publish deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every operation ends by the publish call's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _left(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's socket backend, with each stream bounded by the publish deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None
                    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options
        ))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _Cookies(httpx.Cookies):
    """httpx's cookie jar, read only when an answer sets a cookie.

    ``http.cookiejar`` takes nothing from a response without ``Set-Cookie`` (or
    ``Set-Cookie2``) headers, yet httpx wraps every response and its request for it
    first; QStash's answers set none, so this skips that work and nothing else.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


@lru_cache(maxsize=256)
def _parsed_url(url: str) -> httpx.URL:
    # httpx.URL is immutable; a publish goes to the same few URLs over and over.
    return httpx.URL(url)


def _timeouts(left: float) -> dict[str, float]:
    """``httpx.Timeout(left, connect=min(left, 1.0)).as_dict()``, without the objects."""
    return {"connect": min(left, 1.0), "read": left, "write": left, "pool": left}


class _DeadlineClient(httpx.Client):
    """The SDK's HTTP client, with each request's timeout cut to what is left of the
    current publish call's budget, so retries included it stays within ``timeout``,
    and every socket operation bounded by the same deadline (:class:`_DeadlineBackend`).

    Per request it does less than httpx's default client where the outcome is the
    same: a URL string is parsed once per process, and the cookie jar only reads
    answers that set a cookie (:class:`_Cookies`).
    """

    def __init__(self, **kwargs: Any) -> None:
        transport = httpx.HTTPTransport()
        # httpx has no public hook for the network backend; ``_pool`` is the one handle.
        pool = transport._pool
        pool._network_backend = _DeadlineBackend(pool._network_backend)
        super().__init__(transport=transport, **kwargs)
        self.cookies = self._cookies  # through the setter below: a _Cookies jar

    @property
    def cookies(self) -> httpx.Cookies:
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._cookies = _Cookies(cookies)

    def build_request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Request:
        if isinstance(url, str):
            url = _parsed_url(url)
        return super().build_request(method, url, **kwargs)

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        current = _deadline.get()
        if current is None:
            return super().send(request, **kwargs)
        deadline, clock = current
        left = max(0.05, deadline - clock.now())
        request.extensions["timeout"] = _timeouts(left)
        try:
            response = super().send(request, **kwargs)
        except httpx.TimeoutException as exc:
            if clock.now() >= deadline and not isinstance(exc, httpx.ConnectTimeout):
                raise _DeadlinePassed(str(exc), request=request) from None
            raise
        return response


_clients: dict[tuple[str, str], QStash] = {}
_lock = threading.Lock()


def _client(token: str, url: str) -> QStash:
    # Keyed by a hash so the token itself is not kept in yet another place.
    key = (hashlib.sha256(token.encode()).hexdigest(), url)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = QStash(token, retry=False, base_url=url)
            # The SDK builds an httpx.Client with a 600 s read timeout and no way to
            # pass another; ``http._client`` is private but the only handle there is.
            client.http._client.close()
            client.http._client = _DeadlineClient(timeout=READ_TIMEOUT)
            _clients[key] = client
        return client


@atexit.register
def _close_clients() -> None:
    # The pooled keep-alive connections are closed at exit rather than left to the
    # garbage collector, which reports each as an unclosed socket.
    with _lock:
        for client in _clients.values():
            client.http._client.close()
        _clients.clear()


def client_for(settings: Settings) -> QStash:
    """The process's SDK client for these settings (ConfigurationError without a token)."""
    return _client(settings.require_token(), settings.qstash_url)


#: The transport for each settings object in use (a transport holds nothing per call).
_transports: dict[int, tuple[Settings, QStashTransport]] = {}


def get_transport(settings: Settings, *, clock: Clock | None = None) -> QStashTransport:
    """The process's transport for these settings (raises ConfigurationError without a token)."""
    if clock is None:
        cached = _transports.get(id(settings))
        if cached is not None and cached[0] is settings:
            return cached[1]
    transport = QStashTransport(
        client_for(settings),
        timeout=settings.publish_timeout,
        clock=clock,
        secrets=settings.secrets,
        url=settings.qstash_url,
    )
    if clock is None:
        if len(_transports) >= 64:
            _transports.clear()
        _transports[id(settings)] = (settings, transport)
    return transport
