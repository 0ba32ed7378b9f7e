"""Deferred tasks end to end: ``.delay()`` -> emulator -> the app's signed receiver runs
the body through Celery's tracer -> the answer in QStash's logs -> ``AsyncResult``.

Real servers on loopback deliver on real time; each test waits for an outcome with a
deadline (never a duration it asserts on).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from celery import Celery, chord, group
from celery.exceptions import ChordError
from celery.result import AsyncResult
from celery.signals import task_failure, task_postrun, task_prerun, task_retry, task_success
from waiting import wait_until

from celery_qstash import (
    CeleryQStashWarning,
    DeferredTask,
    Email,
    UnsupportedOption,
    autosend_task,
)
from celery_qstash.local.emulator.signing import sign
from celery_qstash.publish.message import MESSAGE_KIND
from celery_qstash.testing import DevServers


class Runs:
    """What bodies and signals did, in order, with a condition to wait on."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self.changed = threading.Condition()

    def add(self, name: str, value: Any = None) -> None:
        with self.changed:
            self.items.append((name, value))
            self.changed.notify_all()

    def of(self, name: str) -> list[Any]:
        with self.changed:
            return [v for n, v in self.items if n == name]

    def wait(self, name: str, count: int = 1, timeout: float = 20.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len([1 for n, _ in self.items if n == name]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{count}x {name} did not happen: {self.items}")
                self.changed.wait(left)
            return [v for n, v in self.items if n == name]


@pytest.fixture
def runs() -> Iterator[Runs]:
    found = Runs()
    hooks = []
    for sig, name in ((task_prerun, "prerun"), (task_postrun, "postrun"),
                      (task_success, "success"), (task_failure, "failure"),
                      (task_retry, "retry")):
        def hook(sender: Any = None, _name: str = name, **kwargs: Any) -> None:
            found.add(_name, getattr(sender, "name", sender))
        sig.connect(hook, weak=False)
        hooks.append((sig, hook))
    yield found
    for sig, hook in hooks:
        sig.disconnect(hook)


@pytest.fixture
def receiver_url(live_app: Celery, dev_servers: DevServers) -> Iterator[str]:
    """The user's web app with the receiver mounted; deferred tasks are published to it."""
    live_app.conf.result_backend = "qstash://"
    with dev_servers.receiver(live_app) as url:
        yield url


def _add(app: Celery, runs: Runs) -> Any:
    @app.task(base=DeferredTask, name="live.add", shared=False)
    def add(x: int, y: int) -> int:
        runs.add("add", (x, y))
        return x + y

    return add


def test_a_result_comes_back_through_qstash_logs(
    live_app: Celery, receiver_url: str, runs: Runs
) -> None:
    add = _add(live_app, runs)
    result = add.delay(2, 3)
    assert AsyncResult(result.id, app=live_app).get(timeout=20) == 5
    assert runs.of("add") == [(2, 3)]
    # Celery's tracer ran the body: the worker's signals, in a worker's order.
    assert [n for n, _ in runs.items if n != "add"] == ["prerun", "success", "postrun"]


def test_countdown_runs_the_body_no_earlier_than_asked(
    live_app: Celery, receiver_url: str, runs: Runs
) -> None:
    add = _add(live_app, runs)
    published = time.time()
    add.apply_async((1, 1), countdown=2)
    runs.wait("add")
    ran_at = time.time()
    assert ran_at - published >= 2.0


def test_a_body_that_raises_twice_is_retried_by_qstash_and_succeeds(
    live_app: Celery, receiver_url: str, runs: Runs
) -> None:
    @live_app.task(base=DeferredTask, name="live.flaky", shared=False, bind=True,
                   max_retries=3, default_retry_delay=0.2)
    def flaky(self: Any) -> str:
        runs.add("flaky", self.request.retries)
        if len(runs.of("flaky")) < 3:
            raise ConnectionError("upstream is down")
        return "ok"

    result = flaky.delay()
    assert result.get(timeout=30) == "ok"
    assert runs.of("flaky") == [0, 1, 2]  # request.retries from Upstash-Retried
    assert result.state == "SUCCESS"
    # Two attempts that QStash retried read as Celery's retries, not failures.
    assert runs.of("retry") == ["live.flaky", "live.flaky"]
    assert runs.of("failure") == []


def test_the_last_failed_attempt_reaches_on_failure_once(
    live_app: Celery, receiver_url: str, runs: Runs
) -> None:
    @live_app.task(base=DeferredTask, name="live.broken", shared=False,
                   max_retries=1, default_retry_delay=0.2)
    def broken() -> None:
        runs.add("broken")
        raise ValueError("bad input 42")

    result = broken.delay()
    with pytest.raises(ValueError, match="bad input 42"):
        result.get(timeout=30)
    assert len(runs.of("broken")) == 2
    assert runs.of("failure") == ["live.broken"]


def test_self_retry_publishes_the_next_attempt_under_the_same_task_id(
    live_app: Celery, receiver_url: str, runs: Runs
) -> None:
    @live_app.task(base=DeferredTask, name="live.poll", shared=False, bind=True,
                   max_retries=5)
    def poll(self: Any, wanted: int) -> int:
        runs.add("poll", (self.request.id, self.request.retries, time.time()))
        if self.request.retries < wanted:
            raise self.retry(countdown=1)
        return self.request.retries

    result = poll.delay(1)
    assert result.get(timeout=30) == 1
    (first_id, r0, t0), (second_id, r1, t1) = runs.of("poll")
    assert first_id == second_id == result.id
    assert (r0, r1) == (0, 1)
    assert t1 - t0 >= 1.0


def test_a_chain_passes_each_result_on(
    live_app: Celery, receiver_url: str, runs: Runs
) -> None:
    add = _add(live_app, runs)
    assert (add.s(1, 2) | add.s(10)).apply_async().get(timeout=30) == 13
    assert runs.of("add") == [(1, 2), (3, 10)]


def test_a_link_runs_after_success(live_app: Celery, receiver_url: str, runs: Runs) -> None:
    add = _add(live_app, runs)
    add.apply_async((2, 2), link=add.s(100)).get(timeout=20)
    runs.wait("add", 2)
    assert runs.of("add") == [(2, 2), (4, 100)]


def test_send_task_goes_through_qstash(live_app: Celery, receiver_url: str, runs: Runs) -> None:
    _add(live_app, runs)
    result = live_app.send_task("live.add", (20, 22))
    assert AsyncResult(result.id, app=live_app).get(timeout=20) == 42


def test_arguments_json_cannot_carry_are_refused_at_the_call_site(
    live_app: Celery, receiver_url: str, runs: Runs, dev_servers: DevServers
) -> None:
    add = _add(live_app, runs)
    with pytest.raises(UnsupportedOption, match=r"args\[1\].*set"):
        add.delay(1, {2, 3})
    assert dev_servers.emulator.emulator.store.pending_count() == 0  # nothing published


def test_a_forged_or_replayed_delivery_runs_nothing_more(
    live_app: Celery, receiver_url: str, runs: Runs, dev_servers: DevServers
) -> None:
    add = _add(live_app, runs)
    add.delay(5, 5).get(timeout=20)
    message = {
        "kind": MESSAGE_KIND, "task": "live.add", "id": "replayed-1", "args": [7, 7],
        "kwargs": {}, "retries": 0, "delivery": "nonce-replayed-1",
    }
    body = json.dumps(message).encode()
    key = dev_servers.emulator.current_signing_key
    signed = {"Upstash-Signature": sign(key, receiver_url, body, time.time()),
              "Upstash-Message-Id": "msg_replayed", "Content-Type": "application/json"}
    first = httpx.post(receiver_url, content=body, headers=signed)
    assert first.status_code == 200 and first.json()["result"] == 14
    # The same signed request again (QStash's at-least-once, or a captured replay, even
    # under a fresh Upstash-Message-Id, which is not signed).
    again = httpx.post(receiver_url, content=body,
                       headers={**signed, "Upstash-Message-Id": "msg_other"})
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    forged = httpx.post(receiver_url, content=body.replace(b"[7, 7]", b"[8, 8]"),
                        headers=signed)
    assert forged.status_code == 401
    wrong_key = {**signed, "Upstash-Signature": sign("sig_" + "x" * 40, receiver_url, body,
                                                     time.time())}
    assert httpx.post(receiver_url, content=body, headers=wrong_key).status_code == 401
    assert runs.of("add") == [(5, 5), (7, 7)]


def test_a_task_that_is_not_deferred_is_refused_even_when_signed(
    live_app: Celery, receiver_url: str, runs: Runs, dev_servers: DevServers
) -> None:
    @live_app.task(name="live.plain", shared=False)
    def plain() -> None:
        runs.add("plain")

    body = json.dumps({"kind": MESSAGE_KIND, "task": "live.plain", "id": "x", "args": [],
                       "kwargs": {}, "retries": 0, "delivery": "n-plain"}).encode()
    key = dev_servers.emulator.current_signing_key
    answer = httpx.post(receiver_url, content=body, headers={
        "Upstash-Signature": sign(key, receiver_url, body, time.time()),
        "Upstash-Message-Id": "msg_plain"})
    assert answer.status_code == 489
    assert answer.headers["Upstash-NonRetryable-Error"] == "true"
    assert runs.of("plain") == []


def test_a_deferred_email_renders_the_state_at_delivery(
    live_app: Celery, receiver_url: str, runs: Runs, dev_servers: DevServers
) -> None:
    """The openwisp digest shape: what is unread when the digest goes out, not when it
    was scheduled; nothing at all when everything was read meanwhile."""
    unread: dict[str, list[str]] = {"ada": ["n1"], "bob": ["n1"]}

    @autosend_task(deferred=True, name="live.digest")
    def digest(user: str) -> Email | None:
        items = unread[user]
        if not items:
            return None
        return Email(to=f"{user}@example.com", from_="news@acme.example",
                     subject=f"{len(items)} unread", text=", ".join(items))

    ada = digest.apply_async(("ada",), countdown=1)
    bob = digest.apply_async(("bob",), countdown=1)
    unread["ada"].extend(["n2", "n3"])  # piled up before the digest goes out
    unread["bob"].clear()  # read meanwhile
    [email] = dev_servers.wait_for_emails(1, timeout=20)
    assert email["subject"] == "3 unread" and email["to"]["email"] == "ada@example.com"
    assert ada.get(timeout=20)["email_message_id"]
    # Celery's IGNORED is not a ready state (get() would wait on): poll the state.
    wait_until(lambda: bob.state == "IGNORED", "bob's digest read IGNORED")
    assert len(dev_servers.emails()) == 1


def test_a_group_is_one_batch_and_each_result_comes_back(
    live_app: Celery, receiver_url: str, runs: Runs, caplog: pytest.LogCaptureFixture
) -> None:
    add = _add(live_app, runs)
    with caplog.at_level(logging.INFO, logger="httpx"):
        results = group(add.s(i, i) for i in range(4)).apply_async()
    # What the SDK sent to QStash (httpx logs each request): one /v2/batch, no publish.
    sent = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert [m for m in sent if "/v2/batch" in m] and not [m for m in sent if "/v2/publish" in m]
    assert sorted(r.get(timeout=20) for r in results.results) == [0, 2, 4, 6]


def test_a_chord_on_qstash_logs_is_refused_at_the_call_site(
    live_app: Celery, receiver_url: str, runs: Runs
) -> None:
    add = _add(live_app, runs)
    # QStash's logs cannot count a chord's parts: the refusal says which backend can.
    with pytest.raises(UnsupportedOption, match=r"chord: .*qstash:// cannot.*redis://"):
        chord([add.s(1, 1), add.s(2, 2)])(add.s(0))
    assert runs.of("add") == []


def _tsum(app: Celery, runs: Runs) -> Any:
    @app.task(base=DeferredTask, name="live.tsum", shared=False)
    def tsum(numbers: list[int]) -> int:
        runs.add("tsum", sorted(numbers))
        return sum(numbers)

    return tsum


@pytest.mark.parametrize("backend", ["redis", "cache+memory://"])
def test_a_chord_runs_its_body_once_when_the_backend_counts_the_parts(
    live_app: Celery, receiver_url: str, runs: Runs, backend: str, request: pytest.FixtureRequest,
) -> None:
    # As on a worker: each header task carries the body; the backend counts the parts as
    # the receiver's tracer stores them, and the last one publishes the body via QStash.
    live_app.conf.result_backend = (
        request.getfixturevalue("redis_url") if backend == "redis" else backend)
    add, tsum = _add(live_app, runs), _tsum(live_app, runs)
    result = chord([add.s(1, 1), add.s(2, 2), add.s(3, 3)])(tsum.s())
    assert result.get(timeout=30) == 12
    assert sorted(runs.of("add")) == [(1, 1), (2, 2), (3, 3)]
    assert runs.of("tsum") == [[2, 4, 6]]
    assert result.parent is not None and sorted(result.parent.get(timeout=5)) == [2, 4, 6]


def test_a_chord_whose_header_fails_fails_its_body_with_a_chord_error(
    live_app: Celery, receiver_url: str, runs: Runs, redis_url: str,
) -> None:
    live_app.conf.result_backend = redis_url
    add, tsum = _add(live_app, runs), _tsum(live_app, runs)

    @live_app.task(base=DeferredTask, name="live.broken", max_retries=0, shared=False)
    def broken(x: int) -> int:
        raise ValueError(f"no {x}")

    result = chord([add.s(1, 1), broken.s(7)])(tsum.s())
    # As on a worker: get() raises the header's own error first (the parent's), and the
    # body is marked failed with a ChordError naming it, and never runs.
    with pytest.raises(ValueError, match="no 7"):
        result.get(timeout=30)
    wait_until(lambda: result.state == "FAILURE", "the chord body marked FAILURE")
    assert isinstance(result.result, ChordError) and "no 7" in str(result.result)
    assert runs.of("tsum") == []


def test_a_chord_header_that_retries_keeps_its_chord(
    live_app: Celery, receiver_url: str, runs: Runs, redis_url: str,
) -> None:
    live_app.conf.result_backend = redis_url
    add, tsum = _add(live_app, runs), _tsum(live_app, runs)

    @live_app.task(base=DeferredTask, bind=True, name="live.flaky_double", shared=False)
    def flaky_double(self: Any, x: int) -> int:
        runs.add("flaky", self.request.retries)
        if self.request.retries == 0:
            raise self.retry(countdown=0)
        return 2 * x

    result = chord([flaky_double.s(5), add.s(1, 2)])(tsum.s())
    # self.retry() published the next attempt with the chord it came with: the body ran.
    assert result.get(timeout=30) == 13
    assert runs.of("flaky") == [0, 1] and runs.of("tsum") == [[3, 10]]


def test_self_replace_hands_the_task_id_to_its_replacement(
    live_app: Celery, receiver_url: str, runs: Runs
) -> None:
    add = _add(live_app, runs)

    @live_app.task(base=DeferredTask, bind=True, name="live.fan", shared=False)
    def fan(self: Any, n: int) -> Any:
        runs.add("fan", n)
        raise self.replace(add.s(n, 100))

    # As on a worker: the replacement runs under the replaced task's id (QStash would
    # drop it as a duplicate under the same deduplication id), so its result is the
    # caller's; in a chain, the next step gets it.
    assert fan.delay(5).get(timeout=20) == 105
    assert (fan.s(1) | add.s(1000)).apply_async().get(timeout=20) == 1101
    assert runs.of("fan") == [5, 1] and runs.of("add") == [(5, 100), (1, 100), (101, 1000)]


def test_replacing_with_a_group_is_refused_naming_what_to_do(
    live_app: Celery, receiver_url: str, runs: Runs
) -> None:
    live_app.conf.result_backend = "cache+memory://"  # a backend that counts chord parts
    add = _add(live_app, runs)

    @live_app.task(base=DeferredTask, bind=True, name="live.fan_out", max_retries=0,
                   shared=False)
    def fan_out(self: Any, n: int) -> Any:
        raise self.replace(group(add.s(i, i) for i in range(n)))

    # Celery makes its own accumulate task the body of a chord: only a worker runs it.
    # The refusal is the body's failure (the result backend keeps its message).
    result = fan_out.delay(2)
    wait_until(lambda: result.state == "FAILURE", "fan_out failed")
    assert re.search("chord: the chord body celery.accumulate .*chord whose body is a deferred",
                     str(result.result))
    assert runs.of("add") == []


def test_an_ordinary_celery_result_backend_gets_the_result(
    live_app: Celery, receiver_url: str, runs: Runs
) -> None:
    live_app.conf.result_backend = "cache+memory://"
    add = _add(live_app, runs)
    result = add.delay(40, 2)
    assert type(result).__name__ == "AsyncResult"
    assert result.get(timeout=20) == 42


def test_eager_mode_runs_the_body_at_call_time_with_the_same_refusals(
    live_app: Celery, runs: Runs
) -> None:
    live_app.conf.task_always_eager = True
    add = _add(live_app, runs)
    assert add.delay(1, 2).get() == 3
    assert runs.of("add") == [(1, 2)]
    with pytest.raises(UnsupportedOption, match=r"kwargs\['y'\].*bytes"):
        add.delay(1, y=b"2")
    with pytest.raises(UnsupportedOption, match="not a Celery option"):
        add.apply_async((1, 2), countdwn=3)


def test_an_email_task_that_sent_nothing_says_its_countdown_delayed_nothing(
    live_app: Celery, dev_servers: DevServers
) -> None:
    """The IGNORED-with-no-warning trap: a non-email body under @autosend_task with an
    eta ran its side effects at once."""
    done: list[int] = []

    @autosend_task(name="live.not_an_email")
    def cleanup(n: int) -> None:
        done.append(n)

    with pytest.warns(CeleryQStashWarning, match="ran at call time.*@qstash_task"):
        cleanup.apply_async((1,), countdown=60)
    assert done == [1]


def test_task_routes_pick_the_queue(live_app: Celery, receiver_url: str, runs: Runs) -> None:
    """task_routes' queue becomes QStash's queue (one at a time), as for an email task."""
    live_app.conf.task_routes = {"live.add": {"queue": "reports"}}
    add = _add(live_app, runs)
    result = add.delay(1, 1)
    assert result.get(timeout=20) == 2
    record = result.backend._status().task(result.id, callbacks=False)
    assert record is not None and record.queue == "reports"


def test_the_dashboard_and_flower_api_show_arguments_attempts_and_result(
    live_app: Celery, receiver_url: str, runs: Runs
) -> None:
    import warnings

    from celery_qstash.config import load_settings
    from celery_qstash.local.dashboard import create_app
    from celery_qstash.publish.transports.qstash import client_for
    from celery_qstash.status import StatusClient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    @live_app.task(base=DeferredTask, name="live.report", shared=False, bind=True,
                   max_retries=2, default_retry_delay=0.2)
    def report(self: Any, month: str, fmt: str = "pdf") -> dict[str, str]:
        if self.request.retries == 0:
            raise TimeoutError("warehouse busy")
        return {"file": f"{month}.{fmt}"}

    result = report.apply_async(("2026-11",), {"fmt": "csv"})
    assert result.get(timeout=30) == {"file": "2026-11.csv"}
    settings = load_settings(live_app.conf)
    board = TestClient(create_app(StatusClient(client_for(settings)), secrets=settings.secrets),
                       base_url="http://127.0.0.1")
    page = board.get(f"/task/{result.id}").text
    assert "(&#x27;2026-11&#x27;,)" in page and "&#x27;fmt&#x27;: &#x27;csv&#x27;" in page
    assert "2026-11.csv" in page
    info = board.get(f"/api/task/info/{result.id}").json()
    assert info["args"] == "('2026-11',)" and info["kwargs"] == "{'fmt': 'csv'}"
    assert info["state"] == "SUCCESS" and info["retries"] == 1


def test_a_call_due_after_its_expiry_is_revoked_and_not_published(
    live_app: Celery, receiver_url: str, runs: Runs, dev_servers: DevServers
) -> None:
    add = _add(live_app, runs)
    result = add.apply_async((1, 1), countdown=60, expires=10)
    assert result.state == "REVOKED"
    assert dev_servers.emulator.emulator.store.pending_count() == 0
