"""Status commands: ``status``, ``inspect``, ``revoke``, ``dlq`` and ``dashboard``.

They read the shim's own settings (``QSTASH_URL``, ``QSTASH_TOKEN``,
``QSTASH_DEV=true``... or ``--app module:celery_app`` to use that app's conf), so
the same commands work against real QStash and the emulator. Every query goes
through :mod:`celery_qstash.status`, as the dashboard's do.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

import click
import httpx

from ..config import Settings, load_settings
from ..devserver import DASHBOARD_PORT
from ..errors import CeleryQStashError, scrub, scrub_data
from ..publish.transports.qstash import no_answer_hint, refusal_hint
from ..status import (
    CELERY_STATES,
    KNOWN_STATES,
    QSTASH_STATES,
    DlqEntry,
    NotFound,
    StatusClient,
    TaskFilter,
    TaskRecord,
    flower_task,
    parse_since,
    redact_headers,
    safe_url,
)
from ..status.attempts import Step, human_duration, steps
from ..webhooks.store import email_fate
from .apps import celery_cli_app, import_app
from .output import (
    WholeHelpGroup,
    budget,
    cut,
    http_url,
    iso,
    out,
    paint,
    short_id,
    table,
    when,
    when_short,
)

__all__ = [
    "dashboard_cmd",
    "dlq_group",
    "inspect_cmd",
    "queues_cmd",
    "register",
    "revoke_cmd",
    "schedules_cmd",
    "status_cmd",
]

F = TypeVar("F", bound=Callable[..., Any])


def _app_option(fn: F) -> F:
    return click.option(
        "--app", "-A", "app_path", metavar="MODULE:APP", envvar="CELERY_QSTASH_APP",
        help="read settings from this Celery app's conf (else from the environment)",
    )(fn)


def _load_conf(app_path: str | None) -> Any:
    celery_app = import_app(app_path, "--app") if app_path else celery_cli_app()
    return celery_app.conf if celery_app is not None else None


def _settings(app_path: str | None) -> Settings:
    return load_settings(_load_conf(app_path))


def _client(settings: Settings) -> StatusClient:
    from ..publish.transports.qstash import client_for

    return StatusClient(client_for(settings))


#: Celery's exit codes (``celery.platforms``): 1 for a failure, 69 (EX_UNAVAILABLE) when the
#: service cannot be reached or refuses, as ``celery inspect`` does without a broker; click's
#: own 2 for bad usage.
EX_FAILURE = 1
EX_UNAVAILABLE = 69


class Unavailable(click.ClickException):
    """QStash could not be reached or refused the request: exit status 69, as Celery's."""

    exit_code = EX_UNAVAILABLE


@contextmanager
def _errors(settings: Settings | None = None, command: str = "") -> Iterator[None]:
    """Our errors and QStash's as one-line messages (never a secret), not tracebacks."""
    try:
        yield
    except (CeleryQStashError, NotFound) as exc:
        raise click.ClickException(str(exc)) from None
    except (click.ClickException, click.Abort):
        raise
    except Exception as exc:  # the SDK's QStashError, httpx's network errors
        raise Unavailable(unavailable_message(exc, settings, command)) from None


def unavailable_message(exc: Exception, settings: Settings | None, command: str = "") -> str:
    """A failed QStash request in one line: no secret; where and what to check when
    nothing answered."""
    secrets = settings.secrets if settings is not None else ()
    what = f"Unable to run `{command}`: " if command else ""
    message = f"{what}QStash request failed: {scrub(str(exc), secrets)}"
    refused = re.match(r"Request failed with status: (\d+)", str(exc))
    message += refusal_hint(int(refused.group(1)) if refused else None)
    if settings is not None and isinstance(exc, httpx.TransportError):
        message += ". " + no_answer_hint(settings.qstash_url)
    return message


def _echo_json(data: Any, settings: Settings) -> None:
    """Every ``--json`` output goes out through here, scrubbed of the configured secrets
    (AutoSend's answers and QStash's errors can quote them)."""
    click.echo(json.dumps(scrub_data(data, settings.secrets), indent=2, default=str))


_TIME_FIELDS = ("received", "sent", "started", "succeeded", "failed", "retried", "revoked",
                "timestamp", "eta", "next_delivery")


