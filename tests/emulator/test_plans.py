"""Plan quotas behind ``--plan`` (issue 9 item 12), off by default.

Sources: QStash docs ``api/api-ratelimiting`` (daily quota: 429 with ``RateLimit-*``;
per-second burst on non-publishing endpoints: 429 with ``Burst-RateLimit-*``), the OAS
(412 "Exceeded the maximum number of queues/schedules allowed"), and
upstash.com/pricing/qstash for the figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from celery_qstash.cli.servers import dev
from celery_qstash.cli.servers import emulator as emulator_command
from celery_qstash.clock import FakeClock
from celery_qstash.local.emulator import EmulatorServer
from celery_qstash.local.emulator.plans import PLANS, Plan

from .conftest import START, Client, Target


def serve(plan: str | Plan) -> Iterator[Client]:
    server = EmulatorServer(clock=FakeClock(START), start_delivery=False, plan=plan).start()
    client = Client(server)
    yield client
    client.http.close()
    server.stop()


@pytest.fixture
def free() -> Iterator[Client]:
    yield from serve("free")


@pytest.fixture
def tiny() -> Iterator[Client]:
    """The free plan with a daily quota of 3, so the test publishes 4 messages, not 1,001."""
    yield from serve(dataclasses.replace(PLANS["free"], messages_per_day=3))


def test_the_daily_quota_is_a_429_with_ratelimit_headers(tiny: Client, target: Target) -> None:
    assert PLANS["free"].messages_per_day == 1_000  # upstash.com/pricing/qstash, Free
    free = tiny
    for _ in range(3):
        assert free.publish(f"{target.url}/x", b"x").status_code == 200
    refused = free.publish(f"{target.url}/x", b"x")
    assert refused.status_code == 429
    assert refused.headers["RateLimit-Limit"] == "3"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert int(refused.headers["RateLimit-Reset"]) == (int(START) // 86_400 + 1) * 86_400
    free.advance(86_400)  # a new UTC day
    assert free.publish(f"{target.url}/x", b"x").status_code == 200


def test_non_publishing_endpoints_have_a_burst_limit(free: Client) -> None:
    statuses = [free.http.get("/v2/queues").status_code for _ in range(101)]
    assert statuses[:100] == [200] * 100
    assert statuses[100] == 429
    limited = free.http.get("/v2/queues")
    assert limited.headers["Burst-RateLimit-Limit"] == "100"
    assert limited.headers["Burst-RateLimit-Remaining"] == "0"
    free.advance(1)
    assert free.http.get("/v2/queues").status_code == 200


def test_resource_caps_are_a_412(free: Client, target: Target) -> None:
    for i in range(10):
        assert free.http.post("/v2/queues", json={"queueName": f"q{i}"}).status_code == 200
    assert free.http.post("/v2/queues", json={"queueName": "q10"}).status_code == 412
    assert free.http.post("/v2/queues", json={"queueName": "q0", "parallelism": 1}
                          ).status_code == 200  # updating an existing one is fine
    free.http.post("/v2/topics/one/endpoints", json={"endpoints": [{"url": f"{target.url}/a"}]})
    second = free.http.post("/v2/topics/two/endpoints",
                            json={"endpoints": [{"url": f"{target.url}/a"}]})
    assert second.status_code == 412


def test_no_plan_means_no_quota(fake: Client, target: Target) -> None:
    assert [fake.http.get("/v2/queues").status_code for _ in range(150)] == [200] * 150
    for command in (dev, emulator_command):
        assert "--plan [free|payg|pro]" in CliRunner().invoke(command, ["--help"]).output
