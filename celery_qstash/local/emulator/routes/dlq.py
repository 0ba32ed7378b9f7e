"""The dead-letter queue: ``/v2/dlq`` list, read, delete, retry."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..api import (
    DLQ_FIELDS,
    JSON,
    Api,
    Route,
    _count,
    _filter,
    _headers,
    _ids,
    _json_body,
    _readable,
    _segment,
)
from ..errors import NotFound
from ..publish import (
    parse_publish_headers,
)
from ..store import EventFilter
from ..store.dlq import BULK_MAX
from ..wire import dlq_json

__all__ = ["ROUTES"]


async def list_dlq(api: Api, request: Request, user: str) -> Response:
    entries, cursor = api.store.dlq.page(
        user, _filter(request, DLQ_FIELDS), request.query_params.get("cursor"), _count(request)
    )
    out: JSON = {"messages": [dlq_json(e) for e in entries]}
    if cursor:
        out["cursor"] = cursor
    return JSONResponse(out)


async def get_dlq(api: Api, request: Request, user: str) -> Response:
    dlq_id = _segment(request, 3)
    return JSONResponse(_readable("dlq message", dlq_id, lambda: dlq_json(
        api.store.dlq.get(user, dlq_id))))


async def delete_dlq(api: Api, request: Request, user: str) -> Response:
    dlq_id = _segment(request, 3)
    if not api.store.dlq.delete(user, EventFilter(dlq_ids=[dlq_id]))[0]:
        raise NotFound("dlq message not found")
    return JSONResponse({"deleted": 1})


def _bulk(request: Request, body: Any) -> tuple[EventFilter, int, str | None]:
    """The filter (``dlqIds`` in the JSON body win, as qstash-py sends them), page size
    (OAS: default and maximum 100) and cursor of a bulk delete or retry."""
    flt = _filter(request, DLQ_FIELDS)
    dlq_ids = _ids(body, "dlqIds")
    if dlq_ids is not None:
        flt = EventFilter(dlq_ids=dlq_ids)
    return flt, _count(request, BULK_MAX, BULK_MAX), request.query_params.get("cursor")


async def delete_dlq_many(api: Api, request: Request, user: str) -> Response:
    body = await _json_body(request)
    flt, count, cursor = _bulk(request, body)
    if _ids(body, "dlqIds") == []:
        return JSONResponse({"deleted": 0})
    deleted, next_cursor = api.store.dlq.delete(user, flt, count, cursor)
    out: JSON = {"deleted": deleted}
    if next_cursor:
        out["cursor"] = next_cursor
    return JSONResponse(out)


async def retry_dlq(api: Api, request: Request, user: str) -> Response:
    dlq_id = _segment(request, 4)
    api.store.dlq.get(user, dlq_id)
    headers = _headers(request)
    ids, _ = api.store.dlq.retry(user, EventFilter(dlq_ids=[dlq_id]),
                                  lambda base: parse_publish_headers(
                                      headers, b"", base, limits=api.limits))
    return JSONResponse({"messageId": ids[0] if ids else None}, status_code=201)


async def retry_dlq_many(api: Api, request: Request, user: str) -> Response:
    body = await _json_body(request)
    flt, count, cursor = _bulk(request, body)
    if _ids(body, "dlqIds") == []:
        return JSONResponse({"responses": []}, status_code=201)
    headers = _headers(request)
    ids, next_cursor = api.store.dlq.retry(
        user, flt, lambda base: parse_publish_headers(
            headers, b"", base, limits=api.limits), count, cursor)
    out: JSON = {"responses": [{"messageId": i} for i in ids]}
    if next_cursor:
        out["cursor"] = next_cursor
    return JSONResponse(out, status_code=201)


ROUTES: list[Route] = [
    ("/v2/dlq", ["GET"], list_dlq),
    ("/v2/dlq", ["DELETE"], delete_dlq_many),
    ("/v2/dlq/retry", ["POST"], retry_dlq_many),
    ("/v2/dlq/retry/{id}", ["POST"], retry_dlq),
    ("/v2/dlq/{id}", ["GET"], get_dlq),
    ("/v2/dlq/{id}", ["DELETE"], delete_dlq),
]
