"""Hostile or broken input never wedges the emulator: it is a 400 at the door, or a
failed attempt (RETRY, then DLQ) if it got in anyway; the loop never spins or hangs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from celery_qstash.clock import FakeClock
from celery_qstash.local.emulator import Emulator
from celery_qstash.local.emulator.delivery import MAX_RESPONSE_BODY
from celery_qstash.local.emulator.publish import PublishOptions, parse_publish_headers
from celery_qstash.local.emulator.store import EventFilter, Store

from .conftest import START, Client, Target

USER = "defaultUser"


def _emulator(handler: Any, data_dir: Path | None = None) -> Emulator:
    return Emulator(data_dir, clock=FakeClock(START),
                    http_client_factory=lambda: httpx.Client(transport=httpx.MockTransport(
                        handler)))


def _states(emulator: Emulator, message_id: str) -> list[str]:
    events, _ = emulator.store.list_events(USER, EventFilter(message_ids=[message_id]), None, 100)
    return [e["state"] for e in reversed(events)]


# -- 1. unsendable headers and URLs ------------------------------------------------


def test_unsendable_headers_and_urls_are_400_naming_them(fake: Client, target: Target) -> None:
    dest = f"/v2/publish/{target.url}/x"
    raw = fake.http.post(dest, headers=[(b"Upstash-Forward-X-Name", b"caf\xe9")])
    assert raw.status_code == 400 and "Upstash-Forward-X-Name" in raw.json()["error"]
    callback = fake.http.post(dest, headers=[
        (b"Upstash-Callback", f"{target.url}/cb".encode()),
        (b"Upstash-Callback-Forward-Authorization", b"caf\xe9")])
    assert callback.status_code == 400
    assert "Upstash-Callback-Forward-Authorization" in callback.json()["error"]
    forwarded_all = fake.http.post(dest, headers=[(b"Upstash-Header-Forward", b"true"),
                                                  (b"X-Raw", b"\xff")])
    assert forwarded_all.status_code == 400 and "X-Raw" in forwarded_all.json()["error"]
    enqueue = fake.http.post(f"/v2/enqueue/q/{target.url}/x",
                             headers=[(b"Upstash-Forward-X-Name", b"caf\xe9")])
    assert enqueue.status_code == 400
    schedule = fake.http.post(f"/v2/schedules/{target.url}/x", headers=[
        (b"Upstash-Cron", b"* * * * *"), (b"Upstash-Forward-X-Name", b"caf\xe9")])
    assert schedule.status_code == 400 and "Upstash-Forward-X-Name" in schedule.json()["error"]

    for url in ("http://[::1/x", "http://127.0.0.1:99999/x"):
        response = fake.http.post(f"/v2/publish/{url}")
        assert response.status_code == 400 and "destination" in response.json()["error"]
    bad_callback = fake.http.post(dest, headers={"Upstash-Failure-Callback": "http://[::1/x"})
    assert bad_callback.status_code == 400
    assert "Upstash-Failure-Callback" in bad_callback.json()["error"]

    # The SDK's batch() sends user headers as Upstash-Forward-*, in JSON (any Unicode).
    batch = fake.http.post("/v2/batch", json=[
        {"destination": f"{target.url}/a", "headers": {"Upstash-Forward-X-Name": "café ☃"}},
        {"destination": "http://[::1/x"},
        {"destination": f"{target.url}/b", "headers": {"Upstash-Forward-Bad Name": "v"}},
    ])
    first, second, third = batch.json()
    assert "Upstash-Forward-X-Name" in first["error"]
    assert "destination" in second["error"]
    assert "Bad Name" in third["error"]
    assert fake.emulator.store.pending_count() == 0
    assert fake.tick() == 0


def test_send_never_raises_any_error_is_a_failed_attempt() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/boom":
            raise RuntimeError("not an httpx error")
        return httpx.Response(200)

    emulator = _emulator(handler)
    store = emulator.store
    # Stored before validation existed (an old database): httpx cannot encode the value.
    unsendable = store.publish(USER, "https://a.example/bad", PublishOptions(
        headers={"X-Name": ["café ☃"]}, retries=0))[0]
    boom = store.publish(USER, "https://a.example/boom",
                         parse_publish_headers([("Upstash-Retries", "1")], b""))[0]
    fine = store.publish(USER, "https://a.example/ok", PublishOptions())[0]

    assert emulator.tick() == 3
    assert _states(emulator, unsendable.message_id)[-2:] == ["ERROR", "FAILED"]
    assert _states(emulator, boom.message_id)[-1] == "RETRY"
    assert _states(emulator, fine.message_id)[-1] == "DELIVERED"
    assert emulator.tick(START + 86_400) == 1
    assert _states(emulator, boom.message_id)[-1] == "FAILED"
    dead, _ = store.list_dlq(USER, EventFilter(), None, 10)
    errors = {d["message"]["id"]: d["error"] for d in dead}
    assert "UnicodeEncodeError" in errors[unsendable.message_id]
    assert "RuntimeError" in errors[boom.message_id]
    assert store.pending_count() == 0
    emulator.close()


# -- 2. bounded durations, schedules that cannot fire, no spinning -----------------


def test_durations_are_bounded_with_a_400(fake: Client, target: Target) -> None:
    dest = f"/v2/publish/{target.url}/x"
    huge = "99999999999999999999d"
    cases: list[tuple[str, dict[str, str]]] = [
        (dest, {"Upstash-Delay": huge}),
        (dest, {"Upstash-Delay": "366d"}),
        (dest + "?upstash-delay=%C2%B2", {}),  # a Unicode digit: int() would choke on it
        (dest + "?upstash-delay=99999999999999999999s", {}),
        (dest, {"Upstash-Callback": f"{target.url}/cb", "Upstash-Callback-Delay": huge}),
        (dest, {"Upstash-Failure-Callback": f"{target.url}/f",
                "Upstash-Failure-Callback-Timeout": huge}),
        (f"/v2/schedules/{target.url}/s", {"Upstash-Cron": "* * * * *", "Upstash-Delay": huge}),
    ]
    for path, headers in cases:
        response = fake.http.post(path, headers=headers)
        assert response.status_code == 400, (path, headers, response.text)
        assert "Upstash-" in response.json()["error"]
    batch = fake.http.post("/v2/batch", json=[
        {"destination": f"{target.url}/x", "headers": {"Upstash-Delay": huge}}])
    assert "Upstash-Delay" in batch.json()[0]["error"]
    assert fake.emulator.store.pending_count() == 0
    assert fake.publish(f"{target.url}/x", upstash_delay="365d",
                        upstash_timeout="15m").status_code == 200
    # A timeout over the plan maximum is capped to it, as QStash's "can only shorten" says.
    capped = fake.publish(f"{target.url}/x", upstash_timeout="16m").json()["messageId"]
    assert fake.emulator.store.pending_count() == 2
    events = fake.http.get("/v2/events", params={"messageId": capped}).json()["events"]
    assert events[0]["timeout"] == 15 * 60 * 1000


def test_a_schedule_that_cannot_fire_records_its_error_and_delivery_goes_on(
    fake: Client, target: Target
) -> None:
    response = fake.http.post(f"/v2/schedules/{target.url}/s", headers={"Upstash-Cron": "* * * * *"})
    schedule_id = response.json()["scheduleId"]
    store = fake.emulator.store
    # A row written before delays were bounded: publishing it overflows SQLite.
    with store._tx() as cur:
        row = cur.execute("SELECT data FROM schedules WHERE id = ?", (schedule_id,)).fetchone()
        data = json.loads(row["data"])
        data["opts"]["delay_ms"] = 10**20
        cur.execute("UPDATE schedules SET data = ? WHERE id = ?", (json.dumps(data), schedule_id))
    fake.publish(f"{target.url}/normal", upstash_delay="60s")
    fake.advance(60)

    assert fake.tick() == 1
    assert [r.path for r in target.requests] == ["/normal"]
    schedule = fake.http.get(f"/v2/schedules/{schedule_id}").json()
    assert "OverflowError" in schedule["error"]
    assert schedule["nextScheduleTime"] > (START + 60) * 1000
    assert fake.tick() == 0  # not due again until its next time


def test_a_cron_that_never_fires_is_a_400(fake: Client, target: Target) -> None:
    response = fake.http.post(f"/v2/schedules/{target.url}/s",
                              headers={"Upstash-Cron": "0 0 30 2 *"})
    assert response.status_code == 400 and "Upstash-Cron" in response.json()["error"]


class _Waits:
    """Stands in for the loop's events: records each wait and ends the loop after it."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return bool(self.waits)

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        return True

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass


