"""The default flow control never draws a 429 from AutoSend's two documented limits.

AutoSend allows 2 requests per second and 50 per minute per API key (seed
``002_1488098c2f1b2f1e.txt``, "Rate Limits"); the sandbox enforces both by default. Sixty
emails sent with nothing configured all arrive and the sandbox refuses none, on a fake
clock shared by the emulator and the sandbox (the minute passes in milliseconds).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from celery import Celery

from celery_qstash import Email, autosend_task
from celery_qstash.clock import FakeClock
from celery_qstash.config import load_settings
from celery_qstash.publish.plan import parse_rate
from celery_qstash.testing import DevServers


@pytest.fixture
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServers]:
    with DevServers(str(tmp_path_factory.mktemp("rate")), clock=FakeClock()) as found:
        yield found


def test_the_default_pace_is_provably_under_both_limits() -> None:
    app = Celery("rate-default", set_as_current=False)
    app.conf.qstash_token, app.conf.autosend_api_key = "t", "k"
    rate, period = parse_rate(load_settings(app.conf).rate_limit or "")
    seconds = int(period.rstrip("s"))
    # Whatever QStash's periods are (fixed or sliding), a 1 s interval meets at most two
    # periods and a 60 s interval at most 60 / period + 1 of them.
    assert 2 * rate <= 2
    assert (60 // seconds + 1) * rate <= 50


def test_sixty_emails_with_the_defaults_draw_no_429(servers: DevServers) -> None:
    stats_url = f"{servers.sandbox.url}/api/v1/stats"
    box = httpx.get(stats_url).json()
    assert box["rejected"] == {}
    app = Celery("rate-sixty", set_as_current=True)
    servers.configure(app)

    @autosend_task(app=app, name="rate.send")
    def send(n: int) -> Email:
        return Email(to=f"reader{n}@example.com", from_="news@example.com",
                     subject=f"Issue {n}", text="hello")

    for n in range(60):
        send.delay(n)
    for _ in range(65):  # two minutes and ten seconds of fake time, a period at a time
        servers.advance(2.0)
    assert len(servers.emails()) == 60
    stats = httpx.get(stats_url).json()
    assert stats["accepted"] == 60
    assert stats["rejected"] == {}, f"the sandbox refused some: {stats['rejected']}"


def test_the_sandbox_enforces_both_limits_by_default(servers: DevServers) -> None:
    # 2 per second and 50 per minute: 50 sent at 2 a second leave the 51st (in the
    # 26th second) refused by the minute window alone.
    headers = {"Authorization": f"Bearer {servers.api_key}"}
    body = {"to": {"email": "a@example.com"}, "from": {"email": "b@example.com"},
            "subject": "s", "text": "t"}
    url = f"{servers.sandbox.url}/v1/mails/send"
    assert servers.clock is not None
    for sent in range(50):
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == 200, (sent, response.text)
        if sent % 2:
            servers.clock.advance(1.0)
    assert response.headers["x-ratelimit-limit"] == "50"
    refused = httpx.post(url, json=body, headers=headers)
    assert refused.status_code == 429
    assert refused.json()["retryAfter"] == 35  # the first of the 50 leaves the minute at t=60
