"""``celery-qstash beat sync`` against the emulator: create once, update, delete, dry run."""

from __future__ import annotations

import json

import pytest
from celery import Celery
from celery.schedules import crontab
from click.testing import CliRunner
from qstash import QStash

from celery_qstash import Email, QStashTask
from celery_qstash.cli import main
from celery_qstash.schedules.beat import schedule_id_for, sync
from celery_qstash.testing import DevServers


def _client(servers: DevServers) -> QStash:
    return QStash(servers.emulator.token, base_url=servers.emulator.url)


@pytest.fixture
def beat_app(live_app: Celery) -> Celery:
    live_app.conf.timezone = "Europe/Paris"

    @live_app.task(base=QStashTask, name="beat.digest", shared=False)
    def digest(edition: str) -> Email:
        return Email(to="team@example.com", from_="news@acme.example",
                     subject=f"Digest ({edition})", text="What happened")

    @live_app.task(name="beat.cleanup", shared=False)
    def cleanup() -> None:
        """An ordinary Celery task: stays on celery beat."""

    live_app.conf.beat_schedule = {
        "daily digest": {"task": "beat.digest", "schedule": crontab(minute=0, hour=7),
                         "args": ("daily",)},
        "weekly digest": {"task": "beat.digest", "schedule": crontab(minute=0, hour=8, day_of_week="mon"),
                          "kwargs": {"edition": "weekly"}},
        "cleanup": {"task": "beat.cleanup", "schedule": 300.0},
    }
    return live_app


def test_sync_twice_creates_once_then_updates_and_deletes(beat_app: Celery, dev_servers: DevServers) -> None:
    client = _client(dev_servers)
    first = sync(beat_app)
    assert sorted(c.action for c in first) == ["create", "create", "skip"]
    schedules = {s.schedule_id: s for s in client.schedule.list()}
    daily = schedules[schedule_id_for("daily digest")]
    assert daily.cron == "CRON_TZ=Europe/Paris 0 7 * * *"
    assert daily.destination == "https://api.autosend.com/v1/mails/send"
    assert json.loads(daily.body or "")["subject"] == "Digest (daily)"
    assert len(schedules) == 2

    second = sync(beat_app)
    assert sorted(c.action for c in second) == ["skip", "unchanged", "unchanged"]
    assert {s.schedule_id for s in client.schedule.list()} == set(schedules)

    beat_app.conf.beat_schedule["daily digest"]["schedule"] = crontab(minute=30, hour=6)
    del beat_app.conf.beat_schedule["weekly digest"]
    third = sync(beat_app)
    assert sorted(c.action for c in third) == ["delete", "skip", "update"]
    [left] = client.schedule.list()
    assert left.schedule_id == daily.schedule_id
    assert left.cron == "CRON_TZ=Europe/Paris 30 6 * * *"


def test_dry_run_changes_nothing(beat_app: Celery, dev_servers: DevServers) -> None:
    changes = sync(beat_app, dry_run=True)
    assert sorted(c.action for c in changes) == ["create", "create", "skip"]
    assert _client(dev_servers).schedule.list() == []


def test_schedules_of_others_are_never_touched(beat_app: Celery, dev_servers: DevServers) -> None:
    client = _client(dev_servers)
    client.schedule.create(destination="https://example.com/hook", cron="0 0 * * *",
                           schedule_id="someone-elses")
    beat_app.conf.beat_schedule = {}
    sync(beat_app)
    assert [s.schedule_id for s in client.schedule.list()] == ["someone-elses"]


def test_scheduled_messages_carry_no_fixed_idempotency_key(beat_app: Celery, dev_servers: DevServers) -> None:
    # A fixed key would make AutoSend replay day one's answer every day after.
    sync(beat_app)
    [daily] = [s for s in _client(dev_servers).schedule.list()
               if s.schedule_id == schedule_id_for("daily digest")]
    names = {k.lower() for k in (daily.headers or {})}
    assert not any("idempotency-key" in n for n in names)
    assert any("authorization" in n for n in names)