def test_a_failed_background_step_backs_off_instead_of_spinning() -> None:
    emulator = Emulator(clock=FakeClock(START))
    loop = emulator.loop
    steps: list[int] = []

    def broken_step() -> None:
        steps.append(1)
        raise RuntimeError("database is broken")

    # A schedule overdue forever would make the idle time 0: only the backoff saves us.
    emulator.store.next_due_ms = lambda: 0  # type: ignore[method-assign]
    waits = _Waits()
    loop._pump = broken_step  # type: ignore[method-assign]
    loop._stop = loop._wake = waits  # type: ignore[assignment]
    loop._run()
    assert steps == [1]
    assert waits.waits == [1.0]
    emulator.close()


# -- 6. malformed input is a 400, never a 500 --------------------------------------


def test_malformed_input_is_400(fake: Client, target: Target) -> None:
    huge = "99999999999999999999"
    cases: list[tuple[str, str, Any]] = [
        ("GET", f"/v2/events?fromDate={huge}", None),
        ("GET", f"/v2/events?toDate={huge}", None),
        ("GET", f"/v2/events?count={huge}", None),
        ("GET", f"/v2/events?cursor={huge}-1", None),
        ("GET", f"/v2/dlq?responseStatus={huge}", None),
        ("GET", "/v2/events?fromDate=--5", None),
        ("DELETE", f"/v2/messages?fromDate={huge}", None),
        ("DELETE", "/v2/dlq?count=-1", None),
        ("DELETE", "/v2/dlq", {"dlqIds": 5}),
        ("DELETE", "/v2/messages", {"messageIds": "abc"}),
        ("POST", "/v2/dlq/retry", {"dlqIds": {"a": 1}}),
        ("POST", "/v2/queues", {"queueName": "q", "parallelism": int(huge)}),
        ("POST", "/v2/topics/g/endpoints", {"endpoints": [{"url": "http://a/", "name": {"x": 1}}]}),
        ("POST", f"/v2/flowControl/k/pin?period={huge}d&rate=1", None),
        ("POST", f"/v2/flowControl/k/pin?parallelism={huge}", None),
        ("POST", f"/v2/flowControl/k/pin?rate={huge}", None),
    ]
    for method, path, body in cases:
        response = fake.http.request(method, path, json=body)
        assert response.status_code == 400, (method, path, response.text)
        assert response.json()["error"]


