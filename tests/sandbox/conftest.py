"""Fixtures for the AutoSend sandbox tests: a Sandbox on a FakeClock and a TestClient."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox

from .helpers import START, TestClient


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def sandbox(clock: FakeClock) -> Iterator[Sandbox]:
    # No rate limits here, so tests can send several requests at one fake instant;
    # test_sandbox_ratelimit.py builds its own Sandbox with the defaults.
    with Sandbox(clock=clock, rate_per_second=None, rate_per_minute=None) as sb:
        yield sb


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[TestClient]:
    with TestClient(sandbox.app) as tc:
        yield tc
