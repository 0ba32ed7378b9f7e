"""The QStash REST API v2 (as the official SDKs call it) plus the ``/_emulator`` control plane.

Handlers are thin: authenticate, parse, call the store or the loop, return
JSON. Errors use QStash's ``{"error": "..."}`` shape. Paths and fields follow
qstash-py 3.4.0, which is the wire-compatibility oracle (see qstash-api.md).

The app is guarded like the other local servers (:mod:`celery_qstash._serving`):
a ``Host`` outside the allow-list is a 421, a state-changing request from another
origin a 403, a body over the limit a 413 before it is read whole, and every
JSON body goes through the one parser that turns any failure into a 400.
The v2 API takes the token as ``Authorization: Bearer`` or as QStash's documented
``?qstash_token=`` (https://upstash.com/docs/qstash/api/authentication); the
control plane's writes (reset, clock) take it only in the header, which a page
on another origin cannot set without a CORS preflight this server never grants.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from celery_qstash._serving import BodyLimit, JSONBodyError, SameSiteGuard, parse_json
from celery_qstash.clock import FakeClock

from .errors import ApiError, BadRequest, NotFound, Unauthorized
from .publish import (
    MAX_PARALLELISM,
    MAX_PERIOD_SECONDS,
    MAX_RATE,
    merge_query,
    parse_duration_ms,
    parse_publish_headers,
    parse_schedule_headers,
)
from .store import EventFilter, Published
from .wire import dlq_json, message_json

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from . import Emulator

__all__ = ["build_app"]

log = logging.getLogger("celery_qstash.emulator")

JSON = dict[str, Any]
Handler = Callable[[Request, str], Awaitable[Response]]
DEFAULT_COUNT = 100
MAX_COUNT = 1000
#: Bounds of integer query parameters (SQLite integers are 64-bit; times are in ms).
INT64_MAX = 2**63 - 1
#: A batch request may carry this many messages' worth of bytes (each message is
#: still held to the message limit). QStash documents no batch limit of its own.
BATCH_BODY_FACTOR = 10
#: ``/_emulator/clock/advance`` moves a fake clock at most this far at once (ten years).
MAX_ADVANCE_SECONDS = 10 * 365 * 86400


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


def _filter(request: Request) -> EventFilter:
    q = request.query_params
    ids = _multi(request, "messageIds") + _multi(request, "messageId")
    return EventFilter(
        message_ids=ids,
        states=[s.upper() for s in _multi(request, "state")],
        url=q.get("url") or None,
        topic=q.get("topicName") or None,
        queue=q.get("queueName") or None,
        schedule_id=q.get("scheduleId") or None,
        from_ms=_int_param(q.get("fromDate"), "fromDate"),
        to_ms=_int_param(q.get("toDate"), "toDate"),
        labels=_multi(request, "label"),
        fc_key=q.get("flowControlKey") or None,
        response_status=_int_param(q.get("responseStatus"), "responseStatus", high=999),
        caller_ip=q.get("callerIp") or None,
        dlq_ids=_multi(request, "dlqIds") + _multi(request, "dlqId"),
    )


def _count(request: Request, default: int = DEFAULT_COUNT, maximum: int = MAX_COUNT) -> int:
    count = _int_param(request.query_params.get("count"), "count", default, low=1)
    assert count is not None
    return min(count, maximum)


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
    """Request handlers bound to one :class:`~celery_qstash.emulator.Emulator`."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.store = emulator.store

    @property
    def max_timeout_ms(self) -> int:
        return self.emulator.loop.max_timeout_ms

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

    # -- publishing -------------------------------------------------------------

    async def publish(self, request: Request, user: str) -> Response:
        destination, query_options = _destination(request, 3)
        return await self._publish(request, user, destination, query_options, None)

    async def enqueue(self, request: Request, user: str) -> Response:
        queue = _segment(request, 3)
        destination, query_options = _destination(request, 4)
        return await self._publish(request, user, destination, query_options, queue)

    async def _publish(self, request: Request, user: str, destination: str,
                       query_options: list[tuple[str, str]], queue: str | None) -> Response:
        headers = merge_query(_headers(request), query_options)
        options = parse_publish_headers(headers, await request.body(),
                                        max_timeout_ms=self.max_timeout_ms)
        if queue is not None and (options.delay_ms or options.not_before_ms is not None):
            # QStash ignores delays on queues (not documented for enqueue); so do we.
            options.delay_ms, options.not_before_ms = 0, None
        published = self.store.publish(
            user, destination, options, queue=queue, caller_ip=_client_ip(request)
        )
        status = 202 if published and all(p.deduplicated for p in published) else 200
        return JSONResponse(_published_json(published, destination), status_code=status)

    async def batch(self, request: Request, user: str) -> Response:
        items = await _json_body(request)
        if not isinstance(items, list):
            raise BadRequest("batch body must be a JSON array")
        out: list[Any] = []
        for item in items:
            # Each item is its own publish (committed or not): an error, even an
            # unexpected one, is that item's entry, never a 500 for the whole batch.
            try:
                out.append(self._batch_item(request, user, item))
            except ApiError as exc:
                out.append({"error": exc.message})
            except Exception as exc:
                log.exception("batch item failed")
                out.append({"error": f"internal error: {type(exc).__name__}"})
        return JSONResponse(out)

    def _batch_item(self, request: Request, user: str, item: Any) -> Any:
        if not isinstance(item, dict) or not isinstance(item.get("destination"), str):
            raise BadRequest("destination is required")
        raw_headers = item.get("headers") or {}
        if not isinstance(raw_headers, dict):
            raise BadRequest("headers must be an object")
        headers = [(str(k), str(v)) for k, v in raw_headers.items()]
        body = item.get("body")
        data = body.encode() if isinstance(body, str) else b""
        if len(data) > self.emulator.max_body:
            raise BadRequest(f"message body is {len(data)} bytes, over the "
                             f"{self.emulator.max_body}-byte message size limit")
        options = parse_publish_headers(headers, data, max_timeout_ms=self.max_timeout_ms)
        queue = item.get("queue") or None
        if queue is not None and not isinstance(queue, str):
            raise BadRequest("queue must be a string")
        published = self.store.publish(user, item["destination"], options, queue=queue,
                                       caller_ip=_client_ip(request))
        return _published_json(published, item["destination"])

    # -- messages ---------------------------------------------------------------

    async def get_message(self, request: Request, user: str) -> Response:
        return JSONResponse(message_json(self.store.get_message(user, _segment(request, 3))))

    async def cancel_message(self, request: Request, user: str) -> Response:
        message_id = _segment(request, 3)
        if not self.store.cancel(user, [message_id]):
            raise NotFound("message not found")
        return JSONResponse({"cancelled": 1})

    async def cancel_messages(self, request: Request, user: str) -> Response:
        body = await _json_body(request)
        ids = _ids(body, "messageIds")
        if ids is None and _multi(request, "messageIds"):
            ids = _multi(request, "messageIds")
        flt = _filter(request)
        q = request.query_params
        count = _int_param(q.get("count"), "count")
        cancelled = self.store.cancel(user, ids, flt, count=count, host=q.get("host") or None,
                                      path=q.get("path") or None)
        return JSONResponse({"cancelled": cancelled})

    # -- logs -------------------------------------------------------------------

    async def events(self, request: Request, user: str) -> Response:
        return self._logs(request, user, "events")

    async def logs(self, request: Request, user: str) -> Response:
        return self._logs(request, user, "logs")

    def _logs(self, request: Request, user: str, key: str) -> Response:
        entries, cursor = self.store.list_events(
            user, _filter(request), request.query_params.get("cursor"), _count(request)
        )
        out: JSON = {key: entries}
        if cursor:
            out["cursor"] = cursor
        return JSONResponse(out)

    # -- DLQ --------------------------------------------------------------------

    async def list_dlq(self, request: Request, user: str) -> Response:
        entries, cursor = self.store.list_dlq(
            user, _filter(request), request.query_params.get("cursor"), _count(request)
        )
        out: JSON = {"messages": [dlq_json(e) for e in entries]}
        if cursor:
            out["cursor"] = cursor
        return JSONResponse(out)

    async def get_dlq(self, request: Request, user: str) -> Response:
        return JSONResponse(dlq_json(self.store.get_dlq(user, _segment(request, 3))))

    async def delete_dlq(self, request: Request, user: str) -> Response:
        dlq_id = _segment(request, 3)
        if not self.store.delete_dlq(user, EventFilter(dlq_ids=[dlq_id])):
            raise NotFound("dlq message not found")
        return JSONResponse({"deleted": 1})

    async def delete_dlq_many(self, request: Request, user: str) -> Response:
        body = await _json_body(request)
        flt = _filter(request)
        dlq_ids = _ids(body, "dlqIds")
        if dlq_ids is not None:
            flt = EventFilter(dlq_ids=dlq_ids)
            if not flt.dlq_ids:
                return JSONResponse({"deleted": 0})
        count = _int_param(request.query_params.get("count"), "count")
        return JSONResponse({"deleted": self.store.delete_dlq(user, flt, count)})

    async def retry_dlq(self, request: Request, user: str) -> Response:
        dlq_id = _segment(request, 4)
        self.store.get_dlq(user, dlq_id)
        headers = _headers(request)
        ids = self.store.retry_dlq(user, EventFilter(dlq_ids=[dlq_id]),
                                   lambda base: parse_publish_headers(
                                       headers, b"", base, max_timeout_ms=self.max_timeout_ms))
        return JSONResponse({"messageId": ids[0] if ids else None}, status_code=201)

    async def retry_dlq_many(self, request: Request, user: str) -> Response:
        body = await _json_body(request)
        flt = _filter(request)
        dlq_ids = _ids(body, "dlqIds")
        if dlq_ids is not None:
            flt = EventFilter(dlq_ids=dlq_ids)
            if not flt.dlq_ids:
                return JSONResponse({"cursor": "", "responses": []}, status_code=201)
        headers = _headers(request)
        count = _int_param(request.query_params.get("count"), "count")
        ids = self.store.retry_dlq(user, flt,
                                   lambda base: parse_publish_headers(
                                       headers, b"", base, max_timeout_ms=self.max_timeout_ms),
                                   count)
        return JSONResponse({"cursor": "", "responses": [{"messageId": i} for i in ids]},
                            status_code=201)

    # -- queues -----------------------------------------------------------------

    async def upsert_queue(self, request: Request, user: str) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("queueName"), str):
            raise BadRequest("queueName is required")
        parallelism = body.get("parallelism", 1)
        if parallelism is None:
            parallelism = 1
        if not isinstance(parallelism, int) or isinstance(parallelism, bool):
            raise BadRequest("parallelism must be an integer")
        if not 1 <= parallelism <= MAX_PARALLELISM:
            raise BadRequest(f"parallelism must be between 1 and {MAX_PARALLELISM}")
        self.store.upsert_queue(user, body["queueName"], parallelism, bool(body.get("paused")))
        return Response(status_code=200)

    async def list_queues(self, request: Request, user: str) -> Response:
        return JSONResponse(self.store.list_queues(user))

    async def get_queue(self, request: Request, user: str) -> Response:
        return JSONResponse(self.store.get_queue(user, _segment(request, 3)))

    async def delete_queue(self, request: Request, user: str) -> Response:
        self.store.delete_queue(user, _segment(request, 3))
        return Response(status_code=200)

    async def pause_queue(self, request: Request, user: str) -> Response:
        self.store.set_queue_paused(user, _segment(request, 3), True)
        return Response(status_code=200)

    async def resume_queue(self, request: Request, user: str) -> Response:
        self.store.set_queue_paused(user, _segment(request, 3), False)
        return Response(status_code=200)

    # -- URL groups -------------------------------------------------------------

    async def _endpoints(self, request: Request) -> list[JSON]:
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("endpoints"), list):
            raise BadRequest("endpoints are required")
        endpoints = [e for e in body["endpoints"] if isinstance(e, dict)]
        if not endpoints:
            raise BadRequest("endpoints are required")
        return endpoints

    async def upsert_endpoints(self, request: Request, user: str) -> Response:
        self.store.upsert_endpoints(user, _segment(request, 3), await self._endpoints(request))
        return Response(status_code=200)

    async def remove_endpoints(self, request: Request, user: str) -> Response:
        self.store.remove_endpoints(user, _segment(request, 3), await self._endpoints(request))
        return Response(status_code=200)

    async def list_topics(self, request: Request, user: str) -> Response:
        return JSONResponse(self.store.list_topics(user))

    async def get_topic(self, request: Request, user: str) -> Response:
        return JSONResponse(self.store.get_topic(user, _segment(request, 3)))

    async def delete_topic(self, request: Request, user: str) -> Response:
        self.store.delete_topic(user, _segment(request, 3))
        return Response(status_code=200)

    # -- signing keys -----------------------------------------------------------

    async def get_keys(self, request: Request, user: str) -> Response:
        current, nxt = self.emulator.signing_keys(user)
        return JSONResponse({"current": current, "next": nxt})

    async def rotate_keys(self, request: Request, user: str) -> Response:
        self.emulator.signing_keys(user)
        current, nxt = self.store.rotate_signing_keys(user)
        return JSONResponse({"current": current, "next": nxt})

    # -- flow control -----------------------------------------------------------

    async def list_flows(self, request: Request, user: str) -> Response:
        return JSONResponse(self.store.list_flows(user, request.query_params.get("search")))

    async def get_flow(self, request: Request, user: str) -> Response:
        return JSONResponse(self.store.get_flow(user, _segment(request, 3)))

    async def flow_action(self, request: Request, user: str) -> Response:
        key, action = _segment(request, 3), _segment(request, 4)
        q = request.query_params
        period = q.get("period")
        pin = action == "pin"
        period_s = None
        if pin and period:
            period_ms = parse_duration_ms(period, "period", MAX_PERIOD_SECONDS * 1000)
            if period_ms < 1000:
                raise BadRequest("invalid period: 1s to 1 week")
            period_s = period_ms // 1000
        self.store.update_flow(
            user, key, action,
            parallelism=_int_param(q.get("parallelism"), "parallelism", low=1,
                                   high=MAX_PARALLELISM) if pin else None,
            rate=_int_param(q.get("rate"), "rate", low=1, high=MAX_RATE) if pin else None,
            period_s=period_s,
            unpin_parallelism=q.get("parallelism", "").lower() == "true",
            unpin_rate=q.get("rate", "").lower() == "true",
        )
        return Response(status_code=200)

    async def global_parallelism(self, request: Request, user: str) -> Response:
        return JSONResponse(self.store.global_parallelism(user))

    # -- schedules --------------------------------------------------------------

    async def create_schedule(self, request: Request, user: str) -> Response:
        destination, query_options = _destination(request, 3)
        headers = merge_query(_headers(request), query_options)
        schedule = parse_schedule_headers(headers, await request.body(),
                                          self.emulator.clock.now(),
                                          max_timeout_ms=self.max_timeout_ms)
        schedule_id = self.store.upsert_schedule(user, destination, schedule,
                                                 caller_ip=_client_ip(request))
        return JSONResponse({"scheduleId": schedule_id})

    async def list_schedules(self, request: Request, user: str) -> Response:
        return JSONResponse(self.store.list_schedules(user))

    async def get_schedule(self, request: Request, user: str) -> Response:
        return JSONResponse(self.store.get_schedule(user, _segment(request, 3)))

    async def delete_schedule(self, request: Request, user: str) -> Response:
        self.store.delete_schedule(user, _segment(request, 3))
        return Response(status_code=200)

    async def pause_schedule(self, request: Request, user: str) -> Response:
        self.store.set_schedule_paused(user, _segment(request, 3), True)
        return Response(status_code=200)

    async def resume_schedule(self, request: Request, user: str) -> Response:
        self.store.set_schedule_paused(user, _segment(request, 3), False)
        return Response(status_code=200)

    # -- control plane (reads and ticks open; reset and clock need the token) ----

    async def reset(self, request: Request) -> Response:
        self.user(request, header_only=True)
        self.emulator.reset()
        return JSONResponse({"reset": True})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "pending": self.store.pending_count()})

    async def tick(self, request: Request) -> Response:
        # A tick makes HTTP calls (possibly back to this server): keep the event loop free.
        attempts = await anyio.to_thread.run_sync(self.emulator.tick)
        return JSONResponse({"attempts": attempts})

    async def advance(self, request: Request) -> Response:
        self.user(request, header_only=True)
        clock = self.emulator.clock
        if not isinstance(clock, FakeClock):
            raise BadRequest("the emulator runs on the system clock; nothing to advance")
        try:
            seconds = float(request.query_params.get("seconds", "0"))
        except ValueError:
            raise BadRequest("seconds must be a number") from None
        if not 0 <= seconds <= MAX_ADVANCE_SECONDS:  # also refuses nan and inf
            raise BadRequest(f"seconds must be between 0 and {MAX_ADVANCE_SECONDS}")
        now = clock.advance(seconds)
        self.emulator.loop.wake()
        return JSONResponse({"now": now})


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "127.0.0.1"


