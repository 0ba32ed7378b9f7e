"""Status commands: ``status``, ``inspect``, ``revoke``, ``dlq`` and ``dashboard``.

They read the shim's own settings (``QSTASH_URL``, ``QSTASH_TOKEN``,
``QSTASH_DEV=true``... or ``--app module:celery_app`` to use that app's conf), so
the same commands work against real QStash and the emulator. Every query goes
through :mod:`celery_qstash.status`, as the dashboard's do.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

import click

from ..config import Settings, load_settings
from ..devserver import DASHBOARD_PORT
from ..errors import CeleryQStashError, scrub, scrub_data
from ..status import (
    DlqEntry,
    NotFound,
    StatusClient,
    TaskFilter,
    TaskRecord,
    celery_state,
    flower_task,
    parse_since,
    redact_headers,
    safe_url,
)

__all__ = [
    "dashboard_cmd",
    "dlq_group",
    "inspect_cmd",
    "register",
    "revoke_cmd",
    "status_cmd",
]

F = TypeVar("F", bound=Callable[..., Any])


def _app_option(fn: F) -> F:
    return click.option(
        "--app", "-A", "app_path", metavar="MODULE:APP", envvar="CELERY_QSTASH_APP",
        help="read settings from this Celery app's conf (else from the environment)",
    )(fn)


def _load_conf(app_path: str | None) -> Any:
    if not app_path:
        # Under `celery -A proj qstash ...`, Celery has loaded the app already and keeps it
        # on the root context (its CLIContext); `celery-qstash` has no such object.
        ctx = click.get_current_context(silent=True)
        celery_app = getattr(ctx.find_root().obj, "app", None) if ctx is not None else None
        return celery_app.conf if celery_app is not None else None
    module_name, _, attr = app_path.partition(":")
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, "")  # like `celery -A`: the current directory is importable
    try:
        module = importlib.import_module(module_name)
        app = getattr(module, attr or "app")
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load {app_path!r}: {exc}", param_hint="--app") from None
    return app.conf


def _settings(app_path: str | None) -> Settings:
    return load_settings(_load_conf(app_path))


def _client(settings: Settings) -> StatusClient:
    from ..transports.qstash import client_for

    return StatusClient(client_for(settings))


@contextmanager
def _errors(settings: Settings | None = None) -> Iterator[None]:
    """Our errors and QStash's as one-line messages (never a secret), not tracebacks."""
    try:
        yield
    except (CeleryQStashError, NotFound) as exc:
        raise click.ClickException(str(exc)) from None
    except click.ClickException:
        raise
    except Exception as exc:  # the SDK's QStashError, httpx's network errors
        secrets = settings.secrets if settings is not None else ()
        raise click.ClickException(
            f"QStash request failed: {scrub(str(exc), secrets)}"
        ) from None


def _echo_json(data: Any, settings: Settings) -> None:
    """Every ``--json`` output goes out through here, scrubbed of the configured secrets
    (AutoSend's answers and QStash's errors can quote them)."""
    click.echo(json.dumps(scrub_data(data, settings.secrets), indent=2, default=str))


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _row(r: TaskRecord) -> dict[str, Any]:
    return {
        "task_id": r.task_id,
        "name": r.name,
        "state": r.state,
        "qstash_state": r.qstash_state,
        "recipient": r.recipient,
        "created": r.created,
        "next_delivery": r.next_delivery,
        "retries": r.retries,
        "response_status": r.response_status,
        "message_id": r.message_id,
    }


@click.command("status")
@click.option("--state", help="Celery or QStash state(s), comma-separated (SUCCESS,FAILURE)")
@click.option("--name", help="task name, exactly")
@click.option("--since", help="only tasks accepted since then: 10m, 2h, 1d, or an ISO time")
@click.option("--search", help="free text or name:/state:/recipient:/subject: terms")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1),
              help="at most this many rows")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@_app_option
def status_cmd(state: str | None, name: str | None, since: str | None, search: str | None,
               limit: int, as_json: bool, app_path: str | None) -> None:
    """Recent tasks, newest first: id, name, state, recipient, times, retries, response."""
    try:
        since_ts = parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    settings = _settings(app_path)
    with _errors(settings):
        records = _client(settings).tasks(
            TaskFilter(state=state, name=name, since=since_ts, search=search)
        )[:limit]
    if as_json:
        _echo_json([_row(r) for r in records], settings)
        return
    if not records:
        click.echo("No task found.")
        return
    click.echo(_table(
        ["TASK ID", "NAME", "STATE", "RECIPIENT", "CREATED (UTC)", "NEXT DELIVERY", "RETRIES",
         "LAST STATUS"],
        [[r.task_id, r.name, r.state, r.recipient, _when(r.created),
          _when(r.next_delivery) if r.next_delivery else None, r.retries, r.response_status]
         for r in records],
    ))


