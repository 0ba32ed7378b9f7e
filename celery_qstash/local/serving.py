"""Run a Starlette app with uvicorn: blocking (CLI) or on a background thread (tests, demo).

Server-side only: importing this needs the ``local`` extra (uvicorn).
"""

from __future__ import annotations

import json
import math
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import uvicorn
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..guard import (
    ALLOWED_HOSTS_ENV,
    LOOPBACK_HOSTS,
    SameSiteGuard,
    is_loopback,
    local_hosts,
)

__all__ = [
    "ALLOWED_HOSTS_ENV",
    "LOOPBACK_HOSTS",
    "MAX_JSON_DEPTH",
    "BodyLimit",
    "BodyTooLarge",
    "JSONBodyError",
    "Notices",
    "SameSiteGuard",
    "ThreadedServer",
    "free_port",
    "is_loopback",
    "local_hosts",
    "parse_json",
    "parse_size",
    "run",
]

#: No request our servers take needs deeper JSON; deeper input would only probe recursion limits.
MAX_JSON_DEPTH = 64


class Notices:
    """What a page says after a redirect ("Deleted 3 emails."), held by the server.

    The redirect carries an unguessable token (``?notice=...``), never the text: a link
    someone else made cannot put words of theirs under the page's banner. The last
    ``size`` notices are kept (a reload still shows its notice); an unknown token shows
    nothing.
    """

    KINDS = ("done", "error")

    def __init__(self, size: int = 256) -> None:
        self._items: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def add(self, text: str, kind: str = "done") -> str:
        """Keep ``text``; the token to put in the redirect's ``notice`` parameter."""
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}")
        token = secrets.token_urlsafe(12)
        with self._lock:
            self._items[token] = (kind, text)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return token

    def get(self, token: str | None) -> tuple[str, str] | None:
        """``(kind, text)`` of a token this server gave, else None."""
        if not token:
            return None
        with self._lock:
            return self._items.get(token)


class BodyTooLarge(HTTPException):
    """A request body went past its limit while it was being read: answered 413.

    An ``HTTPException``, so each app's own handler answers it in that server's
    error shape; the body was never held whole in memory.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the {limit}-byte limit")
        self.limit = limit


def _too_large_text(limit: int) -> Response:
    return PlainTextResponse(BodyTooLarge(limit).detail, status_code=413)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is a 413, never read whole.

    A ``Content-Length`` over the limit is refused before a byte of the body is
    read (``too_large`` builds that answer, in the server's own error shape).
    Otherwise, and for chunked bodies, the bytes are counted as they arrive and
    the read that crosses the limit raises :class:`BodyTooLarge`. ``limit`` may
    depend on the request (a callable taking the ASGI scope).
    """

    def __init__(self, app: ASGIApp, *, limit: int | Callable[[Scope], int],
                 too_large: Callable[[int], Response] = _too_large_text) -> None:
        self.app = app
        self.limit = limit
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope) if callable(self.limit) else self.limit
        declared = Headers(scope=scope).get("content-length", "")
        # The HTTP server has already refused a malformed Content-Length.
        if declared.isdigit() and int(declared) > limit:
            await self.too_large(limit)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


class JSONBodyError(ValueError):
    """A request body is not acceptable JSON (malformed, NaN, too deep...): answer 400."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: no JSON answer could carry it back
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Is ``value`` nested more than ``limit`` arrays/objects deep? (No recursion of its own.)

    Level by level, keeping only the containers: a 100-message batch body is walked
    without a stack entry per string or number (that walk was a tenth of its parse)."""
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list[Any] = []
        for item in level:
            children: Iterable[Any] = item.values() if isinstance(item, dict) else item
            below += [child for child in children if isinstance(child, (dict, list))]
        level = below
        depth += 1
    return False


def parse_json(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A request body as JSON, or :class:`JSONBodyError`: every server's one JSON parser.

    Whatever goes wrong (bad syntax or encoding, ``NaN``/``Infinity``/``1e400``, nesting past
    ``max_depth``, the decoder's own ``RecursionError``) is a ``JSONBodyError``
    with a message fit for a 400, so no body can make a handler fail with a 500.
    """
    too_deep = f"nested more than {max_depth} levels"
    try:
        value = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise JSONBodyError(too_deep) from None
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        raise JSONBodyError(str(exc)) from None
    if _deeper_than(value, max_depth):
        raise JSONBodyError(too_deep)
    return value


_SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "KIB": 1024, "MIB": 1024**2}


def parse_size(text: str) -> int:
    """``"1048576"``, ``"1MiB"``, ``"10MB"``, ``"512KB"`` -> bytes (a positive integer)."""
    number = text.strip().upper()
    unit = number.lstrip("0123456789")
    digits = number[: len(number) - len(unit)]
    if not digits or unit.strip() not in _SIZE_UNITS or int(digits) <= 0:
        raise ValueError(f"invalid size {text!r}: a positive number of bytes, or with "
                         "KB, MB, KiB or MiB")
    return int(digits) * _SIZE_UNITS[unit.strip()]


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
