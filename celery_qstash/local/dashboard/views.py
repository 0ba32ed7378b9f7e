"""The dashboard's HTML pages: tasks, one task and dead letters (queues and schedules
are in :mod:`.queues`).

Every page reads QStash through :class:`~celery_qstash.status.StatusClient` on
each request (no local state), escapes every value it shows
(:mod:`.html`), and never shows a secret: request headers go through
:func:`~celery_qstash.status.redact_headers`, and any text that came from
upstream is scrubbed of the configured secrets. Actions (revoke, retry, DLQ
retry and delete, queue pause and resume) are plain form POSTs that redirect
back: no script is needed, or allowed. Destructive ones (revoke, delete) act
only with ``confirm=yes``; without it they answer a page asking to confirm, so a
stray POST (or a double click) destroys nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode

from celery import states
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ...errors import scrub
from ...status import (
    DlqEntry,
    NotFound,
    TaskFilter,
    TaskRecord,
    parse_since,
    redact_headers,
    safe_url,
    sort_records,
)
from ...status.attempts import human_duration, steps
from .common import BadRequest, email_fate_of, get_status, int_param, page_errors
from .html import (
    Safe,
    badge,
    cell,
    chart,
    confirm,
    e,
    fmt_time,
    id_link,
    layout,
    link,
    pretty,
    query,
    rel_time,
    state_class,
    table,
    task_path,
)

__all__ = [
    "dlq_bulk", "dlq_delete", "dlq_page", "dlq_retry", "task_page", "task_revoke", "tasks_page",
]

STATE_CHOICES = ("All", states.PENDING, states.STARTED, states.RETRY, states.SUCCESS,
                 states.FAILURE, states.REVOKED)
PER_PAGE_CHOICES = (10, 25, 50, 100)
REFRESH_CHOICES = (0, 5, 10, 30, 60)
#: Chart bucket sizes to choose from (seconds): the smallest that covers the span in 30.
_BUCKETS = (1, 2, 5, 10, 30, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
_MAX_FORM = 256 * 1024


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


def _now(request: Request) -> float:
    return float(request.app.state.clock.now())


def _refresh(request: Request, default: int = 10) -> int | None:
    """How often a page updates in place (``?refresh=`` seconds; ``0``: never)."""
    refresh = int_param(request.query_params.get("refresh"), "refresh")
    return (default if refresh is None else refresh) or None


def _notice(request: Request) -> str:
    """The notice the redirect's token names (``serving.Notices``): never URL text."""
    found = request.app.state.notices.get(request.query_params.get("notice"))
    if found is None:
        return ""
    kind, text = found
    return f'<p class="{"error" if kind == "error" else "notice"}">{e(text)}</p>'


def _told(request: Request, target: str, text: str, kind: str = "done") -> RedirectResponse:
    """Back to ``target``, which will say ``text``."""
    token = request.app.state.notices.add(text, kind)
    return RedirectResponse(target + ("&" if "?" in target else "?") + urlencode(
        {"notice": token}), status_code=303)


# -- the tasks list -------------------------------------------------------------------


def _task_rows(request: Request, records: Sequence[TaskRecord]) -> list[list[Safe]]:
    now = _now(request)
    rows = []
    for r in records:
        due = rel_time(r.next_delivery, now) if r.next_delivery else e(None)
        rows.append([
            id_link(task_path(r.task_id), r.task_id),
            Safe(f'<a href="/tasks?{e(query({"name": r.name}))}" title="{e(r.name)}">'
                 f"{e(r.name)}</a>"),
            badge(r.state),
            Safe(f'<span title="{e(r.recipient)}">{e(r.recipient)}</span>'),
            Safe(f'<span title="{e(r.subject)}">{e(r.subject)}</span>'),
            rel_time(r.created, now),
            due,
            e(r.retries),
            e(r.response_status),
        ])
    return rows


#: (header, width, sort key) of the tasks table: fixed widths so nothing scrolls sideways.
_TASK_COLUMNS = (
    ("ID", "9%", None), ("Name", "16%", "name"), ("State", "8%", "state"),
    ("Recipient", "17%", None), ("Subject", "22%", None), ("Received", "8%", "received"),
    ("Due", "8%", None), ("Retries", "6%", None), ("Status", "6%", None),
)


