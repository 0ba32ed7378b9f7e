"""The same-site guard every server of ours applies: a Host allow-list and cross-origin
refusal, as plain ASGI (no framework), so that ``celery-qstash serve`` in a production
install (uvicorn only) has the same guard as the ``[local]`` servers.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ALLOWED_HOSTS_ENV",
    "LOOPBACK_HOSTS",
    "SameSiteGuard",
    "is_loopback",
    "local_hosts",
    "send_text",
]

log = logging.getLogger("celery_qstash.guard")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Host names a browser uses for this machine.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Is ``host`` an address only this machine can reach?"""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: Extra ``Host`` names a server accepts (comma-separated): the names it is reached at
#: when bound off loopback, e.g. docker-compose service names.
ALLOWED_HOSTS_ENV = "CELERY_QSTASH_ALLOWED_HOSTS"


def local_hosts(bind_host: str) -> tuple[str, ...] | None:
    """The ``Host`` names to accept when bound to ``bind_host``.

    On loopback: this machine's names. Off loopback (a container binds 0.0.0.0): the names
    in ``CELERY_QSTASH_ALLOWED_HOSTS`` plus this machine's, or ``None`` (any) when it is
    unset. Set it wherever ports are published to a browser's machine: without a Host
    check, a DNS-rebinding page reaches the server as if it were on the same origin.
    """
    configured = tuple(
        name.strip().lower() for name in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",")
        if name.strip()
    )
    if not is_loopback(bind_host):
        return (*LOOPBACK_HOSTS, *configured) if configured else None
    return (*LOOPBACK_HOSTS, bind_host.strip("[]").lower(), *configured)


#: A ``Host`` header as RFC 9110 allows it: a name, an IPv4 address or a bracketed IPv6
#: address, and a port. No userinfo: ``evil.example@127.0.0.1`` is no host at all.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(:[0-9]{0,5})?")


def _host_name(value: str) -> str | None:
    """The host name of a ``Host`` header, lower-cased; None if it is not one."""
    if value and not _HOST.fullmatch(value):
        return None
    return (urlsplit("//" + value).hostname or "").lower()


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header (ASGI names are lower-case bytes)."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def send_text(send: Send, status: int, text: str) -> None:
    """A plain-text answer, sent on a bare ASGI ``send``."""
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class SameSiteGuard:
    """ASGI middleware for servers meant for this machine: a web page must not drive them.

    * ``Host`` must be one of ``allowed_hosts`` (when given): a DNS-rebinding page
      that resolves its own name to 127.0.0.1 gets 421;
    * a state-changing request (not GET/HEAD/OPTIONS) from another origin gets 403.
      Browsers send ``Origin``/``Sec-Fetch-Site`` on cross-site requests; SDKs, curl
      and test clients do not, so they are unaffected.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Sequence[str] | None = None) -> None:
        self.app = app
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = (_header(scope, b"host") or "").lower()
        name = _host_name(host)
        if name is None or (self.allowed_hosts is not None and name not in self.allowed_hosts):
            # Said once per refusal: behind a proxy that rewrites Host, this is why nothing
            # arrives (the name to add is in the line; the value is the client's, so cut).
            log.warning("refused a request for Host %r: not one of this server's names "
                        "(add it to %s)", host[:100], ALLOWED_HOSTS_ENV)
            await send_text(send, 421, "Unknown host")
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            origin = _header(scope, b"origin")
            foreign = origin is not None and urlsplit(origin).netloc.lower() != host
            if foreign or _header(scope, b"sec-fetch-site") == "cross-site":
                await send_text(send, 403, "Cross-origin request refused")
                return
        await self.app(scope, receive, send)
