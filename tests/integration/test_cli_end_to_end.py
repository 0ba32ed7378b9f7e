"""``celery-qstash revoke`` and ``dlq`` against the real emulator and sandbox (issue 7)."""

from __future__ import annotations

import json
import time
from typing import Any

from celery import Celery
from click.testing import CliRunner

from celery_qstash import Email, QStashTask
from celery_qstash.cli import main
from celery_qstash.testing import DevServers


def _task(app: Celery, **options: object):  # type: ignore[no-untyped-def]
    @app.task(base=QStashTask, name="live.cli_email", shared=False, **options)
    def cli_email(n: int) -> Email:
        return Email(to=f"u{n}@example.com", from_="a@acme.example", subject=f"#{n}", text="hi")

    return cli_email


def _cli(servers: DevServers, *args: str) -> tuple[int, str]:
    env = {"QSTASH_URL": servers.emulator.url, "QSTASH_TOKEN": servers.emulator.token}
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def _failed(task: Any, servers: DevServers, n: int) -> str:
    servers.chaos(fail_next=1, status=500)
    result = task.delay(n)
    result.get(timeout=10, propagate=False)
    assert result.state == "FAILURE"
    return str(result.id)


def _dlq_task_ids(servers: DevServers) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        code, out = _cli(servers, "dlq", "list", "--json")
        assert code == 0, out
        rows = json.loads(out)
        if rows or time.monotonic() > deadline:
            return [str(row["task_id"]) for row in rows]
        time.sleep(0.05)


def test_revoke_of_a_finished_task_exits_0(live_app: Celery, dev_servers: DevServers) -> None:
    result = _task(live_app).delay(1)
    result.get(timeout=10)

    code, out = _cli(dev_servers, "revoke", result.id)

    assert code == 0, out
    assert out.strip() == f"Task '{result.id}' is already SUCCESS: nothing to revoke"


def test_dlq_retry_and_delete_by_task_id(live_app: Celery, dev_servers: DevServers) -> None:
    task = _task(live_app, max_retries=0)
    first = _failed(task, dev_servers, 1)
    second = _failed(task, dev_servers, 2)
    assert sorted(_dlq_task_ids(dev_servers)) == sorted([first, second])

    code, out = _cli(dev_servers, "dlq", "retry", first)
    assert code == 0, out
    assert f"(task {first}) as QStash message msg_" in out
    [email] = dev_servers.wait_for_emails(1)
    assert email["idempotencyKey"] == first  # the same task, delivered this time

    code, out = _cli(dev_servers, "dlq", "delete", second)
    assert code == 0, out
    assert f"(task {second})" in out
    assert second not in _dlq_task_ids(dev_servers)
