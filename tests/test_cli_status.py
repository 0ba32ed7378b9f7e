"""``celery-qstash status|inspect|revoke|dlq|dashboard`` over a faked QStash (respx)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner
from dashboard.qstash_events import (
    FakeQStash,
    delivered_events,
    dlq_message,
    failed_events,
    fake_qstash,
    pending_events,
)

from celery_qstash.cli.status import register

QSTASH_URL = "http://qstash.test"
TOKEN = "qstash-token-CLI-S3CRET"


@pytest.fixture
def cli() -> click.Group:
    group = click.Group("celery-qstash")
    register(group)
    return group


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeQStash]:
    monkeypatch.setenv("QSTASH_URL", QSTASH_URL)
    monkeypatch.setenv("QSTASH_TOKEN", TOKEN)
    with fake_qstash(QSTASH_URL) as f:
        f.events = delivered_events() + failed_events() + pending_events()
        yield f


def run(cli: click.Group, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_status_table(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "status")

    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["TASK", "ID", "NAME", "STATE", "RECIPIENT", "CREATED", "(UTC)",
                                "NEXT", "DELIVERY", "RETRIES", "LAST", "STATUS"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"task-1", "task-2", "task-4"}
    assert rows["task-1"][1:4] == ["app.send_welcome", "SUCCESS", "ada@example.com"]
    assert rows["task-1"][-2:] == ["1", "200"]
    assert rows["task-2"][2] == "FAILURE"


def test_status_filters_and_json(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "status", "--state", "FAILURE", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert (row["task_id"], row["state"], row["response_status"]) == ("task-2", "FAILURE", 500)

    _, out = run(cli, "status", "--name", "app.send_receipt", "--json")
    assert [r["task_id"] for r in json.loads(out)] == ["task-4"]


def test_status_since_goes_to_qstash(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "status", "--since", "2h", "--json")

    assert code == 0
    assert json.loads(out) == []  # the fake's events are from 2024
    assert "fromDate" in fake.events_route.calls.last.request.url.params


def test_status_rejects_a_bad_since(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "status", "--since", "soonish")

    assert code == 2
    assert "--since" in out


def test_status_without_a_token_says_what_to_set(
    cli: click.Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = run(cli, "status")

    assert code == 1
    assert "QSTASH_TOKEN" in out


def test_qstash_errors_are_one_line_without_the_token(cli: click.Group, fake: FakeQStash) -> None:
    import httpx

    fake.events_route.side_effect = lambda request: httpx.Response(
        401, json={"error": f"bad token {TOKEN}"})

    code, out = run(cli, "status")

    assert code == 1
    assert "QStash request failed" in out and TOKEN not in out
    assert "Traceback" not in out


def test_inspect_shows_the_timeline(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "inspect", "task-2")

    assert code == 0
    assert "FAILURE (FAILED)" in out
    assert "Error:         Internal server error" in out
    assert "Authorization: [redacted]" in out
    states = [line.split()[2] for line in out.splitlines() if line.startswith("20")]
    assert states == ["CREATED", "ACTIVE", "ERROR", "RETRY", "ACTIVE", "ERROR", "FAILED"]


def test_inspect_json_and_unknown(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "inspect", "task-1", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["uuid"] == "task-1" and info["state"] == "SUCCESS"
    assert [e["state"] for e in info["events"]][-1] == "DELIVERED"

    code, out = run(cli, "inspect", "nope")
    assert code == 1 and "nope" in out


def test_revoke(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "revoke", "task-4")
    assert code == 0
    assert "Revoked 'task-4'" in out
    assert fake.cancelled == ["msg_4"]

    code, out = run(cli, "revoke", "task-1")
    assert code == 1 and "already SUCCESS" in out
    code, out = run(cli, "revoke", "nope")
    assert code == 1
    assert fake.cancelled == ["msg_4"]


def test_dlq_commands(cli: click.Group, fake: FakeQStash) -> None:
    fake.dlq = [dlq_message("task-2", "1-0"), dlq_message("task-9", "2-0")]

    code, out = run(cli, "dlq", "list")
    assert code == 0
    assert "1-0" in out and "task-2" in out and "Internal server error" in out
    _, out = run(cli, "dlq", "list", "--json")
    assert [d["dlq_id"] for d in json.loads(out)] == ["1-0", "2-0"]

    code, out = run(cli, "dlq", "retry", "1-0")
    assert code == 0 and "msg_retried" in out
    code, out = run(cli, "dlq", "delete", "2-0")
    assert code == 0 and "Deleted 2-0" in out
    code, out = run(cli, "dlq", "delete", "2-0")
    assert code == 1 and "2-0" in out
    _, out = run(cli, "dlq", "list")
    assert "empty" in out


def test_dashboard_refuses_a_public_address_without_auth(cli: click.Group) -> None:
    code, out = run(cli, "dashboard", "--host", "0.0.0.0")

    assert code == 1
    assert "refusing" in out


def test_dashboard_auth_must_be_user_colon_password(cli: click.Group) -> None:
    code, out = run(cli, "dashboard", "--auth", "justauser")

    assert code == 2
    assert "USER:PASSWORD" in out


def test_app_option_reads_that_apps_conf(
    cli: click.Group, fake: FakeQStash, monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    monkeypatch.delenv("QSTASH_TOKEN")
    (tmp_path / "cliapp_conf.py").write_text(  # type: ignore[operator]
        "from celery import Celery\n"
        "app = Celery('cliapp')\n"
        f"app.conf.update(qstash_url={QSTASH_URL!r}, qstash_token={TOKEN!r})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    code, out = run(cli, "status", "--app", "cliapp_conf:app", "--json")

    assert code == 0
    assert len(json.loads(out)) == 3
