"""HTML building blocks for the dashboard's pages: the layout, and escaping by default.

There is no template engine (jinja2 is not a dependency): pages are Python
f-strings, and every value reaches them through :func:`e` (or a helper built on
it), which escapes with :func:`html.escape`. Markup that is already safe is
wrapped in :class:`Safe` so it is not escaped twice. The one script is the app's own
``/live.js`` (live updates in place); the Content-Security-Policy allows nothing else:
no inline script, no other origin, no eval.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from celery import states

from ...clock import utc_moment
from ...status.attempts import relative
from .. import live

__all__ = [
    "Safe", "badge", "chart", "confirm", "e", "fmt_time", "id_link", "layout", "link", "pretty",
    "query", "rel_time", "state_class", "table", "task_path", "utc_text",
]


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
    """Epoch seconds as ``YYYY-MM-DD HH:MM:SS UTC``, inside a ``<time>`` element."""
    if ts is None:
        return e(None)
    moment = utc_moment(ts)
    if moment is None:
        return e(utc_text(ts))
    return Safe(
        f'<time datetime="{e(moment.isoformat())}">'
        f'{e(moment.strftime("%Y-%m-%d %H:%M:%S"))} UTC</time>'
    )


def utc_text(ts: float) -> str:
    moment = utc_moment(ts)
    if moment is None:  # past the year 9999: the number as stored
        return f"{ts} (epoch seconds)"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def rel_time(ts: float | None, now: float) -> Safe:
    """``5m ago`` on one line; the absolute UTC time on hover (``title``) and in ``datetime``."""
    if ts is None:
        return e(None)
    moment = utc_moment(ts)
    if moment is None:
        return e(utc_text(ts))
    return Safe(
        f'<time datetime="{e(moment.isoformat())}" title="{e(utc_text(ts))}">'
        f"{e(relative(ts, now))}</time>"
    )


def task_path(task_id: str) -> str:
    """The task page's path. A task id may hold ``/``, ``?``, ``#``, ``%``... (any printable
    but space and comma), so it is percent-encoded whole; the routes take it as a path."""
    return "/tasks/" + quote(task_id, safe="")


def id_link(href: str, full_id: str) -> Safe:
    """A long id shown short: the cell truncates it with CSS, so hovering shows the whole id
    (``title``) and selecting or copying the link text copies all of it."""
    return Safe(f'<a class="id" href="{e(href)}" title="{e(full_id)}">{e(full_id)}</a>')


def confirm(action: str, label: str, question: str, *, button_id: str = "",
            cls: str = "danger") -> Safe:
    """A destructive action in two steps without any script: the first click opens a
    ``<details>`` that holds the real form (whose URL carries ``confirm=yes``)."""
    target = action + ("&" if "?" in action else "?") + "confirm=yes"
    ident = f' id="{e(button_id)}"' if button_id else ""
    return Safe(
        f'<details class="confirm"><summary{ident} class="button {e(cls)}" role="button">'
        f"{e(label)}</summary><span class=\"ask\">{e(question)}"
        f'<form class="inline" method="post" action="{e(target)}">'
        f'<button type="submit" class="{e(cls)}">Yes, {e(label.lower())}</button></form>'
        "</span></details>"
    )


def chart(buckets: Sequence[tuple[float, int, int]], width_s: float, *, width: int = 420,
          height: int = 56) -> Safe:
    """Delivered (green) and failed (red) tasks per time bucket, as an inline SVG.

    ``buckets`` are ``(start epoch, delivered, failed)``; every bar has a ``<title>``
    (the browser's tooltip), and the axis is labelled in UTC.
    """
    if not buckets:
        return Safe("")
    peak = max(max(ok + bad for _, ok, bad in buckets), 1)
    plot_h = height - 14
    slot = width / len(buckets)
    bars = []
    for i, (start, ok, bad) in enumerate(buckets):
        x = i * slot + 1
        w = max(slot - 2, 1)
        ok_h = plot_h * ok / peak
        bad_h = plot_h * bad / peak
        tip = (f"{utc_text(start)[11:16]}\u2013{utc_text(start + width_s)[11:16]} UTC: "
               f"{ok} delivered, {bad} failed")
        bars.append(
            f'<g><title>{e(tip)}</title>'
            f'<rect x="{x:.1f}" y="{plot_h - ok_h:.1f}" width="{w:.1f}" height="{ok_h:.1f}" '
            'fill="#3f9b5a"/>'
            f'<rect x="{x:.1f}" y="{plot_h - ok_h - bad_h:.1f}" width="{w:.1f}" '
            f'height="{bad_h:.1f}" fill="#d0453a"/>'
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{plot_h}" fill="transparent"/></g>'
        )
    first, last = buckets[0][0], buckets[-1][0] + width_s
    cut = slice(11, 19) if width_s < 60 else slice(5, 16)  # seconds only when they matter
    axis = (
        f'<line x1="0" y1="{plot_h + .5}" x2="{width}" y2="{plot_h + .5}" stroke="#c9ced8"/>'
        f'<text x="0" y="{height - 2}" font-size="10" fill="#555">'
        f"{e(utc_text(first)[cut])}</text>"
        f'<text x="{width}" y="{height - 2}" font-size="10" fill="#555" text-anchor="end">'
        f"{e(utc_text(last)[cut])} UTC</text>"
    )
    return Safe(
        f'<svg class="throughput" role="img" aria-label="Delivered and failed tasks over time" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(bars)}{axis}</svg>'
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
    "PAUSED": "warn",
    "ACTIVE": "ok",
}


def state_class(state: str) -> str:
    """The colour class of a Celery state (``ok``, ``bad``, ``warn``, ``muted``, ``info``)."""
    return _BADGE.get(state, "info")


def badge(state: str) -> Safe:
    return Safe(f'<span class="badge {state_class(state)}">{e(state)}</span>')


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
*{box-sizing:border-box}
body{font:13px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.45rem 1rem;display:flex;gap:1.2rem;
align-items:center}
header a{color:#cfd8ea;text-decoration:none}header a.here{color:#fff;font-weight:600}
header .brand{font-weight:700;margin-right:.5rem}header .utc{margin-left:auto;color:#9aa6bd}
main{padding:.7rem 1rem;max-width:100%}
h1{font-size:1.25rem;margin:.2rem 0 .5rem;display:flex;gap:.6rem;align-items:center}
h2{font-size:1rem;margin:1rem 0 .4rem}
a{color:#1d4f91}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.22rem .45rem;border-bottom:1px solid #e3e6ec;vertical-align:top}
th{background:#eef1f5;font-weight:600;white-space:nowrap}
table.tasks,table.dlq{table-layout:fixed}
table.tasks td,table.dlq td{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
table.tasks tr:hover td,table.dlq tr:hover td{background:#f3f6fb}
td.num,th.num{text-align:right}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
code.sel{user-select:all;background:#eef1f5;padding:0 .25rem;border-radius:.2rem}
a.id{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
pre{background:#fff;border:1px solid #e3e6ec;padding:.6rem;overflow:auto;max-height:24rem;
margin:.3rem 0}
.badge{display:inline-block;padding:0 .45rem;border-radius:.7rem;font-size:11px;
font-weight:600;line-height:1.5}
.ok{background:#d5f2dc;color:#14532d}.bad{background:#fbe0e0;color:#8a1c14}
.warn{background:#fdf0c8;color:#7a4b00}.muted{background:#e6e8ec;color:#444}
.info{background:#dde9fb;color:#1d4f91}
form.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin:.4rem 0}
form.filters label{display:flex;flex-direction:column;font-size:11px;color:#555}
input,select,button{font:inherit;padding:.2rem .35rem}
input[name=search]{width:17rem}input[name=since]{width:8rem}
button.danger{background:#b42318;color:#fff;border:0;border-radius:.25rem;padding:.3rem .7rem;
cursor:pointer}
button.act{background:#1d4f91;color:#fff;border:0;border-radius:.25rem;padding:.22rem .6rem;
cursor:pointer}
button.plain{background:#fff;border:1px solid #c9ced8;border-radius:.25rem;cursor:pointer}
summary.danger{background:#b42318;color:#fff;border:0}
.button{display:inline-block;border:1px solid #c9ced8;border-radius:.25rem;padding:.2rem .6rem;
background:#fff;text-decoration:none}
form.inline{display:inline}.pager{margin:.4rem 0;display:flex;gap:1rem;align-items:center;
font-size:12px;color:#444}
.notice{background:#dde9fb;padding:.45rem .8rem;border-radius:.25rem}
.error{background:#fbe0e0;padding:.45rem .8rem;border-radius:.25rem}
.empty{color:#666}dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;
margin:.3rem 0}
dl.kv dt{color:#555}dl.kv dd{margin:0}
.summary{display:flex;gap:1rem;align-items:stretch;flex-wrap:wrap;margin-bottom:.3rem}
.counts{display:flex;gap:.4rem;flex-wrap:wrap;align-items:center}
.count{display:flex;flex-direction:column;padding:.2rem .6rem;border-radius:.35rem;
text-decoration:none;min-width:4.6rem;border:1px solid #e3e6ec;background:#fff;color:#1d2330}
.count b{font-size:1.05rem}.count span{font-size:11px;color:#555}
.count.on{outline:2px solid #1d4f91}.count.ok{border-left:4px solid #3f9b5a}
.count.bad{border-left:4px solid #d0453a}.count.warn{border-left:4px solid #d9a406}
.count.muted{border-left:4px solid #9aa0aa}.count.info{border-left:4px solid #4a7fd0}
table.tasks a,table.dlq a{text-decoration:none}table.tasks a:hover,table.dlq a:hover{
text-decoration:underline}
.chart{background:#fff;border:1px solid #e3e6ec;border-radius:.35rem;padding:.15rem .4rem}
.chart figcaption{font-size:11px;color:#555}.chart svg{display:block}
.legend i{display:inline-block;width:.6rem;height:.6rem;margin:0 .2rem 0 .5rem;
border-radius:2px}
.actions{display:flex;gap:.5rem;align-items:center;margin:.3rem 0}
details.confirm{display:inline-block}details.confirm summary{list-style:none;cursor:pointer}
details.confirm summary::-webkit-details-marker{display:none}
details.confirm[open] summary{opacity:.6}
details.confirm .ask{display:inline-flex;gap:.4rem;align-items:center;margin-left:.4rem;
background:#fff4f2;border:1px solid #f1b7ae;border-radius:.25rem;padding:.15rem .5rem}
.card{background:#fff;border:1px solid #e3e6ec;border-radius:.35rem;padding:.5rem .8rem;
max-width:40rem}
.tl-fail td{background:#fff6f5}.tl-ok td{background:#f4fbf5}
"""

_NAV = (
    ("tasks", "/tasks", "Tasks"), ("dlq", "/dlq", "Dead letters"), ("queues", "/queues", "Queues")
)


def layout(title: str, body: str, *, here: str = "", refresh: int | None = None,
           prefix: str = "") -> str:
    """A whole page. ``refresh`` (seconds) updates its ``data-live`` regions in place
    (:mod:`celery_qstash.local.live`), or reloads it whole without JavaScript."""
    nav = "".join(
        f'<a href="{e(prefix + href)}" class="{"here" if key == here else ""}">{e(text)}</a>'
        for key, href, text in _NAV
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{e(title)} · celery-qstash</title>{live.head(refresh, prefix)}"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body{live.body_attrs(refresh)}>"
        f'<header><span class="brand">celery-qstash</span>{nav}'
        '<span class="utc">All times UTC</span></header>'
        f"<main>{body}</main></body></html>"
    )