def _task_table(request: Request, records: Sequence[TaskRecord],
                sort_link: Callable[[str, str], Safe] | None = None,
                empty: str = "No task matches.") -> Safe:
    if not records:
        return Safe(f'<p class="empty">{e(empty)}</p>')
    cols = "".join(f'<col style="width:{w}">' for _, w, _ in _TASK_COLUMNS)
    heads = "".join(
        f'<th class="{"num" if h in ("Retries", "Status") else ""}">'
        f"{sort_link(key, h) if sort_link and key else e(h)}</th>"
        for h, _, key in _TASK_COLUMNS
    )
    # On a phone each row is a card; the HTTP status and the retry count are left out there.
    body = "".join(
        "<tr>" + "".join(
            cell(h, c, "num lo" if i >= 7 else "") for i, ((h, _, _), c)
            in enumerate(zip(_TASK_COLUMNS, row, strict=True))
        ) + "</tr>"
        for row in _task_rows(request, records)
    )
    return Safe(f'<table class="tasks"><colgroup>{cols}</colgroup><thead><tr>{heads}</tr>'
                f"</thead><tbody>{body}</tbody></table>")


def _counts(records: Sequence[TaskRecord], params: dict[str, Any], current: str) -> Safe:
    """Per-state counts; each one is a link that filters the list by that state."""
    tally = {s: 0 for s in STATE_CHOICES[1:]}
    for r in records:
        tally[r.state] = tally.get(r.state, 0) + 1
    cards = [("All", len(records)), *tally.items()]
    out = []
    for state, n in cards:
        on = " on" if (current or "All").upper() == state.upper() else ""
        kind = "" if state == "All" else f" {state_class(state)}"
        href = "/tasks?" + query({**params, "state": None if state == "All" else state,
                                  "page": None})
        out.append(f'<a class="count{on}{kind}" href="{e(href)}" data-state="{e(state)}">'
                   f"<b>{n}</b><span>{e(state.title())}</span></a>")
    return Safe(f'<div class="counts">{"".join(out)}</div>')


