"""Live pages without reloading them: what the dashboard and the sandbox inbox share.

A page that refreshes itself marks the parts that change with ``data-live`` (and an
``id``), puts :func:`head` in its ``<head>`` and :func:`body_attrs` on its ``<body>``.
``live.js`` (served at ``/live.js`` from the page's own origin, so the pages keep a
strict Content-Security-Policy: ``script-src 'self'``, no inline script) fetches the
page every period and swaps those regions in place, leaving typed text, an open
confirmation and the scroll position alone. Without JavaScript the page still
refreshes, whole, through ``<noscript><meta http-equiv="refresh">``.
"""

from __future__ import annotations

from functools import cache
from html import escape
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["SCRIPT_PATH", "body_attrs", "favicon", "head", "script"]

SCRIPT_PATH = "/live.js"


@cache
def _source() -> bytes:
    return files(__package__).joinpath("live.js").read_bytes()


async def script(request: Request) -> Response:
    """``GET /live.js``."""
    return Response(_source(), media_type="text/javascript; charset=utf-8",
                    headers={"Cache-Control": "max-age=3600"})


def head(refresh: int | None, prefix: str = "") -> str:
    """The ``<head>`` tags of a page refreshed every ``refresh`` seconds (none: nothing)."""
    if not refresh:
        return ""
    return (f'<noscript><meta http-equiv="refresh" content="{int(refresh)}"></noscript>'
            f'<script src="{escape(prefix + SCRIPT_PATH)}" defer></script>')


def body_attrs(refresh: int | None) -> str:
    """The ``<body>`` attribute ``live.js`` reads its period from."""
    return f' data-refresh="{int(refresh)}"' if refresh else ""


#: A 16x16 envelope, so a browser's ``/favicon.ico`` request is answered (not a 404 in
#: every server log) by an icon that tells the tabs apart from other local servers.
_FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<rect x="1" y="3" width="14" height="10" rx="1.5" fill="#1d2330"/>'
    b'<path d="M2 4.5l6 4.5 6-4.5" stroke="#fff" stroke-width="1.3" fill="none"/></svg>'
)


async def favicon(request: Request) -> Response:
    """``GET /favicon.ico``: an SVG (browsers take the type from the answer, not the name)."""
    return Response(_FAVICON, media_type="image/svg+xml",
                    headers={"Cache-Control": "max-age=86400"})
