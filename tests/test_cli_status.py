"""``celery-qstash status|inspect|revoke|dlq|dashboard`` over a faked QStash (respx)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import click
import httpx
import pytest
from click.testing import CliRunner
from dashboard.qstash_events import (
    FakeQStash,
    delivered_events,
    dlq_message,
    event,
    failed_events,
    fake_qstash,
    pending_events,
)
from dashboard.qstash_events import response as autosend_answer

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


def run(cli: click.Group, *args: str, columns: int = 120) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": str(columns)})
    return result.exit_code, result.output


def test_status_table(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "status")

    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "RECIPIENT", "CREATED", "(UTC)",
                                "DUE", "(UTC)", "RETRIES", "STATUS"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"task-1", "task-2", "task-4"}
    assert rows["task-1"][1:4] == ["app.send_welcome", "SUCCESS", "ada@example.com"]
    assert rows["task-1"][-2:] == ["1", "200"]
    assert rows["task-2"][2] == "FAILURE"


def test_status_filters_and_json(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "status", "--state", "FAILURE", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert (row["uuid"], row["state"], row["response_status"]) == ("task-2", "FAILURE", 500)

    _, out = run(cli, "status", "--name", "app.send_receipt", "--json")
    assert [r["uuid"] for r in json.loads(out)] == ["task-4"]


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

    assert code == 69  # EX_UNAVAILABLE, as Celery's CLI exits when its broker refuses
    assert "QStash request failed" in out and TOKEN not in out
    assert "Traceback" not in out
    assert "check qstash_token / QSTASH_TOKEN" in out  # what to fix, by both names


def test_inspect_shows_the_timeline(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "inspect", "task-2")

    assert code == 0
    assert "FAILURE (FAILED)" in out
    assert "Error:         Internal server error" in out
    assert "Authorization: [redacted]" in out
    table = _columns(out, "TIME (UTC)")
    states = [row["QSTASH"] for row in table]
    assert states == ["CREATED", "ACTIVE", "ERROR", "RETRY", "ACTIVE", "ERROR", "FAILED"]


def _columns(out: str, first: str) -> list[dict[str, str]]:
    """The rows of the table whose header starts with ``first``, cut at the header's columns."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    header = lines[start]
    names = header.split("  ")
    names = [n.strip() for n in names if n.strip()]
    cuts = [header.index(n) for n in names] + [None]
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append({n: line[cuts[i]:cuts[i + 1]].strip() for i, n in enumerate(names)})
    return rows


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

    # As in Celery, revoking a finished task is a no-op, not an error (issue 7: exit 1 before).
    code, out = run(cli, "revoke", "task-1")
    assert code == 0
    assert "already SUCCESS: nothing to revoke" in out
    code, out = run(cli, "revoke", "nope")
    assert code == 1
    assert fake.cancelled == ["msg_4"]


def test_revoke_of_a_task_delivered_meanwhile_exits_0(cli: click.Group, fake: FakeQStash) -> None:
    fake.cancel_route.side_effect = lambda request: httpx.Response(
        404, json={"error": "message not found"})

    code, out = run(cli, "revoke", "task-4")

    assert code == 0, out
    assert "already finished: nothing to revoke" in out


def test_dlq_commands_accept_a_task_id(cli: click.Group, fake: FakeQStash) -> None:
    fake.dlq = [dlq_message("task-2", "2-0"), dlq_message("task-9", "3-0"),
                dlq_message("task-2", "1-0")]

    code, out = run(cli, "dlq", "retry", "task-2")
    assert code == 0
    assert "Retried 2-0 (task task-2) as QStash message msg_retried" in out
    assert fake.retry_route.calls.last.request.url.path == "/v2/dlq/retry/2-0"
    assert fake.dlq_route.calls.last.request.url.params["label"] == "task-2"

    code, out = run(cli, "dlq", "delete", "task-9")
    assert code == 0 and "Deleted 3-0 (task task-9)" in out
    assert [m["dlqId"] for m in fake.dlq] == ["1-0"]

    code, out = run(cli, "dlq", "delete", "1-0")  # a DLQ id still works
    assert code == 0 and "Deleted 1-0" in out and "task" not in out
    assert fake.dlq == []


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


