"""Run each ported task two ways, asserting the same outcome: eager mode and the real path.

``port`` is parametrized over ``eager`` (``task_always_eager``, the outbox, no network)
and ``live`` (the QStash emulator delivering to the AutoSend sandbox on loopback).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import respx
from celery import Celery

from celery_qstash.config import load_settings
from celery_qstash.publish.transports.qstash import client_for
from celery_qstash.status import StatusClient
from celery_qstash.testing import DevServers, outbox

from . import shapes


@pytest.fixture(scope="session")
def porting_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServers]:
    with DevServers(str(tmp_path_factory.mktemp("porting"))) as servers:
        yield servers


class Port:
    """One way of running a ported task, with the questions a test asks of both."""

    def __init__(self, name: str, app: Celery, servers: DevServers | None) -> None:
        self.name = name
        self.app = app
        self.servers = servers

    def value(self, result: Any) -> Any:
        return result.get(timeout=15)

    def published(self) -> list[str]:
        """Task ids that left the caller (QStash accepted them, or the eager outbox has them)."""
        if self.servers is None:
            return [sent.task_id for sent in outbox]
        return sorted(r.task_id for r in self._status().tasks())

    def inbox(self, count: int) -> list[dict[str, Any]]:
        """What reached AutoSend (the sandbox; the outbox in eager mode): to, subject, task id."""
        if self.servers is None:
            return [{"to": s.to[0], "subject": s.subject, "task_id": s.task_id} for s in outbox]
        emails = self.servers.wait_for_emails(count, timeout=15)
        return [
            {"to": e["to"]["email"], "subject": e["subject"], "task_id": e["idempotencyKey"]}
            for e in reversed(emails)  # the sandbox lists newest first
        ]

    def queue(self, task_id: str) -> str | None:
        """The QStash queue the task was enqueued to."""
        if self.servers is None:
            return next(s.request.queue for s in outbox if s.task_id == task_id)
        record = self._status().task(task_id)
        assert record is not None
        return record.queue

    def _status(self) -> StatusClient:
        return StatusClient(client_for(load_settings(self.app.conf)))


@pytest.fixture(params=["eager", "live"])
def port(
    request: pytest.FixtureRequest, make_app: Callable[..., Celery]
) -> Iterator[Port]:
    shapes.reset()
    if request.param == "eager":
        app = make_app("porting")
        app.conf.task_always_eager = True
        # What porting.md recommends: a body's exception reaches the caller, as in production.
        app.conf.task_eager_propagates = True
        with respx.mock(assert_all_mocked=True, assert_all_called=False) as no_network:
            yield Port("eager", app, None)
        assert no_network.calls.call_count == 0
    else:
        servers: DevServers = request.getfixturevalue("porting_servers")
        servers.reset()
        app = make_app("porting")
        servers.configure(app)
        yield Port("live", app, servers)
    shapes.reset()
