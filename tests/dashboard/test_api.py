"""Flower's JSON API over a faked QStash: paths, parameters, field names, status codes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from celery_qstash.errors import ConfigurationError
from celery_qstash.local.dashboard import check_bind, create_app, is_loopback, local_hosts, serve
from celery_qstash.status import StatusClient

from .conftest import TOKEN, TestClient
from .qstash_events import (
    T0,
    FakeQStash,
    canceled_events,
    delivered_events,
    dlq_message,
    event,
    failed_events,
    pending_events,
)
from .qstash_events import response as autosend_answer

FLOWER_FIELDS = {
    "uuid", "name", "state", "received", "sent", "started", "succeeded", "failed", "retried",
    "revoked", "retries", "result", "exception", "traceback", "timestamp", "runtime", "eta",
    "expires", "args", "kwargs", "worker", "routing_key", "exchange", "client", "clock",
}


@pytest.fixture
def four(fake: FakeQStash) -> FakeQStash:
    fake.events = delivered_events() + failed_events() + canceled_events() + pending_events()
    return fake


def _local(ms: int) -> str:
    """Flower's received_start/received_end format, in the server's local time."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000))


def test_tasks_is_an_object_keyed_by_uuid_with_flowers_fields(
    client: TestClient, four: FakeQStash
) -> None:
    body = client.get("/api/tasks").json()

    assert set(body) == {"task-1", "task-2", "task-3", "task-4"}
    for uuid, task in body.items():
        assert set(task) >= FLOWER_FIELDS
        assert task["uuid"] == uuid
    assert body["task-1"]["state"] == "SUCCESS"
    assert body["task-2"]["state"] == "FAILURE"
    assert body["task-3"]["state"] == "REVOKED"
    assert body["task-4"]["state"] == "PENDING"
    assert body["task-1"]["received"] == T0 / 1000


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"state": "SUCCESS"}, ["task-1"]),
        ({"state": "All"}, ["task-4", "task-1", "task-2", "task-3"]),
        ({"state": "FAILURE,REVOKED"}, ["task-2", "task-3"]),
        ({"taskname": "app.send_receipt"}, ["task-4"]),
        ({"search": "state:FAILURE"}, ["task-2"]),
        ({"sort_by": "-received", "limit": "1"}, ["task-4"]),
        ({"sort_by": "name"}, ["task-4", "task-1", "task-2", "task-3"]),
        ({"sort_by": "state", "limit": "2", "offset": "1"}, ["task-4", "task-3"]),
        ({"workername": "celery@host"}, ["task-4", "task-1", "task-2", "task-3"]),
        # As Flower: ``All`` is no name filter, an unknown sort_by is ignored (newest
        # first stays), a negative offset counts from the start.
        ({"taskname": "All"}, ["task-4", "task-1", "task-2", "task-3"]),
        ({"taskname": "All", "state": "All"}, ["task-4", "task-1", "task-2", "task-3"]),
        ({"sort_by": "worker", "limit": "1"}, ["task-4"]),
        ({"sort_by": "-runtime", "limit": "1"}, ["task-4"]),
        ({"offset": "-5", "limit": "1", "sort_by": "name"}, ["task-4"]),
    ],
)
def test_tasks_query_parameters(
    client: TestClient, four: FakeQStash, params: dict[str, str], expected: list[str]
) -> None:
    body = client.get("/api/tasks", params=params).json()

    if "sort_by" in params:
        assert list(body) == expected
    else:
        assert set(body) == set(expected)


def test_tasks_received_window(client: TestClient, fake: FakeQStash) -> None:
    late = pending_events("late", "msg_late")
    for entry in late:
        entry["time"] = T0 + 3 * 3_600_000
    fake.events = delivered_events() + late

    before = client.get("/api/tasks", params={"received_end": _local(T0 + 3_600_000)}).json()
    after = client.get("/api/tasks", params={"received_start": _local(T0 + 3_600_000)}).json()

    assert list(before) == ["task-1"]
    assert list(after) == ["late"]


