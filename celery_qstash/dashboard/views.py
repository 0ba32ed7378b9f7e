"""The dashboard's HTML pages: tasks, one task, dead letters, queues.

Every page reads QStash through :class:`~celery_qstash.status.StatusClient` on
each request (no local state), escapes every value it shows
(:mod:`.html`), and never shows a secret: request headers go through
:func:`~celery_qstash.status.redact_headers`, and any text that came from
upstream is scrubbed of the configured secrets. Actions (revoke, DLQ retry and
delete) are plain form POSTs that redirect back (no script is needed, or allowed).
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlencode

from celery import states
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..errors import scrub
from ..status import (
    NotFound,
    TaskFilter,
    TaskRecord,
    celery_state,
    parse_since,
    redact_headers,
    safe_url,
    sort_records,
)
from .common import BadRequest, get_status, int_param, page_errors
from .html import Safe, badge, e, fmt_time, layout, link, pretty, query, table

__all__ = [
    "dlq_delete", "dlq_page", "dlq_retry", "queues_page", "task_page", "task_revoke", "tasks_page"
]

STATE_CHOICES = ("All", states.PENDING, states.STARTED, states.RETRY, states.SUCCESS,
                 states.FAILURE, states.REVOKED)
PER_PAGE_CHOICES = (10, 25, 50, 100)
REFRESH_CHOICES = (0, 5, 10, 30, 60)


def _clean(request: Request, value: Any) -> Any:
    """Upstream text (AutoSend's answer, QStash's error) with the known secrets removed."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
    return scrub(text, request.app.state.secrets)


def _options(choices: Any, current: Any) -> str:
    return "".join(
        f'<option value="{e(c)}"{" selected" if str(c) == str(current) else ""}>{e(c)}</option>'
        for c in choices
    )


@page_errors
def tasks_page(request: Request) -> Response:
    """Tasks: filter by state, name, time and free text; paginated on the server."""
    q = request.query_params
    since_text = q.get("since", "").strip()
    try:
        since = parse_since(since_text) if since_text else None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    per_page = int_param(q.get("per_page"), "per_page") or 25
    page = max(int_param(q.get("page"), "page") or 1, 1)
    refresh = int_param(q.get("refresh"), "refresh")
    refresh = 10 if refresh is None else refresh
    sort_by = q.get("sort_by") or None
    flt = TaskFilter(state=q.get("state"), name=q.get("name") or None,
                     search=q.get("search") or None)
    records = get_status(request).recent(pages=request.app.state.pages, since=since)
    names = sorted({r.name for r in records if r.name})
    try:
        shown = sort_records([r for r in records if flt.matches(r)], sort_by)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    pages = max(1, math.ceil(len(shown) / per_page))
    page = min(page, pages)
    window = shown[(page - 1) * per_page: page * per_page]

    params = {"state": q.get("state"), "name": q.get("name"), "since": since_text,
              "search": q.get("search"), "per_page": per_page, "refresh": refresh,
              "sort_by": sort_by}
    form = (
        '<form class="filters" method="get" action="/tasks">'
        f'<label>State<select name="state">{_options(STATE_CHOICES, q.get("state") or "All")}'
        "</select></label>"
        f'<label>Task name<select name="name"><option value="">All</option>'
        f'{_options(names, q.get("name") or "")}</select></label>'
        f'<label>Since<input name="since" placeholder="10m, 2h, 1d or 2024-05-01T12:00" '
        f'value="{e(since_text)}"></label>'
        f'<label>Search<input type="search" name="search" placeholder="id, name, recipient, '
        f'subject, state:FAILURE" value="{e(q.get("search") or "")}"></label>'
        f'<label>Per page<select name="per_page">{_options(PER_PAGE_CHOICES, per_page)}'
        "</select></label>"
        f'<label>Auto-refresh (s)<select name="refresh">{_options(REFRESH_CHOICES, refresh)}'
        "</select></label>"
        '<button type="submit" class="act">Apply</button>'
        '<a href="/tasks">Reset</a></form>'
    )

    def sort_link(key: str, text: str) -> Safe:
        target = f"-{key}" if sort_by == key else key
        return link("/tasks?" + query({**params, "sort_by": target}), text)

    headers = ["Name", "UUID", "State", "Recipient", "Subject", "Received", "Started",
               "Next delivery", "Retries", "Response"]
    rows = [
        [e(r.name), link(f"/tasks/{r.task_id}", r.task_id), badge(r.state), e(r.recipient),
         e(r.subject), fmt_time(r.created), fmt_time(r.started), fmt_time(r.next_delivery),
         e(r.retries), e(r.response_status)]
        for r in window
    ]
    sortable = ("name", "state", "received", "started")
    head = Safe(
        '<table class="tasks"><thead><tr>'
        + "".join(
            f"<th>{sort_link(h.lower(), h) if h.lower() in sortable else e(h)}</th>"
            for h in headers
        )
        + "</tr></thead><tbody>"
        + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
        + "</tbody></table>"
    )
    listing = head if rows else Safe('<p class="empty">No task matches.</p>')
    first = (page - 1) * per_page + 1 if shown else 0
    last = (page - 1) * per_page + len(window)
    nav = [f"<span>Showing {first}&ndash;{last} of {len(shown)}</span>"]
    if page > 1:
        nav.append(str(link("/tasks?" + query({**params, "page": page - 1}), "« Previous")))
    nav.append(f"<span>Page {page} of {pages}</span>")
    if page < pages:
        nav.append(str(link("/tasks?" + query({**params, "page": page + 1}), "Next »")))
    pager = f'<div class="pager">{"".join(nav)}</div>'
    body = f"<h1>Tasks</h1>{form}{pager}{listing}{pager}"
    return HTMLResponse(layout("Tasks", body, here="tasks", refresh=refresh or None))


