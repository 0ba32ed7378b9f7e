"""Flower's task-launching API against a real emulator and sandbox: what a POST starts is
what a call in code publishes, and every bad input is a 4xx naming it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_text import value
from waiting import wait_until

from celery_qstash import DeferredTask, QStashTask
from celery_qstash.local.dashboard import create_app
from celery_qstash.local.dashboard.launch import FLOWER_DATE_FORMAT

from .conftest import Stack, TestClient


@pytest.fixture
def board(stack: Stack) -> Iterator[TestClient]:
    with TestClient(create_app(stack.status, celery_app=stack.app,
                               allowed_hosts=["testserver"])) as client:
        yield client


def test_async_apply_publishes_through_qstash_with_the_options(
    board: TestClient, stack: Stack
) -> None:
    board.get("/metrics")  # the counts start here
    answer = board.post("/api/task/async-apply/it.send_welcome",
                        json={"args": ["ada@example.com", "Hello"],
                              "options": {"countdown": 5}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["state"] == "PENDING"
    task_id = body["task-id"]
    record = stack.status.task(task_id)
    assert record is not None and record.name == "it.send_welcome"
    assert record.next_delivery is not None and record.created is not None
    assert record.next_delivery - record.created == pytest.approx(5, abs=1)
    listed = board.get("/api/tasks", params={"taskname": "it.send_welcome"}).json()
    assert task_id in listed
    text = board.get("/metrics").text
    assert value(text, "flower_events_total", worker="api.autosend.com", type="task-received",
                 task="it.send_welcome") >= 1


def test_top_level_options_as_flower_sends_them(board: TestClient, stack: Stack) -> None:
    answer = board.post("/api/task/send-task/it.send_welcome",
                        json={"kwargs": {"to": "bo@example.com", "subject": "Hi"},
                              "task_id": "launched-by-name", "countdown": 3600})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"task-id": "launched-by-name", "state": "PENDING"}
    record = stack.status.task("launched-by-name")
    assert record is not None and record.state == "PENDING"
    stack.status.revoke(record.message_id)


def test_apply_waits_for_the_result(board: TestClient) -> None:
    answer = board.post("/api/task/apply/it.send_welcome?timeout=20",
                        json={"args": ["cy@example.com", "Welcome"]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["state"] == "SUCCESS"
    assert body["result"]["emailId"]


def test_eta_in_flowers_format(board: TestClient, stack: Stack) -> None:
    # Within QStash's one-year maximum delay (the emulator refuses a later not-before).
    when = (datetime.now(timezone.utc) + timedelta(days=30)).replace(microsecond=0)
    answer = board.post("/api/task/async-apply/it.send_welcome",
                        json={"args": ["di@example.com", "Later"],
                              "eta": when.strftime("%Y-%m-%d %H:%M:%S.000000")})
    assert answer.status_code == 200, answer.text
    record = wait_until(lambda: stack.status.task(answer.json()["task-id"]), "the message")
    # A naive time is UTC.
    assert record.next_delivery == when.timestamp()
    stack.status.revoke(record.message_id)
    assert FLOWER_DATE_FORMAT == "%Y-%m-%d %H:%M:%S.%f"


def test_an_unknown_task_is_a_404_listing_the_known_names(
    board: TestClient, stack: Stack
) -> None:
    answer = board.post("/api/task/async-apply/it.nope", json={})
    assert answer.status_code == 404
    body = answer.json()
    assert body["error"] == "Unknown task 'it.nope'"
    # The app's QStash tasks (other tests add theirs to the shared app), never Celery's own.
    ours = sorted(name for name, task in stack.app.tasks.items()
                  if isinstance(task, (QStashTask, DeferredTask)))
    assert body["known"] == ours
    assert "it.send_welcome" in ours and "celery.chord_unlock" not in ours


def test_without_an_app_every_name_is_unknown(stack: Stack) -> None:
    with TestClient(create_app(stack.status)) as client:
        answer = client.post("/api/task/apply/it.send_welcome", json={})
    assert answer.status_code == 404
    assert answer.json()["known"] == []


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"args": "ada"}, "args must be an array"),
        ({"kwargs": []}, "kwargs must be an object"),
        ({"options": 5}, "options must be an object"),
        ({"args": ["a@example.com", "s"], "countdown": "soon"}, "countdown"),
        ({"args": ["a@example.com", "s"], "countdown": -1}, "countdown"),
        ({"args": ["a@example.com", "s"], "eta": "tomorrow"}, "eta"),
        ({"args": ["a@example.com", "s"], "expires": [1]}, "expires"),
        ({"args": ["a@example.com", "s"], "countdwn": 5}, "countdwn"),
        ({"args": ["a@example.com", "s"], "countdown": 1, "options": {"countdown": 2}},
         "countdown"),
        ({"args": ["a@example.com"]}, "args/kwargs"),
        ({"args": ["not an address", "s"]}, "to"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_arguments_are_a_400_naming_them(board: TestClient, body: object, named: str) -> None:
    answer = board.post("/api/task/async-apply/it.send_welcome", json=body)
    assert answer.status_code == 400, answer.text
    assert named in answer.json()["error"]


def test_a_body_that_is_not_json_is_a_400(board: TestClient) -> None:
    answer = board.post("/api/task/apply/it.send_welcome", content=b"{args: NaN",
                        headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "not JSON" in answer.json()["error"]


def test_a_bad_timeout_is_a_400(board: TestClient) -> None:
    answer = board.post("/api/task/apply/it.send_welcome?timeout=soon", json={})
    assert answer.status_code == 400
    assert "timeout" in answer.json()["error"]


def test_launching_needs_the_dashboards_auth_and_its_origin(stack: Stack) -> None:
    app = create_app(stack.status, celery_app=stack.app, auth=("ops", "pw"),
                     allowed_hosts=["testserver"])
    with TestClient(app) as client:
        body = {"args": ["eve@example.com", "Hi"], "countdown": 3600}
        assert client.post("/api/task/async-apply/it.send_welcome", json=body).status_code == 401
        foreign = client.post("/api/task/async-apply/it.send_welcome", json=body,
                              auth=("ops", "pw"), headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403
        ok = client.post("/api/task/async-apply/it.send_welcome", json=body, auth=("ops", "pw"))
        assert ok.status_code == 200
        stack.status.revoke_task(ok.json()["task-id"])
