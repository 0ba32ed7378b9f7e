"""The delivery loop's batching: claims ahead of the due time, group-committed outcomes,
and the HTTP path it uses by default.

Background tests run on a ``FakeClock`` that only the test moves: a message claimed
ahead can only be sent once the test has moved the clock to its not-before, whatever
the real time does, so "never before its not-before" is checked on every delivery.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from waiting import wait_until

from celery_qstash.clock import FakeClock
from celery_qstash.local.emulator import Emulator
from celery_qstash.local.emulator.delivery import MAX_RESPONSE_BODY, PREPARE_AHEAD_MS
from celery_qstash.local.emulator.publish import FlowControl, PublishOptions
from celery_qstash.local.emulator.store import JSON, AttemptResult, EventFilter

from .conftest import START, Client, Reply, Target

USER = "defaultUser"
START_MS = int(START * 1000)


class Recorder:
    """A destination (MockTransport) that records, per message id, the emulator clock's
    time at which the request arrived."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.arrivals: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.arrivals.setdefault(request.headers["upstash-message-id"], []).append(
                self.clock.now())
        return httpx.Response(200)

    def count(self) -> int:
        with self.lock:
            return sum(len(times) for times in self.arrivals.values())


@pytest.fixture
def background() -> Iterator[tuple[Emulator, Recorder]]:
    clock = FakeClock(START)
    recorder = Recorder(clock)
    emulator = Emulator(clock=clock, http_client_factory=lambda: httpx.Client(
        transport=httpx.MockTransport(recorder)))
    yield emulator, recorder
    emulator.close()


def _publish(emulator: Emulator, not_before_ms: int, **extra: Any) -> str:
    options = PublishOptions(body=b"{}", retries=0, not_before_ms=not_before_ms, **extra)
    return emulator.store.publish(USER, "https://a.example/x", options)[0].message_id


def _events(emulator: Emulator, message_id: str) -> list[JSON]:
    events, _ = emulator.store.list_events(USER, EventFilter(message_ids=[message_id]), None,
                                           100)
    return list(reversed(events))


def _states(emulator: Emulator, message_id: str) -> list[str]:
    return [e["state"] for e in _events(emulator, message_id)]


def _claimed(emulator: Emulator, *ids: str) -> bool:
    """All of ``ids`` are marked in flight in the store (claimed, ahead or not)."""
    with emulator.store.db.lock:
        rows = emulator.store._db.execute(
            f"SELECT COUNT(*) FROM messages WHERE inflight = 1 AND id IN "
            f"({','.join('?' * len(ids))})", ids).fetchone()
    return int(rows[0]) == len(ids)


def _advance(emulator: Emulator, seconds: float) -> None:
    assert isinstance(emulator.clock, FakeClock)
    emulator.clock.advance(seconds)
    emulator.loop.wake()  # what POST /_emulator/clock/advance does


# -- claimed ahead, sent when due, never before -----------------------------------


def test_messages_claimed_ahead_are_sent_at_their_not_before_never_before(
    background: tuple[Emulator, Recorder]
) -> None:
    emulator, recorder = background
    due = {
        _publish(emulator, START_MS + 100): START_MS + 100,
        _publish(emulator, START_MS + 250): START_MS + 250,
        _publish(emulator, START_MS + PREPARE_AHEAD_MS): START_MS + PREPARE_AHEAD_MS,
    }
    later = _publish(emulator, START_MS + 60_000)  # beyond the window: not claimed yet
    emulator.start_background()
    # All three are claimed while the clock still stands before them; the log says
    # nothing yet (ACTIVE is logged when an attempt starts).
    wait_until(lambda: _claimed(emulator, *due), "the claim ahead")
    assert recorder.count() == 0
    assert not _claimed(emulator, later)
    assert all(_states(emulator, i) == ["CREATED"] for i in due)

    _advance(emulator, 0.1)
    wait_until(lambda: recorder.count() == 1, "the first delivery")
    _advance(emulator, PREPARE_AHEAD_MS / 1000 - 0.1)
    wait_until(lambda: recorder.count() == 3, "the other two")
    wait_until(lambda: all(_states(emulator, i)[-1] == "DELIVERED" for i in due), "recorded")
    for message_id, not_before in due.items():
        [arrived] = recorder.arrivals[message_id]
        assert arrived * 1000 >= not_before  # the rule QStash keeps
        assert _states(emulator, message_id) == ["CREATED", "ACTIVE", "DELIVERED"]
        [active] = [e for e in _events(emulator, message_id) if e["state"] == "ACTIVE"]
        assert not_before <= active["time"] <= arrived * 1000
    assert later not in recorder.arrivals
    assert emulator.store.pending_count() == 1


