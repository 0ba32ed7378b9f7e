"""The official qstash SDK against the emulator where only the emulator can answer: what
a recording destination on loopback received (each delivery verified with the SDK's own
``Receiver``), the emulator's routes, and what a live run must not do to a real account
(rotate its signing keys, cancel all its messages). ``test_sdk.py`` covers the API
itself, live or local.

Deliveries are triggered with ``POST /_emulator/tick``.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from emulator.conftest import Client, Received, Reply, Target
from qstash import QStash, Receiver
from qstash.errors import QStashError
from qstash.log import LogState

from celery_qstash.local.emulator import EmulatorServer

#: Every test here resets the emulator and delivers with POST /_emulator/tick.
local_only = pytest.mark.local_only


def tick(server: EmulatorServer) -> int:
    response = httpx.post(f"{server.url}/_emulator/tick", trust_env=False)
    response.raise_for_status()
    return int(response.json()["attempts"])


def verify(server: EmulatorServer, request: Received, url: str) -> None:
    Receiver(server.current_signing_key, server.next_signing_key).verify(
        signature=request.headers["upstash-signature"], body=request.body.decode(), url=url
    )


def verify_all(server: EmulatorServer, target: Target) -> None:
    assert target.requests, "nothing was delivered"
    for request in target.requests:
        url = target.url + request.path + (f"?{request.query}" if request.query else "")
        verify(server, request, url)


@pytest.fixture
def client(sdk: Client) -> QStash:
    return QStash(sdk.server.token, base_url=sdk.server.url, retry=False)


@local_only("verifies the signatures of what a recording destination on loopback "
            "received")
def test_publish_json_delivers_a_verifiable_message(client: QStash, sdk: Client,
                                                    target: Target) -> None:
    result = client.message.publish_json(
        url=f"{target.url}/hook?v=1", body={"hello": "world"}, headers={"X-Api": "k"},
        retries=2, retry_delay="1000 * retried", timeout="30s", label="mail",
        callback=f"{target.url}/cb", failure_callback=f"{target.url}/fail",
        flow_control={"key": "fc", "parallelism": 3, "rate": 10, "period": "1m"},
    )
    message = client.message.get(result.message_id)
    assert message.message_id == result.message_id
    assert message.url == f"{target.url}/hook?v=1"
    assert message.method == "POST"
    assert message.max_retries == 2
    assert message.retry_delay_expression == "1000 * retried"
    assert message.callback == f"{target.url}/cb"
    assert message.failure_callback == f"{target.url}/fail"
    assert message.label == "mail"
    assert message.flow_control is not None and message.flow_control.key == "fc"
    assert message.flow_control.parallelism == 3 and message.flow_control.rate == 10
    assert message.flow_control.period == 60
    assert json.loads(message.body or "") == {"hello": "world"}
    assert message.headers is not None and message.headers["X-Api"] == ["k"]
    assert message.created_at <= message.not_before

    assert tick(sdk.server) == 1
    [got] = target.at("/hook")
    assert json.loads(got.body) == {"hello": "world"} and got.headers["x-api"] == "k"
    assert tick(sdk.server) == 1  # the callback
    verify_all(sdk.server, target)


@local_only("the emulator's --route")
def test_routed_delivery_verifies_against_the_original_url(client: QStash, sdk: Client,
                                                           target: Target) -> None:
    sdk.emulator.routes["https://api.autosend.example"] = target.url
    client.message.publish(url="https://api.autosend.example/v1/mails", body="{}",
                           content_type="application/json")
    tick(sdk.server)
    [got] = target.at("/v1/mails")
    verify(sdk.server, got, "https://api.autosend.example/v1/mails")


@local_only("cancels every pending message of the account")
def test_cancel_all_cancels_every_pending_message(client: QStash, sdk: Client,
                                                  target: Target) -> None:
    ids = [client.message.publish(url=f"{target.url}/x", body="b", delay="1h").message_id
           for _ in range(5)]
    client.message.cancel(ids[0])
    assert client.message.cancel_many([ids[1], ids[2]]) == 2
    assert client.message.cancel_all() == 2
    tick(sdk.server)
    logs = client.log.list(filter={"state": LogState.CANCELED}).logs
    assert sorted(log.message_id for log in logs) == sorted(ids)


@local_only("rotates the account's signing keys")
def test_signing_keys_rotate(client: QStash, sdk: Client, target: Target) -> None:
    keys = client.signing_key.get()
    assert (keys.current, keys.next) == (sdk.server.current_signing_key,
                                          sdk.server.next_signing_key)
    rotated = client.signing_key.rotate()
    assert rotated.current == keys.next and rotated.next != keys.next
    client.message.publish(url=f"{target.url}/k", body="signed")
    tick(sdk.server)
    [got] = target.requests
    Receiver(rotated.current, rotated.next).verify(
        signature=got.headers["upstash-signature"], body="signed", url=f"{target.url}/k")


@local_only("the emulator's own delivery loop, seen at a recording destination")
def test_background_delivery_on_the_system_clock(live: Client, target: Target) -> None:
    """The background loop wakes on publish (no tick call); poll the target with a deadline."""
    client = QStash(live.server.token, base_url=live.server.url, retry=False)
    client.message.publish(url=f"{target.url}/bg", body="now")
    deadline = time.monotonic() + 10
    while not target.at("/bg") and time.monotonic() < deadline:
        time.sleep(0.02)
    [got] = target.at("/bg")
    verify(live.server, got, f"{target.url}/bg")


@local_only("a misspelt filter on DELETE /v2/dlq: were it ignored, the account's whole DLQ "
            "would go")
def test_an_unknown_filter_field_is_refused(client: QStash, sdk: Client,
                                            target: Target) -> None:
    # Issue 9 item 2: unknown filter fields are a 400, through the SDK's own transport.
    target.reply("/a", Reply(500))
    client.message.publish(url=f"{target.url}/a", body="x", retries=0)
    tick(sdk.server)
    with pytest.raises(QStashError, match="labeel"):
        client.http.request(path="/v2/dlq", method="DELETE", params={"labeel": "x"})
    assert len(client.dlq.list().messages) == 1
