"""Real emulator + sandbox on loopback for the whole-path tests (started once per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from celery_qstash.testing import DevServers


@pytest.fixture(scope="session")
def dev_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServers]:
    with DevServers(str(tmp_path_factory.mktemp("dev"))) as servers:
        yield servers


@pytest.fixture
def live_app(dev_servers: DevServers) -> Iterator[Celery]:
    dev_servers.reset()
    app = Celery("live", set_as_current=True)
    dev_servers.configure(app)
    yield app