def test_only_messages_held_by_time_alone_are_claimed_ahead() -> None:
    emulator = Emulator(clock=FakeClock(START))
    store = emulator.store
    plain = _publish(emulator, START_MS + 200)
    flow = _publish(emulator, START_MS + 200, flow_control=FlowControl("k", parallelism=5))
    queued = store.publish(USER, "https://a.example/q", PublishOptions(
        not_before_ms=START_MS + 200), queue="q")[0].message_id
    due_now = _publish(emulator, START_MS)

    claimed = store.claim(START_MS, 100, START_MS + PREPARE_AHEAD_MS)
    assert [(due, m["id"]) for due, m in claimed] == [(START_MS, due_now),
                                                       (START_MS + 200, plain)]
    # The queued and flow-controlled ones wait for their due time, as before.
    assert store.claim(START_MS + 100, 100, START_MS + PREPARE_AHEAD_MS) == []
    later = {m["id"] for _, m in store.claim(START_MS + 200, 100)}
    assert later == {flow, queued}
    emulator.close()


def test_a_message_cancelled_after_its_claim_ahead_is_not_sent(
    background: tuple[Emulator, Recorder]
) -> None:
    emulator, recorder = background
    kept = _publish(emulator, START_MS + 200)
    cancelled = _publish(emulator, START_MS + 200)
    emulator.start_background()
    wait_until(lambda: _claimed(emulator, kept, cancelled), "the claim ahead")
    assert emulator.store.cancel(USER, [cancelled]) == 1
    _advance(emulator, 0.2)
    wait_until(lambda: _states(emulator, kept)[-1:] == ["DELIVERED"], "the kept one")
    wait_until(lambda: _states(emulator, cancelled)[-1:] == ["CANCELED"], "the cancel")
    assert list(recorder.arrivals) == [kept]
    # As for a message cancelled before any claim: no attempt was ever logged.
    assert _states(emulator, cancelled) == ["CREATED", "CANCEL_REQUESTED", "CANCELED"]
    assert emulator.store.pending_count() == 0


def test_a_reset_drops_what_was_claimed_ahead(background: tuple[Emulator, Recorder]) -> None:
    emulator, recorder = background
    message_id = _publish(emulator, START_MS + 200)
    emulator.start_background()
    wait_until(lambda: _claimed(emulator, message_id), "the claim ahead")
    emulator.reset()
    fresh = _publish(emulator, START_MS + 200)
    _advance(emulator, 0.2)
    wait_until(lambda: recorder.count() >= 1, "the fresh message")
    emulator.loop.stop()
    assert list(recorder.arrivals) == [fresh]  # the one from before the reset never went


def test_stop_gives_back_what_was_claimed_and_not_sent(
    background: tuple[Emulator, Recorder]
) -> None:
    emulator, recorder = background
    message_id = _publish(emulator, START_MS + 200)
    emulator.start_background()
    wait_until(lambda: _claimed(emulator, message_id), "the claim ahead")
    emulator.loop.stop()
    # Due again, as after a restart: the next claim at its due time takes it.
    assert not _claimed(emulator, message_id)
    assert emulator.store.claim(START_MS, 10) == []
    emulator.start_background()
    _advance(emulator, 0.2)
    wait_until(lambda: _states(emulator, message_id)[-1:] == ["DELIVERED"], "the delivery")
    assert len(recorder.arrivals[message_id]) == 1
    assert _states(emulator, message_id) == ["CREATED", "ACTIVE", "DELIVERED"]


# -- outcomes: one transaction for many -------------------------------------------