# -- review fixes ----------------------------------------------------------------------

AUTOSEND_KEY = "AS_sandbox_dev_key"
LEAK = {"success": False, "message": f"Invalid API key {AUTOSEND_KEY}"}


@pytest.fixture
def leaky(fake: FakeQStash, monkeypatch: pytest.MonkeyPatch) -> FakeQStash:
    """AutoSend's answers quote the AutoSend key (known to the CLI's settings)."""
    monkeypatch.setenv("AUTOSEND_API_KEY", AUTOSEND_KEY)
    kw = {"task_id": "leak", "message_id": "msg_leak"}
    fake.events = [
        event("CREATED", 0, **kw),
        event("ACTIVE", 10, **kw),
        event("ERROR", 20, **kw, **autosend_answer(401, LEAK), error=f"401 {AUTOSEND_KEY}"),
        event("FAILED", 20, **kw, **autosend_answer(401, LEAK)),
    ]
    fake.dlq = [{**dlq_message("leak", "1-0"), "responseBody": json.dumps(LEAK)}]
    return fake


@pytest.mark.parametrize(
    "args", [("inspect", "leak", "--json"), ("dlq", "list", "--json"), ("status", "--json")]
)
def test_json_output_never_quotes_a_secret(
    cli: click.Group, leaky: FakeQStash, args: tuple[str, ...]
) -> None:
    code, out = run(cli, *args)

    assert code == 0
    json.loads(out)
    assert AUTOSEND_KEY not in out


def test_inspect_json_says_what_went_wrong_without_the_key(
    cli: click.Group, leaky: FakeQStash
) -> None:
    _, out = run(cli, "inspect", "leak", "--json")
    info = json.loads(out)

    assert info["exception"] == "DeliveryFailed(401, 'Invalid API key ***')"
    assert "Invalid API key ***" in info["traceback"]
    _, out = run(cli, "dlq", "list", "--json")
    assert json.loads(out)[0]["error"] == "Invalid API key ***"


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_status_limit_must_be_positive(cli: click.Group, fake: FakeQStash, limit: str) -> None:
    code, out = run(cli, "status", "--limit", limit)

    assert code == 2
    assert "--limit" in out
    assert fake.events_route.call_count == 0


def test_status_rejects_a_since_too_far_back(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "status", "--since", "9" * 400 + "w")

    assert code == 2
    assert "--since" in out and "too large" in out
    assert fake.events_route.call_count == 0


def test_inspect_hides_credentials_in_the_destination(cli: click.Group, fake: FakeQStash) -> None:
    fake.events = [event("CREATED", 0, task_id="t", message_id="m",
                         url="https://user:pw@hooks.example/x?token=tk_1&n=2")]

    code, out = run(cli, "inspect", "t")

    assert code == 0
    assert "user:pw" not in out and "tk_1" not in out
    assert "Destination:   https://hooks.example/x?token=%5Bredacted%5D&n=2" in out


def test_inspect_of_an_empty_task_id_is_unknown(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "inspect", "")

    assert code == 1
    assert "labelled" in out
    assert fake.events_route.call_count == 0


def test_dlq_retry_cannot_leave_the_dlq_path(cli: click.Group, fake: FakeQStash) -> None:
    code, _ = run(cli, "dlq", "retry", "../keys")

    assert code == 1
    assert fake.retry_route.calls.last.request.url.raw_path == b"/v2/dlq/retry/..%2Fkeys"


# -- issue 13: tables that fit, colour, --watch, listings, JSON, attempts, bulk DLQ ----

LONG_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.fixture
def wide_data(fake: FakeQStash) -> FakeQStash:
    name = "myproject.notifications.tasks.send_the_quarterly_newsletter_to_subscribers"
    body = {"to": {"email": "a.very.long.recipient.address@subdomain.example.com"},
            "subject": "Quarterly newsletter", "text": "hi"}
    fake.events = [event("CREATED", i, task_id=f"{LONG_ID[:-2]}{i:02d}", message_id=f"m{i}",
                         name=name, body=body) for i in range(3)]
    return fake


