"""Validators for request values that will travel again as HTTP (durations,
integers, methods, header names and values, URLs): pure functions, each raising
a :class:`BadRequest` that names the header, as QStash's 400 responses do."""

from __future__ import annotations

import ipaddress
import re
import socket
from functools import lru_cache
from urllib.parse import urlsplit

import httpx

from .errors import BadRequest
from .retry_delay import RetryDelayError, compile_retry_delay

__all__ = [
    "LINK_LOCAL_FLAG",
    "METHODS",
    "check_header_name",
    "check_header_value",
    "check_retry_delay",
    "check_url",
    "format_ms",
    "is_link_local",
    "parse_bool",
    "parse_duration_ms",
    "parse_int",
    "parse_method",
]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_DURATION_PART = re.compile(r"([0-9]+)(ms|d|h|m|s)")
_DIGITS = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_MAX_DIGITS = 30  # far beyond any bound below; keeps int() cheap on hostile input


@lru_cache(maxsize=1024)
def parse_duration_ms(text: str, header: str, maximum: int | None = None, *,
                      strict: bool = False) -> int:
    """``50s``, ``10h``, ``1d10h30m`` (or a bare number of seconds) as milliseconds.

    ``strict``: only QStash's ``<value><unit>`` syntax with the units its OAS lists for
    ``Upstash-Delay`` and ``Upstash-Timeout`` (s, m, h, d): no bare number, no ``ms``.
    ``maximum`` (ms) bounds the result: larger values are a 400, never stored.
    Pure, so cached (a refusal is raised again each time, never cached): every message
    of a batch usually carries the same delay.
    """
    value = text.strip()
    if _DIGITS.fullmatch(value) and not strict:
        parts = [(value, "s")]
    else:
        parts = _DURATION_PART.findall(value)
        if strict and any(unit == "ms" for _, unit in parts):
            parts = []
        if not value or "".join(n + u for n, u in parts) != value:
            raise BadRequest(
                f"invalid {header} header: {text!r}, expected a duration like 1d10h30m"
            )
    if any(len(n) > _MAX_DIGITS for n, _ in parts):
        raise BadRequest(f"invalid {header} header: duration is too long")
    total = sum(int(n) * _UNIT_MS[u] for n, u in parts)
    if maximum is not None and total > maximum:
        raise BadRequest(
            f"invalid {header} header: {text!r} is longer than the maximum "
            f"{format_ms(maximum)}"
        )
    return total


def format_ms(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def parse_int(text: str, header: str, low: int, high: int) -> int:
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped):
        raise BadRequest(f"invalid {header} header: {text!r} is not an integer")
    value = int(stripped)
    if not low <= value <= high:
        raise BadRequest(f"invalid {header} header: must be between {low} and {high}")
    return value


def parse_method(text: str, header: str) -> str:
    method = text.strip().upper()
    if method not in METHODS:
        raise BadRequest(f"invalid {header} header: {text!r}, expected one of {', '.join(METHODS)}")
    return method