@pytest.mark.parametrize(
    "params",
    [{"limit": "ten"}, {"limit": "-1"}, {"offset": "x"}, {"received_start": "yesterday"}],
)
def test_tasks_bad_parameters_are_400(
    client: TestClient, four: FakeQStash, params: dict[str, str]
) -> None:
    response = client.get("/api/tasks", params=params)

    assert response.status_code == 400
    assert "error" in response.json()


def test_task_info(client: TestClient, four: FakeQStash) -> None:
    body = client.get("/api/task/info/task-2").json()

    assert body["task-id"] == body["uuid"] == "task-2"
    assert set(body) >= FLOWER_FIELDS
    assert body["exception"] == "DeliveryFailed(500, 'Internal server error')"
    assert [e["state"] for e in body["events"]] == [
        "CREATED", "ACTIVE", "ERROR", "RETRY", "ACTIVE", "ERROR", "FAILED"]


def test_task_info_of_an_unknown_task_is_404(client: TestClient, four: FakeQStash) -> None:
    assert client.get("/api/task/info/nope").status_code == 404


def test_task_result(client: TestClient, four: FakeQStash) -> None:
    ok = client.get("/api/task/result/task-1").json()
    bad = client.get("/api/task/result/task-2").json()
    waiting = client.get("/api/task/result/task-4").json()
    unknown = client.get("/api/task/result/nope").json()

    assert ok == {"task-id": "task-1", "state": "SUCCESS",
                  "result": {"emailId": "em_123", "status": "queued"}}
    assert bad["state"] == "FAILURE"
    assert bad["result"] == "DeliveryFailed(500, 'Internal server error')"
    assert "AutoSend answered 500" in bad["traceback"]
    # As Flower: no "result" key until the task is ready.
    assert waiting == {"task-id": "task-4", "state": "PENDING"}
    assert unknown == {"task-id": "nope", "state": "PENDING"}


def test_task_result_with_a_timeout_on_a_ready_task_answers_at_once(
    client: TestClient, four: FakeQStash
) -> None:
    assert client.get("/api/task/result/task-1", params={"timeout": "30"}).json()["state"] == \
        "SUCCESS"
    assert four.events_route.call_count == 1
    assert client.get("/api/task/result/task-1", params={"timeout": "x"}).status_code == 400


def test_task_revoke(client: TestClient, four: FakeQStash) -> None:
    response = client.post("/api/task/revoke/task-4")

    assert response.status_code == 200
    assert response.json() == {"message": "Revoked 'task-4'", "cancelled": True}
    assert four.cancelled == ["msg_4"]


@pytest.mark.parametrize("task_id", ["nope", "task-1", "task-2", "task-3"])
def test_task_revoke_of_an_unknown_or_finished_task_is_200_like_flower(
    client: TestClient, four: FakeQStash, task_id: str
) -> None:
    # Celery's revoke is fire-and-forget: Flower answers 200 whatever the task.
    response = client.post(f"/api/task/revoke/{task_id}")

    assert response.status_code == 200
    assert response.json() == {"message": f"Revoked '{task_id}'", "cancelled": False}
    assert four.cancelled == []


def test_task_revoke_of_a_task_that_finished_meanwhile_is_200(
    client: TestClient, four: FakeQStash
) -> None:
    four.cancel_route.side_effect = lambda request: httpx.Response(
        404, json={"error": "message not found"})

    response = client.post("/api/task/revoke/task-4")

    assert response.status_code == 200
    assert response.json() == {"message": "Revoked 'task-4'", "cancelled": False}


def test_task_revoke_needs_post(client: TestClient, four: FakeQStash) -> None:
    assert client.get("/api/task/revoke/task-4").status_code == 405
    assert four.cancelled == []


def test_task_types(client: TestClient, four: FakeQStash) -> None:
    assert client.get("/api/task/types").json() == {
        "task-types": ["app.send_receipt", "app.send_welcome"]}