@pytest.mark.parametrize("columns", [80, 100, 132])
def test_status_fits_the_terminal_unless_wide(cli: click.Group, wide_data: FakeQStash,
                                              columns: int) -> None:
    code, out = run(cli, "status", columns=columns)
    _, wide = run(cli, "status", "--wide", columns=columns)

    assert code == 0
    assert max(map(len, out.splitlines())) <= columns
    assert "0f8fad5b…" in out and LONG_ID[:-2] not in out
    name = _columns(out, "ID")[0]["NAME"]
    # cut, not wrapped, and at its start: the informative end stays
    assert name.startswith("…") and name.endswith("send_the_quarterly_newsletter_to_subscribers"[-12:])
    assert max(map(len, wide.splitlines())) > 132
    assert f"{LONG_ID[:-2]}00" in wide and "send_the_quarterly_newsletter_to_subscribers" in wide


def test_at_80_columns_the_due_time_gives_way_first(cli: click.Group, fake: FakeQStash) -> None:
    _, narrow = run(cli, "status", columns=80)
    _, roomy = run(cli, "status", columns=120)

    assert narrow.splitlines()[0].split() == ["ID", "NAME", "STATE", "RECIPIENT", "CREATED",
                                              "(UTC)", "RETRIES", "STATUS"]
    assert "DUE (UTC)" in roomy.splitlines()[0]
    assert "app.send_welcome" in narrow  # short names are whole


def test_inspect_fits_80_columns_and_headers_have_their_own_heading(
        cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "inspect", "task-2", columns=80)

    assert code == 0
    assert max(map(len, out.splitlines())) <= 80
    lines = out.splitlines()
    error_at = next(i for i, line in enumerate(lines) if line.startswith("Error:"))
    assert lines[error_at + 1].startswith(" " * 15) or lines[error_at + 1] == ""
    headers_at = lines.index("Request headers:")
    assert headers_at > error_at and lines[headers_at - 1] == ""


OTHER_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def test_inspect_takes_the_short_id_status_prints(cli: click.Group, fake: FakeQStash) -> None:
    fake.events = [event("CREATED", 0, task_id=LONG_ID, message_id="m0"),
                   event("CREATED", 1, task_id=OTHER_ID, message_id="m1")]
    _, listing = run(cli, "status")
    assert "0f8fad5b…" in listing  # what a user copies...
    code, out = run(cli, "inspect", "0f8fad5b…")  # ...and pastes, ellipsis included
    assert code == 0, out
    assert out.splitlines()[0].split() == ["Task:", LONG_ID]
    code, out = run(cli, "inspect", "--json", "7c9e")
    assert code == 0 and json.loads(out)["uuid"] == OTHER_ID
    code, out = run(cli, "inspect", "nothing-like-it")
    assert code == 1 and "no QStash event is labelled with task id nothing-like-it" in out


def test_an_ambiguous_prefix_lists_what_it_matches(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "inspect", "--json", "task-")
    assert code == 2 and "is the start of 3 task ids (task-1, task-2, task-4)" in out
    assert "give more characters" in out


@pytest.mark.parametrize(("typed", "meant"), [("FAILUR", "FAILURE"), ("deliverd", "DELIVERED"),
                                              ("SUCCESS,REVOKD", "REVOKED")])
def test_state_is_validated_with_a_did_you_mean(cli: click.Group, fake: FakeQStash,
                                                 typed: str, meant: str) -> None:
    code, out = run(cli, "status", "--state", typed)
    assert code == 2
    assert f"did you mean {meant}?" in out
    assert "No task found." not in out
    assert run(cli, "status", "--state", "failure,DELIVERED")[0] == 0


