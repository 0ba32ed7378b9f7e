"""The contract tests: the official ``qstash`` SDK against the emulator, or against a
real QStash.

By default everything runs against emulators on loopback (the emulator fixtures below
are reused from ``tests/emulator``). ``scripts/contract`` runs the same directory
against a real QStash when ``QSTASH_URL``, ``QSTASH_TOKEN``,
``QSTASH_CURRENT_SIGNING_KEY`` and ``QSTASH_NEXT_SIGNING_KEY`` are all set: it exports
``CELERY_QSTASH_CONTRACT=live``, and only then do these tests leave loopback (a stray
``QSTASH_URL`` in a developer's shell never sends the ordinary test run to QStash).

Live-capable tests take the ``qstash`` fixture (:class:`Backend`) and use only QStash's
public API: destinations are ``backend.status_url(404)``, which is the public
``https://mock.httpstatus.io/404`` that the official SDK suites publish to (QStash must
reach it; ``QSTASH_CONTRACT_DESTINATION`` names another service of the same shape), and
which the emulator routes to :class:`HttpStatus` on loopback. A delivery is seen as QStash
reports it (``reach``: the states in the logs; ``dead_letters``: the DLQ), polled with a
deadline; names and labels are unique to the run (``Backend.unique``), since a real
account keeps what earlier runs left, and locally the one emulator is never reset between
them either. What needs a local-only control (the emulator's clock, ``/_emulator/tick``
or reset, a recording destination on loopback) or would harm a real account (rotating
its keys, cancelling all its messages) is marked ``local_only`` and skipped live with the
reason.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

import pytest
from emulator.conftest import (  # noqa: F401 - fixtures are found by name
    fake,
    fake_server,
    live,
    live_server,
    sdk,
    sdk_server,
    target,
    target_server,
)
from qstash import AsyncQStash, QStash
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from celery_qstash.local.emulator import EmulatorServer
from celery_qstash.local.serving import ThreadedServer

LIVE = os.environ.get("CELERY_QSTASH_CONTRACT") == "live"
LIVE_ENV = ("QSTASH_URL", "QSTASH_TOKEN", "QSTASH_CURRENT_SIGNING_KEY",
            "QSTASH_NEXT_SIGNING_KEY")
#: What the official SDK suites publish to; QStash must be able to reach it.
DESTINATION = os.environ.get("QSTASH_CONTRACT_DESTINATION", "https://mock.httpstatus.io")
#: How long a live-capable test waits for QStash to act (a bound, never an expectation).
EVENTUALLY_SECONDS = 20.0

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "local_only(reason): needs a control only the emulator has; skipped "
                   "when scripts/contract runs against a real QStash")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not LIVE:
        return
    for item in items:
        marker = item.get_closest_marker("local_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "needs the emulator"
            item.add_marker(pytest.mark.skip(reason=f"local only: {reason}"))


async def _status(request: Request) -> Response:
    """``/<status>[?sleep=ms]``: that status after the sleep, body ``<status> <reason>``."""
    try:
        status = int(request.path_params["status"])
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return Response("no such status", status_code=400)
    sleep_ms = request.query_params.get("sleep", "0")
    await asyncio.sleep(int(sleep_ms) / 1000 if sleep_ms.isdigit() else 0)
    return Response(f"{status} {phrase}", status_code=status)


class HttpStatus:
    """A loopback stand-in for mock.httpstatus.io (the emulator's route for it)."""

    def __init__(self) -> None:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        self.server = ThreadedServer(Starlette(routes=[Route("/{status}", _status,
                                                             methods=methods)]))


@dataclass
class Backend:
    """Where the contract runs: a real QStash, or an emulator routing ``DESTINATION``."""

    url: str
    token: str
    current_signing_key: str
    next_signing_key: str
    live: bool

    def client(self) -> QStash:
        return QStash(self.token, base_url=self.url)

    def async_client(self) -> AsyncQStash:
        return AsyncQStash(self.token, base_url=self.url)

    def status_url(self, status: int, sleep_ms: int = 0) -> str:
        return f"{DESTINATION}/{status}" + (f"?sleep={sleep_ms}" if sleep_ms else "")

    def unique(self, name: str) -> str:
        """A name no other run uses (a live QStash keeps what earlier runs left)."""
        return f"contract-{name}-{time.time_ns()}"


def eventually(check: Callable[[], T], what: str,
               timeout: float = EVENTUALLY_SECONDS) -> T:
    """Call ``check`` until it stops raising AssertionError, and return its value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what} after {timeout} s: "
                                     f"{exc}") from exc
        time.sleep(0.05)


@pytest.fixture(scope="session")
def qstash() -> Iterator[Backend]:
    if LIVE:
        missing = [name for name in LIVE_ENV if not os.environ.get(name)]
        if missing:
            raise pytest.UsageError(f"CELERY_QSTASH_CONTRACT=live needs {', '.join(missing)}")
        yield Backend(os.environ["QSTASH_URL"], os.environ["QSTASH_TOKEN"],
                      os.environ["QSTASH_CURRENT_SIGNING_KEY"],
                      os.environ["QSTASH_NEXT_SIGNING_KEY"], live=True)
        return
    status = HttpStatus()
    status.server.start()
    emulator = EmulatorServer(routes={DESTINATION: status.server.url}).start()
    try:
        yield Backend(emulator.url, emulator.token, emulator.current_signing_key,
                      emulator.next_signing_key, live=False)
    finally:
        emulator.stop()
        status.server.stop()


@pytest.fixture
def client(qstash: Backend) -> QStash:
    return qstash.client()


@pytest.fixture
def label(qstash: Backend, request: pytest.FixtureRequest) -> Iterator[str]:
    """A label unique to this test for its messages: whatever still waits under it is
    cancelled after the test, and its DLQ entries deleted (by label, never account-wide)."""
    name = qstash.unique(request.node.name.removeprefix("test_")[:20])
    yield name
    client = qstash.client()
    client.http.request(path="/v2/messages", method="DELETE", params={"label": name})
    client.http.request(path="/v2/dlq", method="DELETE", params={"label": name})


def ids_of(items: list[Any]) -> list[str]:
    return sorted(str(item.message_id) for item in items)


def states(client: QStash, message_id: str) -> list[str]:
    """The states QStash logged for a message, oldest first."""
    logs = client.log.list(filter={"message_id": message_id}).logs
    return [log.state.value for log in reversed(logs)]


def reach(client: QStash, state: str, *message_ids: str) -> None:
    """Wait until each message has logged ``state`` (how a live run sees a delivery)."""
    def reached() -> None:
        for message_id in message_ids:
            assert state in states(client, message_id), (message_id, states(client,
                                                                            message_id))
    eventually(reached, f"{state} in the logs of {', '.join(message_ids)}")


def dead_letters(client: QStash, label: str) -> list[Any]:
    """Every DLQ message with ``label``, page by page."""
    page = client.dlq.list(filter={"label": label})
    found = list(page.messages)
    while page.cursor:
        page = client.dlq.list(filter={"label": label}, cursor=page.cursor)
        found += page.messages
    return found