def test_the_cli_syncs_and_says_what_it_did(
    beat_app: Celery, dev_servers: DevServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

    module = types.ModuleType("beat_cli_proj")
    module.app = beat_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "beat_cli_proj", module)
    runner = CliRunner()

    dry = runner.invoke(main, ["beat", "sync", "-A", "beat_cli_proj:app", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run, nothing changed: 2 create, 1 skip" in dry.output
    assert _client(dev_servers).schedule.list() == []

    done = runner.invoke(main, ["beat", "sync", "-A", "beat_cli_proj:app"],
                         env={"COLUMNS": "80"})
    assert done.exit_code == 0, done.output
    assert max(map(len, done.output.splitlines())) <= 80  # was 133
    assert "CRON_TZ=Europe/Paris 0 7 * * *" in done.output
    assert "not a QStash task: left to celery beat" in done.output
    assert len(_client(dev_servers).schedule.list()) == 2


def test_a_sub_minute_entry_fails_the_cli_clearly(
    beat_app: Celery, dev_servers: DevServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

    beat_app.conf.beat_schedule["daily digest"]["schedule"] = 10.0
    module = types.ModuleType("beat_cli_fast")
    module.app = beat_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "beat_cli_fast", module)
    result = CliRunner().invoke(main, ["beat", "sync", "-A", "beat_cli_fast:app"])
    assert result.exit_code == 1
    assert "'daily digest' runs every 10s" in result.output
    assert _client(dev_servers).schedule.list() == []


def test_beat_sync_under_celerys_own_cli(dev_servers: DevServers) -> None:
    from celery.bin.celery import celery as celery_main

    from examples import daily_digest

    dev_servers.reset()
    dev_servers.configure(daily_digest.app)
    result = CliRunner().invoke(
        celery_main, ["-A", "examples.daily_digest", "qstash", "beat", "sync", "--dry-run"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "dry run, nothing changed: 1 create" in result.output
    assert "CRON_TZ=Europe/Paris 0 7 * * *" in result.output


def test_beat_sync_without_an_app_says_how_to_give_one() -> None:
    result = CliRunner().invoke(main, ["beat", "sync"])
    assert result.exit_code == 2
    assert "-A MODULE:APP" in result.output


def test_another_app_on_the_same_qstash_account_keeps_its_schedules(
    beat_app: Celery, dev_servers: DevServers
) -> None:
    # Two projects (or two services) deploying `beat sync` against one QStash account with
    # the default prefix: each sync used to delete the other's schedules.
    other = Celery("blog", set_as_current=False)
    dev_servers.configure(other)
    other.conf.timezone = "UTC"

    @other.task(base=QStashTask, name="blog.digest", shared=False)
    def blog_digest() -> Email:
        return Email(to="readers@example.com", from_="blog@acme.example", subject="Blog",
                     text="New posts")

    other.conf.beat_schedule = {
        "blog digest": {"task": "blog.digest", "schedule": crontab(minute=0, hour=9)},
        "daily digest": {"task": "blog.digest", "schedule": crontab(minute=0, hour=10)},
    }
    client = _client(dev_servers)
    sync(beat_app)
    ours = {s.schedule_id: s.cron for s in client.schedule.list()}

    changes = {c.entry or c.schedule_id: c for c in sync(other)}

    after = {s.schedule_id: s.cron for s in client.schedule.list()}
    for schedule_id, cron in ours.items():
        assert after.get(schedule_id) == cron  # neither deleted nor overwritten
    assert schedule_id_for("blog digest") in after
    # Same entry name, same default prefix: refused, with the way out.
    clash = changes["daily digest"]
    assert clash.action == "skip" and "--prefix" in clash.reason and "'live'" in clash.reason
    assert not any(c.action == "delete" for c in changes.values())

    # And the first app, syncing again, leaves the blog's alone too.
    again = sync(beat_app)
    assert not any(c.action == "delete" for c in again)
    assert schedule_id_for("blog digest") in {s.schedule_id for s in client.schedule.list()}
    other.close()