def test_one_json_vocabulary_for_status_inspect_and_flowers_api(cli: click.Group,
                                                                fake: FakeQStash) -> None:
    from celery_qstash.status import StatusClient, flower_task

    _, listed = run(cli, "status", "--json")
    _, inspected = run(cli, "inspect", "task-1", "--json")
    row = next(r for r in json.loads(listed) if r["uuid"] == "task-1")
    info = json.loads(inspected)
    from qstash import QStash

    record = StatusClient(QStash(TOKEN, base_url=QSTASH_URL)).task("task-1")
    assert record is not None
    api = flower_task(record)  # what /api/tasks and /api/task/info answer
    assert set(row) == set(api)
    assert set(info) == set(api) | {"events", "email"}   # as /api/task/info answers
    assert {k: row[k] for k in ("uuid", "name", "state", "recipient", "retries")} == \
        {k: api[k] for k in ("uuid", "name", "state", "recipient", "retries")}


def test_help_summaries_are_whole_at_80_columns() -> None:
    from celery_qstash.cli import main

    out = CliRunner().invoke(main, ["--help"], env={"COLUMNS": "80"}).output
    assert "..." not in out.partition("Commands:")[2]
    assert max(map(len, out.splitlines())) <= 80
    flat = " ".join(out.split())
    assert "Serve the dashboard, Flower's JSON API and /metrics (127.0.0.1:8655 by default)." in flat
    dlq = " ".join(CliRunner().invoke(main, ["dlq", "--help"], env={"COLUMNS": "80"})
                   .output.split())
    assert "Remove a dead letter for good; a task id removes every dead letter of that " \
        "task." in dlq
    assert "..." not in dlq.partition("Commands:")[2]


def run_coloured(cli: click.Group, *args: str, **env: str) -> str:
    # color=True: click strips nothing itself, so what we print is what a terminal gets.
    return CliRunner().invoke(cli, list(args), color=True, env=env).output


def test_colour_only_on_a_terminal_and_never_with_no_color(
    cli: click.Group, fake: FakeQStash, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)

    piped = run_coloured(cli, "status")
    forced = run_coloured(cli, "status", FORCE_COLOR="1")
    refused = run_coloured(cli, "status", FORCE_COLOR="1", NO_COLOR="1")

    assert "\x1b[" not in piped  # CliRunner's stdout is not a TTY
    assert "\x1b[32mSUCCESS" in forced and "\x1b[31m\x1b[1mFAILURE" in forced
    assert "\x1b[" not in refused and "SUCCESS" in refused


def test_status_watch_refreshes(cli: click.Group, fake: FakeQStash) -> None:
    code, out = run(cli, "status", "--watch", "--interval", "0", "--iterations", "3")

    assert code == 0
    assert out.count("celery-qstash status: 3 tasks at ") == 3
    assert fake.events_route.call_count == 3


def test_status_json_has_iso_times_and_json_results(cli: click.Group, fake: FakeQStash) -> None:
    _, out = run(cli, "status", "--json")
    rows = {r["uuid"]: r for r in json.loads(out)}

    assert rows["task-1"]["received"] == "2024-05-06T12:53:20+00:00"
    assert rows["task-1"]["result"] == {"emailId": "em_123", "status": "queued"}
    assert rows["task-4"]["result"] is None and rows["task-4"]["next_delivery"].endswith("+00:00")

    _, out = run(cli, "inspect", "task-1", "--json")
    info = json.loads(out)
    assert info["received"] == "2024-05-06T12:53:20+00:00"
    assert info["succeeded"] == "2024-05-06T12:53:21.500000+00:00"
    assert info["result"] == {"emailId": "em_123", "status": "queued"}
    assert [(e["state"], e["attempt"], e["duration_s"]) for e in info["events"]][1:3] == [
        ("ACTIVE", 1, None), ("ERROR", 1, 0.2)]
    assert info["events"][2]["message"] == "Internal server error"


