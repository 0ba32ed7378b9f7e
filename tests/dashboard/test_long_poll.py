"""``/api/task/result?timeout=`` cannot starve the dashboard (issue 8, item 5).

The waits run on the event loop (polls in a small thread pool of their own), so the
healthcheck and the pages answer while many are pending, and at most
``max_result_waits`` wait at once: past that, the current state comes back at once.
Time is a FakeClock: a wait ends when the test moves it, never by sleeping.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import httpx

from celery_qstash.clock import FakeClock
from celery_qstash.local.dashboard import create_app
from celery_qstash.local.serving import ThreadedServer

from .conftest import Stack


def _wait(pool: ThreadPoolExecutor, url: str, task_id: str) -> Future[httpx.Response]:
    return pool.submit(httpx.get, f"{url}/api/task/result/{task_id}",
                       params={"timeout": "60"}, timeout=60, trust_env=False)


def test_the_healthcheck_answers_while_45_result_waits_are_pending(stack: Stack) -> None:
    clock = FakeClock()
    app = create_app(stack.status, clock=clock)
    waits = app.state.result_waits
    with ThreadedServer(app) as server, ThreadPoolExecutor(max_workers=45) as pool:
        pending = [_wait(pool, server.url, f"never-sent-{i}") for i in range(45)]
        assert waits.wait_for(45, timeout=30), f"only {waits.active} waits started"

        health = httpx.get(f"{server.url}/healthcheck", timeout=30, trust_env=False)
        page = httpx.get(f"{server.url}/queues", timeout=30, trust_env=False)
        assert (health.status_code, health.text) == (200, "OK")
        assert page.status_code == 200
        # Both answered while every wait was still pending.
        assert not any(f.done() for f in pending)
        assert waits.active == 45

        clock.advance(61)  # every wait's deadline passes
        answers = [f.result() for f in pending]
    assert [a.json() for a in answers] == [
        {"task-id": f"never-sent-{i}", "state": "PENDING"} for i in range(45)]
    assert waits.active == 0


def test_past_the_cap_a_result_request_answers_the_current_state_at_once(stack: Stack) -> None:
    clock = FakeClock()
    app = create_app(stack.status, clock=clock, max_result_waits=2)
    waits = app.state.result_waits
    with ThreadedServer(app) as server, ThreadPoolExecutor(max_workers=2) as pool:
        pending = [_wait(pool, server.url, f"waiting-{i}") for i in range(2)]
        assert waits.wait_for(2, timeout=30)

        third = httpx.get(f"{server.url}/api/task/result/third", params={"timeout": "60"},
                          timeout=30, trust_env=False)
        assert third.json() == {"task-id": "third", "state": "PENDING"}
        assert not any(f.done() for f in pending)

        clock.advance(61)
        assert [f.result().status_code for f in pending] == [200, 200]
    assert waits.active == 0


def test_a_nan_timeout_is_a_400(stack: Stack) -> None:
    with ThreadedServer(create_app(stack.status, clock=FakeClock())) as server:
        response = httpx.get(f"{server.url}/api/task/result/x", params={"timeout": "nan"},
                             trust_env=False)
    assert response.status_code == 400
