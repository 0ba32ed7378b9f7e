"""What every route shares: authentication and request parsing (paths, query
filters, JSON bodies, integers), for the handlers in ``routes/``.

Errors use QStash's ``{"error": "..."}`` shape. Paths and fields follow
qstash-py 3.4.0, which is the wire-compatibility oracle (see qstash-api.md).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from celery_qstash.local.serving import JSONBodyError, parse_json

from .errors import ApiError, BadRequest, NotFound, Unauthorized
from .publish import Limits
from .store import EventFilter, Published

if TYPE_CHECKING:

    from . import Emulator

__all__ = ["Api", "Handler", "Route"]

log = logging.getLogger("celery_qstash.local.emulator")

JSON = dict[str, Any]
#: A QStash route's handler: the request and the authenticated user.
Handler = Callable[["Api", Request, str], Awaitable[Response]]
#: (path, methods, handler) as listed by each ``routes/`` module.
Route = tuple[str, list[str], Handler]
#: A page of logs or DLQ messages: OAS GET /v2/logs and GET /v2/dlq, ``count``
#: "default: 100, maximum: 100". A larger count gets a page of 100 and a cursor.
DEFAULT_COUNT = 100
MAX_COUNT = 100
#: Bounds of integer query parameters (SQLite integers are 64-bit; times are in ms).
INT64_MAX = 2**63 - 1


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _headers(request: Request) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]


def _raw_path(request: Request) -> str:
    # The destination URL travels raw inside the path; the decoded, routed
    # ``path`` may have lost its ``//`` or percent-escapes, ``raw_path`` has not.
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        return raw.decode("latin-1").split("?", 1)[0]
    return str(request.scope["path"])


def _destination(request: Request, prefix_segments: int) -> tuple[str, list[tuple[str, str]]]:
    """The destination (raw path tail + its own query) and the ``upstash-*`` query options."""
    parts = _raw_path(request).split("/", prefix_segments)
    if len(parts) <= prefix_segments or not parts[prefix_segments]:
        raise BadRequest("destination is required")
    tail = parts[prefix_segments]
    if "://" not in tail and "%3A%2F%2F" in tail.upper():
        tail = unquote(tail)
    kept: list[str] = []
    options: list[tuple[str, str]] = []
    query = request.scope.get("query_string", b"").decode("latin-1")
    for pair in query.split("&") if query else []:
        key = unquote(pair.split("=", 1)[0]).lower()
        if key == "qstash_token":
            continue
        if key.startswith("upstash-"):
            options.extend(parse_qsl(pair, keep_blank_values=True))
            continue
        kept.append(pair)
    return (tail + "?" + "&".join(kept)) if kept else tail, options


def _segment(request: Request, index: int) -> str:
    parts = _raw_path(request).split("/")
    if len(parts) <= index:
        raise BadRequest("missing path segment")
    return unquote(parts[index])


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if not body.strip():
        return None
    try:
        return parse_json(body)
    except JSONBodyError as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from None


def _int_param(value: str | None, name: str, default: int | None = None, *,
               low: int = 0, high: int = INT64_MAX) -> int | None:
    if value is None or value == "":
        return default
    text = value.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,30}", text):
        raise BadRequest(f"invalid {name}: {value[:40]!r} is not an integer")
    number = int(text)
    if not low <= number <= high:
        raise BadRequest(f"invalid {name}: must be between {low} and {high}")
    return number


def _ids(body: Any, field: str) -> list[str] | None:
    """``{"<field>": ["id", ...]}`` from a JSON body (None when absent)."""
    if not isinstance(body, dict) or body.get(field) is None:
        return None
    ids = body[field]
    if not isinstance(ids, list) or not all(isinstance(i, (str, int)) and
                                            not isinstance(i, bool) for i in ids):
        raise BadRequest(f"{field} must be a list of strings")
    return [str(i) for i in ids]


def _multi(request: Request, name: str) -> list[str]:
    values: list[str] = []
    for raw in request.query_params.getlist(name):
        values += [v.strip() for v in raw.split(",") if v.strip()]
    return values


#: The filter fields each list endpoint takes (OAS ``qstash/openapi.yaml``; the JS SDK also
#: sends ``host``, ``path``, ``callerIp`` and ``flowControlKey`` on the logs). Anything else
#: is a 400 naming it, as QStash answers: a typo must never widen a delete to "everything".
_COMMON = frozenset({"messageId", "url", "topicName", "scheduleId", "queueName", "fromDate",
                     "toDate", "label", "callerIp", "callerIP", "flowControlKey", "count"})
LOG_FIELDS = _COMMON | {"cursor", "messageIds", "state", "host", "path", "responseStatus",
                        "order", "trimBody"}
DLQ_FIELDS = _COMMON | {"cursor", "responseStatus", "dlqIds", "messageIds"}
CANCEL_FIELDS = (_COMMON - {"messageId"}) | {"messageIds", "host", "path", "async"}
_ALWAYS = frozenset({"qstash_token"})


def _filter(request: Request, allowed: frozenset[str] = LOG_FIELDS) -> EventFilter:
    """The query's filters; several values per field, repeated or comma-separated."""
    unknown = sorted({k for k in request.query_params if k not in allowed | _ALWAYS})
    if unknown:
        raise BadRequest(f"unknown filter field {unknown[0]!r}; expected one of "
                         f"{', '.join(sorted(allowed))}")
    q = request.query_params
    statuses = [_int_param(s, "responseStatus", high=999) for s in _multi(request,
                                                                       "responseStatus")]
    return EventFilter(
        message_ids=_multi(request, "messageIds") + _multi(request, "messageId"),
        states=[s.upper() for s in _multi(request, "state")],
        urls=_multi(request, "url"),
        hosts=_multi(request, "host"),
        paths=_multi(request, "path"),
        topics=_multi(request, "topicName"),
        queues=_multi(request, "queueName"),
        schedule_ids=_multi(request, "scheduleId"),
        from_ms=_int_param(q.get("fromDate"), "fromDate"),
        to_ms=_int_param(q.get("toDate"), "toDate"),
        labels=_multi(request, "label"),
        fc_keys=_multi(request, "flowControlKey"),
        response_statuses=[s for s in statuses if s is not None],
        caller_ips=_multi(request, "callerIp") + _multi(request, "callerIP"),
        dlq_ids=_multi(request, "dlqIds") + _multi(request, "dlqId"),
    )