def test_inspect_shows_attempts_deltas_autosends_words_and_the_response(
    cli: click.Group, fake: FakeQStash
) -> None:
    code, out = run(cli, "inspect", "task-1")

    assert code == 0
    rows = _columns(out, "TIME (UTC)")
    assert [r["TRY"] for r in rows] == ["-", "1", "1", "1", "2", "2"]
    assert [r["+DELTA"] for r in rows][:3] == ["-", "+0.10 s", "+0.20 s"]
    assert rows[2]["TOOK"] == "0.20 s" and rows[2]["AUTOSEND SAID"] == "Internal server error"
    assert rows[5]["AUTOSEND SAID"] == "sent: em_123" and rows[5]["STATUS"] == "200"
    assert "Attempts:      2" in out
    assert "Response to attempt 2 (200):" in out and '"emailId": "em_123"' in out


def test_queues_listing(cli: click.Group, fake: FakeQStash) -> None:
    fake.queues = [{"name": "emails", "parallelism": 2, "lag": 7, "paused": True}]

    code, out = run(cli, "queues")
    _, as_json = run(cli, "queues", "--json")

    assert code == 0
    assert _columns(out, "QUEUE") == [{"QUEUE": "emails", "WAITING": "7", "PARALLELISM": "2",
                                       "STATE": "PAUSED"}]
    assert json.loads(as_json) == [{"name": "emails", "messages": 7, "parallelism": 2,
                                    "paused": True}]


def test_schedules_listing(cli: click.Group, fake: FakeQStash) -> None:
    fake.schedules = [{
        "scheduleId": "scd_1234567890abcdef", "cron": "*/5 * * * *", "createdAt": 1715000000000,
        "destination": "https://hooks.example/x?token=tk_1", "method": "POST", "retries": 3,
        "isPaused": False, "lastScheduleTime": 1715000000000, "nextScheduleTime": 1715000300000,
    }]

    code, out = run(cli, "schedules")
    _, as_json = run(cli, "schedules", "--json")

    assert code == 0
    (row,) = _columns(out, "ID")
    assert (row["ID"], row["CRON"], row["STATE"]) == ("scd_1234…", "*/5 * * * *", "ACTIVE")
    assert row["NEXT RUN (UTC)"] == "2024-05-06 12:58:20" and "tk_1" not in out
    (item,) = json.loads(as_json)
    assert item["next_run"] == "2024-05-06T12:58:20+00:00" and item["schedule_id"].endswith("ef")


def test_dlq_retry_all_and_delete_all_with_a_progress_bar(
    cli: click.Group, fake: FakeQStash
) -> None:
    fake.dlq = [dlq_message(f"task-{i}", f"{i}-0") for i in range(6)]
    fake.dlq[0]["body"] = '{"subject": "Special offer"}'

    code, out = run(cli, "dlq", "retry-all", "--search", "special")
    assert code == 0 and "Retrying 1 dead letters" in out and "Retried 1 dead letters" in out
    assert len(fake.dlq) == 5

    aborted = CliRunner().invoke(cli, ["dlq", "delete-all"], input="n\n")
    assert aborted.exit_code == 1 and len(fake.dlq) == 5  # asked, refused, nothing deleted

    code, out = run(cli, "dlq", "delete-all", "--yes")
    assert code == 0 and "Deleting 5 dead letters" in out and "Deleted 5 dead letters" in out
    assert fake.dlq == []
    assert "empty" in run(cli, "dlq", "retry-all")[1]


def test_exit_codes_follow_celerys(cli: click.Group, fake: FakeQStash) -> None:
    import httpx

    assert run(cli, "inspect", "nope")[0] == 1  # EX_FAILURE: nothing by that id
    assert run(cli, "status", "--limit", "0")[0] == 2  # usage, as click (and Celery) exit
    fake.queues_route.side_effect = httpx.ConnectError("refused")
    code, out = run(cli, "queues")
    assert code == 69 and "Unable to run `queues`" in out  # EX_UNAVAILABLE