def task_json(record: TaskRecord) -> dict[str, Any]:
    """A task as ``status --json``, ``inspect --json`` and Flower's ``/api/tasks`` name it:
    Flower's fields (:func:`~celery_qstash.status.flower_task`), with times as ISO 8601 in
    UTC and ``result`` as AutoSend's answer in JSON (the API keeps Flower's epoch floats
    and repr string, so Flower's scripts keep working)."""
    info = flower_task(record)
    for key in _TIME_FIELDS:
        info[key] = iso(info.get(key))
    info["result"] = record.result if record.ready else None
    return info


def _status_table(records: Sequence[TaskRecord], wide: bool) -> str:
    # At 80 columns the due time and retries give way first; names keep their end.
    return table(
        ["ID", "NAME", "STATE", "RECIPIENT", "CREATED (UTC)", "DUE (UTC)", "RETRIES", "STATUS"],
        [[short_id(r.task_id, wide), r.name, r.state, r.recipient, when_short(r.created, wide),
          when_short(r.next_delivery, wide) if r.next_delivery else None, r.retries,
          r.response_status]
         for r in records],
        width=budget(wide), shrink={1: 16, 3: 12}, keep_end=(1,), drop=(5, 6),
        paint_cols=(2,),
    )


def _check_states(value: str | None) -> str | None:
    """``--state``: Celery or QStash states, comma-separated; a typo is a usage error
    with the state it probably meant, not an empty list."""
    if not value:
        return value
    for part in (p.strip() for p in value.split(",")):
        if part and part.upper() not in KNOWN_STATES:
            near = difflib.get_close_matches(part.upper(), sorted(KNOWN_STATES), n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise click.BadParameter(
                f"{part!r} is not a state{hint} Celery states: "
                f"{', '.join(CELERY_STATES)}; QStash states: {', '.join(QSTASH_STATES)}",
                param_hint="--state",
            )
    return value


@click.command("status")
@click.option("--state", help="Celery or QStash state(s), comma-separated (SUCCESS,FAILURE)")
@click.option("--name", help="task name, exactly")
@click.option("--since", help="only tasks accepted since then: 10m, 2h, 1d, or an ISO time")
@click.option("--search", help="free text or name:/state:/recipient:/subject: terms")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1),
              help="at most this many rows")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--wide", is_flag=True, help="whole ids and columns, whatever the width")
@click.option("--watch", is_flag=True, help="refresh until Ctrl-C, like `celery events`")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0),
              help="seconds between refreshes with --watch")
@click.option("--iterations", type=click.IntRange(min=1), hidden=True,
              help="stop --watch after this many refreshes (for scripts and tests)")
@_app_option
def status_cmd(state: str | None, name: str | None, since: str | None, search: str | None,
               limit: int, as_json: bool, wide: bool, watch: bool, interval: float,
               iterations: int | None, app_path: str | None) -> None:
    """Recent tasks, newest first: id, name, state, recipient, times, retries, response."""
    state = _check_states(state)
    try:
        since_ts = parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    settings = _settings(app_path)
    flt = TaskFilter(state=state, name=name, since=since_ts, search=search)

    def fetch() -> list[TaskRecord]:
        with _errors(settings, "status"):
            return _client(settings).tasks(flt)[:limit]

    if not watch:
        records = fetch()
        if as_json:
            _echo_json([task_json(r) for r in records], settings)
        elif not records:
            click.echo("No task found.")
        else:
            out(_status_table(records, wide))
        return
    shown = 0
    try:
        while iterations is None or shown < iterations:
            records = fetch()
            stamp = datetime.now(timezone.utc).strftime("%H:%M:%S UTC")
            if sys.stdout.isatty():
                click.clear()
            heading = f"celery-qstash status: {len(records)} tasks at {stamp}"
            out(click.style(heading, bold=True) + f" (every {interval:g}s, Ctrl-C to stop)")
            out(_status_table(records, wide) if records else "No task found.")
            shown += 1
            if iterations is None or shown < iterations:
                time.sleep(interval)
                if not sys.stdout.isatty():
                    click.echo("")
    except KeyboardInterrupt:  # Ctrl-C is how --watch ends: not an error
        click.echo("")


def _said(step: Step) -> str | None:
    if step.failed:
        return step.message
    if step.state == "DELIVERED" and isinstance(step.response, dict):
        data = step.response.get("data")
        if isinstance(data, dict) and data.get("emailId"):
            return f"sent: {data['emailId']}"
    return None


