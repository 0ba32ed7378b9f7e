"""The seeds' scenarios (``examples/``), each run against the emulator and the sandbox.

Time-based scenarios run on a :class:`FakeClock` shared by both servers and move it
(``DevServers.advance``) instead of waiting.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from qstash import QStash

from celery_qstash.clock import FakeClock
from celery_qstash.testing import DevServers
from examples import (
    bounced_signup,
    daily_digest,
    newsletter,
    onboarding_drip,
    template_email,
    welcome,
)

ROOT = Path(__file__).resolve().parent.parent.parent
DAY = 24 * 60 * 60


@pytest.fixture
def clocked() -> Iterator[DevServers]:
    with DevServers(clock=FakeClock()) as servers:
        yield servers


def test_welcome_is_sent_once_per_user(dev_servers: DevServers) -> None:
    dev_servers.reset()
    dev_servers.configure(welcome.app)
    ada = welcome.User(42, "ada@example.com", "Ada")

    first = welcome.on_signup(ada)
    second = welcome.on_signup(ada)
    welcome.send_welcome.AsyncResult("welcome-42").get(timeout=10)
    other = welcome.on_signup(welcome.User(43, "bo@example.com", "Bo"))

    assert second == first != other  # QStash deduplicated the second signup
    emails = dev_servers.wait_for_emails(2)
    assert sorted(e["to"]["email"] for e in emails) == ["ada@example.com", "bo@example.com"]
    ada_email = next(e for e in emails if e["to"]["email"] == "ada@example.com")
    assert ada_email["idempotencyKey"] == "welcome-42"
    assert ada_email["renderedSubject"] == "Welcome, Ada!"


def test_the_drip_goes_out_on_days_0_1_3_and_7(clocked: DevServers) -> None:
    clocked.configure(onboarding_drip.app)
    ids = onboarding_drip.queue_onboarding(7, "grace@example.com", "Grace")
    assert ids == [f"onboard-day{d}-7" for d in (0, 1, 3, 7)]
    # A repeated signup (a double-submitted form) publishes nothing new: same task ids,
    # within QStash's deduplication window.
    onboarding_drip.queue_onboarding(7, "grace@example.com", "Grace")

    def subjects() -> list[str]:
        return sorted(e["subject"] for e in clocked.emails())

    clocked.advance(0)
    assert subjects() == ["Welcome!"]
    clocked.advance(DAY - 1)
    assert subjects() == ["Welcome!"]  # not a second early
    clocked.advance(1)
    assert subjects() == ["Getting started tips", "Welcome!"]
    clocked.advance(2 * DAY)
    assert len(subjects()) == 3 and "How's it going?" in subjects()
    clocked.advance(4 * DAY)
    assert "Your first week" in subjects() and len(subjects()) == 4
    clocked.advance(30 * DAY)
    assert len(subjects()) == 4


def test_a_template_email_carries_template_id_and_dynamic_data(dev_servers: DevServers) -> None:
    dev_servers.reset()
    dev_servers.configure(template_email.app)
    result = template_email.send_shipping_update.delay("john@example.com", "John", "ORD-12345")
    data = result.get(timeout=10)

    [email] = dev_servers.wait_for_emails(1)
    assert email["emailId"] == data["emailId"]
    assert email["templateId"] == "your-template-id"
    assert email["dynamicData"] == {
        "firstName": "John", "orderNumber": "ORD-12345",
        "trackingUrl": "https://track.example.com/ORD-12345",
    }
    assert email["html"] is None


def test_a_newsletter_to_thousands_goes_in_bulk_chunks_through_the_queue(clocked: DevServers) -> None:
    clocked.configure(newsletter.app)
    ids = newsletter.send_newsletter(1, newsletter.readers(2000))
    assert len(ids) == 20  # 100 recipients per bulk call

    client = QStash(clocked.emulator.token, base_url=clocked.emulator.url)
    assert client.queue.get("email-queue").lag == 20
    seconds = 0
    while _total(clocked) < 2000 and seconds < 120:
        clocked.advance(1)
        seconds += 1
    assert _total(clocked) == 2000
    # AutoSend allows 2 requests a second: 20 chunks need at least 10 seconds of its time.
    assert seconds >= 10
    messages = httpx.get(f"{clocked.sandbox.url}/api/v1/messages", params={"limit": 500}).json()
    batches = {m["batchId"] for m in messages["messages"]}
    assert all(batches) and len(batches) >= 5
    assert {m["endpoint"] for m in messages["messages"]} == {"/v1/mails/bulk"}


def test_the_daily_digest_is_a_qstash_schedule_from_beat(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery_qstash.schedules.beat import sync

    with DevServers(clock=FakeClock(daily_digest.START)) as servers:
        servers.configure(daily_digest.app)
        assert [c.action for c in sync(daily_digest.app)] == ["create"]
        assert [c.action for c in sync(daily_digest.app)] == ["unchanged"]
        [schedule] = QStash(servers.emulator.token, base_url=servers.emulator.url).schedule.list()
        assert schedule.cron == "CRON_TZ=Europe/Paris 0 7 * * *"

        servers.advance(59)
        assert servers.emails() == []  # 06:59:59 in Paris
        servers.advance(1)
        assert len(servers.emails()) == 1
        servers.advance(DAY - 60)
        assert len(servers.emails()) == 1
        servers.advance(60)
        assert [e["subject"] for e in servers.emails()] == ["Your daily digest"] * 2


def _total(servers: DevServers) -> int:
    response = httpx.get(f"{servers.sandbox.url}/api/v1/messages", params={"limit": 1})
    return int(response.json()["total"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("welcome", "(the same message)"),
        ("onboarding_drip", "day 7: inbox holds"),
        ("template_email", "template your-template-id"),
        ("newsletter", "3000 emails in the sandbox"),
        ("daily_digest", "07:00 day 2: 2 digest(s)"),
        ("bounced_signup", "Bo <bounce@example.com>: address marked bad (bounced)"),
    ],
)
def test_each_example_runs_from_one_command(module: str, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"examples.{module}"], cwd=ROOT, capture_output=True,
        text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert expected in done.stdout


def test_a_bounced_welcome_marks_the_address_bad() -> None:
    """Emulator, sandbox and the app's webhook endpoint: the bounce reaches the signal."""
    bounced_signup.USERS.clear()
    users = bounced_signup.run()
    assert {u.email: u.email_bad for u in users.values()} == {
        "ada@example.com": False, "bounce@example.com": True}


