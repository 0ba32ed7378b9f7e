"""A fault-injecting HTTP proxy for loopback tests: put it in front of a real server.

The fault suites (``tests/reliability/``) and ``scripts/reliability`` use it to make
QStash (the emulator) or AutoSend (the sandbox) misbehave the way networks and
servers do, without touching their code:

* ``Fault.respond(503)``: answer for the server (5xx, 429, 401, a malformed 200);
  nothing is forwarded;
* ``Fault.delay(3.0)``: hold the request, then forward it (a slow server that still
  does the work after the caller gave up);
* ``Fault.trickle(0.05)``: forward, then send the answer a few bytes at a time;
* ``Fault.drop_response()``: forward, let the server do the work, then close the
  connection without answering (the "lost response": stored, but the caller never
  hears so);
* ``Fault.drop_request()``: close the connection without forwarding anything;
* ``proxy.down()`` / ``proxy.up()``: stop and resume listening on the same port
  (connection refused in between).

Faults are queued (``add(fault, times=n)``, first in first out, like the sandbox's
chaos rules) or drawn at random per request (``chance(0.1, fault)`` with a seeded
generator, for load runs). Only requests whose path starts with a fault's ``match``
prefix are affected; everything else is passed through. Every request is recorded
in ``events`` (method, path, fault, the upstream's status).

HTTP/1.1 is parsed and written with ``h11``; each answer carries ``Connection:
close`` so one connection is one request and a fault hits exactly one request.
Standard library + ``h11`` only (a dependency of ``httpx``), so it needs no extra.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

__all__ = ["Fault", "FaultProxy", "ProxyEvent"]

#: Biggest request or answer the proxy buffers (it is a test tool for small JSON bodies).
MAX_BODY = 16 * 1024 * 1024
#: Longest the proxy waits on the upstream for one answer.
UPSTREAM_TIMEOUT = 120.0


@dataclass(frozen=True)
class Fault:
    """What to do to one request (see the module docstring for the kinds)."""

    kind: str
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    chunk: int = 1
    match: str = ""

    @classmethod
    def respond(cls, status: int, body: bytes | str = b"", *,
                headers: dict[str, str] | None = None, match: str = "") -> Fault:
        raw = body.encode() if isinstance(body, str) else body
        return cls("respond", status=status, body=raw,
                   headers=tuple((headers or {}).items()), match=match)

    @classmethod
    def delay(cls, seconds: float, *, match: str = "") -> Fault:
        return cls("delay", seconds=seconds, match=match)

    @classmethod
    def trickle(cls, interval: float, *, chunk: int = 1, match: str = "") -> Fault:
        return cls("trickle", seconds=interval, chunk=max(1, chunk), match=match)

    @classmethod
    def drop_response(cls, *, match: str = "") -> Fault:
        return cls("drop_response", match=match)

    @classmethod
    def drop_request(cls, *, match: str = "") -> Fault:
        return cls("drop_request", match=match)


@dataclass(frozen=True)
class ProxyEvent:
    """One request seen by the proxy: ``fault`` is ``"pass"`` when none applied;
    ``status`` is the upstream's answer (``None`` if it was not asked or did not answer)."""

    method: str
    path: str
    fault: str
    status: int | None


@dataclass
class _Rule:
    fault: Fault
    remaining: int


@dataclass
class _Request:
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    extra: dict[str, str] = field(default_factory=dict)