def _throughput(records: Sequence[TaskRecord], now: float) -> Safe:
    """Delivered and failed tasks over time (by when they finished), as an SVG bar chart."""
    done = [(r.updated, r.state) for r in records
            if r.updated is not None and r.state in (states.SUCCESS, states.FAILURE)]
    if not done:
        return Safe('<figure class="chart"><figcaption>No delivered or failed task yet.'
                    "</figcaption></figure>")
    # Always 30 bars ending now; each as wide as it takes for the oldest to fit.
    oldest = min(t for t, _ in done)
    count = 30
    size = next((b for b in _BUCKETS if b * count >= now - oldest), _BUCKETS[-1])
    start = (math.floor(now / size) - count + 1) * size
    buckets = [[start + i * size, 0, 0] for i in range(count)]
    for t, state in done:
        i = int((t - start) // size)
        if 0 <= i < count:
            buckets[i][1 if state == states.SUCCESS else 2] += 1
    ok = sum(b[1] for b in buckets)
    bad = sum(b[2] for b in buckets)
    caption = (f'<span class="legend"><i style="background:#3f9b5a"></i>{ok} delivered'
               f'<i style="background:#d0453a"></i>{bad} failed</span> '
               f"&middot; per {e(f'{size} s' if size < 60 else human_duration(size))}")
    svg = chart([(float(b[0]), int(b[1]), int(b[2])) for b in buckets], float(size))
    return Safe(f'<figure class="chart" style="margin:0">{svg}<figcaption>{caption}'
                "</figcaption></figure>")


@page_errors
def tasks_page(request: Request) -> Response:
    """Tasks: counts, a throughput chart, filters (state, name, time, text), a compact list."""
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
    everything = get_status(request).recent(pages=request.app.state.pages, since=since)
    names = sorted({r.name for r in everything if r.name})
    # Counts and the chart follow every filter but the state (they are how you pick one).
    unstated = [r for r in everything if TaskFilter(
        name=q.get("name") or None, search=q.get("search") or None).matches(r)]
    flt = TaskFilter(state=q.get("state"))
    try:
        shown = sort_records([r for r in unstated if flt.matches(r)], sort_by)
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
        f'<label>Since<input name="since" placeholder="10m, 2h, 1d, ISO" '
        f'title="10m, 2h, 1d or an ISO time like 2024-05-01T12:00 (UTC)" '
        f'value="{e(since_text)}"></label>'
        f'<label>Search<input type="search" name="search" placeholder="id, name, recipient, '
        f'subject, state:FAILURE" value="{e(q.get("search") or "")}"></label>'
        f'<label>Per page<select name="per_page">{_options(PER_PAGE_CHOICES, per_page)}'
        "</select></label>"
        f'<label>Refresh (s)<select name="refresh">{_options(REFRESH_CHOICES, refresh)}'
        "</select></label>"
        '<button type="submit" class="act">Apply</button>'
        '<a href="/tasks">Reset</a></form>'
    )

    def sort_link(key: str, text: str) -> Safe:
        target = f"-{key}" if sort_by == key else key
        return link("/tasks?" + query({**params, "sort_by": target}), text)

    filtered = any(q.get(k) for k in ("state", "name", "since", "search"))
    listing = _task_table(request, window, sort_link, empty="No task matches." if filtered else
                          "No task yet: call .delay() on a QStash task and it appears here "
                          "within seconds.")
    first = (page - 1) * per_page + 1 if shown else 0
    last = (page - 1) * per_page + len(window)
    nav = [f"<span>Showing {first}&ndash;{last} of {len(shown)}</span>"]
    if page > 1:
        nav.append(str(link("/tasks?" + query({**params, "page": page - 1}), "« Previous")))
    nav.append(f"<span>Page {page} of {pages}</span>")
    if page < pages:
        nav.append(str(link("/tasks?" + query({**params, "page": page + 1}), "Next »")))
    pager = f'<div class="pager">{"".join(nav)}</div>'
    counts = _counts(unstated, params, q.get("state") or "")
    summary = (f'<div class="summary" id="live-summary" data-live><h1>Tasks</h1>{counts}'
               f"{_throughput(unstated, _now(request))}</div>")
    # The filter form is not live: what is typed there survives every update.
    body = f'{summary}{form}<div id="live-list" data-live>{pager}{listing}{pager}</div>'

    return HTMLResponse(layout("Tasks", body, here="tasks", refresh=refresh or None))


# -- one task -------------------------------------------------------------------------


