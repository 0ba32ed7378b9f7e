"""Real emulator + sandbox on loopback for the whole-path tests: the pytest plugin's
``qstash_dev`` (one pair per session, reset before each test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from celery_qstash.contrib.pytest_plugin import DevInbox
from celery_qstash.testing import DevServers


@pytest.fixture
def dev_servers(qstash_dev: DevInbox) -> DevServers:
    return qstash_dev.servers


@pytest.fixture
def live_app(qstash_dev: DevInbox) -> Iterator[Celery]:
    app = Celery("live", set_as_current=True)
    qstash_dev.configure(app)
    yield app
    app.close()