def test_dlq_list_and_inspect_tell_a_callback_from_the_email(cli: click.Group, fake: FakeQStash) -> None:
    from test_status_callbacks import _dlq_callback, callback_events, with_callback

    fake.dlq = [dlq_message("task-2", "1-0"), _dlq_callback(labelled=False)]
    code, out = run(cli, "dlq", "list", "--wide")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert "WHAT" in out
    assert "email" in lines["1-0"] and "task-2" in lines["1-0"]
    callback_line = next(v for k, v in lines.items() if k != "1-0")
    assert "link callback" in callback_line and "task-9" in callback_line

    fake.events = with_callback(delivered_events()) + callback_events()
    code, out = run(cli, "inspect", "task-1")
    assert code == 0
    assert "SUCCESS (DELIVERED)" in out
    tail = out.split("Callbacks (they do not change the task's state):", 1)[1]
    assert "callback" in tail and "FAILURE" in tail


def test_nothing_listening_names_the_url_and_suggests_dev(
    cli: click.Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery_qstash.local.serving import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("QSTASH_URL", url)
    monkeypatch.setenv("QSTASH_TOKEN", TOKEN)

    code, out = run(cli, "status")

    assert code == 69
    assert url in out and "celery-qstash dev" in out
    assert TOKEN not in out and "Traceback" not in out


def test_beat_sync_exits_as_the_other_commands_when_qstash_is_down(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    import sys
    import textwrap
    from pathlib import Path

    from celery_qstash.cli import main
    from celery_qstash.local.serving import free_port

    url = f"http://127.0.0.1:{free_port()}"
    project = Path(str(tmp_path))
    (project / "beatproj_down.py").write_text(textwrap.dedent("""
        from celery import Celery
        from celery.schedules import crontab
        from celery_qstash import Email, QStashTask

        app = Celery("beatproj_down", set_as_current=False)

        @app.task(base=QStashTask, name="beatproj_down.digest", shared=False)
        def digest():
            return Email(to="a@example.com", from_="b@example.com", subject="d", text="d")

        app.conf.beat_schedule = {"digest": {"task": "beatproj_down.digest",
                                             "schedule": crontab(minute=0, hour=8)}}
    """))
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.setenv("QSTASH_URL", url)
    monkeypatch.setenv("QSTASH_TOKEN", TOKEN)
    monkeypatch.setenv("AUTOSEND_API_KEY", "as-key-BEAT-S3CRET")
    monkeypatch.delitem(sys.modules, "beatproj_down", raising=False)

    result = CliRunner().invoke(main, ["beat", "sync", "-A", "beatproj_down:app"])

    assert result.exit_code == 69, result.output
    assert url in result.output and "celery-qstash dev" in result.output
    assert TOKEN not in result.output and "as-key-BEAT-S3CRET" not in result.output


@pytest.mark.parametrize("ts", [1_099_511_627_776, 2.0**63, float("nan"), float("inf"), -1e18])
def test_the_cli_prints_any_stored_time(ts: float) -> None:
    """A stored time past the year 9999 (or none at all) is printed as the number, never
    a traceback (issue 23)."""
    from celery_qstash.cli.output import iso, when
    from celery_qstash.clock import utc_moment

    assert utc_moment(ts) is None
    assert when(ts) == str(ts) and iso(ts) is None


def test_dashboard_gives_the_app_and_the_metrics_state_file_to_the_server(
    cli: click.Group, monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    """``-A`` is what Flower's launching API starts tasks of; ``--metrics-state`` keeps the
    /metrics counts (the server itself is tested in tests/dashboard)."""
    import celery_qstash.local.dashboard as dashboard

    served: dict[str, object] = {}
    monkeypatch.setattr(dashboard, "serve", lambda *args, **kwargs: served.update(kwargs))
    (tmp_path / "boardapp.py").write_text(  # type: ignore[operator]
        "from celery import Celery\napp = Celery('boardapp')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    state = str(tmp_path / "metrics.json")  # type: ignore[operator]

    code, out = run(cli, "dashboard", "-A", "boardapp:app", "--metrics-state", state)

    assert code == 0, out
    assert getattr(served["celery_app"], "main", None) == "boardapp"
    assert served["metrics_state"] == state
