"""Fixtures for the dashboard tests.

* ``fake`` + ``client``: the dashboard app over a :class:`StatusClient` whose QStash is
  faked with respx (unit tests; respx is active only inside ``fake``).
* ``stack`` (session): a real QStash emulator routing ``https://api.autosend.com`` to a
  real AutoSend sandbox, a Celery app configured for them, and the dashboard served
  over HTTP (integration and browser tests).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; plain httpx works the same here.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from celery_qstash import Email, QStashTask
from celery_qstash.config import load_settings
from celery_qstash.local.dashboard import create_app
from celery_qstash.local.serving import ThreadedServer
from celery_qstash.publish.transports.qstash import client_for
from celery_qstash.status import StatusClient

from .qstash_events import FakeQStash, fake_qstash

QSTASH_URL = "http://qstash.test"
TOKEN = "qstash-token-DASHBOARD-S3CRET"
#: The stack's sandbox takes any bearer key; its chaos endpoints need one.
SANDBOX_AUTH = {"Authorization": "Bearer AS_test"}

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium through playwright (never a downloaded browser)."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        # scripts/test installs it; a missing browser is a broken setup, not a reason to skip.
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/test, or apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def status() -> StatusClient:
    return StatusClient(client_for(load_settings({"qstash_url": QSTASH_URL, "qstash_token": TOKEN})))


@pytest.fixture
def fake() -> Iterator[FakeQStash]:
    with fake_qstash(QSTASH_URL) as f:
        yield f


@pytest.fixture
def client(fake: FakeQStash, status: StatusClient) -> Iterator[TestClient]:
    with TestClient(create_app(status, secrets=[TOKEN])) as tc:
        yield tc


# -- the real stack ------------------------------------------------------------------


@dataclass
class Stack:
    emulator: Any
    sandbox: Any
    app: Celery
    send: Any
    dashboard_url: str
    status: StatusClient

    def chaos(self, fail_next: int, status: int = 500) -> None:
        httpx.post(f"{self.sandbox.url}/api/v1/chaos", headers=SANDBOX_AUTH,
                   json={"fail_next": fail_next, "status": status}).raise_for_status()

    def calm(self) -> None:
        httpx.delete(f"{self.sandbox.url}/api/v1/chaos", headers=SANDBOX_AUTH).raise_for_status()


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    from celery_qstash.local.emulator import EmulatorServer
    from celery_qstash.local.sandbox import SandboxServer

    with SandboxServer(rate_per_second=None, rate_per_minute=None) as sandbox, \
            EmulatorServer(routes={"https://api.autosend.com": sandbox.url}) as emulator:
        app = Celery("dashboard-it", set_as_current=False)
        app.conf.update(
            qstash_url=emulator.url,
            qstash_token=emulator.token,
            autosend_api_key="AS_test",
            autosend_rate_limit="off",
            result_backend="celery_qstash.status.result:QStashBackend",
        )

        # max_retries=1, no delay: a failing destination fails fast (two attempts).
        @app.task(base=QStashTask, name="it.send_welcome", max_retries=1, default_retry_delay=0)
        def send_welcome(to: str, subject: str) -> Email:
            return Email(to=to, from_="hello@acme.example", subject=subject, text="Welcome!")

        status = StatusClient(client_for(load_settings(app.conf)))
        settings = load_settings(app.conf)
        board = create_app(status, secrets=settings.secrets, inbox_url=sandbox.url)
        with ThreadedServer(board) as server:
            sandbox.sandbox.api.dashboard_url = server.url  # the inbox links back to tasks
            yield Stack(emulator, sandbox, app, send_welcome, server.url, status)
        app.close()
