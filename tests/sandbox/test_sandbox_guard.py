"""A web page must not drive the sandbox: Host allow-list, same-origin writes, JSON-only chaos."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import celery_qstash.local.sandbox as sandbox_module
from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox, SandboxServer, create_app, serve

from .helpers import AUTH, TestClient, email

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@pytest.fixture
def local(clock: FakeClock) -> Iterator[TestClient]:
    """A sandbox that accepts only the loopback names, as ``serve()`` sets it up."""
    with (
        Sandbox(clock=clock, allowed_hosts=LOOPBACK) as sb,
        TestClient(sb.app, base_url="http://127.0.0.1:8025") as tc,
    ):
        yield tc


def _count(client: TestClient) -> int:
    return int(client.get("/api/v1/messages").json()["total"])


@pytest.mark.parametrize("host", ["127.0.0.1:8025", "localhost:8025", "[::1]:8025", "LOCALHOST"])
def test_loopback_names_are_accepted(local: TestClient, host: str) -> None:
    response = local.post("/v1/mails/send", json=email(), headers={**AUTH, "Host": host})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_a_rebinding_host_is_refused(local: TestClient, method: str) -> None:
    local.post("/v1/mails/send", json=email(), headers=AUTH).raise_for_status()
    response = local.request(method, "/api/v1/messages", headers={"Host": "attacker.example:8025"})
    assert response.status_code == 421
    assert _count(local) == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/mails/send", email()),
        ("POST", "/api/v1/chaos", {"fail_next": 1}),
        ("POST", "/_sandbox/reset", None),
        ("DELETE", "/api/v1/messages", None),
    ],
)
@pytest.mark.parametrize(
    "cross_site",
    [
        {"Origin": "https://attacker.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:9999"},  # another local port is another origin
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_cross_site_writes_are_refused(
    local: TestClient, method: str, path: str, body: Any, cross_site: dict[str, str]
) -> None:
    local.post("/v1/mails/send", json=email(), headers=AUTH).raise_for_status()
    response = local.request(method, path, json=body, headers={**AUTH, **cross_site})
    assert response.status_code == 403
    assert _count(local) == 1
    assert local.get("/api/v1/chaos").json()["remaining"] == 0


def test_same_origin_and_originless_writes_work(local: TestClient) -> None:
    same = {**AUTH, "Origin": "http://127.0.0.1:8025", "Sec-Fetch-Site": "same-origin"}
    assert local.post("/v1/mails/send", json=email(), headers=same).status_code == 200
    assert local.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 200
    assert _count(local) == 2


def test_default_app_takes_any_host_but_still_refuses_other_origins() -> None:
    app = create_app(clock=FakeClock(), rate_per_second=None, rate_per_minute=None)
    with TestClient(app) as client:  # Host: testserver
        assert client.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 200
        foreign = {**AUTH, "Origin": "https://attacker.example"}
        assert client.post("/v1/mails/send", json=email(), headers=foreign).status_code == 403
        assert _count(client) == 1
    app.state.sandbox.close()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_chaos_takes_json_only(client: TestClient, content_type: str | None) -> None:
    # A "simple" cross-site POST (no preflight, and no Origin in some setups) cannot script faults.
    headers = {"Content-Type": content_type, **AUTH} if content_type else AUTH
    response = client.post("/api/v1/chaos", content=b'{"fail_next": 3}', headers=headers)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "Content-Type", "message": "must be application/json"}
    ]
    assert client.get("/api/v1/chaos").json()["remaining"] == 0
    assert client.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 200


def test_serve_guards_a_loopback_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Any] = []
    monkeypatch.setattr(sandbox_module, "run", lambda app, host, port: served.append(app))
    serve(host="127.0.0.1", port=8025)
    with TestClient(served[0], base_url="http://127.0.0.1:8025") as client:
        assert client.get("/_sandbox/health").status_code == 200
        rebound = client.get("/_sandbox/health", headers={"Host": "attacker.example"})
        assert rebound.status_code == 421


def test_server_over_http_accepts_its_own_host_only() -> None:
    with SandboxServer(clock=FakeClock()) as server, httpx.Client(base_url=server.url) as http:
        # httpx sends Host: 127.0.0.1:<port>, and no Origin (as the QStash emulator does)
        assert http.post("/v1/mails/send", json=email(), headers=AUTH).status_code == 200
        assert http.get("/", headers={"Host": "attacker.example"}).status_code == 421
        foreign = {**AUTH, "Origin": "http://attacker.example"}
        assert http.post("/v1/mails/send", json=email(), headers=foreign).status_code == 403
        assert server.sandbox.store.stats()["emails"] == 1


def test_server_around_an_existing_sandbox_checks_the_host_too() -> None:
    with (
        Sandbox(clock=FakeClock()) as sandbox,
        SandboxServer(sandbox) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        assert http.get("/_sandbox/health").status_code == 200
        assert http.get("/_sandbox/health", headers={"Host": "evil.example"}).status_code == 421
