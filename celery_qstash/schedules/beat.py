"""Celery beat entries of QStash tasks, mirrored as QStash schedules (``celery-qstash beat sync``).

QStash has its own scheduler, so an email that celery beat sent on a timetable can
be sent by QStash with no beat process and no worker. ``sync`` reads the app's
``beat_schedule``, renders each QStash task's email **once, at sync time** (the body
runs then, with the entry's ``args``/``kwargs``), and creates, updates or deletes
QStash schedules so that they match. It is idempotent: each entry's schedule id is
derived from its name (``celery-beat-<name>-<hash>``), and an unchanged entry is left
alone (a fingerprint of what was sent travels as ``X-Celery-Beat-Fingerprint``).
Entries whose task is not a QStash task are reported and left to celery beat.

Timetables: a ``crontab`` becomes QStash's cron with ``CRON_TZ=`` the app's
``timezone`` (UTC with ``enable_utc`` and no timezone); croniter validates the result
and checks it fires on exactly the minutes, hours, days and months Celery's would.
An interval becomes cron when it divides a minute, an hour or a day evenly (every 15
minutes: ``*/15 * * * *``; QStash then fires on the clock, not counted from a beat
start). QStash's cron cannot go below a minute: shorter intervals are refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery.schedules import crontab
from celery.schedules import schedule as interval_schedule
from croniter import croniter

from ..config import Settings, load_settings
from ..email import coerce_email
from ..errors import ConfigurationError

__all__ = [
    "DEFAULT_PREFIX",
    "Change",
    "DesiredSchedule",
    "apply_changes",
    "cron_for",
    "desired_schedules",
    "plan_sync",
    "schedule_id_for",
    "sync",
]

DEFAULT_PREFIX = "celery-beat-"
FINGERPRINT_HEADER = "X-Celery-Beat-Fingerprint"
#: The app (its ``main`` name) a schedule was synced from: another app sharing the QStash
#: account and the prefix never deletes or overwrites it.
OWNER_HEADER = "X-Celery-Beat-App"
#: Options of a beat entry that make no sense for a message QStash produces on a timetable.
_PER_CALL_ONLY = ("countdown", "eta", "expires", "task_id")


def schedule_id_for(entry_name: str, prefix: str = DEFAULT_PREFIX) -> str:
    """A QStash schedule id for a beat entry: readable, stable and unique per name."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", entry_name).strip("-")[:64] or "entry"
    digest = hashlib.sha256(entry_name.encode()).hexdigest()[:8]
    return f"{prefix}{slug}-{digest}"


# -- timetables -> cron ---------------------------------------------------------------

_NUMERIC = re.compile(r"^[0-9*/,\-]+$")
_FIELDS = (  # crontab attribute, original-text attribute, full range
    ("minute", "_orig_minute", set(range(60))),
    ("hour", "_orig_hour", set(range(24))),
    ("day_of_month", "_orig_day_of_month", set(range(1, 32))),
    ("month_of_year", "_orig_month_of_year", set(range(1, 13))),
    ("day_of_week", "_orig_day_of_week", set(range(7))),
)


def _timezone(app: Any, entry: str) -> str:
    tz = app.conf.timezone
    if tz:
        return str(tz)
    if app.conf.enable_utc:
        return "UTC"
    raise ConfigurationError(
        "timezone",
        f"beat entry {entry!r}: the app keeps local time (enable_utc=False, no timezone); "
        "set app.conf.timezone so the QStash schedule fires at the same hour",
    )


def _field(values: set[int], original: Any, full: set[int]) -> str:
    if values == full:
        return "*"
    if len(values) == 1:  # croniter reads "3-3" as "*": say it plainly
        return str(next(iter(values)))
    text = str(original).replace(" ", "")
    if _NUMERIC.match(text) and "*" not in text.replace("*/", ""):
        return text
    return ",".join(str(v) for v in sorted(values))


def _crontab_cron(entry: str, sched: crontab) -> str:
    values = [set(getattr(sched, attr)) for attr, _, _ in _FIELDS]
    dom_restricted = values[2] != _FIELDS[2][2]
    dow_restricted = values[4] != _FIELDS[4][2]
    if dom_restricted and dow_restricted:
        raise ConfigurationError(
            "beat_schedule",
            f"entry {entry!r}: Celery's crontab needs day_of_month AND day_of_week to match, "
            "cron fires when either does; split it into two entries or restrict only one",
        )
    expr = " ".join(
        _field(v, getattr(sched, orig), full)
        for v, (_, orig, full) in zip(values, _FIELDS, strict=True)
    )
    if not croniter.is_valid(expr):
        raise ConfigurationError("beat_schedule", f"entry {entry!r}: {expr!r} is not valid cron")
    expanded, _ = croniter.expand(expr)
    for got, wanted, (name, _, full) in zip(expanded, values, _FIELDS, strict=True):
        fired = full if got == ["*"] else {int(v) % 7 if name == "day_of_week" else int(v)
                                            for v in got}
        if fired != wanted:
            raise ConfigurationError(
                "beat_schedule",
                f"entry {entry!r}: {expr!r} would not fire on the same {name} as the crontab",
            )
    return expr