def test_batch_errors_are_per_item_even_unexpected_ones(
    fake: Client, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = fake.emulator.store.messages
    real_publish = messages.publish_in  # a batch stores every item in one transaction

    def flaky_publish(cur: Any, user: str, destination: str, *args: Any, **kwargs: Any) -> Any:
        if destination.endswith("/explode"):
            raise RuntimeError("unexpected")
        return real_publish(cur, user, destination, *args, **kwargs)

    monkeypatch.setattr(messages, "publish_in", flaky_publish)
    response = fake.http.post("/v2/batch", json=[
        {"destination": f"{target.url}/good", "body": "1"},
        {"destination": f"{target.url}/bad", "queue": 5},
        {"destination": f"{target.url}/explode"},
        {"destination": f"{target.url}/also-good"},
    ])
    assert response.status_code == 200
    good, bad, explode, also = response.json()
    assert good["messageId"] and also["messageId"]
    assert "queue" in bad["error"]
    assert "RuntimeError" in explode["error"]
    assert fake.tick() == 2
    assert sorted(r.path for r in target.requests) == ["/also-good", "/good"]


# -- 8. + 9. streamed responses, one deadline per attempt --------------------------


class _Chunks(httpx.SyncByteStream):
    """A response body produced chunk by chunk, recording how much was pulled."""

    def __init__(self, chunks: int, size: int, on_chunk: Any = None) -> None:
        self.total, self.size, self.on_chunk = chunks, size, on_chunk
        self.pulled = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.total):
            if self.on_chunk is not None:
                self.on_chunk()
            self.pulled += 1
            yield b"x" * self.size

    def close(self) -> None:
        self.closed = True


