"""The query layer: QStash states -> Celery states, events -> task records, filters, DLQ."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import httpx
import pytest
from celery import states
from dashboard.qstash_events import (
    BOOM,
    EMAIL,
    T0,
    canceled_events,
    delivered_events,
    dlq_message,
    event,
    failed_events,
    fake_qstash,
    pending_events,
)

from celery_qstash.config import load_settings
from celery_qstash.errors import DeliveryFailed
from celery_qstash.publish.transports.qstash import client_for
from celery_qstash.status import (
    REDACTED,
    STATE_MAP,
    NotFound,
    StatusClient,
    TaskFilter,
    build_record,
    celery_state,
    dlq_entry,
    flower_task,
    parse_since,
    redact_headers,
    safe_url,
    sort_records,
)
from celery_qstash.status.result import meta_from_record

QSTASH_URL = "http://qstash.test"

# Flower's task fields (celery.events.state.Task, as /api/tasks returns them).
FLOWER_FIELDS = {
    "uuid", "name", "state", "received", "sent", "started", "succeeded", "failed", "retried",
    "revoked", "retries", "result", "exception", "traceback", "timestamp", "runtime", "eta",
    "expires", "args", "kwargs", "worker", "routing_key", "exchange", "client", "clock",
}


# -- the state mapping -----------------------------------------------------------


@pytest.mark.parametrize(
    ("qstash", "celery"),
    [
        ("CREATED", states.PENDING),
        ("ACTIVE", states.STARTED),
        ("RETRY", states.RETRY),
        ("ERROR", states.RETRY),
        ("DELIVERED", states.SUCCESS),
        ("FAILED", states.FAILURE),
        ("CANCEL_REQUESTED", states.REVOKED),
        ("CANCELED", states.REVOKED),
    ],
)
def test_every_qstash_state_maps_to_the_documented_celery_state(qstash: str, celery: str) -> None:
    assert STATE_MAP[qstash] == celery
    assert celery_state(qstash) == celery


def test_the_mapping_covers_every_state_of_the_sdk() -> None:
    from qstash.log import LogState

    # IN_PROGRESS is a filter-only pseudo state: no log entry carries it.
    assert {s.value for s in LogState} - {"IN_PROGRESS"} == set(STATE_MAP)


@pytest.mark.parametrize("unknown", [None, "", "IN_PROGRESS", "CANCELLED", "SOMETHING"])
def test_unknown_states_read_pending_like_an_unknown_celery_task(unknown: str | None) -> None:
    assert celery_state(unknown) == states.PENDING


# -- build_record ----------------------------------------------------------------


def test_a_delivered_task_after_one_retry() -> None:
    record = build_record(delivered_events())

    assert record is not None
    assert (record.task_id, record.message_id) == ("task-1", "msg_1")
    assert record.name == "app.send_welcome"
    assert (record.qstash_state, record.state) == ("DELIVERED", states.SUCCESS)
    assert record.ready
    assert record.retries == 1
    assert record.created == T0 / 1000
    assert record.started == (T0 + 100) / 1000  # the first attempt
    assert record.updated == (T0 + 1500) / 1000
    assert record.next_delivery is None
    assert record.response_status == 200
    assert record.result == {"emailId": "em_123", "status": "queued"}
    assert (record.recipient, record.subject) == ("ada@example.com", "Welcome, Ada")


def test_a_failed_task_counts_retries_not_attempts() -> None:
    record = build_record(failed_events())

    assert record is not None
    assert record.state == states.FAILURE
    assert record.retries == 1  # two attempts failed; only one was a retry
    assert record.response_status == 500
    assert record.error_message == "Internal server error"


def test_a_canceled_task_reads_revoked() -> None:
    record = build_record(canceled_events())

    assert record is not None
    assert (record.qstash_state, record.state) == ("CANCELED", states.REVOKED)
    assert record.ready


def test_a_task_waiting_for_its_retry_has_a_next_delivery_time() -> None:
    record = build_record(delivered_events()[:4])

    assert record is not None
    assert record.state == states.RETRY
    assert not record.ready
    assert record.next_delivery == (T0 + 1300) / 1000


def test_event_order_does_not_matter_even_within_one_millisecond() -> None:
    events = failed_events()
    shuffled = events[:]
    random.Random(4).shuffle(shuffled)

    record = build_record(shuffled)

    assert record is not None
    assert record.qstash_state == "FAILED"
    assert [e["state"] for e in record.events] == [e["state"] for e in events]


def test_no_events_is_no_record() -> None:
    assert build_record([]) is None


def test_the_task_name_is_found_with_the_forward_prefix_too() -> None:
    entry = event("CREATED", 0)
    entry["header"] = {"Upstash-Forward-X-Celery-Task": ["app.other"]}

    record = build_record([entry])

    assert record is not None
    assert record.name == "app.other"


def test_a_bulk_send_summarises_its_recipients() -> None:
    bulk = {"recipients": [{"email": "a@x.io"}, {"email": "b@x.io"}], "subject": "News"}

    record = build_record([event("CREATED", 0, body=bulk)])

    assert record is not None
    assert (record.recipient, record.subject) == ("2 recipients", "News")


# -- result meta -----------------------------------------------------------------


def test_success_meta_carries_autosends_data() -> None:
    meta = meta_from_record("task-1", build_record(delivered_events()))

    assert meta["status"] == states.SUCCESS
    assert meta["result"]["emailId"] == "em_123"
    assert meta["retries"] == 1
    assert datetime.fromisoformat(meta["date_done"]) == datetime.fromtimestamp(
        (T0 + 1500) / 1000, timezone.utc)


def test_failure_meta_is_delivery_failed_with_status_and_message() -> None:
    meta = meta_from_record("task-2", build_record(failed_events()))

    assert meta["status"] == states.FAILURE
    exc = meta["result"]
    assert isinstance(exc, DeliveryFailed)
    assert (exc.status, exc.message) == (500, "Internal server error")
    assert "500" in str(exc)


def test_unknown_task_meta_is_pending() -> None:
    meta = meta_from_record("nope", None)

    assert (meta["status"], meta["result"], meta["date_done"]) == (states.PENDING, None, None)


# -- Flower's shape ----------------------------------------------------------------


def test_flower_task_has_every_flower_field() -> None:
    record = build_record(delivered_events())
    assert record is not None

    info = flower_task(record)

    assert set(info) >= FLOWER_FIELDS
    assert info["uuid"] == "task-1"
    assert info["state"] == "SUCCESS"
    assert info["received"] == T0 / 1000
    assert info["succeeded"] == (T0 + 1500) / 1000
    assert info["runtime"] == pytest.approx(0.2)  # the delivering attempt
    assert info["result"] == repr({"emailId": "em_123", "status": "queued"})
    # What QStash cannot know is null, never invented.
    assert info["args"] is None and info["kwargs"] is None and info["worker"] is None


def test_flower_task_of_a_failure_has_exception_and_traceback() -> None:
    record = build_record(failed_events())
    assert record is not None

    info = flower_task(record)

    assert info["state"] == "FAILURE"
    assert info["exception"] == "DeliveryFailed(500, 'Internal server error')"
    assert "Internal server error" in info["traceback"]
    assert info["failed"] == (T0 + 1300) / 1000


def test_flower_task_of_a_delayed_task_has_its_eta() -> None:
    record = build_record(pending_events())
    assert record is not None

    assert flower_task(record)["eta"] == (T0 + 3_600_000) / 1000


# -- filters, sorting, time --------------------------------------------------------


def _records() -> list:
    return [r for r in (build_record(e) for e in (
        delivered_events(), failed_events(), canceled_events(), pending_events())) if r]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (TaskFilter(), {"task-1", "task-2", "task-3", "task-4"}),
        (TaskFilter(state="All"), {"task-1", "task-2", "task-3", "task-4"}),
        (TaskFilter(state="SUCCESS"), {"task-1"}),
        (TaskFilter(state="failure,revoked"), {"task-2", "task-3"}),
        (TaskFilter(state="CANCELED"), {"task-3"}),  # QStash states work too
        (TaskFilter(name="app.send_receipt"), {"task-4"}),
        (TaskFilter(since=(T0 + 400) / 1000), {"task-4"}),
        (TaskFilter(until=(T0 + 400) / 1000), {"task-1", "task-2", "task-3"}),
        (TaskFilter(search="receipt"), {"task-4"}),
        (TaskFilter(search="state:FAILURE"), {"task-2"}),
        (TaskFilter(search="name:send_welcome state:success"), {"task-1"}),
        (TaskFilter(search="ada@example task-3"), {"task-3"}),
        (TaskFilter(search='subject:"Welcome, Ada"'), {"task-1", "task-2", "task-3", "task-4"}),
        (TaskFilter(search="nothing-like-this"), set()),
    ],
)
def test_task_filter(flt: TaskFilter, expected: set[str]) -> None:
    assert {r.task_id for r in _records() if flt.matches(r)} == expected


def test_sort_records_like_flowers_sort_by() -> None:
    records = _records()

    assert next(r.task_id for r in sort_records(records, "-received")) == "task-4"
    assert [r.state for r in sort_records(records, "state")] == sorted(r.state for r in records)
    assert sort_records(records, None) == records
    with pytest.raises(ValueError, match="sort_by"):
        sort_records(records, "worker")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 970.0), ("10m", 400.0), ("2h", 1000 - 7200.0), ("1d", 1000 - 86400.0),
     ("2024-05-01T12:00:00Z", 1714564800.0), ("2024-05-01 12:00", 1714564800.0)],
)
def test_parse_since(text: str, expected: float) -> None:
    assert parse_since(text, now=1000.0) == expected


def test_parse_since_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="10m"):
        parse_since("yesterday-ish", now=0)


def test_redact_headers_hides_every_secret_bearing_header() -> None:
    shown = redact_headers({
        "Authorization": ["Bearer AS_live_123"],
        "Upstash-Forward-Authorization": "Bearer x",
        "X-Api-Key": ["k"],
        "X-Auth-Token": ["t"],
        "Upstash-Signature": ["jwt"],
        "Content-Type": ["application/json"],
    })

    assert shown.pop("Content-Type") == "application/json"
    assert set(shown.values()) == {REDACTED}


# -- StatusClient over a faked QStash --------------------------------------------------


@pytest.fixture
def qstash():  # type: ignore[no-untyped-def]
    with fake_qstash(QSTASH_URL) as fake:
        yield fake


@pytest.fixture
def status() -> StatusClient:
    settings = load_settings({"qstash_url": QSTASH_URL, "qstash_token": "tok-status-test"})
    return StatusClient(client_for(settings))


def test_task_is_one_request_filtered_by_label(qstash, status: StatusClient) -> None:  # type: ignore[no-untyped-def]
    qstash.events = delivered_events() + failed_events()

    record = status.task("task-2")

    assert record is not None and record.state == states.FAILURE
    assert qstash.events_route.call_count == 1
    assert qstash.events_route.calls.last.request.url.params["label"] == "task-2"


def test_tasks_and_task_types(qstash, status: StatusClient) -> None:  # type: ignore[no-untyped-def]
    qstash.events = delivered_events() + failed_events() + pending_events()

    found = [r.task_id for r in status.tasks()]
    assert found[0] == "task-4"  # newest first; the other two were created at the same ms
    assert set(found) == {"task-1", "task-2", "task-4"}
    assert [r.task_id for r in status.tasks(TaskFilter(state="RETRY,FAILURE"))] == ["task-2"]
    assert status.task_types() == ["app.send_receipt", "app.send_welcome"]


def test_since_is_sent_to_qstash_as_from_date(qstash, status: StatusClient) -> None:  # type: ignore[no-untyped-def]
    qstash.events = delivered_events() + pending_events()

    found = status.tasks(TaskFilter(since=(T0 + 400) / 1000))

    assert [r.task_id for r in found] == ["task-4"]
    assert qstash.events_route.calls.last.request.url.params["fromDate"] == str(T0 + 400)


def test_revoke_task_cancels_the_newest_message(qstash, status: StatusClient) -> None:  # type: ignore[no-untyped-def]
    qstash.events = pending_events()

    status.revoke_task("task-4")

    assert qstash.cancelled == ["msg_4"]
    with pytest.raises(NotFound):
        status.revoke_task("unknown")
    with pytest.raises(NotFound):
        status.revoke("msg_gone")


def test_dlq_list_retry_delete(qstash, status: StatusClient) -> None:  # type: ignore[no-untyped-def]
    qstash.dlq = [dlq_message("task-2", "1-0"), dlq_message("task-9", "2-0")]

    entries, cursor = status.dlq()

    assert cursor is None
    first = entries[0]
    assert (first.dlq_id, first.task_id, first.name) == ("1-0", "task-2", "app.send_welcome")
    assert (first.recipient, first.subject) == ("ada@example.com", EMAIL["subject"])
    assert first.response == BOOM and first.error_message == "Internal server error"
    assert status.dlq_retry("1-0") == "msg_retried"
    status.dlq_delete("2-0")
    assert qstash.dlq == []
    with pytest.raises(NotFound):
        status.dlq_retry("1-0")
    with pytest.raises(NotFound):
        status.dlq_delete("2-0")


def test_dlq_entry_reads_base64_bodies_too() -> None:
    raw = dlq_message()
    raw.pop("responseBody")
    raw["responseBodyBase64"] = "bm90IGpzb24="  # "not json"

    assert dlq_entry(raw).response == "not json"
    assert dlq_entry(raw).failed == (T0 + 1300) / 1000


def test_queues(qstash, status: StatusClient) -> None:  # type: ignore[no-untyped-def]
    qstash.queues = [{"name": "emails", "parallelism": 2, "createdAt": 1, "updatedAt": 1,
                      "lag": 3, "paused": False}]

    (queue,) = status.queues()

    assert (queue.name, queue.messages, queue.parallelism, queue.paused) == ("emails", 3, 2, False)


def test_qstash_order_wins_within_one_millisecond() -> None:
    # A zero-delay retry: RETRY and the next ACTIVE share a millisecond. QStash lists
    # events newest first; that order, not a guess from the state names, is kept.
    events = [
        event("CREATED", 0), event("ACTIVE", 5),
        event("ERROR", 9, responseStatus=500), event("RETRY", 9), event("ACTIVE", 9),
        event("DELIVERED", 12, responseStatus=200),
    ]

    newest_first = build_record(events[::-1])
    oldest_first = build_record(events)

    assert newest_first is not None and oldest_first is not None
    expected = ["CREATED", "ACTIVE", "ERROR", "RETRY", "ACTIVE", "DELIVERED"]
    assert [e["state"] for e in newest_first.events] == expected
    assert [e["state"] for e in oldest_first.events] == expected


def test_a_delayed_task_is_next_delivered_at_its_not_before() -> None:
    record = build_record(pending_events())

    assert record is not None
    assert record.next_delivery == (T0 + 3_600_000) / 1000


# -- review fixes ----------------------------------------------------------------------


def test_an_empty_task_id_is_no_task_and_asks_qstash_nothing(qstash, status: StatusClient) -> None:  # type: ignore[no-untyped-def]
    qstash.events = delivered_events()

    assert status.task("") is None
    assert qstash.events_route.call_count == 0


def test_task_keeps_only_the_events_labelled_with_its_id(qstash, status: StatusClient) -> None:  # type: ignore[no-untyped-def]
    # A server that ignores the label filter returns everyone's events.
    qstash.events = delivered_events() + failed_events()
    qstash.events_route.side_effect = lambda request: httpx.Response(
        200, json={"events": (delivered_events() + failed_events())[::-1]})

    record = status.task("task-2")
    unlabelled = status.task("task-9")

    assert record is not None
    assert record.state == states.FAILURE
    assert {e["messageId"] for e in record.events} == {"msg_2"}
    assert unlabelled is None


def test_task_accepts_the_single_label_spelling(qstash, status: StatusClient) -> None:  # type: ignore[no-untyped-def]
    events = failed_events()
    for entry in events:
        del entry["labels"]
    qstash.events_route.side_effect = lambda request: httpx.Response(
        200, json={"events": events[::-1]})

    record = status.task("task-2")

    assert record is not None and record.state == states.FAILURE


@pytest.mark.parametrize(
    "text",
    ["9" * 400 + "w", "9" * 400 + ".5s", "1" + "0" * 320 + "d",
     "1" + "0" * 300 + "w",  # finite, but not once in milliseconds
     "100000000w"],  # before year 1
)
def test_parse_since_rejects_a_duration_too_large_to_be_a_time(text: str) -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_since(text, now=1000.0)


def test_parse_since_accepts_a_long_but_reasonable_duration() -> None:
    assert parse_since("5000w", now=0.0) == -5000 * 7 * 86400.0


def test_since_before_1970_asks_qstash_from_the_start(qstash, status: StatusClient) -> None:  # type: ignore[no-untyped-def]
    qstash.events = pending_events()

    found = status.tasks(TaskFilter(since=parse_since("5000w", now=0.0)))

    assert [r.task_id for r in found] == ["task-4"]
    assert qstash.events_route.calls.last.request.url.params["fromDate"] == "0"


def test_dlq_ids_are_one_path_segment(qstash, status: StatusClient) -> None:  # type: ignore[no-untyped-def]
    qstash.dlq = [dlq_message("task-2", "../keys")]

    with pytest.raises(NotFound):
        status.dlq_retry("../keys")
    with pytest.raises(NotFound):
        status.dlq_delete("a/b?c")

    retried = qstash.retry_route.calls.last.request.url
    deleted = qstash.delete_route.calls.last.request.url
    assert retried.raw_path == b"/v2/dlq/retry/..%2Fkeys"
    assert deleted.raw_path == b"/v2/dlq/a%2Fb%3Fc"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.autosend.com/v1/mails/send", "https://api.autosend.com/v1/mails/send"),
        ("https://user:pw@example.com/hook?api_key=AS_1&x=1#frag",
         f"https://example.com/hook?api_key={REDACTED.replace('[', '%5B').replace(']', '%5D')}&x=1"),
        ("https://example.com/hook?token=t&page=2",
         f"https://example.com/hook?token={REDACTED.replace('[', '%5B').replace(']', '%5D')}&page=2"),
    ],
)
def test_safe_url_strips_credentials_and_secret_parameters(url: str, expected: str) -> None:
    assert safe_url(url) == expected


def test_scrub_data_scrubs_every_string_of_a_json_value() -> None:
    from celery_qstash.errors import scrub_data

    key = "AS_sandbox_dev_key"
    value = {
        "message": f"Invalid API key {key}",
        f"k-{key}": [f"{key}!", 3, None, True, 1.5, {"deep": (key,)}],
        "n": 7,
    }

    assert scrub_data(value, [key, None, "ab"]) == {
        "message": "Invalid API key ***",
        "k-***": ["***!", 3, None, True, 1.5, {"deep": ["***"]}],
        "n": 7,
    }
    assert scrub_data(key, []) == key
    assert value["message"] == f"Invalid API key {key}"  # the input is left alone


def test_a_percent_encoded_task_name_is_decoded() -> None:
    from dashboard.qstash_events import pending_events

    record = build_record(pending_events("t-u", name="emails.envoyer_bienven%C3%BCe"))
    assert record is not None and record.name == "emails.envoyer_bienvenüe"


def test_a_task_with_more_events_than_one_page_is_read_whole(qstash, status: StatusClient) -> None:  # type: ignore[no-untyped-def]
    """QStash answers 100 events a page at most: the record follows the cursor (a
    deferred task's retries are several messages under one label)."""
    history = [event("CREATED", 0)]
    for i in range(60):
        history += [event("ACTIVE", 10 * i + 1), event("ERROR", 10 * i + 2, responseStatus=503),
                    event("RETRY", 10 * i + 3)]
    history.append(event("DELIVERED", 1000, responseStatus=200))
    qstash.events = history
    record = status.task("task-1", callbacks=False)
    assert record is not None
    assert record.retries == 60 and record.state == states.SUCCESS
    assert record.created == T0 / 1000
    assert qstash.events_route.call_count == 2
