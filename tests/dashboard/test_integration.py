"""End to end: Celery app -> real QStash emulator -> real AutoSend sandbox, then every
way of asking about the task (AsyncResult, the CLI, the pages, Flower's API).

The emulator routes ``https://api.autosend.com`` to the sandbox and delivers on
its own background loop; waits poll with a deadline, nothing asserts on time.
"""

from __future__ import annotations

import json

import click
import httpx
import pytest
from celery import states
from click.testing import CliRunner
from waiting import wait_until

from celery_qstash.cli.status import register
from celery_qstash.errors import DeliveryFailed
from celery_qstash.status import TaskRecord

from .conftest import Stack

FLOWER_FIELDS = {
    "uuid", "name", "state", "received", "sent", "started", "succeeded", "failed", "retried",
    "revoked", "retries", "result", "exception", "traceback", "timestamp", "runtime", "eta",
    "expires", "args", "kwargs", "worker", "routing_key", "exchange", "client", "clock",
}


def record_in(stack: Stack, task_id: str, *wanted: str) -> TaskRecord | None:
    record = stack.status.task(task_id)
    return record if record is not None and record.qstash_state in wanted else None


def test_a_task_goes_pending_to_success_everywhere(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = stack.send.delay("ada@example.com", "Welcome, Ada")

    data = result.get(timeout=10)

    assert data["emailId"]
    assert result.state == states.SUCCESS
    assert stack.app.AsyncResult(result.id).get(timeout=10)["emailId"] == data["emailId"]
    record = stack.status.task(result.id)
    assert record is not None
    assert next(e["state"] for e in record.events) == "CREATED"  # it was PENDING first

    api = httpx.get(f"{stack.dashboard_url}/api/tasks", params={"state": "SUCCESS"}).json()
    assert api[result.id]["state"] == "SUCCESS"
    assert api[result.id]["name"] == "it.send_welcome"
    assert set(api[result.id]) >= FLOWER_FIELDS
    page = httpx.get(f"{stack.dashboard_url}/tasks/{result.id}").text
    assert "SUCCESS" in page and data["emailId"] in page
    info = httpx.get(f"{stack.dashboard_url}/api/task/result/{result.id}").json()
    assert info == {"task-id": result.id, "state": "SUCCESS", "result": data}

    # The CLI, configured like the shim: from the environment.
    monkeypatch.setenv("QSTASH_URL", stack.emulator.url)
    monkeypatch.setenv("QSTASH_TOKEN", stack.emulator.token)
    group = click.Group("celery-qstash")
    register(group)
    out = CliRunner().invoke(group, ["status", "--json", "--state", "SUCCESS"]).output
    rows = {row["uuid"]: row for row in json.loads(out)}
    assert rows[result.id]["state"] == "SUCCESS"
    assert rows[result.id]["response_status"] == 200


def test_a_failing_destination_retries_fails_lands_in_the_dlq_and_is_retried(
    stack: Stack,
) -> None:
    # Exactly the task's two attempts fail (max_retries=1, no retry delay).
    stack.chaos(fail_next=2, status=500)
    try:
        result = stack.send.delay("bob@example.com", "Doomed")
        exc = wait_until(lambda: result.ready() and result.get(propagate=False))
    finally:
        stack.calm()

    assert result.state == states.FAILURE
    assert isinstance(exc, DeliveryFailed) and exc.status == 500
    with pytest.raises(DeliveryFailed):
        result.get(timeout=1)
    record = stack.status.task(result.id)
    assert record is not None
    assert [e["state"] for e in record.events] == [
        "CREATED", "ACTIVE", "ERROR", "RETRY", "ACTIVE", "ERROR", "FAILED"]
    assert record.retries == 1

    # In the DLQ, on the page and in the API.
    dlq = httpx.get(f"{stack.dashboard_url}/api/dlq").json()["messages"]
    (entry,) = [m for m in dlq if m["task-id"] == result.id]
    assert entry["response_status"] == 500
    page = httpx.get(f"{stack.dashboard_url}/dlq").text
    assert f'action="/dlq/{entry["dlq_id"]}/retry?' in page
    info = httpx.get(f"{stack.dashboard_url}/api/task/info/{result.id}").json()
    assert info["state"] == "FAILURE" and info["retries"] == 1

    # The failed task's page links its dead letter and retries it from there: the
    # sandbox works again, so this time it is delivered.
    task_page = httpx.get(f"{stack.dashboard_url}/tasks/{result.id}").text
    retry_action = f'/dlq/{entry["dlq_id"]}/retry?next=%2Ftasks%2F{result.id}'
    assert f'action="{retry_action}"' in task_page and f'#dlq-{entry["dlq_id"]}' in task_page
    retried = httpx.post(f"{stack.dashboard_url}{retry_action}", follow_redirects=True)
    assert retried.status_code == 200 and "Retried" in retried.text
    assert f"/tasks/{result.id}?notice=" in str(retried.url)  # back on the task
    wait_until(lambda: record_in(stack, result.id, "DELIVERED"))
    assert stack.app.AsyncResult(result.id).get(timeout=10)["emailId"]
    remaining = httpx.get(f"{stack.dashboard_url}/api/dlq").json()["messages"]
    assert result.id not in {m["task-id"] for m in remaining}


def test_a_revoked_task_reads_revoked(stack: Stack) -> None:
    result = stack.send.apply_async(("cy@example.com", "Later"), countdown=3600)
    assert result.state == states.PENDING
    assert httpx.get(f"{stack.dashboard_url}/api/tasks").json()[result.id]["eta"] is not None

    result.revoke()

    assert result.state == states.REVOKED
    assert stack.app.AsyncResult(result.id).state == states.REVOKED
    api = httpx.get(f"{stack.dashboard_url}/api/task/info/{result.id}").json()
    assert api["state"] == "REVOKED" and api["revoked"] is not None


def test_revoke_through_flowers_api(stack: Stack) -> None:
    result = stack.send.apply_async(("dee@example.com", "Later"), countdown=3600)

    response = httpx.post(f"{stack.dashboard_url}/api/task/revoke/{result.id}")

    assert response.json() == {"message": f"Revoked '{result.id}'", "cancelled": True}
    assert stack.app.AsyncResult(result.id).state == states.REVOKED
    again = httpx.post(f"{stack.dashboard_url}/api/task/revoke/{result.id}")
    assert (again.status_code, again.json()["cancelled"]) == (200, False)


def test_flower_api_shapes_through_the_real_stack(stack: Stack) -> None:
    result = stack.send.delay("eve@example.com", "Shapes")
    result.get(timeout=10)
    base = stack.dashboard_url

    tasks = httpx.get(f"{base}/api/tasks", params={"limit": "100"}).json()
    assert isinstance(tasks, dict) and all(set(t) >= FLOWER_FIELDS for t in tasks.values())
    assert list(httpx.get(f"{base}/api/tasks", params={"limit": "1"}).json()) == [
        next(iter(tasks))]
    assert "it.send_welcome" in httpx.get(f"{base}/api/task/types").json()["task-types"]
    queues = httpx.get(f"{base}/api/queues/length").json()
    assert isinstance(queues["active_queues"], list)
    assert httpx.get(f"{base}/api/task/info/not-a-task").status_code == 404
    result_body = httpx.get(f"{base}/api/task/result/{result.id}", params={"timeout": "5"}).json()
    assert set(result_body) == {"task-id", "state", "result"}


def test_pages_escape_a_hostile_subject(stack: Stack) -> None:
    xss = "<script>alert(1)</script>"
    result = stack.send.apply_async(("mal@example.com", xss), countdown=3600)

    listing = httpx.get(f"{stack.dashboard_url}/tasks").text
    page = httpx.get(f"{stack.dashboard_url}/tasks/{result.id}").text

    for html in (listing, page):
        assert xss not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "AS_test" not in page  # the AutoSend key never shows
    result.revoke()


def _dead_url() -> str:
    """An http URL on loopback where nothing listens (a callback that always fails)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/hooks/sent"


def test_a_failed_link_callback_never_turns_a_delivered_email_into_failure(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = _dead_url()
    result = stack.send.apply_async(("cb@example.com", "Callback fails"), link=hook)

    data = result.get(timeout=10)
    assert data["emailId"]

    # Wait until the callback message has failed for good (retries: the task's, 1).
    record = wait_until(lambda: (r := stack.status.task(result.id)) and r.callbacks
                      and r.callbacks[-1].qstash_state == "FAILED" and r)
    assert record.state == states.SUCCESS and record.qstash_state == "DELIVERED"
    assert record.result == data
    [callback] = {c.message_id: c for c in record.callbacks}.values()
    assert callback.kind == "callback" and callback.state == states.FAILURE
    assert callback.url == hook
    assert callback.message_id != record.message_id

    # Every surface reads the email's state, and shows the callback apart.
    fresh = stack.app.AsyncResult(result.id)
    assert fresh.state == states.SUCCESS and fresh.get(timeout=1) == data
    info = httpx.get(f"{stack.dashboard_url}/api/task/info/{result.id}").json()
    assert info["state"] == states.SUCCESS
    assert [c["kind"] for c in info["callbacks"]] == ["callback"]
    assert info["callbacks"][0]["state"] == states.FAILURE
    page = httpx.get(f"{stack.dashboard_url}/tasks/{result.id}").text
    assert 'id="callbacks"' in page and "/hooks/sent" in page

    monkeypatch.setenv("QSTASH_URL", stack.emulator.url)
    monkeypatch.setenv("QSTASH_TOKEN", stack.emulator.token)
    group = click.Group("celery-qstash")
    register(group)
    out = CliRunner().invoke(group, ["inspect", result.id]).output
    assert "SUCCESS (DELIVERED)" in out
    assert "Callbacks (they do not change the task's state)" in out
    assert "FAILURE" in out.split("Callbacks", 1)[1]

    # The DLQ holds the callback, said to be one, under the task it belongs to.
    entries = [d for d in stack.status.dlq(count=100)[0] if d.task_id == result.id]
    assert [d.kind for d in entries] == ["callback"]
    assert entries[0].recipient == "cb@example.com" and entries[0].name == "it.send_welcome"
    api = [m for m in httpx.get(f"{stack.dashboard_url}/api/dlq").json()["messages"]
           if m["task-id"] == result.id]
    assert [m["kind"] for m in api] == ["callback"]
    dlq_page = httpx.get(f"{stack.dashboard_url}/dlq").text
    assert "link callback" in dlq_page and "not the email" in dlq_page
    listed = CliRunner().invoke(group, ["dlq", "list", "--json"]).output
    rows = [r for r in json.loads(listed) if r["task_id"] == result.id]
    assert [r["kind"] for r in rows] == ["callback"]
    for d in entries:
        stack.status.dlq_delete(d.dlq_id)