def _interval_cron(entry: str, seconds: float) -> str:
    if seconds < 60:
        raise ConfigurationError(
            "beat_schedule",
            f"entry {entry!r} runs every {seconds:g}s, and QStash schedules run at most once a "
            "minute (cron). Use an interval of a minute or more, or keep this entry on celery beat",
        )
    minutes, rest = divmod(int(seconds), 60)
    if rest or seconds != int(seconds):
        raise ConfigurationError(
            "beat_schedule",
            f"entry {entry!r}: every {seconds:g}s is not a whole number of minutes; QStash "
            "schedules are cron. Use a crontab(...) instead",
        )
    if minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    hours, rest = divmod(minutes, 60)
    if not rest and hours < 24 and 24 % hours == 0:
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    if minutes == 24 * 60:
        return "0 0 * * *"
    raise ConfigurationError(
        "beat_schedule",
        f"entry {entry!r}: every {minutes} minutes does not divide an hour or a day evenly, so "
        "cron cannot express it. Use a crontab(...) with the times you want",
    )


def cron_for(app: Any, entry: str, sched: Any) -> str:
    """QStash's cron (with ``CRON_TZ``) for a beat entry's ``schedule``."""
    if isinstance(sched, crontab):
        expr = _crontab_cron(entry, sched)
    elif isinstance(sched, interval_schedule):
        expr = _interval_cron(entry, sched.run_every.total_seconds())
    elif isinstance(sched, timedelta):
        expr = _interval_cron(entry, sched.total_seconds())
    elif isinstance(sched, (int, float)) and not isinstance(sched, bool):
        expr = _interval_cron(entry, float(sched))
    else:
        raise ConfigurationError(
            "beat_schedule",
            f"entry {entry!r}: {type(sched).__name__} timetables have no QStash equivalent; "
            "use a crontab(...) or an interval, or keep this entry on celery beat",
        )
    return f"CRON_TZ={_timezone(app, entry)} {expr}"


# -- what the schedules should be -------------------------------------------------------


@dataclass(frozen=True)
class DesiredSchedule:
    entry: str
    task: str
    schedule_id: str
    cron: str
    create: dict[str, Any] = field(repr=False)  # keyword arguments for the SDK's create
    fingerprint: str = ""


@dataclass(frozen=True)
class Change:
    action: str  # "create", "update", "unchanged", "delete", "skip"
    schedule_id: str | None
    entry: str | None = None
    cron: str | None = None
    reason: str = ""
    desired: DesiredSchedule | None = field(default=None, repr=False)


