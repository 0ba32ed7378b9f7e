"""The sandbox's webhooks: which events each accepted email gets, how they are signed and
retried, the simulator addresses, bounce rules, and the inbox's view of them.

The webhook URL is mocked with respx (the sandbox's sender is an httpx client): what it
receives is checked byte for byte against AutoSend's documented headers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox
from celery_qstash.local.sandbox.webhooks import RETRY_SCHEDULE, simulated
from celery_qstash.webhooks import parse_event, signature

from .helpers import AUTH, START, TestClient, bulk, email

URL = "https://app.example/autosend/webhooks"
SECRET = "whsec_sandbox_test"


@pytest.fixture
def hooked(clock: FakeClock) -> Iterator[Sandbox]:
    with Sandbox(clock=clock, rate_per_second=None, webhook_url=URL,
                 webhook_secret=SECRET) as sb:
        yield sb


@pytest.fixture
def received() -> Iterator[list[httpx.Request]]:
    seen: list[httpx.Request] = []
    with respx.mock(assert_all_called=False) as mock:
        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200)

        mock.post(URL).mock(side_effect=answer)
        yield seen


def _send(sandbox: Sandbox, **body: Any) -> dict[str, Any]:
    with TestClient(sandbox.app) as client:
        answer = client.post("/v1/mails/send", json=email(**body), headers=AUTH)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def _kinds(requests: list[httpx.Request]) -> list[str]:
    return [json.loads(r.content)["type"] for r in requests]


def test_an_accepted_email_gets_sent_then_delivered_signed_as_documented(
        hooked: Sandbox, clock: FakeClock, received: list[httpx.Request]) -> None:
    data = _send(hooked)
    assert hooked.webhooks.deliver_due() == 0          # AutoSend takes a moment to send it
    clock.advance(1)
    assert hooked.webhooks.deliver_due() == 1 and _kinds(received) == ["email.sent"]
    clock.advance(1)
    hooked.webhooks.deliver_due()
    assert _kinds(received) == ["email.sent", "email.delivered"]
    for request in received:
        assert request.headers["x-webhook-signature"] == signature(request.content, SECRET)
        assert request.headers["x-webhook-event"] == json.loads(request.content)["type"]
        assert request.headers["user-agent"] == "AutoSend-Webhooks/1.0"
        assert request.headers["content-type"] == "application/json"
        assert int(request.headers["x-webhook-timestamp"]) in ((START + 1) * 1000,
                                                               (START + 2) * 1000)
        event = parse_event(json.loads(request.content))   # our own parser reads it
        assert (event.email_id, event.recipient) == (data["emailId"], "jane@example.com")
    assert len({r.headers["x-webhook-delivery-id"] for r in received}) == 2


@pytest.mark.parametrize(("to", "expected"), [
    ("bounce@example.com", ["email.sent", "email.bounced"]),
    ("bounce+signup@simulator.amazonses.com", ["email.sent", "email.bounced"]),
    ("suppressionlist@example.com", ["email.sent", "email.bounced"]),
    ("complaint@example.com", ["email.sent", "email.delivered", "email.spam_reported"]),
    ("ooto@example.com", ["email.sent", "email.delivered"]),
    ("success@example.com", ["email.sent", "email.delivered"]),
    ("bouncer@example.com", ["email.sent", "email.delivered"]),
])
def test_simulator_addresses(hooked: Sandbox, clock: FakeClock, received: list[httpx.Request],
                             to: str, expected: list[str]) -> None:
    _send(hooked, to={"email": to})
    clock.advance(5)
    hooked.webhooks.deliver_due()
    assert _kinds(received) == expected
    if "email.bounced" in expected:
        data = json.loads(received[-1].content)["data"]
        assert data["bounceType"] == "Permanent" and data["reason"].startswith("550")


def test_simulated_reads_the_local_part_only() -> None:
    assert simulated("Bounce@x.org") == "bounce" and simulated("bounce-me@x.org") is None
    assert simulated("no-at-sign") is None


def test_a_bounce_rule_is_used_up_and_validated(hooked: Sandbox, clock: FakeClock,
                                                received: list[httpx.Request]) -> None:
    with TestClient(hooked.app) as client:
        refused = client.post("/api/v1/chaos", json={"bounce": "nobody", "bounce_type": "Hard",
                                                     "color": 1}, headers=AUTH)
        added = client.post("/api/v1/chaos", json={"bounce": "*", "fail_next": 2}, headers=AUTH)
        unauthorised = client.post("/api/v1/chaos", json={"bounce": "*"})
    assert refused.status_code == 400
    fields = {d["field"] for d in refused.json()["error"]["details"]}
    assert fields == {"bounce", "bounce_type", "color"}
    assert added.json()["bounces"] == [{"to": "*", "bounce_type": "Permanent", "remaining": 2}]
    assert unauthorised.status_code == 401
    for _ in range(3):
        _send(hooked)
    clock.advance(2)
    hooked.webhooks.deliver_due()
    outcomes = [k for k in _kinds(received) if k != "email.sent"]
    assert outcomes == ["email.bounced", "email.bounced", "email.delivered"]


def test_a_failed_webhook_is_retried_on_the_schedule_then_given_up(
        hooked: Sandbox, clock: FakeClock) -> None:
    with respx.mock() as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(500))
        data = _send(hooked, to={"email": "bounce@example.com"})
        clock.advance(1)
        hooked.webhooks.deliver_due()
        for wait in RETRY_SCHEDULE:
            clock.advance(wait - 0.001)
            before = route.call_count
            hooked.webhooks.deliver_due()
            clock.advance(0.001)
            hooked.webhooks.deliver_due()
            assert route.call_count >= before + 1
    sent = hooked.webhooks.events(data["emailId"])[0]
    assert (sent["event"], sent["attempts"], sent["state"], sent["lastStatus"]) == (
        "email.sent", 4, "failed", 500)
    ids = {r.headers["x-webhook-delivery-id"] for r, _ in route.calls
           if json.loads(r.content)["type"] == "email.sent"}
    assert len(ids) == 1                                   # stable across retries


def test_without_a_url_events_are_recorded_for_the_inbox(sandbox: Sandbox, client: TestClient,
                                                         clock: FakeClock) -> None:
    answer = client.post("/v1/mails/send", json=email(), headers=AUTH)
    email_id = answer.json()["data"]["emailId"]
    assert sandbox.webhooks.deliver_due() == 0
    events = client.get(f"/api/v1/messages/{email_id}/events").json()["events"]
    assert [(e["event"], e["state"]) for e in events] == [("email.sent", "recorded"),
                                                          ("email.delivered", "recorded")]
    page = client.get(f"/inbox/{email_id}")
    assert 'id="events"' in page.text and "email.delivered" in page.text
    assert client.get("/api/v1/messages/nope/events").status_code == 404


def test_bulk_emails_carry_their_batch_id(hooked: Sandbox, clock: FakeClock,
                                         received: list[httpx.Request]) -> None:
    with TestClient(hooked.app) as client:
        batch = client.post("/v1/mails/bulk", json=bulk(), headers=AUTH).json()["data"]
    clock.advance(1)
    hooked.webhooks.deliver_due()
    assert {json.loads(r.content)["data"]["batchId"] for r in received} == {batch["batchId"]}
    assert len(received) == 2


def test_reset_forgets_events_and_rules(hooked: Sandbox, clock: FakeClock) -> None:
    data = _send(hooked)
    with TestClient(hooked.app) as client:
        client.post("/api/v1/chaos", json={"bounce": "*"}, headers=AUTH)
        client.post("/_sandbox/reset", headers=AUTH)
        assert client.get("/api/v1/chaos").json()["bounces"] == []
    assert hooked.webhooks.events(data["emailId"]) == []


def test_a_webhook_url_needs_http_and_a_secret(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="http"):
        Sandbox(clock=clock, webhook_url="ftp://x", webhook_secret="s")
    with pytest.raises(ValueError, match="secret"):
        Sandbox(clock=clock, webhook_url=URL)