@click.command("inspect")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="print JSON (Flower's task fields + events)")
@_app_option
def inspect_cmd(task_id: str, as_json: bool, app_path: str | None) -> None:
    """One task: its summary and QStash event timeline."""
    settings = _settings(app_path)
    with _errors(settings):
        record = _client(settings).task(task_id)
    if record is None:
        raise click.ClickException(f"no QStash event is labelled with task id {task_id}")
    timeline = [
        [_when(int(ev["time"]) / 1000 if ev.get("time") else None), ev.get("state"),
         celery_state(ev.get("state")), ev.get("messageId"), ev.get("responseStatus"),
         scrub(str(ev["error"]), settings.secrets) if ev.get("error") else None]
        for ev in record.events
    ]
    if as_json:
        info = flower_task(record)
        info["events"] = [dict(zip(["time", "state", "celery_state", "message_id",
                                    "response_status", "error"], row, strict=True))
                          for row in timeline]
        _echo_json(info, settings)
        return
    header = next((ev.get("header") for ev in record.events if ev.get("header")), None)
    summary = [
        ("Task", record.task_id), ("Name", record.name),
        ("State", f"{record.state} ({record.qstash_state})"),
        ("Message", record.message_id), ("Destination", safe_url(record.url)),
        ("Recipient", record.recipient), ("Subject", record.subject),
        ("Created", _when(record.created)), ("Retries", record.retries),
        ("Next delivery", _when(record.next_delivery) if record.next_delivery else None),
        ("Last status", record.response_status),
    ]
    if record.state in ("FAILURE", "RETRY"):
        summary.append(("Error", scrub(record.error_message or "", settings.secrets)))
    for key, value in summary:
        click.echo(f"{key + ':':<15}{'-' if value is None else value}")
    for name, value in sorted(redact_headers(header).items()):
        click.echo(f"  {name}: {value}")
    click.echo("")
    click.echo(_table(["TIME (UTC)", "QSTASH", "CELERY", "MESSAGE", "STATUS", "ERROR"], timeline))


@click.command("revoke")
@click.argument("task_id")
@_app_option
def revoke_cmd(task_id: str, app_path: str | None) -> None:
    """Cancel a task's QStash message (it will not be delivered)."""
    settings = _settings(app_path)
    with _errors(settings):
        client = _client(settings)
        record = client.task(task_id)
        if record is None:
            raise click.ClickException(f"no QStash message is labelled with task id {task_id}")
        if record.ready:
            raise click.ClickException(f"task {task_id} is already {record.state}")
        client.revoke(record.message_id)
    click.echo(f"Revoked '{task_id}' (QStash message {record.message_id})")


@click.group("dlq")
def dlq_group() -> None:
    """The dead letter queue: tasks whose retries ran out."""


def _dlq_row(d: DlqEntry) -> dict[str, Any]:
    return {"dlq_id": d.dlq_id, "task_id": d.task_id, "name": d.name, "recipient": d.recipient,
            "failed": d.failed, "response_status": d.response_status, "error": d.error_message,
            "message_id": d.message_id}


@dlq_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--count", default=100, show_default=True, help="page size (QStash's maximum: 100)")
@_app_option
def dlq_list(as_json: bool, count: int, app_path: str | None) -> None:
    """List dead letters."""
    settings = _settings(app_path)
    with _errors(settings):
        entries, _cursor = _client(settings).dlq(count=count)
    if as_json:
        _echo_json([_dlq_row(d) for d in entries], settings)
        return
    if not entries:
        click.echo("The dead letter queue is empty.")
        return
    click.echo(_table(
        ["DLQ ID", "TASK ID", "NAME", "RECIPIENT", "FAILED (UTC)", "STATUS", "ERROR"],
        [[d.dlq_id, d.task_id, d.name, d.recipient, _when(d.failed), d.response_status,
          scrub(d.error_message or "", settings.secrets)[:60]] for d in entries],
    ))


@dlq_group.command("retry")
@click.argument("dlq_id")
@_app_option
def dlq_retry(dlq_id: str, app_path: str | None) -> None:
    """Publish a dead letter again (same body and headers)."""
    settings = _settings(app_path)
    with _errors(settings):
        message_id = _client(settings).dlq_retry(dlq_id)
    click.echo(f"Retried {dlq_id} as QStash message {message_id}")


@dlq_group.command("delete")
@click.argument("dlq_id")
@_app_option
def dlq_delete(dlq_id: str, app_path: str | None) -> None:
    """Remove a dead letter for good."""
    settings = _settings(app_path)
    with _errors(settings):
        _client(settings).dlq_delete(dlq_id)
    click.echo(f"Deleted {dlq_id}")


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
@_app_option
def dashboard_cmd(host: str, port: int, auth_value: str | None, allow_public: bool,
                  app_path: str | None) -> None:
    """Serve the dashboard and Flower's JSON API (127.0.0.1:5555 by default)."""
    try:
        from ..dashboard import serve
    except ImportError as exc:  # starlette/uvicorn are the ``local`` extra
        raise click.ClickException(
            f"the dashboard needs the local extra: pip install 'celery-qstash[local]' ({exc})"
        ) from None
    conf = _load_conf(app_path)
    with _errors():
        serve(host, port, _auth(auth_value), allow_public, conf=conf)


def register(group: click.Group) -> None:
    """Add the status commands to the ``celery-qstash`` group."""
    for command in (status_cmd, inspect_cmd, revoke_cmd, dlq_group, dashboard_cmd):
        group.add_command(command)
