"""The whole path: ``.delay()`` -> QStash emulator -> AutoSend sandbox inbox -> AsyncResult."""

from __future__ import annotations

import httpx
from celery import Celery

from celery_qstash import BulkEmail, Email, QStashTask
from celery_qstash.testing import DevServers


def _welcome_task(app: Celery, **options: object):  # type: ignore[no-untyped-def]
    @app.task(base=QStashTask, name="live.send_welcome", shared=False, **options)
    def send_welcome(user_id: int, name: str) -> Email:
        return Email(
            to=f"{name} <user{user_id}@example.com>",
            from_="Acme <hello@acme.example>",
            subject="Welcome, {{name}}",
            html="<p>Hi {{name}}</p>",
            dynamic_data={"name": name},
        )

    return send_welcome


def test_delay_reaches_the_sandbox_inbox_and_the_result(live_app: Celery, dev_servers: DevServers) -> None:
    send_welcome = _welcome_task(live_app)

    result = send_welcome.delay(7, "Ada")
    data = result.get(timeout=10)

    [email] = dev_servers.wait_for_emails(1)
    assert email["to"] == {"email": "user7@example.com", "name": "Ada"}
    assert email["renderedHtml"] == "<p>Hi Ada</p>"
    assert email["idempotencyKey"] == result.id
    assert data["emailId"] == email["emailId"]
    assert result.state == "SUCCESS" and result.successful()
    assert result.message_id.startswith("msg_")


def test_countdown_is_pending_then_delivered(live_app: Celery, dev_servers: DevServers) -> None:
    send_welcome = _welcome_task(live_app)

    result = send_welcome.apply_async((8, "Bo"), countdown=1)

    assert result.state == "PENDING"
    assert dev_servers.emails() == []
    assert "emailId" in result.get(timeout=10)
    assert len(dev_servers.emails()) == 1


def test_a_failed_attempt_is_retried_and_sent_once(live_app: Celery, dev_servers: DevServers) -> None:
    send_welcome = _welcome_task(live_app, default_retry_delay=0)
    dev_servers.chaos(fail_next=1, status=503)

    result = send_welcome.delay(9, "Cy")
    result.get(timeout=10)

    assert result.retries == 1
    assert len(dev_servers.emails()) == 1
    stats = httpx.get(f"{dev_servers.sandbox.url}/api/v1/stats").json()
    assert stats["received"] == 2 and stats["accepted"] == 1


def test_bulk_goes_to_the_bulk_endpoint(live_app: Celery, dev_servers: DevServers) -> None:
    @live_app.task(base=QStashTask, name="live.newsletter", shared=False)
    def newsletter() -> BulkEmail:
        return BulkEmail(
            from_="news@acme.example",
            subject="Issue 1",
            text="Hello {{name}}",
            recipients=[
                {"email": "a@example.com", "dynamic_data": {"name": "A"}},
                {"email": "b@example.com", "dynamic_data": {"name": "B"}},
            ],
        )

    data = newsletter.delay().get(timeout=10)

    emails = dev_servers.wait_for_emails(2)
    assert {e["batchId"] for e in emails} == {data["batchId"]}
    assert sorted(e["renderedText"] for e in emails) == ["Hello A", "Hello B"]


def test_the_api_key_never_reaches_qstash_logs(live_app: Celery, dev_servers: DevServers) -> None:
    live_app.conf.autosend_api_key = "AS_live_secret_key_9f8e7d"
    send_welcome = _welcome_task(live_app)

    send_welcome.delay(10, "Di").get(timeout=10)

    events = httpx.get(
        f"{dev_servers.emulator.url}/v2/events",
        headers={"Authorization": f"Bearer {dev_servers.emulator.token}"},
    ).text
    assert "AS_live_secret_key_9f8e7d" not in events
    assert "REDACTED" in events
