"""HTML building blocks for the dashboard's pages: the layout, and escaping by default.

There is no template engine (jinja2 is not a dependency): pages are Python
f-strings, and every value reaches them through :func:`e` (or a helper built on
it), which escapes with :func:`html.escape`. Markup that is already safe is
wrapped in :class:`Safe` so it is not escaped twice. The pages run no script at
all; the Content-Security-Policy set by the app forbids it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from celery import states

__all__ = ["Safe", "badge", "e", "fmt_time", "layout", "link", "pretty", "query", "table"]


class Safe(str):
    """Markup built from escaped parts; :func:`e` passes it through unchanged."""


def e(value: Any) -> Safe:
    """Escape anything for HTML text or a quoted attribute; ``None`` shows as a dash."""
    if isinstance(value, Safe):
        return value
    if value is None:
        return Safe("&mdash;")
    return Safe(html.escape(str(value), quote=True))


def fmt_time(ts: float | None) -> Safe:
    """Epoch seconds as ``YYYY-MM-DD HH:MM:SS`` UTC, inside a ``<time>`` element."""
    if ts is None:
        return e(None)
    moment = datetime.fromtimestamp(ts, timezone.utc)
    return Safe(
        f'<time datetime="{e(moment.isoformat())}">{e(moment.strftime("%Y-%m-%d %H:%M:%S"))}'
        "</time>"
    )


def pretty(value: Any) -> Safe:
    """A JSON value (an API response, say) as an escaped ``<pre>`` block."""
    if value is None:
        return e(None)
    text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
    return Safe(f"<pre>{e(text)}</pre>")


_BADGE = {
    states.SUCCESS: "ok",
    states.FAILURE: "bad",
    states.RETRY: "warn",
    states.REVOKED: "muted",
    states.STARTED: "info",
    states.PENDING: "info",
}


def badge(state: str) -> Safe:
    return Safe(f'<span class="badge {_BADGE.get(state, "info")}">{e(state)}</span>')


def query(params: Mapping[str, Any]) -> str:
    """A query string from the non-empty params (to build pagination and filter links)."""
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


def link(href: str, text: Any) -> Safe:
    return Safe(f'<a href="{e(href)}">{e(text)}</a>')


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], *, empty: str = "Nothing here.",
          cls: str = "") -> Safe:
    """A table; cells are escaped unless they are :class:`Safe`."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return Safe(f'<p class="empty">{e(empty)}</p>')
    return Safe(
        f'<table class="{e(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.5rem;
align-items:center}
header a{color:#cfd8ea;text-decoration:none}header a.here{color:#fff;font-weight:600}
header .brand{font-weight:700;color:#fff}
main{padding:1rem 1.2rem}h1{font-size:1.3rem;margin:.2rem 0 1rem}
h2{font-size:1.05rem;margin-top:1.6rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.35rem .55rem;border-bottom:1px solid #e3e6eb;vertical-align:top}
th{background:#eef1f5;font-weight:600}td code,pre{font:12px ui-monospace,monospace}
pre{background:#fff;border:1px solid #e3e6eb;padding:.6rem;overflow:auto;max-width:100%}
.badge{display:inline-block;padding:.05rem .45rem;border-radius:.6rem;font-size:12px;
font-weight:600}
.ok{background:#d9f2e1;color:#17643a}.bad{background:#fbe0e0;color:#9a1c1c}
.warn{background:#fdf0d2;color:#7a5200}.muted{background:#e6e6e6;color:#444}
.info{background:#dde9fb;color:#1d4f91}
form.filters{display:flex;flex-wrap:wrap;gap:.6rem;align-items:end;margin-bottom:1rem}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:#555}
input,select,button{font:inherit;padding:.25rem .4rem}
button.danger{background:#b42318;color:#fff;border:0;border-radius:.25rem;padding:.35rem .8rem}
button.act{background:#1d4f91;color:#fff;border:0;border-radius:.25rem;padding:.25rem .6rem}
form.inline{display:inline}.pager{margin:.8rem 0;display:flex;gap:1rem;align-items:center}
.notice{background:#dde9fb;padding:.5rem .8rem;border-radius:.25rem}
.error{background:#fbe0e0;padding:.5rem .8rem;border-radius:.25rem}
.empty{color:#666}dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}
dl.kv dt{color:#555}dl.kv dd{margin:0}
"""

_NAV = (
    ("tasks", "/tasks", "Tasks"), ("dlq", "/dlq", "Dead letters"), ("queues", "/queues", "Queues")
)


def layout(title: str, body: str, *, here: str = "", refresh: int | None = None,
           prefix: str = "") -> str:
    """A whole page. ``refresh`` (seconds) reloads it, without any script."""
    nav = "".join(
        f'<a href="{e(prefix + href)}" class="{"here" if key == here else ""}">{e(text)}</a>'
        for key, href, text in _NAV
    )
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{e(title)} · celery-qstash</title>{meta}"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body>"
        f'<header><span class="brand">celery-qstash</span>{nav}</header>'
        f"<main>{body}</main></body></html>"
    )
