"""The SQLite store on its own: indexes, persistence, reset, isolation."""

from __future__ import annotations

from pathlib import Path

import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.local.emulator.errors import BadRequest, NotFound
from celery_qstash.local.emulator.publish import parse_publish_headers
from celery_qstash.local.emulator.store import AttemptResult, EventFilter, Store

START = 1_800_000_000.0


def opts(*headers: tuple[str, str], body: bytes = b"x"):  # type: ignore[no-untyped-def]
    return parse_publish_headers(list(headers), body)


def test_due_query_uses_the_index() -> None:
    plan = Store(None, FakeClock(START)).explain_due_query()
    assert "USING" in plan and "messages_due" in plan
    assert "SCAN messages" not in plan


def test_only_due_messages_are_claimed_in_due_order() -> None:
    store = Store(None, FakeClock(START))
    late = store.publish("u", "https://a.example/1", opts(("Upstash-Delay", "20s")))[0]
    early = store.publish("u", "https://a.example/2", opts(("Upstash-Delay", "10s")))[0]
    now_ms = int(START * 1000)
    assert store.claim_due(now_ms) == []
    claimed = store.claim_due(now_ms + 20_000)
    assert [m["id"] for m in claimed] == [early.message_id, late.message_id]
    assert store.claim_due(now_ms + 20_000) == []  # in flight: not claimed twice
    assert store.next_due_ms() is None


def test_state_survives_reopening_and_in_flight_attempts_are_recovered(tmp_path: Path) -> None:
    clock = FakeClock(START)
    store = Store(tmp_path, clock)
    kept = store.publish("u", "https://a.example/1", opts())[0]
    store.claim_due(int(START * 1000))  # "crash" while the attempt is in flight
    store.close()
    reopened = Store(tmp_path, clock)
    assert reopened.get_message("u", kept.message_id)["url"] == "https://a.example/1"
    [again] = reopened.claim_due(int(START * 1000))
    assert again["id"] == kept.message_id
    assert reopened.finish_attempt(again, AttemptResult(200), int(START * 1000)) == "DELIVERED"
    with pytest.raises(NotFound):
        reopened.get_message("u", kept.message_id)


def test_reset_clears_everything() -> None:
    store = Store(None, FakeClock(START))
    store.publish("u", "https://a.example/1", opts())
    store.upsert_queue("u", "q", 1, False)
    store.signing_keys("u")
    store.reset()
    assert store.pending_count() == 0
    assert store.list_queues("u") == []
    assert store.list_events("u", EventFilter(), None, 10) == ([], None)


def test_users_do_not_see_each_others_state() -> None:
    store = Store(None, FakeClock(START))
    mine = store.publish("alice", "https://a.example/1", opts())[0]
    with pytest.raises(NotFound):
        store.get_message("bob", mine.message_id)
    assert store.list_events("bob", EventFilter(), None, 10)[0] == []
    assert store.cancel("bob") == 0


def test_invalid_destination_and_queue_name() -> None:
    store = Store(None, FakeClock(START))
    with pytest.raises(BadRequest):
        store.publish("u", "ftp://a.example/1", opts())
    with pytest.raises(BadRequest):
        store.publish("u", "api.example.com/x", opts())
    with pytest.raises(NotFound):
        store.publish("u", "unknown-group", opts())
    with pytest.raises(BadRequest):
        store.upsert_queue("u", "bad name!", 1, False)


def test_dlq_ids_are_unique_within_a_millisecond() -> None:
    store = Store(None, FakeClock(START))
    for _ in range(3):
        store.publish("u", "https://a.example/1", opts(("Upstash-Retries", "0")))
    now_ms = int(START * 1000)
    for message in store.claim_due(now_ms):
        store.finish_attempt(message, AttemptResult(500), now_ms)
    entries, _ = store.list_dlq("u", EventFilter(), None, 10)
    assert sorted(e["dlq_id"] for e in entries) == [f"{now_ms}-0", f"{now_ms}-1", f"{now_ms}-2"]


def test_signing_keys_are_read_once_then_served_from_memory() -> None:
    store = Store(None, FakeClock(START))
    keys = store.signing_keys("u")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    assert store.signing_keys("u") == keys
    assert statements == []  # every request and every delivery asks: no query each time


def test_rotated_and_reset_keys_are_not_served_stale() -> None:
    store = Store(None, FakeClock(START))
    current, nxt = store.signing_keys("u")
    rotated = store.keys.rotate("u")
    assert rotated[0] == nxt and store.signing_keys("u") == rotated
    store.reset()
    fresh = store.signing_keys("u")
    assert fresh != rotated and current not in fresh
    assert store.signing_keys("u", ("a", "b")) == fresh  # stored keys win over a default


def test_publish_options_to_dict_is_asdict() -> None:
    """to_dict is written out field by field (speed); it must stay dataclasses.asdict."""
    import base64
    import dataclasses

    options = opts(
        ("Upstash-Method", "PUT"), ("Upstash-Retries", "2"), ("Upstash-Retry-Delay", "1000"),
        ("Upstash-Timeout", "5s"), ("Upstash-Delay", "10s"), ("Upstash-Deduplication-Id", "d"),
        ("Upstash-Callback", "https://cb.example/ok"), ("Upstash-Callback-Retries", "1"),
        ("Upstash-Callback-Forward-X-A", "1"), ("Upstash-Failure-Callback", "https://cb.example/f"),
        ("Upstash-Flow-Control-Key", "k"), ("Upstash-Flow-Control-Value", "parallelism=2,rate=3"),
        ("Upstash-Label", "l"), ("Upstash-Redact-Fields", "body,header[Authorization]"),
        ("Upstash-Forward-X-Key", "v"), ("Content-Type", "application/json"),
        body=b'{"a": 1}',
    )
    options.redact.body_fields.append("sourceBody")
    expected = dataclasses.asdict(options)
    expected["body"] = base64.b64encode(options.body).decode("ascii")
    data = options.to_dict()
    assert data == expected
    assert data["callback"] is not None and data["flow_control"]["rate"] == 3
    assert type(options).from_dict(data) == options
    data["headers"]["X-Key"].append("changed")  # fresh containers: the options stay as they were
    assert options.headers["X-Key"] == ["v"]


def test_a_delivery_step_with_no_schedule_due_opens_no_write_transaction() -> None:
    store = Store(None, FakeClock(START))
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    assert store.fire_due_schedules(int(START * 1000)) == 0
    assert statements and not any(s.startswith("BEGIN") for s in statements)
