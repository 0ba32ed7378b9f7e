"""Run a Starlette app with uvicorn: blocking (CLI) or on a background thread (tests, demo).

Server-side only: importing this needs the ``local`` extra (uvicorn).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

__all__ = ["ThreadedServer", "free_port", "run"]


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
