"""Fixtures for the emulator tests: a recording destination and emulator servers.

- ``target``: a local HTTP server that records every delivery and answers from a
  per-path script (default 200). Destinations in tests are always this server.
- ``fake``: an emulator on a ``FakeClock`` with background delivery off; tests
  publish over HTTP, move the clock and call ``fake.emulator.tick()``.
- ``live``: an emulator on the system clock with background delivery (contract
  tests use it through the official SDK).
Both emulators are session-scoped and reset between tests.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from celery_qstash.clock import FakeClock
from celery_qstash.devserver import DEV_TOKEN
from celery_qstash.local.emulator import EmulatorServer
from celery_qstash.local.serving import ThreadedServer

START = 1_800_000_000.0
#: The control plane's writes (reset, clock) take the token only in this header.
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


class _AnswerAll:
    """ASGI middleware that answers every HTTP request itself, before any routing."""

    def __init__(self, app: ASGIApp, handle: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = app
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        response = await self.handle(Request(scope, receive))
        await response(scope, receive, send)


class Target:
    """A recording destination on loopback."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        # Every request reaches the handler, whatever its path holds (a router's
        # ``{path:path}`` refuses a newline, which a destination may carry as ``%0A``).
        app = Starlette(middleware=[Middleware(_AnswerAll, handle=self._handle)])
        self.server = ThreadedServer(app)

    @property
    def url(self) -> str:
        return self.server.url

    def reply(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with ``replies`` (the last one repeats)."""
        with self._lock:
            self._script[path] = list(replies)

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._script.clear()

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        path = request.scope["path"]  # as sent (request.url drops a newline)
        with self._lock:
            self.requests.append(Received(request.method, path, request.url.query,
                                          dict(request.headers), body))
            script = self._script.get(path)
            reply = (script.pop(0) if len(script) > 1 else script[0]) if script else Reply()
        return Response(reply.body, status_code=reply.status, headers=reply.headers)


@pytest.fixture(scope="session")
def target_server() -> Iterator[Target]:
    target = Target()
    target.server.start()
    yield target
    target.server.stop()


@pytest.fixture
def target(target_server: Target) -> Target:
    target_server.reset()
    return target_server


class Client:
    """httpx against an emulator with the dev token."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, trust_env=False,
                                 headers={"Authorization": f"Bearer {DEV_TOKEN}"})

    @property
    def emulator(self) -> Any:
        return self.server.emulator

    def publish(self, destination: str, body: bytes | str = b"", **headers: str) -> httpx.Response:
        return self.http.post(f"/v2/publish/{destination}", content=body,
                              headers={k.replace("_", "-"): v for k, v in headers.items()})

    def events(self, **params: Any) -> list[dict[str, Any]]:
        response = self.http.get("/v2/events", params=params)
        response.raise_for_status()
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def states(self, message_id: str) -> list[str]:
        """States of one message, oldest first."""
        return [e["state"] for e in reversed(self.events(messageId=message_id))]

    def tick(self) -> int:
        return int(self.emulator.tick())

    def advance(self, seconds: float) -> None:
        self.emulator.clock.advance(seconds)


@pytest.fixture(scope="session")
def fake_server() -> Iterator[EmulatorServer]:
    server = EmulatorServer(clock=FakeClock(START), start_delivery=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fake(fake_server: EmulatorServer) -> Iterator[Client]:
    fake_server.emulator.reset()
    fake_server.emulator.clock.set(START)
    fake_server.emulator.routes.clear()
    client = Client(fake_server)
    yield client
    client.http.close()


@pytest.fixture(scope="session")
def live_server() -> Iterator[EmulatorServer]:
    server = EmulatorServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live(live_server: EmulatorServer) -> Iterator[Client]:
    httpx.post(f"{live_server.url}/_emulator/reset", headers=AUTH,
               trust_env=False).raise_for_status()
    live_server.emulator.routes.clear()
    client = Client(live_server)
    yield client
    client.http.close()


@pytest.fixture(scope="session")
def sdk_server() -> Iterator[EmulatorServer]:
    """System clock (the SDK's Receiver checks exp/nbf against real time), no background
    delivery: tests deliver with ``POST /_emulator/tick`` so nothing races."""
    server = EmulatorServer(start_delivery=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sdk(sdk_server: EmulatorServer) -> Iterator[Client]:
    httpx.post(f"{sdk_server.url}/_emulator/reset", headers=AUTH,
               trust_env=False).raise_for_status()
    sdk_server.emulator.routes.clear()
    client = Client(sdk_server)
    yield client
    client.http.close()