def test_queue_lengths(client: TestClient, fake: FakeQStash) -> None:
    fake.queues = [{"name": "emails", "parallelism": 1, "createdAt": 1, "updatedAt": 1,
                    "lag": 4, "paused": False}]

    assert client.get("/api/queues/length").json() == {
        "active_queues": [{"name": "emails", "messages": 4}]}


def test_dlq_api(client: TestClient, fake: FakeQStash) -> None:
    fake.dlq = [dlq_message("task-2", "1-0"), dlq_message("task-9", "2-0")]

    listed = client.get("/api/dlq").json()
    assert [m["dlq_id"] for m in listed["messages"]] == ["1-0", "2-0"]
    assert listed["messages"][0]["task-id"] == "task-2"
    assert listed["messages"][0]["error"] == "Internal server error"

    assert client.post("/api/dlq/retry/1-0").json() == {
        "message": "Retried '1-0'", "message_id": "msg_retried"}
    assert client.post("/api/dlq/delete/2-0").json() == {"message": "Deleted '2-0'"}
    assert client.post("/api/dlq/retry/1-0").status_code == 404
    assert client.post("/api/dlq/delete/2-0").status_code == 404
    assert fake.dlq == []


def test_qstash_errors_are_502_without_secrets(client: TestClient, fake: FakeQStash) -> None:
    fake.events_route.side_effect = lambda request: httpx.Response(
        500, json={"error": f"token {TOKEN} exploded"})

    response = client.get("/api/tasks")

    assert response.status_code == 502
    assert "exploded" in response.json()["error"]
    assert TOKEN not in response.text


def test_status_factory_is_called_per_request(fake: FakeQStash, status: StatusClient) -> None:
    calls: list[int] = []

    def factory() -> StatusClient:
        calls.append(1)
        return status

    with TestClient(create_app(factory)) as tc:
        tc.get("/api/task/types")
        tc.get("/api/task/types")

    assert len(calls) == 2


# -- auth and exposure ------------------------------------------------------------------


@pytest.fixture
def guarded(fake: FakeQStash, status: StatusClient) -> TestClient:
    fake.events = pending_events()
    return TestClient(create_app(status, auth=("admin", "s3cret")))


@pytest.mark.parametrize("path", ["/api/tasks", "/tasks", "/tasks/task-4", "/dlq", "/queues"])
def test_auth_is_required_everywhere_when_configured(guarded: TestClient, path: str) -> None:
    response = guarded.get(path)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic ")
    assert guarded.get(path, auth=("admin", "wrong")).status_code == 401
    assert guarded.get(path, auth=("root", "s3cret")).status_code == 401
    assert guarded.get(path, auth=("admin", "s3cret")).status_code == 200


def test_revoke_needs_auth_too(guarded: TestClient, fake: FakeQStash) -> None:
    assert guarded.post("/api/task/revoke/task-4").status_code == 401
    assert fake.cancelled == []


def test_cross_origin_posts_are_refused(client: TestClient, fake: FakeQStash) -> None:
    fake.events = pending_events()

    evil = client.post("/api/task/revoke/task-4", headers={"Origin": "https://evil.example"})
    same = client.post("/api/task/revoke/task-4", headers={"Origin": "http://testserver"})

    assert evil.status_code == 403
    assert same.status_code == 200
    assert fake.cancelled == ["msg_4"]


def test_loopback_only_answers_loopback_host_names(fake: FakeQStash, status: StatusClient) -> None:
    fake.events = pending_events()
    app = create_app(status, allowed_hosts=["127.0.0.1", "localhost", "::1"])

    assert TestClient(app, base_url="http://127.0.0.1:5555").get("/api/tasks").status_code == 200
    # The Host header by hand: an older Starlette's TestClient cannot parse an IPv6 base_url.
    assert TestClient(app).get("/api/tasks", headers={"Host": "[::1]:5555"}).status_code == 200
    # What a DNS-rebinding page would send.
    assert TestClient(app, base_url="http://evil.example:5555").get("/api/tasks").status_code \
        == 421