def _timeline_rows(request: Request, record: TaskRecord) -> list[list[Any]]:
    rows = []
    for ev in record.events:
        state = str(ev.get("state", ""))
        when = int(ev["time"]) / 1000 if ev.get("time") else None
        nxt = int(ev["nextDeliveryTime"]) / 1000 if ev.get("nextDeliveryTime") else None
        rows.append([fmt_time(when), Safe(f"<code>{e(state)}</code>"),
                     badge(celery_state(state)), e(ev.get("messageId")),
                     e(ev.get("responseStatus")),
                     e(_clean(request, ev.get("error"))), fmt_time(nxt)])
    return rows


@page_errors
def task_page(request: Request) -> Response:
    """One task: summary, request (secrets redacted), AutoSend's answer, the event timeline."""
    task_id = request.path_params["task_id"]
    record = get_status(request).task(task_id)
    if record is None:
        body = (f'<h1>Unknown task</h1><p class="error">No QStash event is labelled '
                f"{e(task_id)}.</p>")
        return HTMLResponse(layout("Unknown task", body, here="tasks"), status_code=404)
    notice = ""
    if request.query_params.get("revoked"):
        notice = '<p class="notice">Revoke requested: QStash will not deliver this message.</p>'
    elif request.query_params.get("error"):
        notice = f'<p class="error">{e(request.query_params["error"])}</p>'
    header = next((ev.get("header") for ev in record.events if ev.get("header")), None)
    method = next((ev.get("method") for ev in record.events if ev.get("method")), None)
    summary = _kv([
        ("UUID", Safe(f"<code>{e(record.task_id)}</code>")),
        ("Name", e(record.name)),
        ("State", Safe(f"{badge(record.state)} <code>{e(record.qstash_state)}</code>")),
        ("QStash message", e(record.message_id)),
        ("Received", fmt_time(record.created)),
        ("Started", fmt_time(record.started)),
        ("Last event", fmt_time(record.updated)),
        ("Next delivery", fmt_time(record.next_delivery)),
        ("Retries", e(record.retries)),
        ("Queue", e(record.queue)),
    ])
    request_kv = _kv([
        ("Destination", e(f"{method or 'POST'} {safe_url(record.url)}")),
        ("Recipient", e(record.recipient)),
        ("Subject", e(record.subject)),
    ])
    headers = redact_headers(header)
    header_table = table(["Header", "Value"], sorted(headers.items()),
                         empty="No headers recorded.")
    response = Safe(
        f"<p>Status: {e(record.response_status)}</p>{pretty(_clean(request, record.response))}"
        if record.response_status is not None or record.response is not None
        else '<p class="empty">No response yet.</p>'
    )
    error = ""
    if record.state in (states.FAILURE, states.RETRY):
        error = f'<p class="error">{e(_clean(request, record.error_message))}</p>'
    revoke = ""
    if record.state not in states.READY_STATES:
        revoke = (f'<form method="post" action="/tasks/{e(record.task_id)}/revoke">'
                  '<button type="submit" class="danger" id="revoke">Revoke</button></form>')
    timeline = table(["Time", "QStash state", "Celery state", "Message", "Response", "Error",
                      "Next delivery"], _timeline_rows(request, record), cls="timeline")
    callbacks = ""
    if record.callbacks:
        # Apart from the task's state: a failed callback does not unsend the email.
        rows = [[e(c.kind), e(safe_url(c.url)), badge(c.state),
                 Safe(f"<code>{e(c.qstash_state)}</code>"), e(c.response_status),
                 e(_clean(request, c.error)), e(c.message_id), fmt_time(c.updated)]
                for c in record.callbacks]
        callbacks = ('<h2 id="callbacks">Callbacks</h2><p>The link / link_error calls QStash '
                     "made after the task's attempts. Their outcome does not change the "
                     "task's state.</p>"
                     + str(table(["Kind", "URL", "State", "QStash state", "Response", "Error",
                                  "Message", "Last event"], rows, cls="callbacks")))
    body = (
        f"<h1>{e(record.name or 'Task')} {badge(record.state)}</h1>{notice}{revoke}"
        f"<h2>Summary</h2>{summary}<h2>Request</h2>{request_kv}{header_table}"
        f"<h2>AutoSend's response</h2>{error}{response}{callbacks}"
        f'<h2 id="timeline">Event timeline</h2>{timeline}'
    )
    refresh = None if record.ready else 10
    return HTMLResponse(layout(f"Task {record.task_id}", body, here="tasks", refresh=refresh))