def _timeline(request: Request, record: TaskRecord) -> Safe:
    heads = ("Time", "+Δ", "Attempt", "QStash state", "Celery state", "Duration", "Response",
             "AutoSend said", "Next delivery")
    rows = []
    for step in steps(record):
        said = step.message if step.failed else None
        if step.state == "DELIVERED" and isinstance(step.response, dict):
            data = step.response.get("data")
            said = data.get("emailId") if isinstance(data, dict) else None
            said = f"sent: {said}" if said else None
        cls = "tl-fail" if step.failed else "tl-ok" if step.state == "DELIVERED" else ""
        delta = "+" + human_duration(step.delta) if step.delta is not None else None
        took = human_duration(step.duration) if step.duration is not None else None
        cells = (fmt_time(step.time), e(delta), e(step.attempt),
                 Safe(f"<code>{e(step.state)}</code>"), badge(step.celery_state), e(took),
                 e(step.response_status), e(_clean(request, said)),
                 fmt_time(step.next_delivery))
        rows.append(f'<tr class="{cls}">' + "".join(
            cell(h, c, "num" if h in ("+Δ", "Attempt", "Duration") else "")
            for h, c in zip(heads, cells, strict=True)) + "</tr>")
    return Safe('<table class="timeline"><thead><tr>'
                + "".join(f"<th>{e(h)}</th>" for h in heads)
                + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _dlq_id(record: TaskRecord) -> str | None:
    """The dead letter a failed task left (QStash names it on the FAILED event)."""
    if record.state != states.FAILURE:
        return None
    for event in reversed(record.events):
        if event.get("dlqId"):
            return str(event["dlqId"])
    return None


@page_errors
def task_page(request: Request) -> Response:
    """One task: actions, summary, request (secrets redacted), AutoSend's answer, timeline."""
    task_id = request.path_params["task_id"]
    record = get_status(request).task(task_id)
    if record is None:
        body = (f'<h1>Unknown task</h1><p class="error">No QStash event is labelled '
                f"{e(task_id)}.</p>")
        return HTMLResponse(layout("Unknown task", body, here="tasks"), status_code=404)
    notice = _notice(request)
    if request.query_params.get("revoked"):
        notice = '<p class="notice">Revoke requested: QStash will not deliver this message.</p>'
    header = next((ev.get("header") for ev in record.events if ev.get("header")), None)
    method = next((ev.get("method") for ev in record.events if ev.get("method")), None)
    dlq_id = _dlq_id(record)
    inbox = request.app.state.inbox_url
    actions: list[str] = []
    if record.state not in states.READY_STATES:
        actions.append(confirm(f"{task_path(record.task_id)}/revoke", "Revoke",
                               "QStash will not deliver it.", button_id="revoke"))
    if dlq_id:
        back = query({"next": task_path(record.task_id)})
        actions.append(f'<form class="inline" method="post" action="/dlq/{e(dlq_id)}/retry?'
                       f'{e(back)}"><button type="submit" class="act" id="retry">Retry</button>'
                       "</form>")
        target = f"/dlq?{query({'q': record.task_id})}#dlq-{dlq_id}"
        actions.append(f'<a id="dlq-link" href="{e(target)}">Its dead letter</a>')
    if inbox and record.state == states.SUCCESS:
        actions.append(f'<a class="button" id="inbox-link" href="{e(inbox)}/inbox?'
                       f'{e(query({"key": record.task_id}))}">Email in the inbox</a>')
    if record.name:
        actions.append(str(link("/tasks?" + query({"name": record.name}),
                                f"All {record.name} tasks")))
    queue = (link(f"/queues/{record.queue}", record.queue) if record.queue else e(None))
    summary = _kv([
        ("UUID", Safe(f'<code class="sel" title="Click to select">{e(record.task_id)}</code>')),
        ("Name", e(record.name)),
        ("State", Safe(f"{badge(record.state)} <code>{e(record.qstash_state)}</code>")),
        ("QStash message", Safe(f'<code class="sel">{e(record.message_id)}</code>')),
        ("Received", fmt_time(record.created)),
        ("Started", fmt_time(record.started)),
        ("Last event", fmt_time(record.updated)),
        ("Next delivery", fmt_time(record.next_delivery)),
        ("Retries", e(record.retries)),
        ("Queue", queue),
        ("Dead letter", e(dlq_id)),
    ])
    request_kv = _kv([
        ("Destination", e(f"{method or 'POST'} {safe_url(record.url)}")),
        # A deferred task (its body ran on the receiver) has arguments, not an email.
        *([("Arguments", e(repr(tuple(record.args)))),
           ("Keyword arguments", e(repr(record.kwargs)))] if record.args is not None else
          [("Recipient", e(record.recipient)), ("Subject", e(record.subject))]),
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
    callbacks = _email_events(request, record)
    if record.callbacks:
        # Apart from the task's state: a failed callback does not unsend the email.
        rows = [[e(c.kind), e(safe_url(c.url)), badge(c.state),
                 Safe(f"<code>{e(c.qstash_state)}</code>"), e(c.response_status),
                 e(_clean(request, c.error)), e(c.message_id), fmt_time(c.updated)]
                for c in record.callbacks]
        callbacks += ('<h2 id="callbacks">Callbacks</h2><p>The link / link_error calls QStash '
                     "made after the task's attempts. Their outcome does not change the "
                     "task's state.</p>"
                     + str(table(["Kind", "URL", "State", "QStash state", "Response", "Error",
                                  "Message", "Last event"], rows, cls="callbacks")))
    body = (
        '<div id="live-task" data-live>'
        f"<h1>{e(record.name or 'Task')} {badge(record.state)}</h1>{notice}"
        f'<div class="actions">{"".join(actions)}</div>'
        f"<h2>Summary</h2>{summary}"
        f'<h2 id="timeline">Event timeline</h2>{_timeline(request, record)}'
        f"<h2>Request</h2>{request_kv}{header_table}"
        f"<h2>AutoSend's response</h2>{error}{response}{callbacks}</div>"
    )
    refresh = None if record.ready else 10
    return HTMLResponse(layout(f"Task {record.task_id}", body, here="tasks", refresh=refresh))


def _email_events(request: Request, record: TaskRecord) -> str:
    """AutoSend's webhook events about the task's email, newest fate first."""
    fate = email_fate_of(request, record)
    if fate is None:
        return ""
    detail = ": ".join(x for x in (fate.get("bounce_type"), fate.get("reason")) if x)
    counts = ", ".join(f"{n} {k}" for k, n in (fate.get("emails") or {}).items())
    rows = [[e(ev["timestamp"]), Safe(f"<code>{e(ev['event'])}</code>"), e(ev["recipient"]),
             e(": ".join(x for x in (ev["bounce_type"], ev["reason"]) if x) or None)]
            for ev in fate.get("events") or ()]
    return (f'<h2 id="email-events">The email after AutoSend</h2><p id="email-fate">'
            f"<strong>{e(fate['fate'])}</strong> at {e(fate['timestamp'])}"
            + (f" ({e(detail)})" if detail else "") + (f"; {e(counts)}" if counts else "")
            + "</p>" + (str(table(["Time (UTC)", "Event", "Recipient", "Detail"], rows,
                                  cls="email-events")) if rows else ""))


def _kv(items: list[tuple[str, Safe]]) -> Safe:
    return Safe('<dl class="kv">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in items)
                + "</dl>")


def _confirm_page(title: str, question: str, action: str, cancel: str,
                  fields: Sequence[tuple[str, str]] = (), label: str = "Yes") -> HTMLResponse:
    """The no-script confirm step: the same POST again, now with ``confirm=yes``."""
    hidden = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in fields)
    target = action + ("&" if "?" in action else "?") + "confirm=yes"
    body = (f'<h1>{e(title)}</h1><div class="card"><p>{e(question)}</p>'
            f'<form method="post" action="{e(target)}">{hidden}'
            f'<button type="submit" class="danger" id="confirm">{e(label)}</button> '
            f'<a class="button" href="{e(cancel)}">Cancel</a></form></div>')
    return HTMLResponse(layout(title, body))


def _confirmed(request: Request) -> bool:
    return request.query_params.get("confirm") == "yes"


@page_errors
def task_revoke(request: Request) -> Response:
    """Revoke: cancel the task's message (after the confirm step), then back to its page."""
    task_id = request.path_params["task_id"]
    target = task_path(task_id)
    if not _confirmed(request):
        return _confirm_page("Revoke this task?", f"Revoke task {task_id}? QStash will cancel "
                             "its message and the email will not be sent.",
                             f"{target}/revoke", target, label="Yes, revoke")
    try:
        get_status(request).revoke_task(task_id)
    except NotFound as exc:
        return RedirectResponse(f"{target}?{urlencode({'error': str(exc)})}", status_code=303)
    return RedirectResponse(f"{target}?revoked=1", status_code=303)


# -- dead letters ---------------------------------------------------------------------


def _dlq_matches(request: Request, d: DlqEntry, text: str, status: str) -> bool:
    if status and str(d.response_status or "") != status:
        return False
    if not text:
        return True
    hay = " ".join(str(x) for x in (d.dlq_id, d.task_id, d.message_id, d.name, d.recipient,
                                    d.subject, d.response_status, d.error_message, d.what)
                   if x)
    return all(word in hay.lower() for word in text.lower().split())


@page_errors
def dlq_page(request: Request) -> Response:
    """Dead letters: a filter, Retry and Delete per entry, and bulk retry/delete."""
    q = request.query_params
    cursor = q.get("cursor") or None
    text, status_filter = (q.get("q") or "").strip(), (q.get("status") or "").strip()
    entries, next_cursor = get_status(request).dlq(count=100, cursor=cursor)
    shown = [d for d in entries if _dlq_matches(request, d, text, status_filter)]
    back = "/dlq?" + query({"q": text, "status": status_filter})
    now = _now(request)
    rows = []
    for d in shown:
        actions = Safe(
            f'<form class="inline" method="post" action="/dlq/{e(d.dlq_id)}/retry?'
            f'{e(query({"next": back}))}"><button type="submit" class="act">Retry</button></form> '
            + confirm(f"/dlq/{d.dlq_id}/delete?{query({'next': back})}", "Delete",
                      "Gone for good.")
        )
        # A failed callback is not a failed email: say which, so nobody resends an email
        # that was delivered.
        what = (f' <span class="badge warn" title="{e(d.what)} to {e(safe_url(d.url))} '
                f'failed; the email&#39;s own state is on the task&#39;s page">{e(d.what)}, '
                "not the email</span>") if d.is_callback else ""
        error = _clean(request, d.error_message)
        rows.append(
            f'<tr id="dlq-{e(d.dlq_id)}">'
            f'<td data-label="Select"><input type="checkbox" name="id" value="{e(d.dlq_id)}" '
            f'form="bulk" aria-label="select {e(d.dlq_id)}"></td>'
            f'<td data-label="Task">{id_link(task_path(d.task_id), d.task_id)}{what}</td>'
            f'<td data-label="Name" title="{e(d.name)}">{e(d.name)}</td>'
            f'<td data-label="Recipient" title="{e(d.recipient)}">{e(d.recipient)}</td>'
            f'<td data-label="Subject" title="{e(d.subject)}">{e(d.subject)}</td>'
            f'<td data-label="Failed">{rel_time(d.failed, now)}</td>'
            f'<td data-label="Status">{e(d.response_status)}</td>'
            f'<td data-label="Error" title="{e(error)}">{e(error)}</td>'
            f'<td class="acts">{actions}</td></tr>'
        )
    widths = ("3%", "10%", "14%", "15%", "17%", "8%", "5%", "14%", "14%")
    heads = ("", "Task", "Name", "Recipient", "Subject", "Failed", "Status", "Error", "")
    if rows:
        listing = Safe(
            '<table class="dlq"><colgroup>'
            + "".join(f'<col style="width:{w}">' for w in widths) + "</colgroup><thead><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in heads) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>"
        )
    elif entries:
        listing = Safe('<p class="empty">No dead letter matches the filter.</p>')
    else:
        listing = Safe('<p class="empty">The dead letter queue is empty.</p>')
    all_ids = "".join(f'<input type="hidden" name="all" value="{e(d.dlq_id)}">' for d in shown)
    bulk = (
        f'<form id="bulk" class="actions" method="post" action="/dlq/bulk?'
        f'{e(query({"next": back}))}">{all_ids}'
        '<button type="submit" name="action" value="retry" class="act">Retry selected</button>'
        '<button type="submit" name="action" value="delete" class="plain">Delete selected'
        "</button>"
        f'<button type="submit" name="action" value="retry-all" class="act">'
        f"Retry all {len(shown)} shown</button>"
        f'<button type="submit" name="action" value="delete-all" class="plain">'
        f"Delete all {len(shown)} shown</button></form>"
    ) if shown else ""
    form = (
        '<form class="filters" method="get" action="/dlq">'
        f'<label>Filter<input type="search" name="q" placeholder="task id, name, recipient, '
        f'error" value="{e(text)}" style="width:17rem"></label>'
        f'<label>Status<input name="status" placeholder="500" value="{e(status_filter)}" '
        'style="width:5rem"></label><button type="submit" class="act">Apply</button>'
        '<a href="/dlq">Reset</a></form>'
    )
    more = (str(link("/dlq?" + query({"cursor": next_cursor, "q": text,
                                      "status": status_filter}), "Next page »"))
            if next_cursor else "")
    count = f"{len(shown)} of {len(entries)}" if len(shown) != len(entries) else f"{len(shown)}"
    # The filter form is not live (what is typed there stays); the entries and the bulk
    # form that names them update together, unless a box is checked or a confirm is open.
    body = (f'<h1>Dead letters <span class="badge muted" id="live-count" data-live>{e(count)}'
            f"</span></h1>{_notice(request)}{form}"
            f'<div id="live-dlq" data-live>{bulk}{listing}<p>{more}</p></div>')
    return HTMLResponse(layout("Dead letters", body, here="dlq", refresh=_refresh(request)))


def _back(request: Request, default: str) -> str:
    """Where to go after an action: a local path only (never another site)."""
    target = request.query_params.get("next") or default
    ok = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if ok else default


def _dlq_action(request: Request, action: str) -> Response:
    dlq_id = request.path_params["dlq_id"]
    back = _back(request, "/dlq")
    status = get_status(request)
    if action == "delete" and not _confirmed(request):
        return _confirm_page("Delete this dead letter?", f"Delete dead letter {dlq_id}? "
                             "It cannot be retried afterwards.",
                             f"/dlq/{dlq_id}/delete?{query({'next': back})}", back,
                             label="Yes, delete")
    try:
        if action == "retry":
            message_id = status.dlq_retry(dlq_id)
            done = f"Retried {dlq_id} as message {message_id}."
        else:
            status.dlq_delete(dlq_id)
            done = f"Deleted {dlq_id}."
    except NotFound as exc:
        return _told(request, back, str(exc), "error")
    return _told(request, back, done)


@page_errors
def dlq_retry(request: Request) -> Response:
    """The Retry button: republish the dead letter, then back (the DLQ or the task page)."""
    return _dlq_action(request, "retry")


@page_errors
def dlq_delete(request: Request) -> Response:
    """The Delete button: drop the dead letter (after the confirm step), then back."""
    return _dlq_action(request, "delete")


async def _form(request: Request) -> dict[str, list[str]]:
    """A urlencoded form body (bounded; nothing else is accepted)."""
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise BadRequest("form too large")
    try:
        return parse_qs(body.decode("utf-8"), max_num_fields=2000)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form could not be read") from None


async def dlq_bulk(request: Request) -> Response:
    """Bulk retry or delete: the checked entries, or every entry the filter shows."""
    try:
        fields = await _form(request)
    except BadRequest as exc:
        return HTMLResponse(layout("Error 400", f'<p class="error">{e(exc)}</p>'), 400)
    handler = page_errors(lambda req: _dlq_bulk(req, fields))
    return await run_in_threadpool(handler, request)


def _dlq_bulk(request: Request, fields: dict[str, list[str]]) -> Response:
    back = _back(request, "/dlq")
    action = (fields.get("action") or [""])[0]
    if action not in ("retry", "delete", "retry-all", "delete-all"):
        raise BadRequest("action must be retry, delete, retry-all or delete-all")
    ids = list(dict.fromkeys(fields.get("all" if action.endswith("-all") else "id") or []))
    if not ids:
        return _told(request, back, "Nothing selected.", "error")
    verb = action.split("-")[0]
    if verb == "delete" and not _confirmed(request):
        return _confirm_page(
            f"Delete {len(ids)} dead letters?",
            f"Delete {len(ids)} dead letter{'s' if len(ids) != 1 else ''}? They cannot be "
            "retried afterwards.", f"/dlq/bulk?{query({'next': back})}", back,
            [("action", action), *(("all" if action.endswith("-all") else "id", i) for i in ids)],
            label=f"Yes, delete {len(ids)}",
        )
    status = get_status(request)
    done = missing = 0
    for dlq_id in ids:
        try:
            status.dlq_retry(dlq_id) if verb == "retry" else status.dlq_delete(dlq_id)
            done += 1
        except NotFound:
            missing += 1
    text = f"{'Retried' if verb == 'retry' else 'Deleted'} {done} dead letter" \
           f"{'s' if done != 1 else ''}."
    if missing:
        text += f" {missing} no longer existed."
    return _told(request, back, text)