def _count(request: Request, default: int = DEFAULT_COUNT, maximum: int = MAX_COUNT) -> int:
    count = _int_param(request.query_params.get("count"), "count", default, low=1)
    assert count is not None
    return min(count, maximum)


def _readable(what: str, ident: str, show: Callable[[], Any]) -> Any:
    """``show()``, or a 404 naming ``ident`` when its stored row is damaged (a hand-edited
    or broken database): QStash's answer for what it cannot serve, never a 500. The
    delivery loop sets such a message aside (``store/attempts.py``); the log says why."""
    try:
        return show()
    except ApiError:
        raise
    except Exception as exc:
        log.error("%s %s: its stored data cannot be read (%s)", what, ident,
                  type(exc).__name__)
        raise NotFound(f"{what} {ident} cannot be read: its stored data is damaged") from None


def _published_json(items: list[Published], destination: str) -> Any:
    if "://" in destination:
        item = items[0]
        out: JSON = {"messageId": item.message_id, "url": item.url}
        if item.deduplicated:
            out["deduplicated"] = True
        return out
    return [
        {"messageId": p.message_id, "url": p.url, **({"deduplicated": True} if p.deduplicated
                                                      else {})}
        for p in items
    ]


class Api:
    """Request handlers bound to one :class:`~celery_qstash.local.emulator.Emulator`."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.store = emulator.store

    @property
    def limits(self) -> Limits:
        """What a publish may ask of this emulator (timeouts, delays, destinations)."""
        return self.emulator.limits

    def user(self, request: Request, *, header_only: bool = False) -> str:
        token = ""
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        if not header_only:
            token = token or request.query_params.get("qstash_token", "")
        user = self.emulator.authenticate(token)
        if user is None:
            where = "an Authorization: Bearer header" if header_only else "a token"
            raise Unauthorized(f"unauthorized: {where} with a valid QStash token is required")
        return user


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "127.0.0.1"