def _kv(items: list[tuple[str, Safe]]) -> Safe:
    return Safe('<dl class="kv">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in items)
                + "</dl>")


@page_errors
def task_revoke(request: Request) -> Response:
    """The revoke button: cancel the task's message, then back to its page."""
    task_id = request.path_params["task_id"]
    target = f"/tasks/{task_id}"
    try:
        get_status(request).revoke_task(task_id)
    except NotFound as exc:
        return RedirectResponse(f"{target}?{urlencode({'error': str(exc)})}", status_code=303)
    return RedirectResponse(f"{target}?revoked=1", status_code=303)


@page_errors
def dlq_page(request: Request) -> Response:
    """Dead letters: tasks whose retries ran out, with Retry and Delete buttons."""
    cursor = request.query_params.get("cursor") or None
    entries, next_cursor = get_status(request).dlq(count=100, cursor=cursor)
    done = request.query_params.get("done")
    notice = f'<p class="notice">{e(done)}</p>' if done else ""
    if request.query_params.get("error"):
        notice = f'<p class="error">{e(request.query_params["error"])}</p>'
    rows = []
    for d in entries:
        actions = Safe(
            f'<form class="inline" method="post" action="/dlq/{e(d.dlq_id)}/retry">'
            f'<button type="submit" class="act">Retry</button></form> '
            f'<form class="inline" method="post" action="/dlq/{e(d.dlq_id)}/delete">'
            f'<button type="submit" class="danger">Delete</button></form>'
        )
        # A failed callback is not a failed email: say which, so nobody resends an email
        # that was delivered.
        what = (Safe(f'<span class="badge callback">{e(d.what)}</span> '
                     f"to {e(safe_url(d.url))}: not the email (its own state is on the "
                     "task's page)")
                if d.is_callback else e(d.what))
        rows.append([e(d.dlq_id), what, link(f"/tasks/{d.task_id}", d.task_id), e(d.name),
                     e(d.recipient), e(d.subject), fmt_time(d.failed), e(d.response_status),
                     e(_clean(request, d.error_message)), actions])
    listing = table(["DLQ id", "What failed", "Task", "Name", "Recipient", "Subject", "Failed",
                     "Status", "Error", ""], rows, empty="The dead letter queue is empty.",
                    cls="dlq")
    more = (str(link("/dlq?" + query({"cursor": next_cursor}), "Next page »"))
            if next_cursor else "")
    body = f"<h1>Dead letters</h1>{notice}{listing}<p>{more}</p>"
    return HTMLResponse(layout("Dead letters", body, here="dlq"))


def _dlq_action(request: Request, action: str) -> Response:
    dlq_id = request.path_params["dlq_id"]
    status = get_status(request)
    try:
        if action == "retry":
            message_id = status.dlq_retry(dlq_id)
            done = f"Retried {dlq_id} as message {message_id}."
        else:
            status.dlq_delete(dlq_id)
            done = f"Deleted {dlq_id}."
    except NotFound as exc:
        return RedirectResponse("/dlq?" + urlencode({"error": str(exc)}), status_code=303)
    return RedirectResponse("/dlq?" + urlencode({"done": done}), status_code=303)


@page_errors
def dlq_retry(request: Request) -> Response:
    """The Retry button: republish the dead letter, then back to the DLQ page."""
    return _dlq_action(request, "retry")


@page_errors
def dlq_delete(request: Request) -> Response:
    """The Delete button: drop the dead letter, then back to the DLQ page."""
    return _dlq_action(request, "delete")


@page_errors
def queues_page(request: Request) -> Response:
    """QStash queues and how many messages wait in each."""
    rows = [[e(q.name), e(q.messages), e(q.parallelism), e("paused" if q.paused else "active")]
            for q in get_status(request).queues()]
    listing = table(["Queue", "Messages waiting", "Parallelism", "State"], rows,
                    empty="No QStash queue: tasks without a queue option are published directly.")
    return HTMLResponse(layout("Queues", f"<h1>Queues</h1>{listing}", here="queues"))
