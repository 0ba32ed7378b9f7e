"""The dashboard's schedules page, against the real emulator: the schedules
``celery-qstash beat sync`` makes, read through the official SDK, paused and resumed from
the page, and updated in place like the other lists."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from celery.schedules import crontab
from starlette.testclient import TestClient

from celery_qstash.schedules.beat import sync

from .conftest import Stack


@pytest.fixture
def synced(stack: Stack) -> Iterator[str]:
    """A daily beat entry of the stack's email task, synced to QStash; its schedule id."""
    stack.app.conf.beat_schedule = {
        "morning welcome": {"task": "it.send_welcome", "schedule": crontab(hour=7, minute=30),
                            "args": ("beat@example.com", "Good morning")},
    }
    try:
        (change,) = sync(stack.app)
        assert change.schedule_id
        yield change.schedule_id
    finally:
        stack.app.conf.beat_schedule = {}
        sync(stack.app)  # deletes it


def test_the_page_lists_what_each_schedule_runs(stack: Stack, synced: str) -> None:
    page = httpx.get(f"{stack.dashboard_url}/schedules").text

    row = re.search(rf"<tr><td[^>]*><code title=\"{re.escape(synced)}\".*?</tr>", page)
    assert row is not None, page
    assert "<code>CRON_TZ=UTC 30 7 * * *</code>" in row[0]
    assert "email: Good morning" in row[0]
    assert "https://api.autosend.com/v1/mails/send" in row[0]
    assert ">ACTIVE</span>" in row[0]
    assert 'href="/schedules"' in page and ">Schedules</a>" in page  # in the navigation
    assert 'id="live-schedules" data-live' in page and 'data-refresh="10"' in page


def test_pause_and_resume_from_the_page(stack: Stack, synced: str) -> None:
    with httpx.Client(base_url=stack.dashboard_url) as board:
        paused = board.post(f"/schedules/{synced}/pause", follow_redirects=True)
        assert f"Paused schedule {synced}." in paused.text
        assert stack.status.client.schedule.get(synced).paused is True
        assert f'action="/schedules/{synced}/resume"' in paused.text

        resumed = board.post(f"/schedules/{synced}/resume", follow_redirects=True)
        assert f"Resumed schedule {synced}." in resumed.text
        assert stack.status.client.schedule.get(synced).paused is False


def test_actions_other_than_pause_and_resume_are_refused(stack: Stack, synced: str) -> None:
    answer = httpx.post(f"{stack.dashboard_url}/schedules/{synced}/delete")
    assert answer.status_code == 400
    assert stack.status.client.schedule.get(synced).paused is False


def test_no_schedule_says_how_to_make_one(client: TestClient) -> None:
    page = client.get("/schedules").text
    assert "No QStash schedule" in page and "beat sync" in page


def test_a_schedule_pause_from_another_origin_is_refused(stack: Stack, synced: str) -> None:
    answer = httpx.post(f"{stack.dashboard_url}/schedules/{synced}/pause",
                        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert answer.status_code == 403
    assert stack.status.client.schedule.get(synced).paused is False
