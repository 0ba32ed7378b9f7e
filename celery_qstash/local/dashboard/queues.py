"""The dashboard's pages for what QStash holds beside tasks: queues and schedules.

Read through the official SDK on each request, as every page is (:mod:`.views`), and
updated in place like the tasks list. Pause and resume are plain form POSTs that redirect
back (the dashboard's guard refuses them from another origin).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ...status import safe_url
from .common import BadRequest, get_status, page_errors
from .html import Safe, badge, e, layout, link, query, rel_time, table
from .views import _kv, _notice, _now, _refresh, _task_table, _told

__all__ = ["queue_action", "queue_page", "queues_page", "schedule_action", "schedules_page"]

# -- queues ---------------------------------------------------------------------------


def _pause_button(name: str, paused: bool) -> Safe:
    verb = "resume" if paused else "pause"
    return Safe(f'<form class="inline" method="post" action="/queues/{e(name)}/{verb}">'
                f'<button type="submit" class="act" id="{verb}">{verb.title()}</button></form>')


@page_errors
def queues_page(request: Request) -> Response:
    """QStash queues: how many messages wait in each, pause and resume."""
    rows = [[link(f"/queues/{q.name}", q.name), e(q.messages), e(q.parallelism),
             badge("PAUSED") if q.paused else badge("ACTIVE"), _pause_button(q.name, q.paused)]
            for q in get_status(request).queues()]
    listing = table(["Queue", "Messages waiting", "Parallelism", "State", ""], rows,
                    empty="No QStash queue: tasks without a queue option are published directly.")
    body = f'<h1>Queues</h1>{_notice(request)}<div id="live-queues" data-live>{listing}</div>'
    return HTMLResponse(layout("Queues", body, here="queues", refresh=_refresh(request)))


@page_errors
def queue_page(request: Request) -> Response:
    """One queue: its state, pause/resume, and its recent tasks."""
    name = request.path_params["name"]
    status = get_status(request)
    found = next((q for q in status.queues() if q.name == name), None)
    if found is None:
        body = f'<h1>Unknown queue</h1><p class="error">QStash has no queue {e(name)}.</p>'
        return HTMLResponse(layout("Unknown queue", body, here="queues"), status_code=404)
    records = [r for r in status.recent(pages=request.app.state.pages) if r.queue == name]
    info = _kv([
        ("State", badge("PAUSED") if found.paused else badge("ACTIVE")),
        ("Messages waiting", e(found.messages)),
        ("Parallelism", e(found.parallelism)),
    ])
    body = (f"{_notice(request)}"
            f'<div id="live-queue" data-live><h1>Queue {e(name)} '
            f"{_pause_button(name, found.paused)}</h1>"
            f"{info}<h2>Recent tasks ({len(records)})</h2>"
            f"{_task_table(request, records[:100], empty='No recent task went through it.')}"
            "</div>")
    return HTMLResponse(layout(f"Queue {name}", body, here="queues", refresh=_refresh(request)))


def _pause_or_resume(request: Request, resource: Any, what: str, name: str,
                     back: str) -> Response:
    """Pause or resume a queue or a schedule through the SDK (``client.queue`` or
    ``client.schedule``), then back to ``back`` with what was done."""
    verb = request.path_params["action"]
    if verb == "pause":
        resource.pause(name)
    elif verb == "resume":
        resource.resume(name)
    else:
        raise BadRequest("action must be pause or resume")
    return _told(request, back, f"{'Paused' if verb == 'pause' else 'Resumed'} {what} {name}.")


@page_errors
def queue_action(request: Request) -> Response:
    """Pause or resume a queue (QStash stops or restarts delivering its messages)."""
    name = request.path_params["name"]
    return _pause_or_resume(request, get_status(request).client.queue, "queue", name,
                            f"/queues/{name}")


# -- schedules ------------------------------------------------------------------------


def _ms(value: int | None) -> float | None:
    return value / 1000 if value else None


def _what(schedule: Any) -> Safe:
    """What a firing runs: the deferred task's name, or the email's subject."""
    try:
        body = json.loads(schedule.body or "")
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("task"), str):
        return Safe(f"<code>{e(body['task'])}</code>")
    if isinstance(body, dict) and "subject" in body:
        return e(f"email: {body['subject']}")
    return e(None)


def _schedule_button(schedule_id: str, paused: bool) -> Safe:
    verb = "resume" if paused else "pause"
    target = f"/schedules/{quote(schedule_id, safe='')}/{verb}"
    return Safe(f'<form class="inline" method="post" action="{e(target)}">'
                f'<button type="submit" class="act">{verb.title()}</button></form>')


@page_errors
def schedules_page(request: Request) -> Response:
    """QStash schedules (``celery-qstash beat sync`` makes them): what each runs, its cron,
    state, last run and its outcome, next run; pause and resume."""
    now = _now(request)
    rows = []
    for s in sorted(get_status(request).client.schedule.list(), key=lambda s: s.schedule_id):
        outcome = sorted({str(getattr(v, "value", v))
                          for v in (s.last_schedule_states or {}).values()})
        rows.append([
            Safe(f'<code title="{e(s.schedule_id)}">{e(s.schedule_id)}</code>'),
            _what(s),
            Safe(f"<code>{e(s.cron)}</code>"),
            e(safe_url(s.destination)),
            badge("PAUSED") if s.paused else badge("ACTIVE"),
            rel_time(_ms(s.last_schedule_time), now),
            Safe(" ".join(str(badge(o.replace("FAIL", "FAILURE"))) for o in outcome)
                 or str(e(None))),
            rel_time(_ms(s.next_schedule_time), now),
            Safe(f"{_schedule_button(s.schedule_id, s.paused)} "
                 f"{link('/tasks?' + query({'search': s.schedule_id}), 'Tasks')}"),
        ])
    listing = table(["Schedule", "Runs", "Cron", "Destination", "State", "Last run",
                     "Last outcome", "Next run", ""], rows, cls="schedules",
                    empty="No QStash schedule: `celery-qstash beat sync` turns the app's "
                          "beat_schedule into QStash schedules.")
    body = (f"<h1>Schedules</h1>{_notice(request)}"
            f'<div id="live-schedules" data-live>{listing}</div>')
    return HTMLResponse(layout("Schedules", body, here="schedules", refresh=_refresh(request)))


@page_errors
def schedule_action(request: Request) -> Response:
    """Pause or resume a schedule (QStash skips or resumes its firings)."""
    return _pause_or_resume(request, get_status(request).client.schedule, "schedule",
                            request.path_params["schedule_id"], "/schedules")