def test_a_tick_records_all_its_outcomes_in_one_transaction() -> None:
    emulator = Emulator(clock=FakeClock(START), http_client_factory=lambda: httpx.Client(
        transport=httpx.MockTransport(lambda request: httpx.Response(
            500 if request.url.path == "/fail" else 200))))
    store = emulator.store
    ids = [_publish(emulator, START_MS) for _ in range(20)]
    failing = store.publish(USER, "https://a.example/fail", PublishOptions(retries=1))[0]
    emulator.signing_keys(USER)  # created on first use (as any API call does), then kept
    executed: list[str] = []
    store._db.set_trace_callback(executed.append)
    assert emulator.tick() == 21
    store._db.set_trace_callback(None)
    # One commit for the claim, one for the 21 outcomes (it was one per outcome).
    assert sum(1 for sql in executed if sql.strip().upper() == "COMMIT") == 2
    assert all(_states(emulator, i) == ["CREATED", "ACTIVE", "DELIVERED"] for i in ids)
    assert _states(emulator, failing.message_id)[-2:] == ["ERROR", "RETRY"]
    emulator.close()


def test_an_outcome_that_cannot_be_recorded_is_set_aside_alone() -> None:
    emulator = Emulator(clock=FakeClock(START))
    store = emulator.store
    good, bad = _publish(emulator, START_MS), _publish(emulator, START_MS)
    claimed = store.claim_due(START_MS)

    def callbacks(message: JSON, result: AttemptResult, state: str,
                  dlq_id: str | None) -> list[Any]:
        if message["id"] == bad:
            raise ValueError("damaged")
        return []

    states = store.finish_many([(m, AttemptResult(200), START_MS) for m in claimed],
                               callbacks)
    assert dict(zip([m["id"] for m in claimed], states, strict=True)) == {
        good: "DELIVERED", bad: "SET_ASIDE"}
    assert _states(emulator, good)[-1] == "DELIVERED"
    assert _states(emulator, bad)[-1] == "ACTIVE"  # its half-written outcome rolled back
    assert store.claim_due(START_MS + 86_400_000) == []  # not claimed again before a restart
    assert store.pending_count() == 1
    emulator.close()


# -- the default HTTP path (httpcore, no httpx.Client) ----------------------------


def test_the_default_http_path_sends_what_httpx_sent(fake: Client, target: Target) -> None:
    target.reply("/moved", Reply(302, headers={"Location": f"{target.url}/elsewhere"}))
    url = f"{target.url}/caf%C3%A9/x?q=1%202"
    fake.http.post(f"/v2/publish/{url}", content=b"body", headers={
        "Upstash-Forward-X-Twice": "one", "Upstash-Method": "PATCH"})
    moved = fake.publish(f"{target.url}/moved", upstash_retries="0").json()["messageId"]
    assert fake.tick() == 2
    [got] = [r for r in target.requests if r.path != "/moved"]
    assert got.method == "PATCH" and got.body == b"body" and got.query == "q=1%202"
    assert got.headers["host"] == target.url.split("//")[1]
    assert got.headers["content-length"] == "4"
    assert got.headers["x-twice"] == "one"
    # Redirects are not followed: a 302 is the attempt's answer, and a failed one.
    assert target.at("/elsewhere") == []
    [dead] = fake.http.get("/v2/dlq").json()["messages"]
    assert dead["messageId"] == moved and dead["responseStatus"] == 302


def test_the_default_http_path_reports_an_unreachable_host(fake: Client) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message_id = fake.publish(f"http://127.0.0.1:{port}/x",
                              upstash_retries="0").json()["messageId"]
    assert fake.tick() == 1
    [dead] = fake.http.get("/v2/dlq").json()["messages"]
    assert dead["messageId"] == message_id
    assert dead["error"] == f"cannot reach 127.0.0.1:{port}: ConnectError"


def test_the_default_http_path_cuts_a_huge_answer(fake: Client, target: Target) -> None:
    target.reply("/big", Reply(500, body=b"x" * (MAX_RESPONSE_BODY + 4096)))
    fake.publish(f"{target.url}/big", upstash_retries="0")
    assert fake.tick() == 1
    [dead], _ = fake.emulator.store.list_dlq(USER, EventFilter(), None, 10)
    assert dead["response_body"] == base64.b64encode(b"x" * MAX_RESPONSE_BODY).decode()