def test_a_loopback_alias_bind_answers_its_own_host_name(
    fake: FakeQStash, status: StatusClient
) -> None:
    fake.events = pending_events()
    app = create_app(status, allowed_hosts=local_hosts("127.0.0.2"))

    response = TestClient(app).get("/api/tasks", headers={"Host": "127.0.0.2:5555"})

    assert response.status_code == 200
    assert set(response.json()) == {"task-4"}
    assert TestClient(app).get("/api/tasks", headers={"Host": "127.0.0.3:5555"}).status_code \
        == 421


def test_pages_run_only_their_own_script(client: TestClient, fake: FakeQStash) -> None:
    page = client.get("/tasks")
    csp = page.headers["content-security-policy"]

    assert "default-src 'none'" in csp
    # one script, the dashboard's own /live.js: no inline script, no eval, no other origin
    assert "script-src 'self';" in csp and "unsafe-eval" not in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert re.findall(r"<script\b[^>]*>(.*?)</script>", page.text) == [""]
    assert client.get("/live.js").status_code == 200


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.1.2.3", True),
     ("0.0.0.0", False), ("192.168.1.5", False), ("::", False), ("example.com", False)],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_non_loopback_without_auth_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="--allow-public"):
        check_bind("0.0.0.0", None, False)
    check_bind("0.0.0.0", ("admin", "pw"), False)
    check_bind("0.0.0.0", None, True)
    check_bind("127.0.0.1", None, False)


def test_serve_refuses_before_binding() -> None:
    with pytest.raises(ConfigurationError, match="host"):
        serve(host="0.0.0.0", port=1)


def test_empty_credentials_are_rejected(status: StatusClient) -> None:
    with pytest.raises(ConfigurationError):
        create_app(status, auth=("admin", ""))


# -- no secret in any JSON answer ----------------------------------------------------

AUTOSEND_KEY = "AS_sandbox_dev_key"
LEAK = {"success": False, "message": f"Invalid API key {AUTOSEND_KEY}"}


@pytest.fixture
def leaky(fake: FakeQStash, status: StatusClient) -> Iterator[TestClient]:
    """AutoSend's answers (and QStash's errors) quote the AutoSend key."""
    kw = {"task_id": "leak", "message_id": "msg_leak"}
    ok = {"task_id": "leak-ok", "message_id": "msg_leak_ok"}
    fake.events = [
        event("CREATED", 0, **kw),
        event("ACTIVE", 10, **kw),
        event("ERROR", 20, **kw, **autosend_answer(401, LEAK), error=f"401 {AUTOSEND_KEY}"),
        event("FAILED", 20, **kw, **autosend_answer(401, LEAK)),
        event("CREATED", 0, **ok),
        event("DELIVERED", 30, **ok,
              **autosend_answer(200, {"success": True, "data": {"note": AUTOSEND_KEY}})),
    ]
    fake.dlq = [{**dlq_message("leak", "1-0"), "responseBody": json.dumps(LEAK)}]
    with TestClient(create_app(status, secrets=[TOKEN, AUTOSEND_KEY])) as tc:
        yield tc


@pytest.mark.parametrize(
    "path",
    ["/api/tasks", "/api/task/info/leak", "/api/task/result/leak", "/api/task/info/leak-ok",
     "/api/task/result/leak-ok", "/api/dlq"],
)
def test_json_answers_never_quote_a_secret(leaky: TestClient, path: str) -> None:
    answer = leaky.get(path)

    assert answer.status_code == 200
    assert AUTOSEND_KEY not in answer.text
    assert "***" in answer.text  # scrubbed, not dropped


def test_a_scrubbed_failure_still_says_what_went_wrong(leaky: TestClient) -> None:
    info = leaky.get("/api/task/info/leak").json()

    assert info["exception"] == "DeliveryFailed(401, 'Invalid API key ***')"
    assert info["traceback"].endswith("Invalid API key ***")
    assert info["events"][-2]["error"] == "401 ***"