def test_the_response_is_streamed_and_only_the_first_mebibyte_is_read() -> None:
    body = _Chunks(chunks=400, size=64 * 1024)  # 25 MiB on offer
    emulator = _emulator(lambda request: httpx.Response(500, stream=body))
    emulator.store.publish(USER, "https://big.example/x",
                           parse_publish_headers([("Upstash-Retries", "0")], b""))
    assert emulator.tick() == 1
    [dead], _ = emulator.store.list_dlq(USER, EventFilter(), None, 10)
    assert len(dead["response_body"]) == len(
        __import__("base64").b64encode(b"x" * MAX_RESPONSE_BODY))
    assert body.pulled == MAX_RESPONSE_BODY // (64 * 1024)
    assert body.closed
    emulator.close()


def test_upstash_timeout_bounds_the_whole_attempt_not_each_read() -> None:
    elapsed = [0.0]

    def trickle() -> None:
        elapsed[0] += 0.6  # every chunk arrives well within a read timeout

    body = _Chunks(chunks=8, size=1, on_chunk=trickle)
    emulator = _emulator(lambda request: httpx.Response(200, stream=body))
    emulator.loop.monotonic = lambda: elapsed[0]
    [published] = emulator.store.publish(
        USER, "https://slow.example/x",
        parse_publish_headers([("Upstash-Timeout", "1s"), ("Upstash-Retries", "0")], b""))
    assert emulator.tick() == 1
    assert _states(emulator, published.message_id)[-2:] == ["ERROR", "FAILED"]
    [dead], _ = emulator.store.list_dlq(USER, EventFilter(), None, 10)
    assert dead["error"].startswith("timeout after 1000 ms")
    assert body.pulled == 2  # given up at the first chunk past the deadline
    assert body.closed
    emulator.close()


# -- 10. stop() does not wait for a hung destination ------------------------------


def test_stop_does_not_wait_for_a_hung_attempt_which_is_retried_after_restart(
    tmp_path: Path
) -> None:
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def hang(request: httpx.Request) -> httpx.Response:
        entered.set()
        release.wait(30)
        finished.set()
        return httpx.Response(200)

    emulator = _emulator(hang, tmp_path)
    [published] = emulator.store.publish(USER, "https://hang.example/x", PublishOptions())
    emulator.start_background()
    try:
        assert entered.wait(10)
        emulator.loop.stop(grace=0.05)
        assert not finished.is_set()  # stop() returned while the attempt still hangs
        emulator.close()
    finally:
        release.set()
    reopened = Store(tmp_path, FakeClock(START))
    [again] = reopened.claim_due(int(START * 1000))
    assert again["id"] == published.message_id
    reopened.close()


# -- 11. the background loop's attempt threads --------------------------------------


def test_background_attempts_run_on_a_bounded_set_of_reused_threads() -> None:
    threads: list[threading.Thread] = []
    lock, all_in = threading.Lock(), threading.Event()
    count = 30

    def record(request: httpx.Request) -> httpx.Response:
        with lock:
            threads.append(threading.current_thread())
            if len(threads) == count:
                all_in.set()
        return httpx.Response(200)

    emulator = _emulator(record)
    ids = [emulator.store.publish(USER, f"https://a.example/{i}", PublishOptions())[0].message_id
           for i in range(count)]
    emulator.start_background()
    try:
        assert all_in.wait(30)
    finally:
        emulator.loop.stop()
    assert len(threads) == count
    assert len(set(threads)) <= emulator.loop.workers  # not one new thread per attempt
    assert all(_states(emulator, i)[-1] == "DELIVERED" for i in ids)
    # stopped and started again, it still delivers (fresh threads, fresh queue)
    more = emulator.store.publish(USER, "https://a.example/again", PublishOptions())[0]
    all_in.clear()
    count += 1
    emulator.start_background()
    try:
        assert all_in.wait(30)
        emulator.loop.stop()
        assert _states(emulator, more.message_id)[-1] == "DELIVERED"
    finally:
        emulator.close()
