"""Shared pieces of the benchmarks: a bare QStash stand-in, a Redis server, timing helpers.

The stand-in answers QStash's publish, enqueue and batch endpoints with message ids
and does nothing else, in its own process, so that what a benchmark measures is
the client side. Everything listens on 127.0.0.1 only, on free ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {HOST}:{port}")


# --- the stand-in: a raw ASGI app, no framework, so its own cost stays small ---------------

_ids = count(1)
_arrivals: list[float] = []


async def standin_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path.startswith("/sink"):  # a delivery target: remember when each one arrived
        _arrivals.append(time.time())
        await _answer(send, {"ok": True})
        return
    if path == "/stats":
        await _answer(send, {"arrivals": _arrivals})
        return
    if path == "/reset":
        _arrivals.clear()
        await _answer(send, {"ok": True})
        return
    if path == "/v2/batch":
        items = json.loads(body)
        answer: Any = [{"messageId": f"msg_{next(_ids)}"} for _ in items]
    else:
        answer = {"messageId": f"msg_{next(_ids)}"}
    await _answer(send, answer)


async def _answer(send: Any, answer: Any) -> None:
    data = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


@contextlib.contextmanager
def standin() -> Iterator[str]:
    """A stand-in QStash in a child process; yields its URL."""
    port = free_port()
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import sys, uvicorn; sys.path.insert(0, {here!r}); import _harness; "
        f"uvicorn.run(_harness.standin_app, host={HOST!r}, port={port}, log_level='warning', "
        "access_log=False, lifespan='on')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_port(port)
        yield f"http://{HOST}:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


#: The process serving each URL (emulator_process), for cpu_seconds().
PIDS: dict[str, int] = {}


def cpu_seconds(url: str) -> float:
    """CPU time (user + system) the process serving ``url`` has used so far (Linux)."""
    stat = Path(f"/proc/{PIDS[url]}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def emulator_process(*, deliver: bool = False, routes: dict[str, str] | None = None,
                     data_dir: str | None = None, pending: int = 0,
                     **options: Any) -> Iterator[tuple[str, str]]:
    """The emulator in a child process (its own core, as ``celery-qstash emulator`` runs it),
    SQLite-durable in a temporary directory; delivery off unless asked; ``pending``
    messages delayed by a day already stored. Yields (url, token)."""
    from celery_qstash.devserver import DEV_TOKEN

    port = free_port()
    data = data_dir or tempfile.mkdtemp(prefix="bench-emulator-")
    code = (
        "import sys; sys.path.insert(0, %r); import _harness; "
        "from celery_qstash.local.emulator import Emulator; "
        "from celery_qstash.local.serving import run; "
        f"e = Emulator({data!r}, routes={routes or {}!r}, start_delivery={deliver!r}, "
        f"**{options!r}); "
        f"_harness.fill_pending(e, {pending}); "
        f"run(e.app, {HOST!r}, {port})"
    ) % os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    url = f"http://{HOST}:{port}"
    PIDS[url] = proc.pid
    try:
        wait_port(port, timeout=120)
        yield url, DEV_TOKEN
    finally:
        PIDS.pop(url, None)
        proc.terminate()
        proc.wait(10)
        if data_dir is None:
            shutil.rmtree(data, ignore_errors=True)


def fill_pending(emulator: Any, count: int) -> None:
    """Store ``count`` messages delayed by a day, in one transaction (setup, not measured)."""
    if not count:
        return
    from celery_qstash.local.emulator.publish import parse_publish_headers

    options = parse_publish_headers([("Upstash-Delay", "1d")], b"{}")
    store = emulator.store
    now_ms = store.now_ms()
    with store._tx() as cur:
        for _ in range(count):
            store._publish(cur, "defaultUser", "https://example.invalid/x", options,
                           queue=None, schedule_id=None, caller_ip=None, kind="message",
                           now_ms=now_ms)


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """Debian's ``redis-server`` on a free loopback port, no persistence; None if absent."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    data = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
         "--dir", data, "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield f"redis://{HOST}:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data, ignore_errors=True)


# --- timing ---------------------------------------------------------------------------------


def rate(fn: Callable[[int], object], n: int, start: int = 0) -> float:
    """Calls per second of ``fn(i)`` over ``n`` calls."""
    began = time.perf_counter()
    for i in range(start, start + n):
        fn(i)
    return n / (time.perf_counter() - began)


def paired(
    ours: Callable[[], float], anchor: Callable[[], float], rounds: int = 5
) -> tuple[float, float, float]:
    """Alternate ``rounds`` measurements of each side (calls/s). Returns the median of each
    side and the median of the per-round ratios ours/anchor: two neighbouring
    measurements see nearly the same machine, so the ratio is steadier than either."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(rounds):
        a.append(ours())
        b.append(anchor())
    ratios = [x / y if y else 0.0 for x, y in zip(a, b, strict=True)]
    return statistics.median(a), statistics.median(b), statistics.median(ratios)