def find_task(client: StatusClient, ident: str) -> TaskRecord | None:
    """The task ``ident`` names: a whole task id, or a unique prefix of a recent one (the
    short ids ``status`` prints, ``…`` included). Several matches are a usage error
    listing them."""
    ident = ident.rstrip("…").removesuffix("...")
    if not ident:
        return None
    record = client.task(ident)
    if record is not None:
        return record
    ids = sorted({r.task_id for r in client.tasks() if r.task_id.startswith(ident)})
    if len(ids) > 1:
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise click.UsageError(
            f"{ident!r} is the start of {len(ids)} task ids ({shown}): give more characters"
        )
    return client.task(ids[0]) if ids else None


def _summary_line(key: str, value: Any, width: int | None) -> str:
    text = "-" if value is None else str(value)
    if width is None or len(key) + 2 + len(text) <= width:
        return f"{key + ':':<15}{text}"
    # Long values (an error, a URL) wrap under themselves instead of past the edge.
    return textwrap.fill(text, width=width, initial_indent=f"{key + ':':<15}",
                         subsequent_indent=" " * 15, break_on_hyphens=False)


@click.command("inspect")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True,
              help="print JSON (status --json's fields, plus each event)")
@click.option("--wide", is_flag=True, help="whole columns, whatever the width")
@_app_option
def inspect_cmd(task_id: str, as_json: bool, wide: bool, app_path: str | None) -> None:
    """One task (its id or any unique start of it): summary, attempts, AutoSend's answers."""
    conf = _load_conf(app_path)
    settings = load_settings(conf)
    with _errors(settings, "inspect"):
        record = find_task(_client(settings), task_id)
    if record is None:
        raise click.ClickException(f"no QStash event is labelled with task id {task_id}")
    timeline = steps(record)
    secrets = settings.secrets
    # What AutoSend's webhooks said after its answer (with an event store configured).
    fate = email_fate(conf, record.result) if record.state == "SUCCESS" else None
    if as_json:
        info = task_json(record)
        info["events"] = [
            {"time": iso(st.time), "state": st.state, "celery_state": st.celery_state,
             "attempt": st.attempt, "delta_s": st.delta, "duration_s": st.duration,
             "message_id": st.message_id, "response_status": st.response_status,
             "message": st.message, "response": st.response,
             "error": scrub(st.error, secrets) if st.error else None,
             "next_delivery": iso(st.next_delivery)}
            for st in timeline
        ]
        info["email"] = fate
        _echo_json(info, settings)
        return
    width = budget(wide)
    header = next((ev.get("header") for ev in record.events if ev.get("header")), None)
    attempts = max((st.attempt or 0 for st in timeline), default=0)
    summary = [
        ("Task", record.task_id), ("Name", record.name),
        ("State", f"{record.state} ({record.qstash_state})"),
        ("Message", record.message_id), ("Destination", safe_url(record.url)),
        ("Recipient", record.recipient), ("Subject", record.subject),
        ("Created", when(record.created) + " UTC" if record.created else None),
        ("Attempts", attempts), ("Retries", record.retries),
        ("Next delivery", when(record.next_delivery) + " UTC" if record.next_delivery else None),
        ("Last status", record.response_status),
    ]
    if record.state in ("FAILURE", "RETRY"):
        summary.append(("Error", scrub(record.error_message or "", secrets)))
    if fate is not None:
        summary.append(("Email", _fate_line(fate)))
    for key, value in summary:
        line = _summary_line(key, value, width)
        out(paint(line, record.state) if key == "State" else line)
    shown_headers = sorted(redact_headers(header).items())
    if shown_headers:
        # Their own heading: under "Error:" they read as part of the error.
        click.echo("")
        click.echo("Request headers:")
        for name, value in shown_headers:
            line = f"  {name}: {value}"
            click.echo(line if width is None else cut(line, width))
    click.echo("")
    out(table(
        ["TIME (UTC)", "+DELTA", "TRY", "QSTASH", "CELERY", "TOOK", "STATUS", "AUTOSEND SAID"],
        [[when_short(st.time, wide),
          "+" + human_duration(st.delta) if st.delta is not None else None,
          st.attempt, st.state, st.celery_state,
          human_duration(st.duration) if st.duration is not None else None,
          st.response_status, scrub(_said(st) or "", secrets) or None]
         for st in timeline],
        width=width, shrink={7: 20}, drop=(4,), paint_cols=(4,),
    ))
    delivered = next((st for st in reversed(timeline) if st.state == "DELIVERED"), None)
    if delivered is not None and delivered.response is not None:
        click.echo("")
        out(f"Response to attempt {delivered.attempt} ({delivered.response_status}):")
        click.echo(scrub(json.dumps(delivered.response, indent=2, sort_keys=True), secrets))
    if fate is not None and fate.get("events"):
        click.echo("")
        out("AutoSend's events (its webhooks, after its answer):")
        out(table(
            ["TIME (UTC)", "EVENT", "RECIPIENT", "DETAIL"],
            [[ev["timestamp"][:19].replace("T", " "), ev["event"], ev["recipient"],
              ": ".join(x for x in (ev["bounce_type"], ev["reason"]) if x) or None]
             for ev in fate["events"]],
            width=width, shrink={3: 20},
        ))
    if record.callbacks:
        # Apart from the state above: a callback's outcome does not change the task's.
        click.echo("")
        out("Callbacks (they do not change the task's state):")
        out(table(
            ["KIND", "URL", "STATE", "QSTASH", "STATUS", "MESSAGE", "ERROR"],
            [[c.kind, safe_url(c.url), c.state, c.qstash_state, c.response_status,
              short_id(c.message_id, wide), scrub(c.error or "", secrets) or None]
             for c in record.callbacks],
            width=width, shrink={6: 12, 1: 16}, drop=(3,), paint_cols=(2,),
        ))


