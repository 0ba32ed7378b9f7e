"""Run a Starlette app with uvicorn: blocking (CLI) or on a background thread (tests, demo).

Server-side only: importing this needs the ``local`` extra (uvicorn).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "LOOPBACK_HOSTS",
    "SameSiteGuard",
    "ThreadedServer",
    "free_port",
    "is_loopback",
    "local_hosts",
    "run",
]

#: Host names a browser uses for this machine.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Is ``host`` an address only this machine can reach?"""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def local_hosts(bind_host: str) -> tuple[str, ...] | None:
    """The ``Host`` names to accept when bound to ``bind_host`` (``None``: any, off loopback)."""
    if not is_loopback(bind_host):
        return None
    return (*LOOPBACK_HOSTS, bind_host.strip("[]").lower())


def _host_name(value: str) -> str:
    return (urlsplit("//" + value).hostname or "").lower()


class SameSiteGuard:
    """ASGI middleware for servers meant for this machine: a web page must not drive them.

    * ``Host`` must be one of ``allowed_hosts`` (when given): a DNS-rebinding page
      that resolves its own name to 127.0.0.1 gets 421;
    * a state-changing request (not GET/HEAD/OPTIONS) from another origin gets 403.
      Browsers send ``Origin``/``Sec-Fetch-Site`` on cross-site requests; SDKs, curl
      and test clients do not, so they are unaffected.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Sequence[str] | None = None) -> None:
        self.app = app
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            await PlainTextResponse("Unknown host", status_code=421)(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            origin = headers.get("origin")
            foreign = origin is not None and urlsplit(origin).netloc.lower() != host
            if foreign or headers.get("sec-fetch-site") == "cross-site":
                refusal = PlainTextResponse("Cross-origin request refused", status_code=403)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _config(app: Any, host: str, port: int) -> uvicorn.Config:
    # Our own logging says what matters; uvicorn's access log would print every
    # request line, and request lines can carry ?qstash_token=...
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="on"
    )


def run(app: Any, host: str, port: int) -> None:
    """Serve ``app`` until interrupted (Ctrl-C stops cleanly: lifespan shutdown runs)."""
    uvicorn.Server(_config(app, host, port)).run()


class ThreadedServer:
    """Serve an ASGI app on a daemon thread; ``url`` is ready once ``start()`` returns."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port or free_port(host)
        self._server = uvicorn.Server(_config(app, self.host, self.port))
        # uvicorn only captures signals on the main thread, so a background server
        # leaves Ctrl-C to the program that started it.
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ThreadedServer:
        self._thread = threading.Thread(
            target=self._server.run, daemon=True, name=f"srv:{self.port}"
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
