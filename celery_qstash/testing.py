"""Helpers for testing apps that use celery-qstash.

``outbox`` is where eager mode (``task_always_eager=True``) puts every email:

    def test_welcome(celery_app):
        outbox.clear()
        send_welcome.delay(42)
        assert outbox.last.to == ["jane@example.com"]
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from .clock import FakeClock
from .devserver import AUTOSEND_URL, DEV_AUTOSEND_API_KEY, DEV_WEBHOOK_SECRET
from .publish.transports.eager import Outbox, SentEmail, outbox

__all__ = ["DevServers", "FakeClock", "Outbox", "SentEmail", "outbox"]


class DevServers:
    """The QStash emulator and the AutoSend sandbox on free loopback ports, in-process.

    AutoSend-bound deliveries are routed to the sandbox. Needs the ``local`` extra::

        with DevServers() as servers:
            servers.configure(app)          # qstash_url, qstash_token, autosend_api_key
            send_welcome.delay(42)
            servers.wait_for_emails(1)
    """

    def __init__(
        self, data_dir: str | None = None, *, clock: FakeClock | None = None,
        **sandbox_options: Any,
    ) -> None:
        self.data_dir = data_dir
        #: With a FakeClock both servers share it, nothing is delivered on its own, and
        #: :meth:`advance` moves time and delivers what is due (drips, schedules, retries).
        self.clock = clock
        self.sandbox_options = sandbox_options
        self.emulator: Any = None
        self.sandbox: Any = None
        self.api_key = DEV_AUTOSEND_API_KEY
        #: What the sandbox signs its webhooks with (:meth:`send_webhooks_to`).
        self.webhook_secret = DEV_WEBHOOK_SECRET

    def start(self) -> DevServers:
        from pathlib import Path

        from .local.emulator import EmulatorServer
        from .local.sandbox import SandboxServer

        base = Path(self.data_dir) if self.data_dir else None
        self.sandbox = SandboxServer(
            data_dir=base / "sandbox" if base else None, clock=self.clock,
            **self.sandbox_options,
        ).start()
        self.emulator = EmulatorServer(
            base / "emulator" if base else None, routes={AUTOSEND_URL: self.sandbox.url},
            clock=self.clock, start_delivery=self.clock is None,
        ).start()
        return self

    def stop(self) -> None:
        for server in (self.emulator, self.sandbox):
            if server is not None:
                server.stop()

    def __enter__(self) -> DevServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextmanager
    def receiver(self, app: Any, path: str = "/qstash/receive") -> Iterator[str]:
        """Host ``app``'s receiver on loopback for deferred tasks: signed with these
        servers' keys, on their clock (a FakeClock's signatures verify on the same fake
        time), and ``qstash_receiver_url`` pointed at it. Yields the receiver's URL::

            with DevServers() as servers, servers.receiver(app):
                servers.configure(app)
                add.delay(2, 3).get(timeout=10)
        """
        from starlette.applications import Starlette

        from .local.serving import ThreadedServer
        from .receiver import fastapi_route

        web = Starlette()
        fastapi_route(web, path, app, clock=self.clock)
        with ThreadedServer(web) as server:
            url = f"{server.url}{path}"
            app.conf.qstash_receiver_url = url
            app.conf.qstash_current_signing_key = self.emulator.current_signing_key
            app.conf.qstash_next_signing_key = self.emulator.next_signing_key
            yield url

    def configure(self, app: Any) -> None:
        """Point a Celery app at these servers."""
        app.conf.qstash_url = self.emulator.url
        app.conf.qstash_token = self.emulator.token
        app.conf.autosend_api_key = self.api_key
        app.conf.autosend_webhook_secret = self.webhook_secret

    def send_webhooks_to(self, url: str) -> None:
        """Have the sandbox send AutoSend's signed webhooks to ``url`` (the app's
        :mod:`celery_qstash.webhooks` endpoint), signed with :attr:`webhook_secret`.
        With a fake clock they go out in :meth:`advance`."""
        self.sandbox.sandbox.webhooks.configure(url, self.webhook_secret)

    def reset(self) -> None:
        """Forget every message, log and captured email (between tests)."""
        self.emulator.emulator.reset()
        self.sandbox.sandbox.reset()

    def advance(self, seconds: float = 0.0, *, max_rounds: int = 10_000) -> int:
        """Move the fake clock by ``seconds`` and deliver everything due by then.

        Goes through the emulator's HTTP control plane (``/_emulator/clock/advance``,
        ``/_emulator/tick``), ticking until nothing is left to attempt now (callbacks and
        the next message of a FIFO queue included), then sends the sandbox's webhooks due
        by then, and again until neither has anything left. Returns the attempts made.
        """
        if self.clock is None:
            raise RuntimeError("time only moves with DevServers(clock=FakeClock())")
        url = self.emulator.url
        httpx.post(
            f"{url}/_emulator/clock/advance", params={"seconds": seconds},
            headers={"Authorization": f"Bearer {self.emulator.token}"},
        ).raise_for_status()
        total = 0
        for _ in range(max_rounds):
            response = httpx.post(f"{url}/_emulator/tick", timeout=60.0)
            response.raise_for_status()
            attempts = int(response.json()["attempts"])
            if attempts == 0:
                attempts = self.sandbox.sandbox.webhooks.deliver_due()
                if attempts == 0:
                    return total
            total += attempts
        raise RuntimeError(f"still delivering after {max_rounds} ticks")

    def chaos(self, **rule: Any) -> dict[str, Any]:
        """Add a sandbox fault rule (``fail_next=1, status=500``; README's chaos table).

        The sandbox's destructive endpoints take the API key, as a send does.
        """
        response = httpx.post(f"{self.sandbox.url}/api/v1/chaos", json=rule,
                              headers={"Authorization": f"Bearer {self.api_key}"})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def emails(self) -> list[dict[str, Any]]:
        """What the sandbox captured, newest first (its JSON API)."""
        response = httpx.get(f"{self.sandbox.url}/api/v1/messages", params={"limit": 500})
        response.raise_for_status()
        messages: list[dict[str, Any]] = response.json()["messages"]
        return messages

    def wait_for_emails(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Poll the inbox until it holds ``count`` emails (real servers deliver on real time)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.emails()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)
