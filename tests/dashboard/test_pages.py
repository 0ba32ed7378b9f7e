"""The HTML pages over a faked QStash: content, escaping, redaction, actions."""

from __future__ import annotations

import pytest

from .conftest import TOKEN, TestClient
from .qstash_events import (
    FakeQStash,
    b64,
    delivered_events,
    dlq_message,
    event,
    failed_events,
    pending_events,
)

XSS = "<script>alert(1)</script>"


@pytest.fixture
def hostile(fake: FakeQStash) -> FakeQStash:
    """A task whose every free-text field is markup, and whose answer leaks the token."""
    body = {"to": {"email": f"{XSS}@x.io"}, "subject": XSS, "text": "hi"}
    answer = {"success": False, "message": f"{XSS} token={TOKEN}"}
    fake.events = [
        event("CREATED", 0, task_id="evil", message_id="msg_evil", name=XSS, body=body),
        event("ACTIVE", 10, task_id="evil", message_id="msg_evil", name=XSS, body=body),
        event("ERROR", 20, task_id="evil", message_id="msg_evil", name=XSS, body=body,
              responseStatus=500, responseBody=b64(answer), error=XSS),
    ]
    fake.dlq = [{**dlq_message("evil"), "body": '{"subject": "<script>alert(1)</script>"}'}]
    return fake


@pytest.mark.parametrize("path", ["/tasks", "/tasks/evil", "/dlq", f"/tasks?search={XSS}"])
def test_pages_escape_everything(client: TestClient, hostile: FakeQStash, path: str) -> None:
    page = client.get(path).text

    assert XSS not in page
    assert "&lt;script&gt;" in page


def test_the_task_page_never_shows_a_secret(client: TestClient, hostile: FakeQStash) -> None:
    page = client.get("/tasks/evil").text

    assert TOKEN not in page  # scrubbed from AutoSend's answer
    assert "REDACTED:abc123" not in page  # QStash's hash of the key is hidden as well
    assert "Authorization" in page and "[redacted]" in page


def test_tasks_page_lists_filters_and_paginates(client: TestClient, fake: FakeQStash) -> None:
    fake.events = delivered_events() + failed_events() + pending_events()

    everything = client.get("/tasks").text
    failures = client.get("/tasks", params={"state": "FAILURE"}).text
    by_name = client.get("/tasks", params={"name": "app.send_receipt"}).text
    page2 = client.get("/tasks", params={"per_page": "1", "page": "2", "sort_by": "-received"})

    assert all(f'href="/tasks/{t}"' in everything for t in ("task-1", "task-2", "task-4"))
    assert 'href="/tasks/task-2"' in failures and 'href="/tasks/task-1"' not in failures
    assert 'href="/tasks/task-4"' in by_name and 'href="/tasks/task-2"' not in by_name
    assert "Page 2 of 3" in page2.text
    assert page2.text.count('href="/tasks/task-') == 1
    assert 'http-equiv="refresh" content="10"' in everything
    assert "http-equiv" not in client.get("/tasks", params={"refresh": "0"}).text


def test_tasks_page_rejects_a_bad_since(client: TestClient, fake: FakeQStash) -> None:
    assert client.get("/tasks", params={"since": "last tuesday"}).status_code == 400


def test_tasks_page_rejects_a_since_too_far_back(client: TestClient, fake: FakeQStash) -> None:
    response = client.get("/tasks", params={"since": "9" * 400 + "w"})

    assert response.status_code == 400
    assert "too large" in response.text


def test_task_page_hides_credentials_in_the_destination(
    client: TestClient, fake: FakeQStash
) -> None:
    fake.events = [event("CREATED", 0, task_id="t", message_id="m",
                         url="https://user:pw@hooks.example/x?api_key=AS_1&n=2")]

    page = client.get("/tasks/t").text

    assert "user:pw" not in page and "AS_1" not in page
    assert "hooks.example/x?api_key=%5Bredacted%5D&amp;n=2" in page


def test_task_page_shows_timeline_request_and_response(
    client: TestClient, fake: FakeQStash
) -> None:
    fake.events = delivered_events()

    page = client.get("/tasks/task-1").text

    for state in ("CREATED", "ACTIVE", "ERROR", "RETRY", "DELIVERED"):
        assert f"<code>{state}</code>" in page
    assert "ada@example.com" in page and "Welcome, Ada" in page
    assert "em_123" in page  # AutoSend's answer
    assert 'id="revoke"' not in page  # a finished task cannot be revoked


def test_revoke_button_on_a_pending_task(client: TestClient, fake: FakeQStash) -> None:
    fake.events = pending_events()

    assert 'id="revoke"' in client.get("/tasks/task-4").text
    unconfirmed = client.post("/tasks/task-4/revoke", follow_redirects=False)

    # Without confirm=yes nothing is cancelled: a page asks first, and its form confirms.
    assert unconfirmed.status_code == 200 and fake.cancelled == []
    assert 'action="/tasks/task-4/revoke?confirm=yes"' in unconfirmed.text
    response = client.post("/tasks/task-4/revoke?confirm=yes", follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == "/tasks/task-4?revoked=1"
    assert fake.cancelled == ["msg_4"]


def test_unknown_task_page_is_404(client: TestClient, fake: FakeQStash) -> None:
    assert client.get("/tasks/nope").status_code == 404
    assert client.get("/task/nope", follow_redirects=False).headers["location"] == "/tasks/nope"


def test_dlq_page_retry_and_delete(client: TestClient, fake: FakeQStash) -> None:
    fake.dlq = [dlq_message("task-2", "1-0"), dlq_message("task-9", "2-0")]

    page = client.get("/dlq").text
    assert 'action="/dlq/1-0/retry?next=%2Fdlq%3F"' in page
    assert 'action="/dlq/2-0/delete?next=%2Fdlq%3F&amp;confirm=yes"' in page
    assert "Internal server error" in page

    retried = client.post("/dlq/1-0/retry", follow_redirects=False)
    asked = client.post("/dlq/2-0/delete")
    assert "Delete this dead letter?" in asked.text and len(fake.dlq) == 1
    deleted = client.post("/dlq/2-0/delete?confirm=yes")
    missing = client.post("/dlq/2-0/delete?confirm=yes")

    assert retried.status_code == 303 and "msg_retried" in client.get(
        retried.headers["location"]).text
    assert "Deleted 2-0" in deleted.text
    assert "QStash has no DLQ message 2-0" in missing.text
    assert "The dead letter queue is empty." in client.get("/dlq").text


def test_queues_page(client: TestClient, fake: FakeQStash) -> None:
    fake.queues = [{"name": "emails", "parallelism": 2, "createdAt": 1, "updatedAt": 1,
                    "lag": 7, "paused": True}]

    page = client.get("/queues").text

    assert ('<td data-label="Queue"><a href="/queues/emails">emails</a></td>'
            '<td data-label="Messages waiting">7</td><td data-label="Parallelism">2</td>') in page
    assert ">PAUSED</span>" in page and 'action="/queues/emails/resume"' in page


@pytest.mark.parametrize("path", ["/dlq", "/queues", "/queues/emails", "/schedules"])
def test_the_lists_update_in_place_like_the_tasks_page(client: TestClient, fake: FakeQStash,
                                                       path: str) -> None:
    fake.queues = [{"name": "emails", "parallelism": 1, "createdAt": 1, "updatedAt": 1,
                    "lag": 0, "paused": False}]
    page = client.get(path).text
    assert 'data-refresh="10"' in page and "data-live" in page
    assert '<script src="/live.js" defer></script>' in page
    assert 'data-refresh' not in client.get(path + "?refresh=0").text
