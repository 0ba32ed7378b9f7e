"""``celery-qstash beat sync -A proj``: Celery beat entries of QStash tasks as QStash schedules."""

from __future__ import annotations

import textwrap
from typing import Any

import click

from ..config import load_settings
from ..errors import CeleryQStashError
from ..schedules.beat import DEFAULT_PREFIX, sync
from .apps import celery_cli_app, import_app
from .output import WholeHelpGroup, table, terminal_width
from .status import Unavailable, unavailable_message

__all__ = ["beat_group"]


def _load_app(app_path: str, param_hint: str = "-A") -> Any:
    app = import_app(app_path, param_hint)
    # As `celery beat` does: the app's task modules, so every entry's task is registered.
    app.loader.import_default_modules()
    return app


def _celery_cli_app() -> Any:
    """The app `celery -A proj qstash beat sync` loaded."""
    app = celery_cli_app()
    if app is None:
        raise click.UsageError("which app? give -A MODULE:APP (as for `celery -A`)")
    app.loader.import_default_modules()
    return app


@click.group("beat", cls=WholeHelpGroup)
def beat_group() -> None:
    """QStash schedules from the app's Celery beat_schedule."""


@beat_group.command("sync")
@click.option("--app", "-A", "app_path", default=None, metavar="MODULE:APP",
              envvar="CELERY_QSTASH_APP",
              help="the Celery app whose beat_schedule to mirror (under `celery -A proj "
              "qstash`, that app)")
@click.option("--dry-run", is_flag=True, help="show what would change, change nothing")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True,
              help="schedule ids this app owns start with this (others are never touched)")
def beat_sync(app_path: str | None, dry_run: bool, prefix: str) -> None:
    """Create, update and delete QStash schedules to match beat_schedule.

    Each email is rendered now, at sync time: re-run sync when its content should change.
    """
    app = _load_app(app_path) if app_path else _celery_cli_app()
    settings = None
    try:
        settings = load_settings(app.conf)
        changes = sync(app, dry_run=dry_run, prefix=prefix, settings=settings)
    except CeleryQStashError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # the SDK's QStashError, httpx's network errors
        # Exit 69 (EX_UNAVAILABLE), naming the URL when nothing answers, as the other commands.
        raise Unavailable(unavailable_message(exc, settings)) from None
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
    width = terminal_width()
    if changes:
        # The cron is never cut; the schedule id keeps its end (the entry and its hash).
        click.echo(table(
            ["ACTION", "ENTRY", "SCHEDULE ID", "CRON"],
            [[c.action, c.entry, c.schedule_id, c.cron] for c in changes],
            width=width, shrink={1: 12, 2: 16}, keep_end=(2,),
        ))
    reasons = [c for c in changes if c.reason]
    if reasons:
        click.echo("")
        for change in reasons:
            click.echo(textwrap.fill(f"{change.entry or change.schedule_id}: {change.reason}",
                                     width=width, subsequent_indent="  "))
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing to do"
    click.echo(("dry run, nothing changed: " if dry_run else "") + summary)
