"""Publishing: ``/v2/publish``, ``/v2/enqueue`` and ``/v2/batch``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..api import (
    Api,
    Route,
    _client_ip,
    _destination,
    _headers,
    _json_body,
    _published_json,
    _segment,
    log,
)
from ..errors import ApiError, BadRequest
from ..publish import (
    PublishOptions,
    merge_query,
    parse_publish_headers,
)

__all__ = ["ROUTES"]


def _within_daily_quota(api: Api, user: str, count: int = 1) -> None:
    quotas = api.emulator.quotas
    if quotas is None:
        return
    now = api.emulator.clock.now()
    midnight_ms = int(now) // 86_400 * 86_400 * 1000
    quotas.check_publish(api.store.events.created_since(user, midnight_ms), count, now)


def _no_delay_on_queues(options: PublishOptions, queue: str | None) -> None:
    """A queued message is delivered in queue order: QStash ignores its delay (the OAS
    lists no Upstash-Delay for enqueue), whether it came through /v2/enqueue or a batch
    item with a ``queue``."""
    if queue is not None:
        options.delay_ms, options.not_before_ms = 0, None


async def publish(api: Api, request: Request, user: str) -> Response:
    destination, query_options = _destination(request, 3)
    return await _publish(api, request, user, destination, query_options, None)


async def enqueue(api: Api, request: Request, user: str) -> Response:
    queue = _segment(request, 3)
    destination, query_options = _destination(request, 4)
    return await _publish(api, request, user, destination, query_options, queue)


async def _publish(api: Api, request: Request, user: str, destination: str,
                   query_options: list[tuple[str, str]], queue: str | None) -> Response:
    headers = merge_query(_headers(request), query_options)
    options = parse_publish_headers(headers, await request.body(),
                                    limits=api.limits)
    _no_delay_on_queues(options, queue)
    _within_daily_quota(api, user)
    published = api.store.messages.publish(
        user, destination, options, queue=queue, caller_ip=_client_ip(request)
    )
    status = 202 if published and all(p.deduplicated for p in published) else 200
    return JSONResponse(_published_json(published, destination), status_code=status)


async def batch(api: Api, request: Request, user: str) -> Response:
    items = await _json_body(request)
    if not isinstance(items, list):
        raise BadRequest("batch body must be a JSON array")
    out: list[Any] = [None] * len(items)
    parsed: list[tuple[int, tuple[str, PublishOptions, str | None]]] = []
    for index, item in enumerate(items):
        # Each item is its own publish: an error, even an unexpected one, is that
        # item's entry, never a 500 for the whole batch.
        try:
            parsed.append((index, _batch_item(api, item)))
        except ApiError as exc:
            out[index] = {"error": exc.message}
        except Exception as exc:
            log.exception("batch item failed")
            out[index] = {"error": f"internal error: {type(exc).__name__}"}
    if parsed:
        _within_daily_quota(api, user, len(parsed))
        # One transaction (one commit) for the whole batch: what makes it fast.
        stored = api.store.messages.publish_many(
            user, [entry for _, entry in parsed], caller_ip=_client_ip(request)
        )
        for (index, (destination, _, _)), result in zip(parsed, stored, strict=True):
            if isinstance(result, ApiError):
                out[index] = {"error": result.message}
            elif isinstance(result, Exception):
                log.error("batch item failed: %s", type(result).__name__)
                out[index] = {"error": f"internal error: {type(result).__name__}"}
            else:
                out[index] = _published_json(result, destination)
    return JSONResponse(out)


def _batch_item(api: Api, item: Any) -> tuple[str, PublishOptions, str | None]:
    if not isinstance(item, dict) or not isinstance(item.get("destination"), str):
        raise BadRequest("destination is required")
    # OAS POST /v2/batch: ``headers`` an object of strings, ``body`` and ``queue``
    # strings. Anything else is refused, never read as "absent" (``"queue": {}`` used to
    # publish without a queue while ``"queue": 5`` was refused).
    raw_headers = item.get("headers")
    if raw_headers is None:
        raw_headers = {}
    if not isinstance(raw_headers, dict) or not all(
            isinstance(v, str) for v in raw_headers.values()):
        raise BadRequest("headers must be an object of strings")
    headers = [(str(k), v) for k, v in raw_headers.items()]
    body = item.get("body")
    if body is not None and not isinstance(body, str):
        raise BadRequest("body must be a string")
    data = body.encode() if body else b""
    if len(data) > api.emulator.max_body:
        raise BadRequest(f"message body is {len(data)} bytes, over the "
                         f"{api.emulator.max_body}-byte message size limit")
    options = parse_publish_headers(headers, data, limits=api.limits)
    queue = item.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise BadRequest("queue must be a queue name (a non-empty string)")
    _no_delay_on_queues(options, queue)
    return item["destination"], options, queue


ROUTES: list[Route] = [
    ("/v2/publish/{destination:qstash_path}", ["POST"], publish),
    ("/v2/enqueue/{queue}/{destination:qstash_path}", ["POST"], enqueue),
    ("/v2/batch", ["POST"], batch),
]
