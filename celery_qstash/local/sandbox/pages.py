"""The sandbox inbox as HTML: the list, one email in tabs, and the refused requests.

Every value printed here came from a client, so every value goes through
:func:`html.escape` (``quote=True``), attributes included. The captured HTML body
is shown only as the ``srcdoc`` of an ``<iframe sandbox>``: escaped once for the
attribute, it renders as the email would, and with no scripts, forms or access
to this page.

The one script is the sandbox's own ``/live.js`` (the CSP allows nothing else): live
refresh updates the list in place (:mod:`celery_qstash.local.live`; without JavaScript a
``<noscript><meta http-equiv="refresh">`` reloads the page; ``?refresh=0`` turns it
off), the tabs are links, and "clear all" is confirmed in a ``<details>`` before its
form can be sent. The
forms that delete carry the sandbox's page token (see :mod:`.api`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from ...redaction import redact_headers
from ..live import body_attrs
from ..live import head as live_head
from .store import Message

__all__ = [
    "PER_PAGE", "REFRESH", "TABS", "WIDTHS", "InboxView", "bad_request", "forbidden", "inbox",
    "message", "mime_source", "not_found", "rejected",
]

PER_PAGE = 50
REFRESH = 5  # seconds between reloads of the list (live refresh), 0 = off
TABS = ("html", "text", "source", "headers", "request")
WIDTHS = {"desktop": "100%", "mobile": "375px"}

_STYLE = """
*{box-sizing:border-box}
body{font:13px/1.45 system-ui,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:.5rem 1rem;display:flex;gap:1.2rem;
align-items:center}
header a{color:#d0d7de;text-decoration:none}header a.brand{color:#fff;font-weight:700}
header a.here{color:#fff;font-weight:600}header .live{margin-left:auto;font-size:12px}
main{padding:.8rem 1rem}
h1{font-size:1.2rem;margin:.2rem 0 .6rem}
a{color:#0969da}
table{border-collapse:collapse;width:100%;background:#fff;table-layout:fixed}
th,td{text-align:left;padding:.3rem .55rem;border-bottom:1px solid #d0d7de;vertical-align:top;
white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
th{background:#f6f8fa}tr:hover td{background:#f3f8ff}
td.subject a{font-weight:600;color:#1f2328;text-decoration:none}
td.subject .snippet{color:#656d76}table.rejected td.reason{white-space:normal}
a.pill.warn{border-color:#fb8f44;background:#fff1e5}
.badge{display:inline-block;padding:0 .45rem;border-radius:1rem;font-size:11px;
background:#fff8c5;border:1px solid #d4a72c}
.b400,.b409{background:#fff1e5;border-color:#fb8f44}.b401{background:#ffebe9;border-color:#ff8182}
.b429{background:#fff8c5;border-color:#d4a72c}.bchaos{background:#fbefff;border-color:#c297ff}
.muted{color:#656d76}
.bar{display:flex;gap:.6rem;align-items:center;flex-wrap:wrap;margin:.4rem 0 .7rem}
.bar form{display:flex;gap:.4rem;align-items:center}
input,button{font:inherit;padding:.25rem .45rem}input[type=search]{width:22rem}
button{cursor:pointer;border:1px solid #d0d7de;border-radius:.3rem;background:#fff}
button.primary{background:#1f883d;color:#fff;border-color:#1f883d}
button.danger{background:#cf222e;color:#fff;border-color:#cf222e}
.pill{display:inline-block;border:1px solid #d0d7de;border-radius:.3rem;padding:.2rem .6rem;
background:#fff;text-decoration:none;color:#1f2328}
.pill.off{color:#8c959f;pointer-events:none}
details.confirm{display:inline-block}details.confirm summary{list-style:none;cursor:pointer}
details.confirm summary::-webkit-details-marker{display:none}
details.confirm .ask{display:inline-flex;gap:.4rem;align-items:center;margin-left:.4rem;
background:#ffebe9;border:1px solid #ff8182;border-radius:.3rem;padding:.15rem .5rem}
nav.tabs{display:flex;gap:.2rem;border-bottom:1px solid #d0d7de;margin:.8rem 0 0}
nav.tabs a{padding:.35rem .8rem;border:1px solid transparent;border-bottom:0;
border-radius:.3rem .3rem 0 0;text-decoration:none;color:#1f2328}
nav.tabs a.here{background:#fff;border-color:#d0d7de;margin-bottom:-1px;font-weight:600}
.panel{background:#fff;border:1px solid #d0d7de;border-top:0;padding:.8rem}
pre{background:#f6f8fa;padding:.8rem;overflow:auto;white-space:pre-wrap;margin:0}
iframe{height:32rem;border:1px solid #d0d7de;background:#fff;display:block;margin:auto}
dl.headers{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0}
dl.headers dt{font-weight:600}dl.headers dd{margin:0}
.card{background:#fff;border:1px solid #d0d7de;border-radius:.4rem;padding:.7rem .9rem}
.notice{background:#ddf4ff;border:1px solid #54aeff;border-radius:.3rem;padding:.4rem .8rem}
iframe{max-width:100%}dl.headers dd{overflow-wrap:anywhere;min-width:0}
@media (max-width:700px){
header{flex-wrap:wrap;gap:.25rem .9rem;padding:.5rem .7rem}main{padding:.5rem .6rem}
.bar form{flex-wrap:wrap;width:100%}input[type=search]{width:auto;flex:1 1 12rem;min-width:0}
table,tbody,tr,td{display:block}thead,colgroup{display:none}table{background:none}
tr{background:#fff;border:1px solid #d0d7de;border-radius:.4rem;margin:.4rem 0;
padding:.3rem .6rem}
td{display:flex;gap:.5rem;border:0;padding:.08rem 0;white-space:normal;
overflow-wrap:anywhere;min-width:0}
td[data-label]::before{content:attr(data-label);flex:0 0 4.6rem;color:#656d76;
font-size:11px;padding-top:.12rem}
td:empty{display:none}td.subject{display:block}td.subject a{display:block}
nav.tabs{flex-wrap:wrap}nav.tabs a{padding:.3rem .55rem}
.panel{padding:.5rem}dl.headers{grid-template-columns:minmax(4rem,max-content) minmax(0,1fr)}
pre{overflow-wrap:anywhere}
}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _address(address: dict[str, Any] | None) -> str:
    if not address:
        return ""
    name = address.get("name")
    return f"{name} <{address['email']}>" if name else str(address["email"])


def _addresses(addresses: Iterable[dict[str, Any]] | None) -> str:
    return ", ".join(_address(a) for a in addresses or ())


def _layout(title: str, body: str, *, here: str = "", refresh: int = 0,
            live: str = "") -> str:
    nav = "".join(
        f'<a href="{href}" class="{"here" if key == here else ""}">{text}</a>'
        for key, href, text in (("inbox", "/inbox", "Inbox"), ("rejected", "/rejected",
                                                                 "Rejected"))
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{live_head(refresh)}<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f'<body{body_attrs(refresh)}><header>'
        f'<a class="brand" href="/inbox">AutoSend sandbox</a>{nav}{live}</header>'
        f"<main>{body}</main></body></html>"
    )


def _test_badge(msg: Message) -> str:
    return ' <span class="badge">test</span>' if msg.get("test") else ""


def _subject(msg: Message) -> str:
    subject = msg.get("renderedSubject") or msg.get("subject")
    if subject is None and msg.get("templateId"):
        subject = f"(template {msg['templateId']})"
    return str(subject or "(no subject)")


def _snippet(msg: Message) -> str:
    """The start of the text body, as Mailpit shows under a subject."""
    text = msg.get("renderedText")
    if text is None and msg.get("renderedHtml") is not None:
        text = re.sub(r"<[^>]*>", " ", str(msg["renderedHtml"]))
    return " ".join(str(text or "").split())[:120]


def _when(stamp: Any) -> str:
    """AutoSend's ISO time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    text = str(stamp or "")
    return text.replace("T", " ")[:19] + " UTC" if len(text) >= 19 else text


@dataclass(frozen=True)
class InboxView:
    """What the list page shows (one page of a search)."""

    total: int
    messages: list[Message]
    page: int = 1
    search: str = ""
    key: str = ""
    refresh: int = REFRESH
    token: str = ""
    rejected: int = 0
    done: str = ""


def _query(**params: Any) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "", 1) or k == "refresh"})


def inbox(view: InboxView) -> str:
    """The list page: search, live refresh, paging, clear all; newest first."""
    params = {"q": view.search, "key": view.key}
    if view.refresh != REFRESH:
        params["refresh"] = str(view.refresh)
    live_on = view.refresh > 0
    toggle = _query(**{**params, "refresh": 0 if live_on else REFRESH})
    live = (f'<a class="live" id="live" href="/inbox?{_e(toggle)}" title="reloads every '
            f'{view.refresh or REFRESH} s">{"● Live" if live_on else "○ Live off"}</a>')
    search = (
        '<form class="search" method="get" action="/inbox">'
        f'<input type="search" name="q" value="{_e(view.search)}" '
        'placeholder="Search to, from, subject, text" aria-label="Search">'
        + (f'<input type="hidden" name="refresh" value="{view.refresh}">'
           if view.refresh != REFRESH else "")
        + '<button type="submit" class="primary">Search</button>'
        + (f'<span class="pill" id="key-filter">Task {_e(view.key)}</span>' if view.key else "")
        + ('<a class="pill" href="/inbox">Clear search</a>' if view.search or view.key else "")
        + "</form>"
    )
    clear = (
        '<details class="confirm"><summary class="pill" id="clear-all">Clear all…</summary>'
        '<span class="ask">Delete every captured email?'
        '<form method="post" action="/inbox/clear">'
        f'<input type="hidden" name="token" value="{_e(view.token)}">'
        '<input type="hidden" name="confirm" value="yes">'
        '<button type="submit" class="danger" id="clear-confirm">Yes, delete all</button>'
        "</form></span></details>"
    ) if view.total and not (view.search or view.key) else ""
    rejected = (f'<a class="pill warn" href="/rejected">Rejected: {view.rejected}</a>'
                if view.rejected else "")
    pages = max(1, -(-view.total // PER_PAGE))
    first = (view.page - 1) * PER_PAGE + 1 if view.messages else 0
    last = (view.page - 1) * PER_PAGE + len(view.messages)
    prev_href = f"/inbox?{_query(**params, page=view.page - 1)}"
    next_href = f"/inbox?{_query(**params, page=view.page + 1)}"
    pager = (
        f'<span class="muted">{first}&ndash;{last} of {view.total}</span> '
        + (f'<a class="pill" id="newer-page" href="{_e(prev_href)}">« Newer</a>'
           if view.page > 1 else "")
        + (f'<a class="pill" id="older-page" href="{_e(next_href)}">Older »</a>'
           if view.page < pages else "")
    )
    notice = f'<p class="notice">{_e(view.done)}</p>' if view.done else ""
    # The search form is not live: what is typed there survives every update.
    bar = (f'<div class="bar">{search}<span id="live-pager" data-live>{pager}</span>'
           f'{clear}<span id="live-rejected" data-live>{rejected}</span></div>')
    if not view.messages:
        if view.search or view.key:
            empty = '<p class="muted">No email matches.</p>'
        else:
            empty = ('<p class="muted">No emails captured yet. '
                     "POST to <code>/v1/mails/send</code> or <code>/v1/mails/bulk</code>.</p>")
        return _layout("AutoSend sandbox inbox",
                       f'<h1>Inbox</h1>{notice}{bar}<div id="live-list" data-live>{empty}</div>',
                       here="inbox", refresh=view.refresh, live=live)
    rows = []
    for msg in view.messages:
        link = f"/inbox/{_e(quote(msg['id'], safe=''))}"
        # data-label: on a phone each row is a card, each cell under its column's name.
        rows.append(
            "<tr>"
            f'<td class="muted" data-label="Received" title="{_e(msg["createdAt"])}">'
            f'{_e(_when(msg["createdAt"]))}</td>'
            f'<td data-label="From" title="{_e(_address(msg["from"]))}">'
            f'{_e(_address(msg["from"]))}</td>'
            f'<td data-label="To" title="{_e(_address(msg["to"]))}">{_e(_address(msg["to"]))}</td>'
            f'<td class="subject"><a href="{link}">{_e(_subject(msg))}</a>{_test_badge(msg)}'
            f' <span class="snippet">{_e(_snippet(msg))}</span></td>'
            f'<td class="muted" data-label="Batch">{_e(msg.get("batchId") or "")}</td>'
            "</tr>"
        )
    body = (
        f"<h1>Inbox</h1>{notice}{bar}"
        '<div id="live-list" data-live>'
        '<table class="inbox"><colgroup><col style="width:12rem"><col style="width:18%">'
        '<col style="width:18%"><col><col style="width:7rem"></colgroup>'
        "<thead><tr><th>Received</th><th>From</th><th>To</th><th>Subject</th>"
        "<th>Batch</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        f'<div class="bar">{pager}</div></div>'
        '<p class="muted">JSON: <a href="/api/v1/messages">/api/v1/messages</a></p>'
    )
    return _layout("AutoSend sandbox inbox", body, here="inbox", refresh=view.refresh, live=live)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _header_rows(msg: Message) -> list[tuple[str, Any]]:
    return [
        ("From", _address(msg["from"])),
        ("To", _address(msg["to"])),
        ("Cc", _addresses(msg.get("cc"))),
        ("Bcc", _addresses(msg.get("bcc"))),
        ("Reply-To", _address(msg.get("replyTo"))),
        ("Subject", msg.get("renderedSubject")),
        (
            "Subject template",
            msg.get("subject") if msg.get("subject") != msg.get("renderedSubject") else None,
        ),
        ("Template", msg.get("templateId")),
        ("Categories", ", ".join(msg.get("categories") or ())),
        ("Scheduled at", msg.get("scheduledAt")),
        ("Campaign", msg.get("campaignName")),
        ("Unsubscribe group", msg.get("unsubscribeGroupId")),
        ("Attachments", ", ".join(a["fileName"] for a in msg.get("attachments") or ())),
        ("Email ID", msg.get("emailId")),
        ("Batch ID", msg.get("batchId")),
        ("Idempotency key", msg.get("idempotencyKey")),
        ("Received", _when(msg.get("createdAt"))),
        ("Endpoint", msg.get("endpoint")),
    ]


def mime_source(msg: Message) -> str:
    """The email as an RFC 5322 message (what AutoSend would hand to a mail server)."""
    mime = EmailMessage()
    try:
        mime["From"] = formataddr((msg["from"].get("name") or "", msg["from"]["email"]))
        mime["To"] = formataddr((msg["to"].get("name") or "", msg["to"]["email"]))
        if msg.get("cc"):
            mime["Cc"] = ", ".join(formataddr((a.get("name") or "", a["email"]))
                                   for a in msg["cc"])
        if msg.get("replyTo"):
            mime["Reply-To"] = formataddr((msg["replyTo"].get("name") or "",
                                           msg["replyTo"]["email"]))
        mime["Subject"] = str(msg.get("renderedSubject") or "")
        created = datetime.fromisoformat(str(msg["createdAt"]).replace("Z", "+00:00"))
        mime["Date"] = format_datetime(created)
        mime["Message-ID"] = f"<{msg['id']}@sandbox.autosend.local>"  # stable across views
        if msg.get("idempotencyKey"):
            mime["X-Idempotency-Key"] = str(msg["idempotencyKey"])
        text, html = msg.get("renderedText"), msg.get("renderedHtml")
        if text is not None:
            mime.set_content(str(text))
            if html is not None:
                mime.add_alternative(str(html), subtype="html")
        elif html is not None:
            mime.set_content(str(html), subtype="html")
        return mime.as_string()
    except (ValueError, TypeError, KeyError) as exc:  # a header the email package refuses
        return f"(cannot be shown as MIME: {exc})"


def _tab_link(msg_id: str, tab: str, current: str, label: str) -> str:
    here = ' class="here"' if tab == current else ""
    return (f'<a{here} id="tab-{tab}" href="/inbox/{_e(quote(msg_id, safe=""))}?tab={tab}">'
            f"{label}</a>")


def _events(events: list[dict[str, Any]] | None) -> str:
    """The email's webhook events: what AutoSend would tell the app, and how that went."""
    if events is None:
        return ""
    if not events:
        return '<p class="muted" id="events">No webhook events.</p>'
    rows = "".join(
        f"<tr><td>{_e(ev['createdAt'])}</td><td><code>{_e(ev['event'])}</code></td>"
        f"<td>{_e(ev['state'])}</td><td>{_e(ev['attempts'])}</td>"
        f"<td>{_e(ev['lastStatus'] if ev['lastStatus'] is not None else ev['lastError'] or '')}"
        "</td></tr>" for ev in events)
    return ('<h3 id="events">Webhook events</h3><table class="events"><thead><tr><th>Time</th>'
            "<th>Event</th><th>Webhook</th><th>Attempts</th><th>Last answer</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _shown_request(request: Any) -> Any:
    """The request as received, its custom headers' credentials redacted (the one rule of
    :mod:`celery_qstash.redaction`: an ``X-Api-Key`` header is not for the inbox)."""
    if isinstance(request, dict) and isinstance(request.get("headers"), dict):
        return {**request, "headers": redact_headers(request["headers"])}
    return request


#: A URL of another host in an email's HTML: an image, a stylesheet, a font, a link.
_REMOTE_URL = re.compile(r"(?i)(?:https?:)?//[a-z0-9\[]")


def _remote_switch(msg: Message, quoted: str, width: str, remote: bool) -> str:
    """The "load remote content" switch of one email, when its HTML names another host."""
    if not _REMOTE_URL.search(str(msg.get("renderedHtml") or "")):
        return ""
    here = f"/inbox/{quoted}?tab=html&amp;width={_e(width)}"
    if remote:
        return (f'<p class="muted" id="remote-bar">Remote images, styles and fonts are '
                f'loaded. <a id="remote-off" href="{here}">Block them</a></p>')
    return (f'<p class="muted" id="remote-bar">Remote images, styles and fonts are blocked '
            f'(a tracking pixel would fire from this browser). <a id="remote-on" '
            f'href="{here}&amp;remote=1">Load remote content</a></p>')


def message(msg: Message, *, tab: str = "html", width: str = "desktop",
            newer: str | None = None, older: str | None = None, token: str = "",
            dashboard_url: str | None = None, remote: bool = False,
            events: list[dict[str, Any]] | None = None) -> str:
    """One email: a summary, its webhook events, tabs (HTML at desktop or mobile width,
    Text, Source, Headers, Request), newer/older links, Delete, and a link to its task on
    the dashboard. ``remote``: the reader asked to load this email's remote images, CSS
    and fonts (the page's CSP blocks them otherwise; the bar above the preview switches)."""
    msg_id = str(msg["id"])
    quoted = _e(quote(msg_id, safe=""))
    summary = [
        ("From", _address(msg["from"])), ("To", _address(msg["to"])),
        ("Cc", _addresses(msg.get("cc"))), ("Subject", msg.get("renderedSubject")),
        ("Received", _when(msg.get("createdAt"))),
    ]
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in summary if v)
    links = []
    for rel, target, label in (("newer", newer, "« Newer"), ("older", older, "Older »")):
        if target:
            links.append(f'<a class="pill" id="{rel}" rel="{"prev" if rel == "newer" else "next"}"'
                         f' href="/inbox/{_e(quote(target, safe=""))}?tab={_e(tab)}">'
                         f"{label}</a>")
        else:
            links.append(f'<span class="pill off">{label}</span>')
    key = msg.get("idempotencyKey")
    if dashboard_url and key:
        links.append(f'<a class="pill" id="task-link" href="{_e(dashboard_url.rstrip("/"))}'
                     f'/tasks/{_e(quote(str(key), safe=""))}">Task on the dashboard</a>')
    links.append(
        f'<form method="post" action="/inbox/{quoted}/delete">'
        f'<input type="hidden" name="token" value="{_e(token)}">'
        '<button type="submit" class="danger" id="delete">Delete</button></form>'
    )
    tabs = "".join(_tab_link(msg_id, t, tab, label) for t, label in (
        ("html", "HTML"), ("text", "Text"), ("source", "Source"), ("headers", "Headers"),
        ("request", "Request")))
    if tab == "html":
        if msg.get("renderedHtml") is not None:
            sizes = " ".join(
                f'<a class="pill{" off" if w == width else ""}" id="width-{w}" '
                f'href="/inbox/{quoted}?tab=html&amp;width={w}">{w.title()}</a>'
                for w in WIDTHS
            )
            # srcdoc holds a whole document; escaping it once is what the attribute needs.
            panel = (f'<div class="bar">{sizes}</div>'
                     f'{_remote_switch(msg, quoted, width, remote)}'
                     f'<iframe sandbox title="HTML body" class="{_e(width)}" '
                     f'style="width:{WIDTHS[width]}" srcdoc="{_e(msg["renderedHtml"])}"></iframe>')
        else:
            panel = '<p class="muted">This email has no HTML part.</p>'
    elif tab == "text":
        panel = (f"<pre>{_e(msg['renderedText'])}</pre>" if msg.get("renderedText") is not None
                 else '<p class="muted">This email has no text part.</p>')
    elif tab == "source":
        panel = f'<pre class="source">{_e(mime_source(msg))}</pre>'
    elif tab == "headers":
        rows_all = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>"
                           for k, v in _header_rows(msg) if v)
        panel = f'<dl class="headers">{rows_all}</dl>'
    else:
        panel = (f"<h3>Dynamic data</h3><pre>{_e(_json(msg.get('dynamicData') or {}))}</pre>"
                 f"<h3>Request</h3><pre>{_e(_json(_shown_request(msg.get('request'))))}</pre>")
    if msg.get("renderedHtml") is None and msg.get("renderedText") is None and tab in (
            "html", "text"):
        panel = ('<p class="muted">Sent with a stored template; the sandbox does not have '
                 "AutoSend's templates, so there is no body to show.</p>")
    body = (
        f"<h1>{_e(msg.get('renderedSubject') or '(no subject)')}{_test_badge(msg)}</h1>"
        f'<div class="bar">{"".join(links)}</div>'
        f'<div class="card"><dl class="headers">{rows}</dl></div>'
        f"{_events(events)}"
        f'<nav class="tabs">{tabs}</nav><div class="panel">{panel}</div>'
        f'<p class="muted">JSON: <a href="/api/v1/messages/{quoted}">'
        f"/api/v1/messages/{_e(msg_id)}</a></p>"
    )
    title = f"{msg.get('renderedSubject') or '(no subject)'} - AutoSend sandbox"
    return _layout(title, body, here="inbox")


def rejected(total: int, rows: list[dict[str, Any]], *, page: int = 1,
             dashboard_url: str | None = None) -> str:
    """The mail requests the sandbox refused (400, 401, 409, 429, chaos), newest first."""
    lines = []
    for r in rows:
        key = r.get("idempotencyKey")
        task = _e(key)
        if dashboard_url and key:
            task = (f'<a href="{_e(dashboard_url.rstrip("/"))}/tasks/'
                    f'{_e(quote(str(key), safe=""))}" title="{_e(key)}">{_e(key)}</a>')
        at = r.get("at")
        stamp = (datetime.fromtimestamp(float(at), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
                 if isinstance(at, (int, float)) else "")
        kind = str(r.get("kind") or "")
        cls = "bchaos" if kind == "chaos" else f"b{_e(r.get('status'))}"
        lines.append(
            "<tr>"
            f'<td class="muted" data-label="When">{_e(stamp)}</td>'
            f'<td data-label="Status"><span class="badge {cls}">{_e(r.get("status"))} '
            f"{_e(kind)}</span></td>"
            f'<td class="reason" data-label="Reason">{_e(r.get("reason"))}</td>'
            f'<td data-label="To" title="{_e(r.get("to"))}">{_e(r.get("to"))}</td>'
            f'<td data-label="Subject" title="{_e(r.get("subject"))}">{_e(r.get("subject"))}</td>'
            f'<td data-label="Task">{task}</td>'
            f"<td class=\"muted\" data-label=\"Endpoint\">{_e(r.get('endpoint'))}</td>"
            "</tr>"
        )
    pages = max(1, -(-total // PER_PAGE))
    nav = (
        (f'<a class="pill" href="/rejected?page={page - 1}">« Newer</a>' if page > 1 else "")
        + (f'<a class="pill" href="/rejected?page={page + 1}">Older »</a>' if page < pages
           else "")
    )
    if lines:
        listing = (
            '<table class="rejected"><colgroup><col style="width:12rem"><col style="width:9rem">'
            '<col><col style="width:15%"><col style="width:15%"><col style="width:13%">'
            '<col style="width:8rem"></colgroup><thead><tr><th>When</th><th>Status</th>'
            "<th>Reason</th><th>To</th><th>Subject</th><th>Task (Idempotency-Key)</th>"
            "<th>Endpoint</th></tr></thead><tbody>" + "".join(lines) + "</tbody></table>"
        )
    else:
        listing = '<p class="muted">No request has been refused.</p>'
    body = (f"<h1>Rejected requests <span class=\"muted\">({total})</span></h1>"
            '<p class="muted">Mail requests the sandbox refused: validation (400), missing or '
            "unknown key (401), idempotency conflict (409), rate limit (429) and failures "
            "injected with <code>/api/v1/chaos</code>.</p>"
            f'{listing}<div class="bar">{nav}</div>')
    return _layout("Rejected - AutoSend sandbox", body, here="rejected")


def not_found(message_id: str) -> str:
    return _layout(
        "Not found - AutoSend sandbox",
        f"<h1>Not found</h1><p>No captured email with id <code>{_e(message_id)}</code>.</p>",
    )


def bad_request(errors: list[dict[str, str]]) -> str:
    items = "".join(f"<li><code>{_e(e.get('field'))}</code>: {_e(e.get('message'))}</li>"
                    for e in errors)
    return _layout("Bad request - AutoSend sandbox", f"<h1>Bad request</h1><ul>{items}</ul>")


def forbidden() -> str:
    return _layout("Forbidden - AutoSend sandbox",
                   "<h1>Forbidden</h1><p>This form is stale or came from another page: "
                   '<a href="/inbox">reload the inbox</a> and try again.</p>')
