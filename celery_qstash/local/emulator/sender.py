"""One delivery's HTTP exchange: send a prepared request, stream the answer back.

Two implementations of the same small interface (:class:`Exchange`):

- :class:`CoreExchange`, the default: httpx's own transport layer, ``httpcore``'s
  connection pool, driven directly. The full ``httpx.Client`` per request (request and
  response models, URL merging, cookies, auth and redirect flows) was about half of the
  emulator's CPU per delivery; the pool alone costs about a third less per request
  (benchmarks/bench.py ``emulator_delivery``; the numbers are in the README's
  "Throughput"). URLs are still parsed and normalised by ``httpx.URL``, header values
  encoded as httpx encodes them, and the TLS context is httpx's. What the client added
  by itself and this does not: ``Accept: */*``, ``Accept-Encoding`` and ``Connection:
  keep-alive`` (HTTP/1.1 keeps the connection anyway); not asking for a compressed
  answer, a destination answers uncompressed, so the answer body is stored as sent.
- :class:`ClientExchange`: a caller's ``httpx.Client`` (``http_client_factory``: tests
  hand in ``httpx.MockTransport``), used exactly as before.

Neither follows redirects nor reads proxies from the environment: a delivery goes where
its URL says. Errors are normalised to :class:`ExchangeTimeout` (the attempt's timeout
ran out) and :class:`ExchangeError` (the destination could not be reached or spoke
broken HTTP); anything else is the caller's to catch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpcore
import httpx

__all__ = ["ClientExchange", "CoreExchange", "Exchange", "ExchangeError", "ExchangeTimeout",
           "Reply", "Request"]


class ExchangeTimeout(Exception):
    """The attempt's timeout ran out (connect, write, read or waiting for a connection)."""


class ExchangeError(Exception):
    """The destination could not be reached or answered with broken HTTP; the message
    names the underlying error's type only (its text can echo the URL)."""


@dataclass
class Request:
    """Everything an attempt sends, built before it is sent."""

    method: str
    url: str  # the routed URL actually called
    headers: list[tuple[str, str]]
    body: bytes
    timeout_s: float
    #: What the exchange built from the above ahead of time (:meth:`Exchange.build`).
    built: Any = None


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    chunks: Iterator[bytes]


class Exchange(Protocol):
    def build(self, request: Request) -> None:
        """Do ahead of time what sending ``request`` will need (may raise)."""

    def open(self, request: Request) -> AbstractContextManager[Reply]: ...

    def own_pool(self) -> AbstractContextManager[None]:
        """Connections of the calling thread's own while the block runs."""

    def close(self) -> None: ...


_CORE_TIMEOUTS = (httpcore.TimeoutException,)
_CORE_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
                httpcore.ProxyError)


def _decode_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    # As httpx.Headers does: ASCII, else UTF-8, else Latin-1, for the whole set.
    for encoding in ("ascii", "utf-8"):
        try:
            return [(k.decode(encoding), v.decode(encoding)) for k, v in raw]
        except UnicodeDecodeError:
            continue
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


class CoreExchange:
    """Deliveries over httpcore connection pools (keep-alive).

    A long-lived attempt thread gets a pool of its own (:meth:`own_pool`): one pool
    shared by all of them serialised every request on the pool's lock, and under it
    a readiness check of every pooled connection, which showed in the profile of a
    burst as threads queueing for the lock. Other threads (``tick()``'s) share one.
    """

    def __init__(self, max_connections: int = 100) -> None:
        self._ssl = httpx.create_ssl_context()
        self._max = max_connections
        self._shared = self._new_pool()
        self._local = threading.local()

    def _new_pool(self) -> httpcore.ConnectionPool:
        return httpcore.ConnectionPool(
            ssl_context=self._ssl,
            max_connections=max(100, self._max),
            max_keepalive_connections=max(20, self._max),
            keepalive_expiry=5.0,
        )

    @contextmanager
    def own_pool(self) -> Iterator[None]:
        """The calling thread's requests use a pool of its own until the block ends."""
        self._local.pool = pool = self._new_pool()
        try:
            yield
        finally:
            self._local.pool = None
            pool.close()

    def build(self, request: Request) -> None:
        request.built = self._core_request(request)

    @contextmanager
    def open(self, request: Request) -> Iterator[Reply]:
        core_request = request.built or self._core_request(request)
        pool = getattr(self._local, "pool", None) or self._shared
        try:
            response = pool.handle_request(core_request)
        except _CORE_TIMEOUTS as exc:
            raise ExchangeTimeout(type(exc).__name__) from None
        except _CORE_ERRORS as exc:
            raise ExchangeError(type(exc).__name__) from None
        try:
            yield Reply(response.status, _decode_headers(response.headers),
                        _core_chunks(response))
        finally:
            response.close()

    @staticmethod
    def _core_request(request: Request) -> httpcore.Request:
        url = httpx.URL(request.url)  # httpx's parsing and percent-encoding, as before
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise ExchangeError("UnsupportedProtocol")
        # Header values are ASCII, as httpx encodes them (a stored value that is not
        # fails this attempt with UnicodeEncodeError, as it did through httpx).
        headers: list[tuple[bytes, bytes]] = []
        has_host = False
        for name, value in request.headers:
            lower = name.lower()
            if lower in ("content-length", "transfer-encoding"):
                continue  # the body below decides its own framing
            has_host = has_host or lower == "host"
            headers.append((name.encode("ascii"), value.encode("ascii")))
        if not has_host:
            headers.insert(0, (b"Host", url.netloc))
        headers.append((b"Content-Length", str(len(request.body)).encode("ascii")))
        timeout = request.timeout_s
        return httpcore.Request(
            request.method.encode("ascii"),
            httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port,
                         target=url.raw_path),
            headers=headers, content=request.body,
            extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout,
                                    "pool": timeout}},
        )

    def close(self) -> None:
        self._shared.close()


def _core_chunks(response: httpcore.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_stream()
    except _CORE_TIMEOUTS as exc:
        raise ExchangeTimeout(type(exc).__name__) from None
    except _CORE_ERRORS as exc:
        raise ExchangeError(type(exc).__name__) from None


class ClientExchange:
    """Deliveries through a caller's ``httpx.Client``."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def build(self, request: Request) -> None:
        pass  # the client builds its request when it sends it

    @contextmanager
    def own_pool(self) -> Iterator[None]:
        yield  # the caller's client is used as it is

    @contextmanager
    def open(self, request: Request) -> Iterator[Reply]:
        try:
            with self._client.stream(
                request.method, request.url, content=request.body, headers=request.headers,
                timeout=httpx.Timeout(request.timeout_s), follow_redirects=False,
            ) as response:
                yield Reply(response.status_code, list(response.headers.multi_items()),
                            _client_chunks(response))
        except httpx.TimeoutException as exc:
            raise ExchangeTimeout(type(exc).__name__) from None
        except httpx.HTTPError as exc:
            raise ExchangeError(type(exc).__name__) from None

    def close(self) -> None:
        self._client.close()


def _client_chunks(response: httpx.Response) -> Iterator[bytes]:
    yield from response.iter_bytes()