def _fate_line(fate: dict[str, Any]) -> str:
    """``bounced at 2026-... UTC (Permanent: 550 user unknown)``; a bulk send adds its counts."""
    detail = ": ".join(x for x in (fate.get("bounce_type"), fate.get("reason")) if x)
    line = f"{fate['fate']} at {fate['timestamp'][:19].replace('T', ' ')} UTC"
    line += f" ({detail})" if detail else ""
    if fate.get("emails"):
        line += " - " + ", ".join(f"{n} {k}" for k, n in fate["emails"].items())
    return line


@click.command("revoke")
@click.argument("task_id")
@_app_option
def revoke_cmd(task_id: str, app_path: str | None) -> None:
    """Cancel a task's QStash message (it will not be delivered).

    As in Celery, revoking a task that already finished is a no-op and not an error.
    """
    settings = _settings(app_path)
    with _errors(settings, "revoke"):
        client = _client(settings)
        record = client.task(task_id)
        if record is None:
            raise click.ClickException(f"no QStash message is labelled with task id {task_id}")
        if record.ready:
            click.echo(f"Task '{task_id}' is already {record.state}: nothing to revoke")
            return
        try:
            client.revoke(record.message_id)
        except NotFound:  # delivered between the two requests
            click.echo(f"Task '{task_id}' already finished: nothing to revoke")
            return
    click.echo(f"Revoked '{task_id}' (QStash message {record.message_id})")


@click.command("queues")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@_app_option
def queues_cmd(as_json: bool, app_path: str | None) -> None:
    """QStash queues: messages waiting, parallelism, paused or active."""
    settings = _settings(app_path)
    with _errors(settings, "queues"):
        queues = _client(settings).queues()
    if as_json:
        _echo_json([{"name": q.name, "messages": q.messages, "parallelism": q.parallelism,
                     "paused": q.paused} for q in queues], settings)
        return
    if not queues:
        click.echo("No QStash queue (tasks without a queue option are published directly).")
        return
    out(table(["QUEUE", "WAITING", "PARALLELISM", "STATE"],
                [[q.name, q.messages, q.parallelism, "PAUSED" if q.paused else "ACTIVE"]
                 for q in queues], width=budget(False), shrink=(0,), paint_cols=(3,)))


def _ms(value: Any) -> float | None:
    return int(value) / 1000 if isinstance(value, int) and value else None


@click.command("schedules")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--wide", is_flag=True, help="whole ids and destinations")
@_app_option
def schedules_cmd(as_json: bool, wide: bool, app_path: str | None) -> None:
    """QStash schedules: cron, destination, paused or active, last and next run."""
    settings = _settings(app_path)
    with _errors(settings, "schedules"):
        schedules = _client(settings).client.schedule.list()
    if as_json:
        _echo_json([{"schedule_id": s.schedule_id, "cron": s.cron,
                     "destination": safe_url(s.destination), "paused": s.paused,
                     "queue": s.queue, "retries": s.retries, "label": s.label,
                     "created": iso(_ms(s.created_at)),
                     "last_run": iso(_ms(s.last_schedule_time)),
                     "next_run": iso(_ms(s.next_schedule_time))} for s in schedules], settings)
        return
    if not schedules:
        click.echo("No QStash schedule.")
        return
    out(table(
        ["ID", "CRON", "DESTINATION", "STATE", "LAST RUN (UTC)", "NEXT RUN (UTC)"],
        [[short_id(s.schedule_id, wide), s.cron, safe_url(s.destination),
          "PAUSED" if s.paused else "ACTIVE", when(_ms(s.last_schedule_time)),
          when(_ms(s.next_schedule_time))] for s in schedules],
        width=budget(wide), shrink={2: 16}, drop=(4,), paint_cols=(3,),
    ))


