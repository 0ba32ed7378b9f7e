"""What the publish path does once instead of per message, and what it must not change:
message ids in creation order, partial indexes still serving every queue and flow query,
the JSON text of stored rows, sealing secrets without a deep copy, cached parsing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_qstash.clock import FakeClock
from celery_qstash.local.emulator.errors import BadRequest
from celery_qstash.local.emulator.publish import PublishOptions, parse_publish_headers
from celery_qstash.local.emulator.store import AttemptResult, Store
from celery_qstash.local.emulator.store import db as db_module
from celery_qstash.local.emulator.store.db import json_text, new_id
from celery_qstash.local.emulator.validate import parse_duration_ms
from celery_qstash.local.emulator.wire import log_entry
from celery_qstash.local.serving import _deeper_than

START = 1_800_000_000.0


def test_new_ids_are_unique_and_sort_in_creation_order() -> None:
    ids = [new_id("msg_") for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # the id index takes each one at its end
    assert all(i.startswith("msg_") and i[4:].isalnum() for i in ids)


def test_published_message_ids_follow_publish_order() -> None:
    store = Store(None, FakeClock(START))
    options = parse_publish_headers([], b"x")
    ids = [store.publish("u", f"https://a.example/{i}", options)[0].message_id
           for i in range(50)]
    assert ids == sorted(ids)
    (many,) = [store.messages.publish_many("u", [(f"https://a.example/b{i}", options, None)
                                                 for i in range(50)])]
    batch_ids = [result[0].message_id for result in many if isinstance(result, list)]
    assert batch_ids == sorted(batch_ids) and batch_ids[0] > ids[-1]


def _plans(conn: sqlite3.Connection, statements: list[str]) -> dict[str, str]:
    plans = {}
    for sql in statements:
        if "messages" in sql and ("queue = " in sql or "fc_key = " in sql):
            rows = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            plans[sql] = " | ".join(str(row[3]) for row in rows)
    return plans


def test_every_queue_and_flow_query_uses_an_index() -> None:
    """The queue and flow-control indexes are partial (only rows with a queue or a flow
    key): each query on them must still find its index, never scan the messages."""
    clock = FakeClock(START)
    store = Store(None, clock)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    flow = parse_publish_headers([("Upstash-Flow-Control-Key", "k"),
                                  ("Upstash-Flow-Control-Value", "parallelism=1,rate=5")], b"f")
    plain = parse_publish_headers([], b"p")
    for i in range(3):
        store.publish("u", f"https://a.example/f{i}", flow)
        store.publish("u", f"https://a.example/q{i}", plain, queue="q")
        store.publish("u", f"https://a.example/p{i}", plain)
    now = int(START * 1000)
    for _ in range(3):
        for message in store.claim_due(now):
            store.finish_attempt(message, AttemptResult(200), now)
        now += 1000
    store.flow.get("u", "k")
    store.flow.update("u", "k", "pause")
    store.flow.update("u", "k", "resume")
    store.queues.all("u")
    store._db.set_trace_callback(None)
    plans = _plans(store._db, statements)
    assert any("fc_key" in sql for sql in plans) and any("queue = " in sql for sql in plans)
    wrong = {sql: plan for sql, plan in plans.items()
             if "SCAN messages" in plan
             or ("fc_key = " in sql and "messages_flow_" not in plan)
             or ("fc_key = " not in sql and "messages_in_queue" not in plan)}
    assert wrong == {}
    assert store.pending_count() == 0  # and the scenario did deliver everything


def test_an_older_database_gets_the_partial_indexes(tmp_path: Path) -> None:
    Store(tmp_path, FakeClock(START)).close()
    conn = sqlite3.connect(tmp_path / "emulator.sqlite3")
    for name, columns in (("messages_queue", "user, queue, parked, seq"),
                          ("messages_flow_wait", "user, fc_key, parked, ready_ms, seq"),
                          ("messages_flow_inflight", "user, fc_key, inflight"),
                          ("messages_user", "user, created_ms")):
        conn.execute(f"CREATE INDEX {name} ON messages({columns})")  # as an older emulator
    conn.commit()
    conn.close()
    store = Store(tmp_path, FakeClock(START))
    indexes = {row[0]: row[1] for row in store._db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' "
        "AND sql IS NOT NULL")}
    assert not {"messages_queue", "messages_flow_wait", "messages_flow_inflight",
                "messages_user"} & set(indexes)
    for name in ("messages_in_queue", "messages_flow_waiting", "messages_flow_active"):
        assert "WHERE" in indexes[name]


@pytest.mark.parametrize("value", [
    {"a": [1, 2.5, None, True], "b": {"c": "d"}, "é": "ü \u2028"},
    {"big": 2**70, "neg": -(2**70)},  # past 64 bits: orjson refuses, json writes it
    {"lone": "\ud800"},  # a lone surrogate: orjson refuses, json escapes it
    {1: "int key"},
])
def test_json_text_reads_back_as_json_dumps_does(value: object) -> None:
    assert json.loads(json_text(value)) == json.loads(json.dumps(value))


def test_json_text_without_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_module, "_orjson", None)
    value = {"a": [1, "x"], "n": None}
    assert json_text(value) == json.dumps(value)


def test_sealing_copies_only_what_it_changes_and_leaves_the_input_alone() -> None:
    store = Store(None, FakeClock(START))
    options = parse_publish_headers([
        ("Upstash-Forward-Authorization", "Bearer secret"), ("Upstash-Forward-X-Plain", "v"),
        ("Upstash-Callback", "https://cb.example/ok"),
        ("Upstash-Callback-Forward-X-Token", "cb-secret"),
        ("Upstash-Redact-Fields", "header[X-Token]"),
    ], b"body")
    opts = options.to_dict()
    before = json.loads(json.dumps(opts))
    with store.db.tx() as cur:
        sealed = store.secrets.seal_opts(cur, "msg:x", opts)
        assert opts == before  # the caller's options (and their log entry) are untouched
        assert sealed["headers"]["Authorization"][0].startswith("REDACTED:")
        assert sealed["headers"]["X-Plain"] == ["v"]
        assert sealed["callback"]["headers"]["X-Token"][0].startswith("REDACTED:")
        assert sealed["callback"]["url"] == "https://cb.example/ok"
        assert store.secrets.unseal_opts(cur, "msg:x", sealed) == before
        plain = parse_publish_headers([("Upstash-Forward-X-Plain", "v")], b"").to_dict()
        assert store.secrets.seal_opts(cur, "msg:y", plain) == plain
        assert cur.execute("SELECT COUNT(*) FROM secrets WHERE key = 'msg:y'").fetchone()[0] == 0


def test_a_log_entry_from_parsed_options_is_the_one_read_from_the_dict() -> None:
    options = parse_publish_headers([
        ("Upstash-Method", "PUT"), ("Upstash-Retries", "2"), ("Upstash-Retry-Delay", "1000"),
        ("Upstash-Timeout", "5s"), ("Upstash-Callback", "https://cb.example/ok"),
        ("Upstash-Callback-Forward-X-A", "1"), ("Upstash-Failure-Callback", "https://cb.example/f"),
        ("Upstash-Flow-Control-Key", "k"), ("Upstash-Flow-Control-Value", "parallelism=2,rate=3"),
        ("Upstash-Label", "l"), ("Upstash-Redact-Fields", "header[Authorization]"),
        ("Upstash-Forward-Authorization", "Bearer k"), ("Content-Type", "application/json"),
    ], b'{"a": 1}')
    message = {"id": "msg_1", "user": "u", "url": "https://a.example/x", "topic": None,
               "queue": "q", "created_ms": 1, "not_before_ms": 2, "opts": options.to_dict()}
    from_dict = log_entry(message, "CREATED", 3)
    assert log_entry(message, "CREATED", 3, options=options) == from_dict
    assert from_dict["header"]["Authorization"][0].startswith("REDACTED:")
    assert PublishOptions.from_dict(message["opts"]) == options


def test_a_cached_duration_is_still_refused_every_time() -> None:
    assert parse_duration_ms("90s", "Upstash-Delay", 10**9, strict=True) == 90_000
    assert parse_duration_ms("90s", "Upstash-Delay", 10**9, strict=True) == 90_000
    for _ in range(2):
        with pytest.raises(BadRequest, match="Upstash-Delay"):
            parse_duration_ms("90", "Upstash-Delay", 10**9, strict=True)
        with pytest.raises(BadRequest, match="longer than the maximum"):
            parse_duration_ms("90s", "Upstash-Timeout", 1000, strict=True)


def test_a_flow_key_publish_with_unchanged_limits_writes_no_flow_row() -> None:
    store = Store(None, FakeClock(START))
    flow = store.flow
    with store.db.tx() as cur:
        flow.touch(cur, "u", "k", 2, 5, 1)
        assert cur.execute("SELECT changes()").fetchone()[0] == 1
        flow.touch(cur, "u", "k", 2, 5, 1)  # the same limits: nothing to write
        assert cur.execute("SELECT changes()").fetchone()[0] == 0
        flow.touch(cur, "u", "k", None, 5, 1)  # the latest publish still defines them
        assert cur.execute("SELECT changes()").fetchone()[0] == 1
        flow.touch(cur, "u", "k", None, 5, 2)
        row = cur.execute("SELECT parallelism, rate, period_s FROM flow").fetchone()
    assert tuple(row) == (None, 5, 2)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_json_values = st.recursive(
    st.none() | st.integers() | st.text(max_size=3),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2),
                                                                      children, max_size=3),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_json_values, st.integers(min_value=0, max_value=8))
def test_the_json_depth_check_is_the_nesting_depth(value: object, limit: int) -> None:
    assert _deeper_than(value, limit) == (_depth(value) > limit)


def test_parsed_redaction_and_flow_control_are_fresh_objects_each_time() -> None:
    """Both are parsed once per distinct header value (cached), yet a publish may change
    its own: the Authorization a message forwards is added to that message's redaction."""
    secret = parse_publish_headers([("Upstash-Redact-Fields", "body"),
                                    ("Upstash-Forward-Authorization", "Bearer k"),
                                    ("Upstash-Flow-Control-Key", "k"),
                                    ("Upstash-Flow-Control-Value", "rate=2")], b"")
    plain = parse_publish_headers([("Upstash-Redact-Fields", "body"),
                                   ("Upstash-Flow-Control-Key", "k"),
                                   ("Upstash-Flow-Control-Value", "rate=2")], b"")
    assert secret.redact.headers == ["authorization"] and plain.redact.headers == []
    assert plain.redact.body and secret.redact is not plain.redact
    assert plain.flow_control == secret.flow_control
    assert plain.flow_control is not secret.flow_control
    for _ in range(2):  # a refusal is never cached
        with pytest.raises(BadRequest, match="Upstash-Redact-Fields"):
            parse_publish_headers([("Upstash-Redact-Fields", "nope")], b"")
        with pytest.raises(BadRequest, match="Upstash-Flow-Control-Value"):
            parse_publish_headers([("Upstash-Flow-Control-Key", "k"),
                                   ("Upstash-Flow-Control-Value", "speed=1")], b"")
