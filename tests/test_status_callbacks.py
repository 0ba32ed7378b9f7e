"""Status reads only the task's own message: a ``link``/``link_error`` callback is a
message of its own, never changes the task's state, and is reported apart; the DLQ
tells a failed callback from a failed email.

Whether QStash labels a callback like its source is not documented, so both cases
are covered: callbacks carrying the task's label, and callbacks found by URL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from celery import states
from dashboard.qstash_events import (
    BOOM,
    EMAIL,
    SENT,
    T0,
    FakeQStash,
    b64,
    delivered_events,
    event,
    failed_events,
    fake_qstash,
    response,
)

from celery_qstash.config import load_settings
from celery_qstash.publish.transports.qstash import client_for
from celery_qstash.status import StatusClient, build_record, dlq_entry, flower_task
from celery_qstash.status.result import meta_from_record

URL = "http://qstash-callbacks.test"
HOOK = "https://app.example/hooks/sent"
FAIL_HOOK = "https://app.example/hooks/failed"


def callback_events(*, source: str = "msg_1", message_id: str = "msg_cb", task_id: str | None = "task-1",
                    url: str = HOOK, at: int = 1600, final: str = "FAILED", failure: bool = False) -> list[dict[str, Any]]:
    """A callback message's events: QStash's callback body naming ``source``."""
    body: dict[str, Any] = {"status": 200, "body": b64(SENT), "sourceMessageId": source,
                            "url": "https://api.autosend.com/v1/mails/send",
                            "sourceHeader": {"Idempotency-Key": [task_id or "task-1"],
                                             "X-Celery-Task": ["app.send_welcome"]},
                            "sourceBody": b64(EMAIL), "retried": 0, "maxRetries": 0}
    if failure:
        body["dlqId"] = f"{T0 + 1300}-0"
    labels = {"label": task_id, "labels": [task_id]} if task_id else {"label": None, "labels": []}

    def ev(state: str, when: int, **extra: Any) -> dict[str, Any]:
        out = event(state, when, task_id=task_id or "x", message_id=message_id, body=body,
                    url=url, header={"Content-Type": ["application/json"]}, **extra)
        out.update(labels)
        return out

    last = (ev(final, at + 20, **response(500, {"error": "hook down"}), error="status 500")
            if final == "FAILED" else ev(final, at + 20, **response(200, "ok")))
    return [ev("CREATED", at), ev("ACTIVE", at + 10), last]


def with_callback(events: list[dict[str, Any]], *, failure: bool = False) -> list[dict[str, Any]]:
    field = "failureCallback" if failure else "callback"
    return [{**e, field: FAIL_HOOK if failure else HOOK} for e in events]


# --- folding events -------------------------------------------------------------------------


def test_a_failed_callback_does_not_turn_a_delivered_email_into_failure() -> None:
    record = build_record(with_callback(delivered_events()) + callback_events())
    assert record is not None
    assert record.state == states.SUCCESS and record.qstash_state == "DELIVERED"
    assert record.message_id == "msg_1"
    assert record.result == SENT["data"]
    assert record.response_status == 200
    assert record.retries == 1
    assert all(e["messageId"] == "msg_1" for e in record.events)
    [cb] = record.callbacks
    assert (cb.kind, cb.state, cb.message_id, cb.url, cb.response_status) == (
        "callback", states.FAILURE, "msg_cb", HOOK, 500)
    assert cb.source_message_id == "msg_1"
    meta = meta_from_record("task-1", record)
    assert meta["status"] == states.SUCCESS and meta["result"] == SENT["data"]


def test_a_delivered_callback_does_not_hide_a_failed_email() -> None:
    events = with_callback(failed_events(task_id="task-1", message_id="msg_1"), failure=True)
    events += callback_events(url=FAIL_HOOK, final="DELIVERED", failure=True, at=1400)
    record = build_record(events)
    assert record is not None
    assert record.state == states.FAILURE and record.qstash_state == "FAILED"
    [cb] = record.callbacks
    assert cb.kind == "failure_callback" and cb.state == states.SUCCESS


def test_a_callback_is_recognised_by_its_url_when_its_body_is_not_shown() -> None:
    events = callback_events()
    for e in events:
        e["body"] = b64(b"REDACTED")
    record = build_record(with_callback(delivered_events()) + events)
    assert record is not None and record.state == states.SUCCESS
    assert [c.kind for c in record.callbacks] == ["callback"]


def test_a_task_with_only_callback_events_left_is_unknown() -> None:
    assert build_record(callback_events()) is None


def test_flower_info_lists_callbacks_apart() -> None:
    record = build_record(with_callback(delivered_events()) + callback_events())
    assert record is not None
    info = flower_task(record)
    assert info["state"] == states.SUCCESS and info["exception"] is None
    assert info["callbacks"] == [{"kind": "callback", "message_id": "msg_cb", "url": HOOK,
                                  "state": states.FAILURE, "qstash_state": "FAILED",
                                  "response_status": 500, "error": "status 500",
                                  "updated": (T0 + 1620) / 1000}]


# --- reading through QStash's API ----------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeQStash]:
    with fake_qstash(URL) as f:
        yield f


@pytest.fixture
def status() -> StatusClient:
    return StatusClient(client_for(load_settings({"qstash_url": URL, "qstash_token": "cb-token-1234"})))


def test_labelled_callbacks_cost_no_extra_request(fake: FakeQStash, status: StatusClient) -> None:
    fake.events = with_callback(delivered_events()) + callback_events()
    record = status.task("task-1")
    assert record is not None and record.state == states.SUCCESS
    assert [c.state for c in record.callbacks] == [states.FAILURE]
    assert fake.events_route.call_count == 1


def test_unlabelled_callbacks_are_found_by_url_and_source(fake: FakeQStash, status: StatusClient) -> None:
    fake.events = (with_callback(delivered_events())
                   + callback_events(task_id=None)
                   # another task's callback to the same URL: not ours
                   + callback_events(task_id=None, source="msg_other", message_id="msg_cb2"))
    record = status.task("task-1")
    assert record is not None and record.state == states.SUCCESS
    assert [(c.message_id, c.state) for c in record.callbacks] == [("msg_cb", states.FAILURE)]
    assert fake.events_route.call_count == 2
    assert fake.events_route.calls.last.request.url.params["url"] == HOOK


def test_a_state_read_skips_the_callback_lookup(fake: FakeQStash, status: StatusClient) -> None:
    fake.events = with_callback(delivered_events()) + callback_events(task_id=None)
    record = status.task("task-1", callbacks=False)
    assert record is not None and record.callbacks == []
    assert fake.events_route.call_count == 1


def test_the_task_list_reads_the_email_not_the_callback(fake: FakeQStash, status: StatusClient) -> None:
    fake.events = with_callback(delivered_events()) + callback_events()
    [record] = status.recent()
    assert record.task_id == "task-1" and record.state == states.SUCCESS
    assert record.name == "app.send_welcome"


def test_revoke_targets_the_email_not_a_callback(fake: FakeQStash, status: StatusClient) -> None:
    pending = [event("CREATED", 0, notBefore=T0 + 3_600_000, callback=HOOK)]
    fake.events = pending + callback_events(at=-500, final="DELIVERED")
    status.revoke_task("task-1")
    assert fake.cancelled == ["msg_1"]


# --- the DLQ -----------------------------------------------------------------------------------


def _dlq_callback(*, labelled: bool, failure: bool = False) -> dict[str, Any]:
    body = {"status": 500, "body": b64(BOOM), "sourceMessageId": "msg_1",
            "url": "https://api.autosend.com/v1/mails/send", "retried": 0, "maxRetries": 0,
            "sourceHeader": {"Idempotency-Key": ["task-9"], "X-Celery-Task": ["app.send_welcome"]},
            "sourceBody": b64(EMAIL)}
    if failure:
        body["dlqId"] = "1-0"
    raw: dict[str, Any] = {"dlqId": f"{T0}-1", "messageId": "msg_cb", "url": HOOK,
                           "header": {"Content-Type": ["application/json"]},
                           "body": json.dumps(body), "createdAt": T0, "responseStatus": 500,
                           "responseBody": json.dumps({"error": "hook down"})}
    if labelled:
        raw.update(label="task-9", labels=["task-9"])
    return raw


@pytest.mark.parametrize("labelled", [True, False])
def test_a_dead_callback_is_told_from_a_dead_email(labelled: bool) -> None:
    entry = dlq_entry(_dlq_callback(labelled=labelled))
    assert entry.kind == "callback" and entry.is_callback and entry.what == "link callback"
    assert entry.task_id == "task-9"  # from the label, or the source's Idempotency-Key
    assert entry.name == "app.send_welcome"
    assert entry.recipient == "ada@example.com" and entry.subject == "Welcome, Ada"
    assert entry.source_message_id == "msg_1"
    assert entry.url == HOOK
    assert dlq_entry(_dlq_callback(labelled=labelled, failure=True)).what == "link_error callback"


def test_a_dead_email_stays_an_email() -> None:
    from dashboard.qstash_events import dlq_message

    entry = dlq_entry(dlq_message())
    assert entry.kind == "email" and not entry.is_callback and entry.what == "email"


def test_the_docs_spelling_of_the_source_id_is_read_too() -> None:
    events = callback_events()
    for e in events:
        body = json.loads(__import__("base64").b64decode(e["body"]))
        body["sourceMessasgeId"] = body.pop("sourceMessageId")  # the callbacks page's example
        e["body"] = b64(body)
    record = build_record(delivered_events() + events)  # no callback URL declared either
    assert record is not None and record.state == states.SUCCESS
    assert [(c.kind, c.source_message_id) for c in record.callbacks] == [("callback", "msg_1")]
