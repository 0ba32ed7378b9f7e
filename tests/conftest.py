"""Shared fixtures for the celery-qstash test suite.

* ``app``: a fresh Celery app per test, current, configured for a fake QStash at
  ``http://qstash.test`` with recognisable (fake) secrets.
* ``qstash_mock``: a ``respx`` router that answers QStash's publish and enqueue
  endpoints; respx is only active inside this fixture, so other tests can still
  talk to servers on loopback.
* an autouse fixture that empties the eager outbox, resets the once-per-process
  warnings and removes ``QSTASH_*``/``AUTOSEND_*`` environment variables.
* ``django_settings``: Django configured once (SQLite in memory, no apps) unless a test
  configured it first.
* ``redis_server``/``redis_url``: Debian's ``redis-server``, started once per session on a
  free loopback port and a unix socket with no persistence (``scripts/test`` installs
  it), for the shared delivery ledgers.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import respx
from celery import Celery

from celery_qstash.publish import options as qstash_options
from celery_qstash.testing import outbox

QSTASH_URL = "http://qstash.test"
QSTASH_TOKEN = "qstash-token-S3CRET-4f9a1c7e2b"
AUTOSEND_API_KEY = "autosend-key-S3CRET-8d3e6b0a51"

_ENV_PREFIXES = ("QSTASH_", "AUTOSEND_")

# tests/test_pytest_plugin.py runs our pytest plugin in fresh projects.
pytest_plugins = ["pytester"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """scripts/matrix runs two sessions side by side: their ``slow`` tests (real processes,
    the demo's usual ports) take turns, through the lock file it names."""
    lock = os.environ.get("CELERY_QSTASH_SLOW_LOCK")
    if not lock or item.get_closest_marker("slow") is None:
        yield
        return
    with open(lock, "a") as held:  # closing it releases the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


@pytest.fixture
def qstash_token() -> str:
    """The (fake) QStash token the ``app`` fixture is configured with."""
    return QSTASH_TOKEN


@pytest.fixture
def autosend_api_key() -> str:
    """The (fake) AutoSend API key the ``app`` fixture is configured with."""
    return AUTOSEND_API_KEY


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with an empty outbox, fresh warnings and no QSTASH_/AUTOSEND_ env."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    outbox.clear()
    qstash_options.reset_warnings()
    yield
    outbox.clear()
    qstash_options.reset_warnings()


@pytest.fixture
def make_app() -> Iterator[Callable[..., Celery]]:
    """Build more configured, current Celery apps (``make_app(task_cls=...)``); closed afterwards."""
    made: list[Celery] = []

    def make(main: str = "tests", **kwargs: Any) -> Celery:
        celery_app = Celery(main, set_as_current=True, **kwargs)
        celery_app.conf.update(
            qstash_token=QSTASH_TOKEN,
            qstash_url=QSTASH_URL,
            autosend_api_key=AUTOSEND_API_KEY,
        )
        made.append(celery_app)
        return celery_app

    yield make
    for celery_app in made:
        celery_app.close()


@pytest.fixture
def app(make_app: Callable[..., Celery]) -> Celery:
    """A function-scoped, current Celery app pointed at the fake QStash (``strict_typing`` on)."""
    return make_app()


@pytest.fixture
def qstash_mock() -> Iterator[respx.MockRouter]:
    """respx answering ``POST /v2/publish/...``, ``/v2/enqueue/...`` and ``/v2/batch`` like QStash.

    Routes are named ``"publish"``, ``"enqueue"`` and ``"batch"``; each answer (each
    batch item) carries a fresh ``{"messageId": "msg_<n>"}``. Any other request fails (respx's
    ``assert_all_mocked``), so nothing reaches the network.
    """
    counter = itertools.count(1)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"messageId": f"msg_{next(counter)}"})

    def answer_batch(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)
        return httpx.Response(200, json=[{"messageId": f"msg_{next(counter)}"} for _ in items])

    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        router.post(url__regex=rf"^{re.escape(QSTASH_URL)}/v2/publish/.+", name="publish").mock(
            side_effect=answer
        )
        router.post(url__regex=rf"^{re.escape(QSTASH_URL)}/v2/enqueue/.+", name="enqueue").mock(
            side_effect=answer
        )
        router.post(f"{QSTASH_URL}/v2/batch", name="batch").mock(side_effect=answer_batch)
        yield router


@pytest.fixture(scope="session")
def django_settings() -> None:
    """Django's settings, configured once per session (SQLite in memory, no apps)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            INSTALLED_APPS=[],
        )
        django.setup()


class RedisServer(NamedTuple):
    url: str  #: ``redis://127.0.0.1:<port>/0``
    socket: Path  #: its unix socket (``unix://<socket>``)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A ``redis-server`` of this session's own on a free loopback port and a unix socket:
    no RDB, no AOF, its working files in a temporary folder; stopped at the end."""
    import redis
    from waiting import wait_until

    from celery_qstash.local.serving import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/test (it installs Debian's)")
    port = free_port()
    folder: Path = tmp_path_factory.mktemp("redis")
    socket = folder / "redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(folder), "--protected-mode", "yes", "--unixsocket", str(socket),
         "--unixsocketperm", "700"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)

    def answers() -> bool:
        assert proc.poll() is None, f"redis-server exited with {proc.returncode}"
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, "redis-server to answer PING")
        client.close()
        yield RedisServer(url, socket)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:<port>/0`` of the session's ``redis-server``."""
    return redis_server.url
