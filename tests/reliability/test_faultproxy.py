"""The fault proxy itself: each fault does what it says, and nothing else is touched."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from celery_qstash.local.faultproxy import Fault, FaultProxy

from .conftest import Stack


@pytest.fixture
def proxy(stack: Stack) -> Iterator[FaultProxy]:
    with FaultProxy(stack.sandbox.url, seed=7) as proxy:
        yield proxy


def _health(proxy: FaultProxy) -> httpx.Response:
    return httpx.get(f"{proxy.url}/_sandbox/health", trust_env=False, timeout=10)


def test_passes_requests_and_answers_through(proxy: FaultProxy) -> None:
    response = _health(proxy)
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert response.headers["connection"] == "close"
    assert proxy.counts() == {"pass": 1}


def test_respond_answers_for_the_server_without_forwarding(proxy: FaultProxy,
                                                           stack: Stack) -> None:
    proxy.add(Fault.respond(503, "down for maintenance", headers={"Retry-After": "9"}))
    response = httpx.post(f"{proxy.url}/v1/mails/send", trust_env=False, json={})
    assert (response.status_code, response.text) == (503, "down for maintenance")
    assert response.headers["retry-after"] == "9"
    assert stack.stats()["received"] == 0
    assert _health(proxy).status_code == 200  # used up


def test_trickle_delivers_the_whole_answer_slowly(proxy: FaultProxy) -> None:
    proxy.add(Fault.trickle(0.001, chunk=3))
    assert _health(proxy).json() == {"ok": True}
    assert proxy.counts() == {"trickle": 1}


def test_dropped_answer_was_still_handled_upstream(proxy: FaultProxy) -> None:
    proxy.add(Fault.drop_response())
    with pytest.raises(httpx.RemoteProtocolError):
        _health(proxy)
    assert proxy.events[0].status == 200


def test_dropped_request_never_reaches_the_server(proxy: FaultProxy) -> None:
    proxy.add(Fault.drop_request())
    with pytest.raises(httpx.RemoteProtocolError):
        _health(proxy)
    assert proxy.events[0].status is None


def test_match_limits_a_fault_to_a_path_prefix(proxy: FaultProxy) -> None:
    proxy.add(Fault.respond(500, match="/v1/"))
    assert _health(proxy).status_code == 200
    assert httpx.post(f"{proxy.url}/v1/mails/send", trust_env=False, json={}).status_code == 500
    assert proxy.pending() == 0


def test_down_refuses_connections_until_up(proxy: FaultProxy) -> None:
    proxy.down()
    with pytest.raises(httpx.ConnectError):
        _health(proxy)
    proxy.up()
    assert _health(proxy).status_code == 200


def test_chances_are_drawn_from_the_seed(stack: Stack) -> None:
    def run() -> list[str]:
        with FaultProxy(stack.sandbox.url, seed=3) as proxy:
            proxy.chance(0.5, Fault.respond(502))
            for _ in range(20):
                _health(proxy)
            return [e.fault for e in proxy.events]

    first = run()
    assert first == run()
    assert 0 < first.count("respond") < 20