class _Closed(Exception):
    """The client went away before a whole request arrived."""


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream`` (an ``http://host:port`` URL), with faults.

    ``with FaultProxy(server.url) as proxy: proxy.add(Fault.drop_response())``.
    """

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0,
                 seed: int = 0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http://host:port URL, not {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.host = host
        self.port = port
        self.events: list[ProxyEvent] = []
        self._rules: deque[_Rule] = deque()
        self._chances: list[tuple[float, Fault]] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._sleep = sleep
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add(self, fault: Fault, times: int = 1) -> FaultProxy:
        """Apply ``fault`` to the next ``times`` matching requests (after earlier rules)."""
        with self._lock:
            self._rules.append(_Rule(fault, times))
        return self

    def chance(self, probability: float, fault: Fault) -> FaultProxy:
        """When no queued rule applies, apply ``fault`` with ``probability`` (seeded)."""
        if not 0 <= probability <= 1:
            raise ValueError("probability must be between 0 and 1")
        with self._lock:
            self._chances.append((probability, fault))
        return self

    def clear(self) -> None:
        """Drop every queued rule and chance (events are kept)."""
        with self._lock:
            self._rules.clear()
            self._chances.clear()

    def reset(self) -> None:
        """Drop every rule, chance and recorded event (between tests)."""
        with self._lock:
            self._rules.clear()
            self._chances.clear()
            self.events.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(rule.remaining for rule in self._rules)

    def counts(self, path_prefix: str = "") -> Counter[str]:
        """How many requests (under ``path_prefix``) met each fault kind (``pass`` included)."""
        with self._lock:
            return Counter(e.fault for e in self.events if e.path.startswith(path_prefix))

    def _choose(self, path: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if path.startswith(rule.fault.match):
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                    return rule.fault
            for probability, fault in self._chances:
                if path.startswith(fault.match) and self._random.random() < probability:
                    return fault
        return None

    def _record(self, request: _Request, fault: str, status: int | None) -> None:
        with self._lock:
            self.events.append(ProxyEvent(request.method, request.target, fault, status))

    # -- lifecycle ----------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> FaultProxy:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._listen())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"faultproxy:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("fault proxy did not start")
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _call(self, coro: Awaitable[None], timeout: float = 10.0) -> None:
        assert self._loop is not None, "start() the proxy first"
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def down(self) -> None:
        """Stop listening: new connections are refused until ``up()``."""
        self._call(self._unlisten())

    def up(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    async def _shutdown(self) -> None:
        await self._unlisten()
        # Connections still held (a delay, a trickle) end now, not with the loop.
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one connection = one request -------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
        except (_Closed, h11.ProtocolError, ConnectionError):
            writer.close()
            return
        fault = self._choose(urlsplit(request.target).path)
        kind = fault.kind if fault else "pass"
        recorded = False
        try:
            if fault is not None and fault.kind == "drop_request":
                self._record(request, kind, None)
                _abort(writer)
                return
            if fault is not None and fault.kind == "respond":
                self._record(request, kind, None)
                recorded = True
                await _write(writer, fault.status, list(fault.headers), fault.body)
                return
            if fault is not None and fault.kind == "delay":
                await self._sleep(fault.seconds)
            status, headers, body = await self._forward(request)
            self._record(request, kind, status)
            recorded = True
            if fault is not None and fault.kind == "drop_response":
                _abort(writer)
                return
            if fault is not None and fault.kind == "trickle":
                await _write(writer, status, headers, body, trickle=(fault.chunk, fault.seconds),
                             sleep=self._sleep)
                return
            await _write(writer, status, headers, body)
        except (OSError, asyncio.TimeoutError, h11.ProtocolError):
            # The upstream is down (not recorded yet: record it unanswered) or the
            # client left after the answer was recorded: either way the connection ends.
            if not recorded:
                self._record(request, kind, None)
            _abort(writer)

    async def _forward(self, request: _Request) -> tuple[int, list[tuple[str, str]], bytes]:
        reader, writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        try:
            conn = h11.Connection(h11.CLIENT)
            headers = [(k, v) for k, v in request.headers if k.lower() != b"connection"]
            headers.append((b"connection", b"close"))
            data = conn.send(h11.Request(method=request.method, target=request.target,
                                         headers=headers))
            data += conn.send(h11.Data(data=request.body)) if request.body else b""
            data += conn.send(h11.EndOfMessage())
            writer.write(data)
            await writer.drain()
            status, answer_headers, chunks = 0, [], []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    received = await asyncio.wait_for(reader.read(65536), UPSTREAM_TIMEOUT)
                    conn.receive_data(received)
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                    answer_headers = [(k.decode(), v.decode()) for k, v in event.headers
                                      if k.lower() not in (b"connection", b"content-length",
                                                           b"transfer-encoding")]
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    return status, answer_headers, b"".join(chunks)
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> _Request:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
    request: _Request | None = None
    body: list[bytes] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data:
                raise _Closed
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            request = _Request(event.method.decode(), event.target.decode(),
                               list(event.headers))
        elif isinstance(event, h11.Data):
            body.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            request.body = b"".join(body)
            return request
        elif isinstance(event, h11.ConnectionClosed):
            raise _Closed


async def _write(writer: asyncio.StreamWriter, status: int, headers: list[tuple[str, str]],
                 body: bytes, *, trickle: tuple[int, float] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    conn = h11.Connection(h11.SERVER)
    # h11 only answers a request it has seen: feed it a minimal one.
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n")
    conn.next_event()
    conn.next_event()
    head = [(k, v) for k, v in headers if k.lower() not in ("connection", "content-length")]
    head += [("content-length", str(len(body))), ("connection", "close")]
    data = conn.send(h11.Response(status_code=status, headers=head))
    data += conn.send(h11.Data(data=body)) if body else b""
    data += conn.send(h11.EndOfMessage())
    if trickle is None:
        writer.write(data)
        await writer.drain()
    else:
        size, interval = trickle
        for start in range(0, len(data), size):
            writer.write(data[start:start + size])
            await writer.drain()
            await sleep(interval)
    writer.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close without an answer (a reset, as a crashed or cut-off server looks)."""
    writer.transport.abort()