@click.group("dlq", cls=WholeHelpGroup)
def dlq_group() -> None:
    """The dead letter queue: tasks whose retries ran out."""


def _dlq_row(d: DlqEntry) -> dict[str, Any]:
    return {"dlq_id": d.dlq_id, "kind": d.kind, "task_id": d.task_id, "name": d.name,
            "recipient": d.recipient, "failed": iso(d.failed),
            "response_status": d.response_status, "error": d.error_message,
            "message_id": d.message_id, "url": safe_url(d.url)}


@dlq_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--count", default=100, show_default=True, help="page size (QStash's maximum: 100)")
@click.option("--wide", is_flag=True, help="whole ids and errors, whatever the width")
@_app_option
def dlq_list(as_json: bool, count: int, wide: bool, app_path: str | None) -> None:
    """List dead letters."""
    settings = _settings(app_path)
    with _errors(settings, "dlq list"):
        entries, _cursor = _client(settings).dlq(count=count)
    if as_json:
        _echo_json([_dlq_row(d) for d in entries], settings)
        return
    if not entries:
        click.echo("The dead letter queue is empty.")
        return
    rows = [[d.dlq_id, short_id(d.task_id, wide), d.name, d.recipient,
             when_short(d.failed, wide), d.response_status,
             scrub(d.error_message or "", settings.secrets)] for d in entries]
    heads = ["DLQ ID", "TASK ID", "NAME", "RECIPIENT", "FAILED (UTC)", "STATUS", "ERROR"]
    at = 0
    if any(d.is_callback for d in entries):
        # A failed callback is not a failed email: a WHAT column says which is which.
        heads.insert(1, "WHAT")
        for row, d in zip(rows, entries, strict=True):
            row.insert(1, d.what)
        at = 1
    # The DLQ id is what retry/delete take: never cut; names keep their end.
    out(table(heads, rows, width=budget(wide), shrink={6 + at: 16, 2 + at: 16, 3 + at: 12},
              keep_end=(2 + at,), drop=(3 + at, 5 + at)))


def _dlq_ids(client: StatusClient, ident: str) -> list[str]:
    """The DLQ ids ``ident`` names: the dead letters of a task id (its label), newest
    first, or else ``ident`` itself as a DLQ id."""
    entries, _cursor = client.dlq(task_id=ident)
    return [d.dlq_id for d in entries if d.task_id == ident] or [ident]


@dlq_group.command("retry")
@click.argument("ident", metavar="DLQ_ID|TASK_ID")
@_app_option
def dlq_retry(ident: str, app_path: str | None) -> None:
    """Publish a dead letter again (same body and headers); a task id retries its newest."""
    settings = _settings(app_path)
    with _errors(settings, "dlq retry"):
        client = _client(settings)
        dlq_id = _dlq_ids(client, ident)[0]
        message_id = client.dlq_retry(dlq_id)
    named = "" if dlq_id == ident else f" (task {ident})"
    click.echo(f"Retried {dlq_id}{named} as QStash message {message_id}")


@dlq_group.command("delete")
@click.argument("ident", metavar="DLQ_ID|TASK_ID")
@_app_option
def dlq_delete(ident: str, app_path: str | None) -> None:
    """Remove a dead letter for good; a task id removes every dead letter of that task."""
    settings = _settings(app_path)
    with _errors(settings, "dlq delete"):
        client = _client(settings)
        dlq_ids = _dlq_ids(client, ident)
        for dlq_id in dlq_ids:
            client.dlq_delete(dlq_id)
    named = "" if dlq_ids == [ident] else f" (task {ident})"
    click.echo(f"Deleted {', '.join(dlq_ids)}{named}")


#: How many DLQ pages (of 100) ``retry-all``/``delete-all`` read at most.
MAX_DLQ_PAGES = 100


def _every_dead_letter(client: StatusClient, search: str | None) -> list[DlqEntry]:
    found: list[DlqEntry] = []
    cursor: str | None = None
    for _ in range(MAX_DLQ_PAGES):
        entries, cursor = client.dlq(count=100, cursor=cursor)
        found += entries
        if not cursor:
            break
    if not search:
        return found
    words = search.lower().split()
    return [d for d in found if all(w in " ".join(str(x) for x in (
        d.dlq_id, d.task_id, d.name, d.recipient, d.subject, d.response_status,
        d.error_message) if x).lower() for w in words)]


def _dlq_bulk(action: str, search: str | None, yes: bool, app_path: str | None) -> None:
    settings = _settings(app_path)
    with _errors(settings, f"dlq {action}-all"):
        client = _client(settings)
        entries = _every_dead_letter(client, search)
        if not entries:
            click.echo("No dead letter matches." if search else "The dead letter queue is empty.")
            return
        if action == "delete" and not yes:
            click.confirm(f"Delete {len(entries)} dead letters for good?", abort=True, err=True)
        done = missing = 0
        verb = "Retrying" if action == "retry" else "Deleting"
        with click.progressbar(entries, label=f"{verb} {len(entries)} dead letters",
                               file=sys.stderr, show_pos=True) as bar:
            for entry in bar:
                try:
                    if action == "retry":
                        client.dlq_retry(entry.dlq_id)
                    else:
                        client.dlq_delete(entry.dlq_id)
                    done += 1
                except NotFound:  # retried or deleted meanwhile
                    missing += 1
    past = "Retried" if action == "retry" else "Deleted"
    click.echo(f"{past} {done} dead letters" + (f" ({missing} were already gone)"
                                                 if missing else ""))


@dlq_group.command("retry-all")
@click.option("--search", help="only the dead letters whose id, task, name, recipient, "
              "subject, status or error contain every word")
@_app_option
def dlq_retry_all(search: str | None, app_path: str | None) -> None:
    """Publish every dead letter again (or those matching --search), with a progress bar."""
    _dlq_bulk("retry", search, True, app_path)


@dlq_group.command("delete-all")
@click.option("--search", help="only the dead letters whose id, task, name, recipient, "
              "subject, status or error contain every word")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@_app_option
def dlq_delete_all(search: str | None, yes: bool, app_path: str | None) -> None:
    """Remove every dead letter (or those matching --search), with a progress bar."""
    _dlq_bulk("delete", search, yes, app_path)


def _auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise click.BadParameter("expected USER:PASSWORD", param_hint="--auth")
    return user, password


@click.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", default=DASHBOARD_PORT, show_default=True)
@click.option("--auth", "auth_value", metavar="USER:PASSWORD",
              envvar="CELERY_QSTASH_DASHBOARD_AUTH",
              help="require HTTP basic auth (or set CELERY_QSTASH_DASHBOARD_AUTH)")
@click.option("--allow-public", is_flag=True,
              help="allow a non-loopback --host without --auth (anyone could revoke tasks)")
@click.option("--inbox-url", envvar="CELERY_QSTASH_INBOX_URL", metavar="URL", callback=http_url,
              help="the AutoSend sandbox, to link each task to its captured email")
@click.option("--metrics-state", envvar="CELERY_QSTASH_METRICS_STATE", metavar="FILE",
              type=click.Path(dir_okay=False),
              help="keep /metrics' counts in FILE across restarts (else they restart at 0)")
@_app_option
def dashboard_cmd(host: str, port: int, auth_value: str | None, allow_public: bool,
                  inbox_url: str | None, metrics_state: str | None,
                  app_path: str | None) -> None:
    """Serve the dashboard, Flower's JSON API and /metrics (127.0.0.1:8655 by default).

    With -A, Flower's task-launching API can start the app's QStash tasks."""
    try:
        from ..local.dashboard import serve
    except ImportError as exc:  # starlette/uvicorn are the ``local`` extra
        raise click.ClickException(
            f"the dashboard needs the local extra: pip install 'celery-qstash[local]' ({exc})"
        ) from None
    celery_app = import_app(app_path, "--app") if app_path else celery_cli_app()
    with _errors():
        serve(host, port, _auth(auth_value), allow_public, inbox_url=inbox_url,
              celery_app=celery_app, metrics_state=metrics_state)


def register(group: click.Group) -> None:
    """Add the status commands to the ``celery-qstash`` group."""
    for command in (status_cmd, inspect_cmd, revoke_cmd, queues_cmd, schedules_cmd, dlq_group,
                    dashboard_cmd):
        group.add_command(command)