def test_time_only_moves_on_a_fake_clock(dev_servers: DevServers) -> None:
    with pytest.raises(RuntimeError, match="FakeClock"):
        dev_servers.advance(60)


# -- deferred tasks: bodies run at delivery on the app's receiver -------------------------


@pytest.fixture
def digest_state() -> Iterator[None]:
    from examples import notification_digest

    notification_digest.NOTIFICATIONS.clear()
    yield
    notification_digest.NOTIFICATIONS.clear()


def test_the_digest_reads_what_is_unread_when_it_goes_out(digest_state: None) -> None:
    """openwisp's digest, ported: 1 email with 3 items (not 3 emails), none when read."""
    from examples import notification_digest as nd

    with nd.offline() as servers:
        nd.notify(1, "first")
        nd.notify(1, "second")
        servers.advance(60 * 60)
        nd.notify(1, "third")  # before the digest goes out
        assert servers.emails() == []  # three hours have not passed
        servers.advance(nd.BATCH_INTERVAL)
        [digest] = servers.emails()
        assert digest["subject"] == "3 new notifications"
        assert "- third" in digest["text"]
        nd.notify(1, "fourth")
        nd.NOTIFICATIONS[-1].unread = False  # read on the site meanwhile
        servers.advance(nd.BATCH_INTERVAL)
        assert len(servers.emails()) == 1


def test_the_morning_digest_is_computed_at_each_firing_and_sent_once(
    digest_state: None,
) -> None:
    from celery_qstash.schedules.beat import sync
    from examples import notification_digest as nd

    with nd.offline() as servers:
        assert servers.clock is not None
        now = servers.clock.now()
        changes = sync(nd.app)
        assert [c.action for c in changes] == ["create"]
        [schedule] = QStash(servers.emulator.token, base_url=servers.emulator.url).schedule.list()
        assert schedule.destination == nd.app.conf.qstash_receiver_url
        nd.NOTIFICATIONS.append(nd.Notification(1, "overnight"))
        servers.advance(_seconds_to_next_7am(now) + 60)
        [first] = servers.emails()
        assert first["subject"] == "1 new notification"
        servers.advance(DAY)  # nothing new: the second morning's firing sends nothing
        assert len(servers.emails()) == 1
        nd.NOTIFICATIONS.extend([nd.Notification(1, "a"), nd.Notification(1, "b")])
        servers.advance(DAY)
        newest = servers.emails()[0]
        assert newest["subject"] == "2 new notifications"
        keys = {e["idempotencyKey"] for e in servers.emails()}
        assert len(keys) == 2  # one per firing


def _seconds_to_next_7am(now: float) -> float:
    seconds = now % DAY
    return (7 * 3600 - seconds) % DAY or DAY


def test_the_thumbnail_chain_runs_each_step_after_the_last() -> None:
    from examples import thumbnails

    thumbnails.CDN_BUSY["left"] = 1
    thumbnails.PRODUCTS[7]["thumbnail"] = None
    with thumbnails.offline():
        result = thumbnails.on_product_saved(7, "https://cdn.example/mug.jpg")
        assert result.get(timeout=30) == "https://cdn.example/mug.jpg?w=256"
        assert thumbnails.PRODUCTS[7]["thumbnail"] == "https://cdn.example/mug.jpg?w=256"
        assert thumbnails.CDN_BUSY["left"] == 0  # the busy CDN was retried, not failed