def desired_schedules(
    app: Any, *, prefix: str = DEFAULT_PREFIX, settings: Settings | None = None
) -> tuple[list[DesiredSchedule], list[Change]]:
    """The schedules the app's ``beat_schedule`` asks for, and the entries left to beat."""
    from ..publish.message import json_arguments, task_message
    from ..publish.plan import plan_publish
    from ..tasks.deferred import DeferredTask
    from ..tasks.planning import task_attrs
    from ..tasks.task import QStashTask

    settings = settings or load_settings(app.conf)
    wanted: list[DesiredSchedule] = []
    skipped: list[Change] = []
    for name, entry in (app.conf.beat_schedule or {}).items():
        task_name = entry.get("task")
        task = app.tasks.get(task_name)
        if task is None:
            raise ConfigurationError(
                "beat_schedule", f"entry {name!r}: task {task_name!r} is not registered"
            )
        if not isinstance(task, (QStashTask, DeferredTask)):
            skipped.append(
                Change("skip", None, name, reason="not a QStash task: left to celery beat")
            )
            continue
        options: Mapping[str, Any] = entry.get("options") or {}
        for option in _PER_CALL_ONLY:
            if option in options:
                raise ConfigurationError(
                    "beat_schedule",
                    f"entry {name!r}: option {option!r} applies to one call; a schedule's "
                    "messages are produced by QStash on its timetable",
                )
        cron = cron_for(app, name, entry.get("schedule"))
        schedule_id = schedule_id_for(name, prefix)
        plan = plan_publish(
            task=task_attrs(task), task_id=schedule_id, options=options, settings=settings,
            now=time.time(), link=options.get("link"), link_error=options.get("link_error"),
        )
        args, kwargs = entry.get("args") or (), entry.get("kwargs") or {}
        if isinstance(task, DeferredTask):
            # The body runs at each firing, on the receiver: a digest computed each day.
            # The message is the same every firing; each firing's task id (and so its
            # email's idempotency key) comes from QStash's message id at delivery.
            json_arguments(task.name, tuple(args), dict(kwargs))
            message = task_message(task.name, schedule_id, list(args), dict(kwargs),
                                   schedule=True)
            request = plan.task_request(message, settings.require_receiver_url(), settings)
            headers = dict(request.sent_headers)
        else:
            email = coerce_email(task._render(schedule_id, list(args), dict(kwargs)),
                                 default_from=settings.default_from)
            request = plan.request(email, settings)
            # A fixed Idempotency-Key would make AutoSend replay the first day's answer
            # every day after: scheduled messages go without one (QStash's own delivery
            # still applies).
            headers = {k: v for k, v in request.sent_headers.items() if k != "Idempotency-Key"}
        create: dict[str, Any] = {
            "destination": request.url,
            "cron": cron,
            "body": json.dumps(request.body),
            "content_type": "application/json",
            "headers": headers,
            "retries": request.retries,
            "retry_delay": request.retry_delay,
            "timeout": request.timeout,
            "callback": request.callback,
            "failure_callback": request.failure_callback,
            "schedule_id": schedule_id,
            "queue": request.queue,
            "label": schedule_id,
        }
        if request.flow_control is not None and request.queue is None:
            create["flow_control"] = request.flow_control.as_sdk()
        if request.redact_headers:
            create["redact"] = {"header": list(request.redact_headers)}
        create["headers"][OWNER_HEADER] = _owner(app)
        digest_of = {k: v for k, v in create.items() if k != "headers"}
        # The delivery nonce is new each sync: the fingerprint leaves it out, so an unchanged
        # deferred entry is not re-created on every sync.
        digest_of["body"] = _stable_body(create["body"])
        digest_of["headers"] = {
            k: (hashlib.sha256(v.encode()).hexdigest() if k == "Authorization" else v)
            for k, v in create["headers"].items()
        }
        digest_of["flow_control"] = repr(create.get("flow_control"))
        fingerprint = hashlib.sha256(
            json.dumps(digest_of, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        create["headers"][FINGERPRINT_HEADER] = fingerprint
        wanted.append(DesiredSchedule(name, task.name, schedule_id, cron, create, fingerprint))
    return wanted, skipped


def _stable_body(body: str) -> str:
    try:
        value = json.loads(body)
    except ValueError:
        return body
    if isinstance(value, dict):
        value.pop("delivery", None)
    return json.dumps(value, sort_keys=True)


def _owner(app: Any) -> str:
    return str(app.main or "")


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if str(key).lower() in (name.lower(), f"upstash-forward-{name.lower()}"):
            return str(value[0] if isinstance(value, list) and value else value)
    return None


def plan_sync(
    app: Any, client: Any, *, prefix: str = DEFAULT_PREFIX, settings: Settings | None = None
) -> list[Change]:
    """What ``sync`` would do: compare the wanted schedules with QStash's (our prefix only;
    those another app synced, by their owner header, are left alone)."""
    wanted, changes = desired_schedules(app, prefix=prefix, settings=settings)
    owner = _owner(app)
    existing: dict[str, Any] = {}
    others: dict[str, str] = {}  # schedule id -> the other app that owns it
    for s in client.schedule.list():
        if not s.schedule_id.startswith(prefix):
            continue
        # No owner header: synced before it existed, so this app's to manage.
        found = _header(s.headers, OWNER_HEADER)
        if found is None or found == owner:
            existing[s.schedule_id] = s
        else:
            others[s.schedule_id] = found
    for d in wanted:
        if d.schedule_id in others:
            changes.append(Change(
                "skip", d.schedule_id, d.entry, d.cron,
                reason=f"schedule belongs to app {others[d.schedule_id]!r} on this QStash "
                "account: give this app its own --prefix",
            ))
            continue
        current = existing.pop(d.schedule_id, None)
        if current is None:
            action = "create"
        elif (_header(current.headers, FINGERPRINT_HEADER), current.cron) == (
            d.fingerprint, d.cron,
        ):
            action = "unchanged"
        else:
            action = "update"
        changes.append(Change(action, d.schedule_id, d.entry, d.cron, desired=d))
    for schedule_id, current in sorted(existing.items()):
        changes.append(Change("delete", schedule_id, None, current.cron,
                              reason="no longer in beat_schedule"))
    return changes


def apply_changes(client: Any, changes: list[Change]) -> None:
    for change in changes:
        if change.action in ("create", "update") and change.desired is not None:
            client.schedule.create(**change.desired.create)
        elif change.action == "delete" and change.schedule_id:
            client.schedule.delete(change.schedule_id)


def sync(
    app: Any, *, dry_run: bool = False, prefix: str = DEFAULT_PREFIX,
    settings: Settings | None = None,
) -> list[Change]:
    """Make QStash's schedules (those with ``prefix``) match the app's beat entries."""
    from ..publish.transports.qstash import client_for

    settings = settings or load_settings(app.conf)
    client = client_for(settings)
    changes = plan_sync(app, client, prefix=prefix, settings=settings)
    if not dry_run:
        apply_changes(client, changes)
    return changes