def parse_bool(text: str, header: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise BadRequest(f"invalid {header} header: expected true or false")
    return lowered == "true"


def check_retry_delay(text: str, header: str) -> str:
    try:
        return compile_retry_delay(text).source
    except RetryDelayError as exc:
        raise BadRequest(f"invalid {header} header: {exc}") from None


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


def check_header_value(value: str, header: str) -> str:
    """A value the HTTP client can send as is (printable ASCII), else a 400 naming ``header``."""
    if not _HEADER_VALUE.fullmatch(value):
        raise BadRequest(
            f"invalid {header} header: the value must be printable ASCII "
            "(no control or non-ASCII characters)"
        )
    return value


def check_header_name(name: str, header: str) -> str:
    if not _TOKEN.fullmatch(name):
        raise BadRequest(f"invalid header name {header!r}")
    return name


#: scheme://authority, and what follows it (path, query, fragment).
_AUTHORITY = re.compile(r"https?://[^/?#\s]+")
#: A path/query/fragment httpx takes as it is (it percent-encodes the rest): no
#: non-printable ASCII (httpx's InvalidURL), within its length limit.
_CLEAN_REST = re.compile(r"[/?#][^\x00-\x1f\x7f]*")
_MAX_URL_LENGTH = 65536


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` (a template with ``{what}``), or None.

    Only the scheme and authority (host, port) can be wrong in a URL whose remainder is
    clean, and they are the same for every message to one service: checked once per
    authority (cached), so a batch to 100 distinct URLs of one host parses one. Anything
    else goes through the full check (``test_url_check_fast_path_agrees``)."""
    head = _AUTHORITY.match(url)
    if head is not None and len(url) <= _MAX_URL_LENGTH:
        rest = url[head.end():]
        if (not rest or _CLEAN_REST.fullmatch(rest)) and _url_problem(head.group(0)) is None:
            return None
    return _url_problem(url)


def check_url(url: str, what: str, *, allow_link_local: bool = False) -> str:
    """An http(s) URL the HTTP client can call, else a 400 naming ``what``.

    A link-local host (169.254.0.0/16, fe80::/10) or a cloud metadata address is refused
    too unless ``allow_link_local`` (the emulator's ``--allow-link-local``): with the
    public dev token, anything that reaches the emulator could otherwise make it fetch
    ``http://169.254.169.254/latest/meta-data/`` on a cloud machine. Loopback and
    private ranges stay allowed: local development needs them.
    """
    if not allow_link_local:
        # First: an old httpx calls "http://2852039166/" no URL at all, a resolver calls
        # it 169.254.169.254; the refusal names the reason either way.
        head = _AUTHORITY.match(url)
        host = _authority_host(head.group(0)) if head else ""
        if is_link_local(host):
            raise BadRequest(
                f"invalid {what}: {host} is a link-local or cloud metadata address; "
                f"start the emulator with {LINK_LOCAL_FLAG} to deliver there"
            )
    problem = url_problem(url)
    if problem is not None:
        raise BadRequest(problem.format(what=what))
    return url


#: The emulator's flag that lets destinations be link-local.
LINK_LOCAL_FLAG = "--allow-link-local"
#: Cloud metadata services outside 169.254.0.0/16: AWS's IPv6 IMDS, Alibaba Cloud's.
_METADATA_ADDRESSES = frozenset({ipaddress.ip_address("fd00:ec2::254"),
                                 ipaddress.ip_address("100.100.100.200")})
_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog"})


@lru_cache(maxsize=4096)
def _authority_host(authority: str) -> str:
    try:
        return httpx.URL(authority).host
    except Exception:
        # Older httpx (0.25) refuses spellings a resolver still takes ("2852039166",
        # "169.254.43518"): read the host as urllib does, so they are judged, not passed.
        # What urllib cannot read either is no URL: url_problem answers it with a 400.
        try:
            return urlsplit(authority).hostname or ""
        except ValueError:
            return ""


@lru_cache(maxsize=4096)
def is_link_local(host: str) -> bool:
    """Does ``host`` name a link-local or cloud metadata address, in any spelling a
    resolver takes (``0xa9fea9fe``, ``2852039166``, ``[::ffff:169.254.169.254]``,
    ``fe80::1%eth0``, ``metadata.google.internal.``)?"""
    name = host.strip("[]").lower().rstrip(".")
    if name in _METADATA_NAMES:
        return True
    name = name.split("%", 1)[0]  # an IPv6 zone
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        try:  # the forms inet_aton (and so getaddrinfo) reads: hex, octal, one number
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except (OSError, UnicodeError, ValueError):
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_link_local or address in _METADATA_ADDRESSES


@lru_cache(maxsize=4096)
def _url_problem(url: str) -> str | None:
    """What is wrong with ``url`` (a template with ``{what}``), or None. Pure, so cached:
    a batch to one endpoint parses its URL once."""
    if not re.match(r"^https?://[^/\s?#]+", url):
        return "invalid {what}: endpoint has invalid scheme, add http:// or https://"
    shown = repr(url[:200]).replace("{", "{{").replace("}", "}}")
    try:
        parsed = httpx.URL(url)
        port = parsed.port
        host = parsed.host  # decodes an IDNA (xn--) name: can fail too
    except Exception:  # httpx.InvalidURL, or ValueError from the IDNA codec
        return f"invalid {{what}}: {shown} is not a valid URL"
    if not host or any(c.isspace() or c == "%" for c in host):
        return f"invalid {{what}}: {shown} has an invalid host"
    if port is not None and not 0 < port < 65536:
        return f"invalid {{what}}: port {port} is out of range"
    return None
