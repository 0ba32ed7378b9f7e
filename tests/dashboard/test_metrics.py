"""``/metrics`` over a faked QStash: Flower's series and ours, counted once, kept across
restarts with a state file, and valid for ``promtool check metrics``."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_text import promtool_check_metrics, value

from celery_qstash.clock import FakeClock
from celery_qstash.errors import ConfigurationError
from celery_qstash.local.dashboard import create_app
from celery_qstash.local.dashboard.metrics import SETTLE_MS
from celery_qstash.publish.message import ANSWER_KIND
from celery_qstash.status import StatusClient

from .conftest import TOKEN, TestClient
from .qstash_events import (
    T0,
    FakeQStash,
    canceled_events,
    delivered_events,
    event,
    failed_events,
    pending_events,
)

AUTOSEND = "api.autosend.com"


def flower(text: str, kind: str, task: str = "app.send_welcome") -> float:
    return value(text, "flower_events_total", worker=AUTOSEND, type=kind, task=task)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=T0 / 1000 - 60)  # the dashboard starts a minute before T0


def _client(status: StatusClient, clock: FakeClock, **kwargs: object) -> TestClient:
    return TestClient(create_app(status, secrets=[TOKEN], clock=clock, **kwargs))


@pytest.fixture
def board(fake: FakeQStash, status: StatusClient, clock: FakeClock) -> Iterator[TestClient]:
    """The dashboard, started 50 s before T0 (its counts begin then)."""
    clock.advance(10)
    with _client(status, clock) as client:
        yield client


def test_each_qstash_event_counts_as_flowers_event_type(
    fake: FakeQStash, board: TestClient
) -> None:
    fake.events = delivered_events() + failed_events() + canceled_events() + pending_events()
    answer = board.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = answer.text
    # delivered: created, 2 attempts, a retry, delivered; failed: 2 attempts, a retry,
    # failed; canceled: created, revoked; pending (another task): created.
    assert flower(text, "task-received") == 3
    assert flower(text, "task-started") == 4
    assert flower(text, "task-retried") == 2
    assert flower(text, "task-succeeded") == 1
    assert flower(text, "task-failed") == 1
    assert flower(text, "task-revoked") == 1
    assert flower(text, "task-received", "app.send_receipt") == 1
    assert flower(text, "task-succeeded", "app.send_receipt") == 0  # created at 0, for increase()
    # Runtime: the successful attempt, ACTIVE at +1300 to DELIVERED at +1500.
    assert value(text, "flower_task_runtime_seconds_count", worker=AUTOSEND,
                 task="app.send_welcome") == 1
    assert value(text, "flower_task_runtime_seconds_sum", worker=AUTOSEND,
                 task="app.send_welcome") == pytest.approx(0.2)
    assert value(text, "celery_qstash_dead_letters_total", worker=AUTOSEND,
                 task="app.send_welcome") == 1
    assert value(text, "celery_qstash_delivery_attempts_total", worker=AUTOSEND,
                 task="app.send_welcome", outcome="refused") == 3
    assert value(text, "celery_qstash_delivery_attempts_total", worker=AUTOSEND,
                 task="app.send_welcome", outcome="delivered") == 1
    assert value(text, "celery_qstash_responses_total", worker=AUTOSEND,
                 task="app.send_welcome", code="500") == 3
    assert value(text, "celery_qstash_responses_total", worker=AUTOSEND,
                 task="app.send_welcome", code="200") == 1
    # Lateness: every attempt from its due time; first attempts at +100 after a due T0,
    # retries exactly on their nextDeliveryTime.
    assert value(text, "celery_qstash_lateness_seconds_count", worker=AUTOSEND,
                 task="app.send_welcome") == 4
    assert value(text, "celery_qstash_lateness_seconds_sum", worker=AUTOSEND,
                 task="app.send_welcome") == pytest.approx(0.2)
    assert value(text, "flower_worker_online", worker=AUTOSEND) == 1
    assert value(text, "flower_worker_number_of_currently_executing_tasks", worker=AUTOSEND) == 0
    assert value(text, "celery_qstash_up") == 1


def test_waiting_messages_are_scheduled_until_due_then_prefetched(
    fake: FakeQStash, status: StatusClient, clock: FakeClock
) -> None:
    fake.events = pending_events()  # due an hour after T0
    clock.advance(60)
    with _client(status, clock) as client:
        text = client.get("/metrics").text
        assert value(text, "celery_qstash_scheduled_messages", worker=AUTOSEND,
                     task="app.send_receipt") == 1
        assert value(text, "flower_worker_prefetched_tasks", worker=AUTOSEND,
                     task="app.send_receipt") == 0
        clock.advance(3600)
        text = client.get("/metrics").text
    assert value(text, "celery_qstash_scheduled_messages", worker=AUTOSEND,
                 task="app.send_receipt") == 0
    assert value(text, "flower_worker_prefetched_tasks", worker=AUTOSEND,
                 task="app.send_receipt") == 1


def test_an_attempt_under_way_is_executing_and_sets_the_prefetch_time(
    fake: FakeQStash, status: StatusClient, clock: FakeClock
) -> None:
    fake.events = delivered_events()[:2]  # CREATED at T0, ACTIVE at +100
    clock.advance(61)
    with _client(status, clock) as client:
        text = client.get("/metrics").text
        assert value(text, "flower_worker_number_of_currently_executing_tasks",
                     worker=AUTOSEND) == 1
        assert value(text, "flower_task_prefetch_time_seconds", worker=AUTOSEND,
                     task="app.send_welcome") == pytest.approx(0.1)
        assert value(text, "flower_task_queuing_time_at_worker_seconds", worker=AUTOSEND,
                     task="app.send_welcome") == pytest.approx(0.1)
        fake.events = delivered_events()
        text = client.get("/metrics").text
    assert value(text, "flower_worker_number_of_currently_executing_tasks", worker=AUTOSEND) == 0
    assert value(text, "flower_task_prefetch_time_seconds", worker=AUTOSEND,
                 task="app.send_welcome") == 0  # reset once the task is done, as Flower does


def test_a_scrape_reads_only_new_events_and_counts_none_twice(
    fake: FakeQStash, board: TestClient
) -> None:
    fake.events = delivered_events()
    board.get("/metrics")
    first = fake.events_route.calls.last.request.url.params["fromDate"]
    fake.events += failed_events()
    for _ in range(3):
        text = board.get("/metrics").text
    later = fake.events_route.calls.last.request.url.params["fromDate"]
    assert fake.events_route.call_count == 4  # one logs request per scrape
    assert int(first) == T0 - 50_000 - 2 * SETTLE_MS  # the dashboard started at T0 - 50 s
    # Later reads start at the newest event counted, less the settling overlap.
    assert int(later) == T0 + 1500 - SETTLE_MS
    assert flower(text, "task-received") == 2
    assert flower(text, "task-failed") == 1
    assert flower(text, "task-succeeded") == 1


def test_a_deferred_tasks_answer_says_what_a_delivery_was(
    fake: FakeQStash, board: TestClient
) -> None:
    def answer(state: str) -> dict[str, object]:
        body = {"kind": ANSWER_KIND, "status": state}
        return {"responseStatus": 200,
                "responseBody": base64.b64encode(json.dumps(body).encode()).decode()}

    kw = {"name": "app.crunch", "url": "https://web.example/qstash/receive"}
    fake.events = [
        event("CREATED", 0, task_id="d1", message_id="m1", **kw),
        event("ACTIVE", 10, task_id="d1", message_id="m1", **kw),
        event("DELIVERED", 20, task_id="d1", message_id="m1", **kw, **answer("RETRY")),
        event("CREATED", 30, task_id="d2", message_id="m2", **kw),
        event("ACTIVE", 40, task_id="d2", message_id="m2", **kw),
        event("DELIVERED", 50, task_id="d2", message_id="m2", **kw, **answer("IGNORED")),
    ]
    text = board.get("/metrics").text
    labels = {"worker": "web.example", "task": "app.crunch"}
    assert value(text, "flower_events_total", type="task-retried", **labels) == 1
    assert value(text, "flower_events_total", type="task-succeeded", **labels) == 0
    assert value(text, "flower_worker_online", worker="web.example") == 1


def test_counts_survive_a_restart_with_a_state_file(
    fake: FakeQStash, status: StatusClient, clock: FakeClock, tmp_path: Path
) -> None:
    state = tmp_path / "metrics.json"
    fake.events = delivered_events()
    clock.advance(10)
    with _client(status, clock, metrics_state=state) as client:
        before = client.get("/metrics").text
    assert os.stat(state).st_mode & 0o077 == 0  # owner only
    fake.events += failed_events()  # logged while the dashboard was down
    with _client(status, clock, metrics_state=state) as client:
        after = client.get("/metrics").text
    assert flower(before, "task-succeeded") == flower(after, "task-succeeded") == 1
    assert flower(after, "task-received") == 2  # the overlap was not counted again
    assert flower(after, "task-failed") == 1
    assert value(after, "flower_task_runtime_seconds_count", worker=AUTOSEND,
                 task="app.send_welcome") == 1
    created = "flower_events_created"
    assert value(before, created, worker=AUTOSEND, type="task-received",
                 task="app.send_welcome") == value(after, created, worker=AUTOSEND,
                                                   type="task-received",
                                                   task="app.send_welcome")


def test_a_broken_state_file_is_refused_by_name(
    fake: FakeQStash, status: StatusClient, tmp_path: Path
) -> None:
    state = tmp_path / "metrics.json"
    state.write_text("{not json")
    with pytest.raises(ConfigurationError, match="metrics_state"):
        create_app(status, metrics_state=state)


def test_qstash_down_keeps_the_counts_and_says_so(fake: FakeQStash, board: TestClient) -> None:
    fake.events = delivered_events()
    board.get("/metrics")
    fake.events_route.side_effect = None
    fake.events_route.return_value = httpx.Response(500, text="down")
    answer = board.get("/metrics")
    assert answer.status_code == 200
    assert flower(answer.text, "task-succeeded") == 1
    assert value(answer.text, "celery_qstash_up") == 0
    assert value(answer.text, "celery_qstash_log_read_errors_total") == 1
    assert TOKEN not in answer.text


def test_metrics_are_behind_the_dashboards_auth(fake: FakeQStash, status: StatusClient) -> None:
    with TestClient(create_app(status, auth=("ops", "pw"))) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", auth=("ops", "pw")).status_code == 200


def test_promtool_accepts_the_exposition(fake: FakeQStash, board: TestClient) -> None:
    fake.events = delivered_events() + failed_events() + canceled_events() + pending_events()
    promtool_check_metrics(board.get("/metrics").text)
