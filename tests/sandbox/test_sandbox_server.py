"""The sandbox over real HTTP (uvicorn on a free port), driven with httpx."""

from __future__ import annotations

from pathlib import Path

import httpx

from celery_qstash.clock import FakeClock
from celery_qstash.local.sandbox import Sandbox, SandboxServer

from .helpers import AUTH, email


def test_send_then_read_back_over_http() -> None:
    with SandboxServer(clock=FakeClock()) as server, httpx.Client(base_url=server.url) as http:
        assert server.url.startswith("http://127.0.0.1:")
        sent = http.post("/v1/mails/send", json=email(test=True), headers=AUTH)
        assert sent.status_code == 200
        email_id = sent.json()["data"]["emailId"]

        listing = http.get("/api/v1/messages", params={"to": "jane@example.com"}).json()
        assert [m["emailId"] for m in listing["messages"]] == [email_id]
        assert listing["messages"][0]["test"] is True
        assert f"/inbox/{email_id}" in http.get("/").text
        assert http.get("/_sandbox/health").json() == {"ok": True}
        # the state the HTTP side wrote is the state the test can read directly
        assert server.sandbox.store.get(email_id) is not None

        unauthorized = http.post("/v1/mails/send", json=email())
        assert unauthorized.status_code == 401


def test_server_on_a_data_dir_keeps_the_inbox_across_restarts(tmp_path: Path) -> None:
    with SandboxServer(data_dir=tmp_path) as server:
        httpx.post(f"{server.url}/v1/mails/send", json=email(), headers=AUTH).raise_for_status()

    with SandboxServer(data_dir=tmp_path) as server:
        assert httpx.get(f"{server.url}/api/v1/messages").json()["total"] == 1


def test_server_around_an_existing_sandbox_leaves_it_open() -> None:
    sandbox = Sandbox(clock=FakeClock())
    with SandboxServer(sandbox) as server:
        httpx.post(f"{server.url}/v1/mails/send", json=email(), headers=AUTH).raise_for_status()
    # stop() closed the server, not the sandbox the caller owns
    assert sandbox.store.stats()["emails"] == 1
    sandbox.close()