def _authed(api: Api, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            user = api.user(request)
            return await handler(request, user)
        except ApiError as exc:
            return _error(exc.status, exc.message)

    return endpoint


def _plain(handler: Callable[[Request], Awaitable[Response]]
           ) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.message)

    return endpoint


def build_app(emulator: Emulator,
              lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None
              ) -> Starlette:
    """The Starlette app: QStash v2 routes (order matters where paths overlap)."""
    api = Api(emulator)
    table: list[tuple[str, list[str], Handler]] = [
        ("/v2/publish/{destination:path}", ["POST"], api.publish),
        ("/v2/enqueue/{queue}/{destination:path}", ["POST"], api.enqueue),
        ("/v2/batch", ["POST"], api.batch),
        ("/v2/messages", ["DELETE"], api.cancel_messages),
        ("/v2/messages/{id}", ["GET"], api.get_message),
        ("/v2/messages/{id}", ["DELETE"], api.cancel_message),
        ("/v2/events", ["GET"], api.events),
        ("/v2/logs", ["GET"], api.logs),
        ("/v2/dlq", ["GET"], api.list_dlq),
        ("/v2/dlq", ["DELETE"], api.delete_dlq_many),
        ("/v2/dlq/retry", ["POST"], api.retry_dlq_many),
        ("/v2/dlq/retry/{id}", ["POST"], api.retry_dlq),
        ("/v2/dlq/{id}", ["GET"], api.get_dlq),
        ("/v2/dlq/{id}", ["DELETE"], api.delete_dlq),
        ("/v2/queues", ["POST"], api.upsert_queue),
        ("/v2/queues", ["GET"], api.list_queues),
        ("/v2/queues/{name}", ["GET"], api.get_queue),
        ("/v2/queues/{name}", ["DELETE"], api.delete_queue),
        ("/v2/queues/{name}/pause", ["POST"], api.pause_queue),
        ("/v2/queues/{name}/resume", ["POST"], api.resume_queue),
        ("/v2/topics", ["GET"], api.list_topics),
        ("/v2/topics/{name}/endpoints", ["POST"], api.upsert_endpoints),
        ("/v2/topics/{name}/endpoints", ["DELETE"], api.remove_endpoints),
        ("/v2/topics/{name}", ["GET"], api.get_topic),
        ("/v2/topics/{name}", ["DELETE"], api.delete_topic),
        ("/v2/keys", ["GET"], api.get_keys),
        ("/v2/keys/rotate", ["POST"], api.rotate_keys),
        ("/v2/flowControl", ["GET"], api.list_flows),
        ("/v2/flowControl/{key}", ["GET"], api.get_flow),
        ("/v2/flowControl/{key}/{action}", ["POST"], api.flow_action),
        ("/v2/globalParallelism", ["GET"], api.global_parallelism),
        ("/v2/schedules", ["GET"], api.list_schedules),
        ("/v2/schedules/{id}/pause", ["POST", "PATCH"], api.pause_schedule),
        ("/v2/schedules/{id}/resume", ["POST", "PATCH"], api.resume_schedule),
        ("/v2/schedules/{id}", ["GET"], api.get_schedule),
        ("/v2/schedules/{id}", ["DELETE"], api.delete_schedule),
        ("/v2/schedules/{destination:path}", ["POST"], api.create_schedule),
    ]
    routes = [Route(path, _authed(api, handler), methods=methods)
              for path, methods, handler in table]
    routes += [
        Route("/_emulator/reset", _plain(api.reset), methods=["POST"]),
        Route("/_emulator/health", _plain(api.health), methods=["GET"]),
        Route("/_emulator/tick", _plain(api.tick), methods=["POST"]),
        Route("/_emulator/clock/advance", _plain(api.advance), methods=["POST"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    def body_limit(scope: Scope) -> int:
        if scope.get("path") == "/v2/batch":
            return emulator.max_body * BATCH_BODY_FACTOR
        return emulator.max_body

    def too_large(limit: int) -> Response:
        return _error(413, f"request body is larger than the {limit}-byte limit")

    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error},
        middleware=[
            # Outermost first: a foreign Host or origin is refused before the body is read.
            Middleware(SameSiteGuard, allowed_hosts=emulator.allowed_hosts),
            Middleware(BodyLimit, limit=body_limit, too_large=too_large),
        ],
    )
    app.state.emulator = emulator
    return app

