"""Helpers for testing apps that use celery-qstash.

``outbox`` is where eager mode (``task_always_eager=True``) puts every email:

    def test_welcome(celery_app):
        outbox.clear()
        send_welcome.delay(42)
        assert outbox.last.to == ["jane@example.com"]
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from .clock import FakeClock
from .devserver import AUTOSEND_URL, DEV_AUTOSEND_API_KEY
from .transports.eager import Outbox, SentEmail, outbox

__all__ = ["DevServers", "FakeClock", "Outbox", "SentEmail", "outbox"]


class DevServers:
    """The QStash emulator and the AutoSend sandbox on free loopback ports, in-process.

    AutoSend-bound deliveries are routed to the sandbox. Needs the ``local`` extra::

        with DevServers() as servers:
            servers.configure(app)          # qstash_url, qstash_token, autosend_api_key
            send_welcome.delay(42)
            servers.wait_for_emails(1)
    """

    def __init__(self, data_dir: str | None = None, **sandbox_options: Any) -> None:
        self.data_dir = data_dir
        self.sandbox_options = sandbox_options
        self.emulator: Any = None
        self.sandbox: Any = None
        self.api_key = DEV_AUTOSEND_API_KEY

    def start(self) -> DevServers:
        from pathlib import Path

        from .emulator import EmulatorServer
        from .sandbox import SandboxServer

        base = Path(self.data_dir) if self.data_dir else None
        self.sandbox = SandboxServer(
            data_dir=base / "sandbox" if base else None, **self.sandbox_options
        ).start()
        self.emulator = EmulatorServer(
            base / "emulator" if base else None, routes={AUTOSEND_URL: self.sandbox.url}
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

    def configure(self, app: Any) -> None:
        """Point a Celery app at these servers."""
        app.conf.qstash_url = self.emulator.url
        app.conf.qstash_token = self.emulator.token
        app.conf.autosend_api_key = self.api_key

    def reset(self) -> None:
        """Forget every message, log and captured email (between tests)."""
        self.emulator.emulator.reset()
        self.sandbox.sandbox.reset()

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
