"""The sandbox inbox as HTML: a list of captured emails and one page per email.

Every value printed here came from a client, so every value goes through
:func:`html.escape` (``quote=True``), attributes included. The captured HTML body
is shown only as the ``srcdoc`` of an ``<iframe sandbox>``: escaped once for the
attribute, it renders as the email would, and with no scripts, forms or access
to this page.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from html import escape
from typing import Any

from .store import Message

__all__ = ["INBOX_LIMIT", "inbox", "message", "not_found"]

INBOX_LIMIT = 200  # the page shows the newest ones; the JSON API pages through all

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1f2328; }
header { background: #24292f; color: #fff; padding: .6rem 1.2rem; }
header a { color: #fff; text-decoration: none; font-weight: 600; }
main { padding: 1rem 1.2rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #d0d7de;
         vertical-align: top; }
th { background: #f6f8fa; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 1rem; font-size: 12px;
         background: #fff8c5; border: 1px solid #d4a72c; }
.muted { color: #656d76; }
pre { background: #f6f8fa; padding: .8rem; overflow: auto; white-space: pre-wrap; }
iframe { width: 100%; height: 28rem; border: 1px solid #d0d7de; }
dl.headers { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dl.headers dt { font-weight: 600; }
dl.headers dd { margin: 0; }
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


def _layout(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        '<body><header><a href="/inbox">AutoSend sandbox</a></header>'
        f"<main>{body}</main></body></html>"
    )


def _test_badge(msg: Message) -> str:
    return ' <span class="badge">test</span>' if msg.get("test") else ""


def inbox(total: int, messages: list[Message]) -> str:
    """The list page: newest first, one row per captured email."""
    if not messages:
        body = (
            '<h1>Inbox</h1><p class="muted">No emails captured yet. '
            "POST to <code>/v1/mails/send</code> or <code>/v1/mails/bulk</code>.</p>"
        )
        return _layout("AutoSend sandbox inbox", body)
    rows = []
    for msg in messages:
        link = f"/inbox/{_e(msg['id'])}"
        subject = msg.get("renderedSubject") or msg.get("subject")
        if subject is None and msg.get("templateId"):
            subject = f"(template {msg['templateId']})"
        rows.append(
            "<tr>"
            f'<td class="muted">{_e(msg["createdAt"])}</td>'
            f"<td>{_e(_address(msg['from']))}</td>"
            f"<td>{_e(_address(msg['to']))}</td>"
            f'<td><a href="{link}">{_e(subject or "(no subject)")}</a>{_test_badge(msg)}</td>'
            f'<td class="muted">{_e(msg.get("batchId") or "")}</td>'
            "</tr>"
        )
    shown = f"newest {len(messages)} of {total}" if total > len(messages) else f"{total}"
    body = (
        f'<h1>Inbox <span class="muted">({_e(shown)})</span></h1>'
        "<table><thead><tr><th>Received</th><th>From</th><th>To</th><th>Subject</th>"
        "<th>Batch</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        '<p class="muted">JSON: <a href="/api/v1/messages">/api/v1/messages</a></p>'
    )
    return _layout("AutoSend sandbox inbox", body)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def message(msg: Message) -> str:
    """One email: its headers, rendered bodies, data and the request as received."""
    headers: list[tuple[str, Any]] = [
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
        ("Received", msg.get("createdAt")),
        ("Endpoint", msg.get("endpoint")),
    ]
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in headers if v)
    parts = [
        f"<h1>{_e(msg.get('renderedSubject') or '(no subject)')}{_test_badge(msg)}</h1>",
        f'<dl class="headers">{rows}</dl>',
    ]
    if msg.get("renderedHtml") is not None:
        # srcdoc holds a whole document; escaping it once is exactly what the attribute needs.
        parts.append(
            "<h2>HTML</h2>"
            f'<iframe sandbox title="HTML body" srcdoc="{_e(msg["renderedHtml"])}"></iframe>'
        )
    if msg.get("renderedText") is not None:
        parts.append(f"<h2>Text</h2><pre>{_e(msg['renderedText'])}</pre>")
    if msg.get("renderedHtml") is None and msg.get("renderedText") is None:
        parts.append(
            '<p class="muted">Sent with a stored template; the sandbox does not have '
            "AutoSend's templates, so there is no body to show.</p>"
        )
    parts.append(f"<h2>Dynamic data</h2><pre>{_e(_json(msg.get('dynamicData') or {}))}</pre>")
    parts.append(f"<h2>Request</h2><pre>{_e(_json(msg.get('request')))}</pre>")
    parts.append(
        f'<p class="muted">JSON: <a href="/api/v1/messages/{_e(msg["id"])}">'
        f"/api/v1/messages/{_e(msg['id'])}</a></p>"
    )
    title = f"{msg.get('renderedSubject') or '(no subject)'} - AutoSend sandbox"
    return _layout(title, "".join(parts))


def not_found(message_id: str) -> str:
    return _layout(
        "Not found - AutoSend sandbox",
        f"<h1>Not found</h1><p>No captured email with id <code>{_e(message_id)}</code>.</p>",
    )
