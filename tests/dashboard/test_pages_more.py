"""The dashboard's newer page features over a faked QStash: counts, the chart, links
between pages, attempts in the timeline, Retry, queues with pause/resume, bulk DLQ."""

from __future__ import annotations

import html
import re
import warnings
from collections.abc import Iterator

import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.local.dashboard import create_app
from celery_qstash.status import StatusClient

from .conftest import TOKEN
from .qstash_events import (
    T0,
    FakeQStash,
    delivered_events,
    dlq_message,
    event,
    failed_events,
    pending_events,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

NOW = T0 / 1000 + 600  # ten minutes after the fake events


@pytest.fixture
def board(fake: FakeQStash, status: StatusClient) -> Iterator[TestClient]:
    app = create_app(status, secrets=[TOKEN], inbox_url="http://127.0.0.1:8025/",
                     clock=FakeClock(NOW))
    with TestClient(app) as tc:
        yield tc


def test_counts_per_state_link_to_their_filter(board: TestClient, fake: FakeQStash) -> None:
    fake.events = delivered_events() + failed_events() + pending_events()

    page = board.get("/tasks").text

    counts = dict(re.findall(r'data-state="(\w+)"><b>(\d+)</b>', page))
    assert counts == {"All": "3", "PENDING": "1", "STARTED": "0", "RETRY": "0",
                      "SUCCESS": "1", "FAILURE": "1", "REVOKED": "0"}
    assert 'href="/tasks?state=FAILURE&amp;per_page=25&amp;refresh=10"' in page
    # The state filter narrows the list, never the counts (they are how you pick one).
    failures = board.get("/tasks", params={"state": "FAILURE"}).text
    assert dict(re.findall(r'data-state="(\w+)"><b>(\d+)</b>', failures))["All"] == "3"
    assert 'class="count on bad"' in failures


def test_the_chart_is_an_svg_of_delivered_and_failed_per_bucket(
    board: TestClient, fake: FakeQStash
) -> None:
    fake.events = delivered_events() + failed_events() + pending_events()

    page = board.get("/tasks").text

    svg = re.search(r'<svg class="throughput".*?</svg>', page)
    assert svg is not None
    assert "1 delivered, 1 failed" in svg.group(0)  # the bucket both finished in
    assert "UTC</text>" in svg.group(0)
    assert "<script" not in svg.group(0)


def test_the_list_is_compact_and_links_names_to_their_filter(
    board: TestClient, fake: FakeQStash
) -> None:
    long_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    fake.events = delivered_events(task_id=long_id)

    page = board.get("/tasks").text

    assert f'<a class="id" href="/tasks/{long_id}" title="{long_id}">{long_id}</a>' in page
    assert 'href="/tasks?name=app.send_welcome"' in page
    assert 'title="2024-05-06 12:53:20 UTC">10m ago</time>' in page  # relative, UTC on hover
    assert "All times UTC" in page


def test_the_timeline_numbers_attempts_with_durations_and_autosends_words(
    board: TestClient, fake: FakeQStash
) -> None:
    fake.events = failed_events()

    page = board.get("/tasks/task-2").text
    rows = re.findall(r'<tr class="([^"]*)">(.*?)</tr>', page)

    attempts = [re.findall(r'<td class="num">([^<]*)</td>', row)[1] for _, row in rows]
    assert attempts == ["&mdash;", "1", "1", "1", "2", "2", "2"]
    errors = [row for cls, row in rows if cls == "tl-fail"]
    assert len(errors) == 3
    assert "0.10 s" in errors[0] and "Internal server error" in errors[0]  # ACTIVE -> ERROR
    assert "+1.0 s" in rows[4][1]  # the second ACTIVE, a second after the RETRY


def test_a_failed_task_links_its_dead_letter_its_email_and_can_be_retried(
    board: TestClient, fake: FakeQStash
) -> None:
    fake.events = failed_events()
    dlq_id = f"{T0 + 1300}-0"
    fake.dlq = [dlq_message("task-2", dlq_id)]

    page = board.get("/tasks/task-2").text

    assert f'action="/dlq/{dlq_id}/retry?next=%2Ftasks%2Ftask-2"' in page
    assert f'href="/dlq?q=task-2#dlq-{dlq_id}"' in page
    assert 'id="inbox-link"' not in page  # nothing reached the inbox
    assert 'id="revoke"' not in page
    retried = board.post(f"/dlq/{dlq_id}/retry?next=%2Ftasks%2Ftask-2", follow_redirects=False)
    assert retried.headers["location"].startswith("/tasks/task-2?notice=")
    assert f"Retried {dlq_id} as message" in board.get(retried.headers["location"]).text
    assert fake.dlq == []
    # "next" only ever leads back into the dashboard.
    away = board.post("/dlq/x/retry?next=//evil.example/", follow_redirects=False)
    assert away.headers["location"].startswith("/dlq?")


def test_a_delivered_task_links_its_email_in_the_inbox(board: TestClient,
                                                       fake: FakeQStash) -> None:
    fake.events = delivered_events()

    page = board.get("/tasks/task-1").text

    assert 'id="inbox-link" href="http://127.0.0.1:8025/inbox?key=task-1"' in page


def test_revoke_is_confirmed_inside_the_page_without_script(
    board: TestClient, fake: FakeQStash
) -> None:
    fake.events = pending_events()

    page = board.get("/tasks/task-4").text

    assert re.search(r'<details class="confirm"><summary id="revoke"[^>]*>Revoke</summary>'
                     r'.*?action="/tasks/task-4/revoke\?confirm=yes"', page)


def test_queue_page_lists_its_tasks_and_pauses_and_resumes(
    board: TestClient, fake: FakeQStash
) -> None:
    fake.queues = [{"name": "emails", "parallelism": 1, "lag": 2, "paused": False}]
    fake.events = ([dict(e, queueName="emails") for e in pending_events()]
                   + delivered_events())

    page = board.get("/queues/emails").text
    assert 'href="/tasks/task-4"' in page and 'href="/tasks/task-1"' not in page
    assert 'action="/queues/emails/pause"' in page

    paused = board.post("/queues/emails/pause")
    assert "Paused queue emails." in paused.text and fake.queues[0]["paused"] is True
    assert 'action="/queues/emails/resume"' in paused.text
    resumed = board.post("/queues/emails/resume")
    assert fake.queues[0]["paused"] is False and "Resumed" in resumed.text
    assert board.get("/queues/nope").status_code == 404
    assert board.post("/queues/emails/explode").status_code == 400


def test_dlq_filter_and_bulk_retry_and_delete(board: TestClient, fake: FakeQStash) -> None:
    fake.dlq = [dlq_message(f"task-{i}", f"{i}-0") for i in range(5)]
    fake.dlq[0]["body"] = '{"subject": "Special offer", "to": {"email": "x@y.io"}}'

    filtered = board.get("/dlq", params={"q": "special"}).text
    assert 'id="dlq-0-0"' in filtered and 'id="dlq-1-0"' not in filtered
    assert "Retry all 1 shown" in filtered

    retried = board.post("/dlq/bulk", data={"action": "retry", "id": ["1-0", "2-0"]})
    assert "Retried 2 dead letters." in retried.text
    assert [m["dlqId"] for m in fake.dlq] == ["0-0", "3-0", "4-0"]

    asked = board.post("/dlq/bulk", data={"action": "delete-all", "all": ["3-0", "4-0"]})
    assert "Delete 2 dead letters?" in asked.text and len(fake.dlq) == 3
    assert 'name="all" value="3-0"' in asked.text
    deleted = board.post("/dlq/bulk?confirm=yes",
                         data={"action": "delete-all", "all": ["3-0", "4-0", "gone"]})
    assert "Deleted 2 dead letters. 1 no longer existed." in deleted.text
    assert [m["dlqId"] for m in fake.dlq] == ["0-0"]
    assert board.post("/dlq/bulk", data={"action": "explode"}).status_code == 400
    assert "Nothing selected." in board.post("/dlq/bulk", data={"action": "retry"}).text


def test_new_pages_escape_hostile_names(board: TestClient, fake: FakeQStash) -> None:
    xss = "<script>alert(1)</script>"
    fake.queues = [{"name": "q", "parallelism": 1, "lag": 0, "paused": False}]
    fake.events = [event("CREATED", 0, task_id="t", name=xss, queueName="q")]
    fake.dlq = [{**dlq_message("t"), "body": '{"subject": "<script>alert(1)</script>"}'}]

    for path in ("/queues/q", "/queues", "/dlq?q=%3Cscript%3E", "/tasks"):
        page = board.get(path).text
        assert xss not in page, path


# Allowed by the task_id check (printable, no space or comma). No "%" here: the TestClient
# unquotes a path httpx has already decoded, which a real server does not.
ODD_ID = "user/42#welcome?x=1&y=2"


def test_a_task_id_with_url_characters_links_to_its_own_page(
    board: TestClient, fake: FakeQStash
) -> None:
    fake.events = delivered_events(task_id=ODD_ID) + pending_events(task_id=ODD_ID + "-p")

    listing = board.get("/tasks").text
    hrefs = [html.unescape(h) for h in re.findall(r'<a class="id" href="([^"]+)"', listing)]
    assert len(hrefs) == 2
    for href, wanted in zip(sorted(hrefs), (ODD_ID, ODD_ID + "-p"), strict=True):
        page = board.get(href)
        assert page.status_code == 200, href
        assert f"<code class=\"sel\" title=\"Click to select\">{html.escape(wanted)}</code>" \
            in page.text
    # The pending one's Revoke form posts to its own revoke route, and back to its page.
    pending = board.get(sorted(hrefs)[1]).text
    action = html.unescape(re.findall(r'<form class="inline" method="post" action="([^"]+)"',
                                      pending)[0])
    answer = board.post(action, follow_redirects=False)
    assert answer.status_code == 303
    assert board.get(answer.headers["location"]).status_code == 200
    # Flower's /task/<id> and the inbox's link (quoted with safe="") reach it too.
    from urllib.parse import quote
    assert board.get("/task/" + quote(ODD_ID, safe="")).status_code == 200
    assert board.get("/tasks/" + quote(ODD_ID, safe="")).status_code == 200


def test_an_empty_dashboard_says_how_tasks_arrive(board: TestClient, fake: FakeQStash) -> None:
    fake.events = []
    assert "No task yet: call .delay() on a QStash task" in board.get("/tasks").text
    assert "No task matches." in board.get("/tasks", params={"search": "nobody"}).text
    icon = board.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"


@pytest.mark.parametrize("path", ["/dlq", "/queues", "/tasks/task-2"])
def test_a_notice_comes_from_the_server_never_from_url_text(
        board: TestClient, fake: FakeQStash, path: str) -> None:
    """``?error=``/``?done=`` text was shown as a notice (escaped, but phishing-shaped
    under the dashboard's banner); now only a token the server gave names one."""
    fake.events = failed_events()
    bait = "Your session expired: sign in again at evil.example"
    for query in (f"done={bait}", f"error={bait}", f"notice={bait}", "notice=abc123"):
        page = board.get(f"{path}?{query}").text
        assert "evil.example" not in page and "session expired" not in page
        assert 'class="notice"' not in page


#: Times QStash (or a publisher) may have stored: Upstash-Not-Before 1099511627776 (the
#: year 36812, in ms), the largest 64-bit number, zero, and negative.
EXTREMES = [1_099_511_627_776_000, 2**63 - 1, 0, -1_000]


@pytest.mark.parametrize("extreme", EXTREMES)
def test_every_page_and_api_renders_extreme_stored_times(
        board: TestClient, fake: FakeQStash, extreme: int) -> None:
    """Issue 23: a message with ``notBefore`` in the year 36812 made its task page a 500.
    Every page and every JSON endpoint answers with any stored time."""
    events = pending_events() + failed_events()
    for entry in events:
        entry.update(notBefore=extreme, nextDeliveryTime=extreme)
    events[0]["createdAt"] = extreme
    fake.events = events
    fake.dlq = [{**dlq_message(), "notBefore": extreme, "createdAt": extreme}]
    paths = ["/tasks", "/tasks?state=PENDING", "/tasks/task-4", "/tasks/task-2", "/task/task-4",
             "/dlq", "/queues", "/api/tasks", "/api/task/info/task-4",
             "/api/task/result/task-4", "/api/task/types", "/api/dlq", "/api/queues/length"]
    answers = {path: board.get(path).status_code for path in paths}
    assert all(status < 500 for status in answers.values()), answers
    assert answers["/tasks/task-4"] == 200
