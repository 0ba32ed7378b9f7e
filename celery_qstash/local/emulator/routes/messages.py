"""Messages: read one, cancel one or many (``/v2/messages``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..api import (
    CANCEL_FIELDS,
    Api,
    Route,
    _filter,
    _ids,
    _int_param,
    _json_body,
    _multi,
    _readable,
    _segment,
)
from ..errors import NotFound
from ..wire import message_json

__all__ = ["ROUTES"]

#: OAS DELETE /v2/messages ``count``: "between 1 and 500".
MAX_CANCEL_COUNT = 500


async def get_message(api: Api, request: Request, user: str) -> Response:
    message_id = _segment(request, 3)
    return JSONResponse(_readable("message", message_id, lambda: message_json(
        api.store.messages.get(user, message_id))))


async def cancel_message(api: Api, request: Request, user: str) -> Response:
    message_id = _segment(request, 3)
    if not api.store.messages.cancel(user, [message_id]):
        raise NotFound("message not found")
    return JSONResponse({"cancelled": 1})


async def cancel_messages(api: Api, request: Request, user: str) -> Response:
    body = await _json_body(request)
    ids = _ids(body, "messageIds")
    if ids is None and _multi(request, "messageIds"):
        ids = _multi(request, "messageIds")
    flt = _filter(request, CANCEL_FIELDS)
    # OAS DELETE /v2/messages: "count ... between 1 and 500. If not provided, all messages
    # matching the filters will be deleted"; qstash-js messages.test.ts "should respect
    # count: 1 with all: true" cancels one of two.
    limit = _int_param(request.query_params.get("count"), "count", None, low=1)
    limit = None if limit is None else min(limit, MAX_CANCEL_COUNT)
    return JSONResponse({"cancelled": api.store.messages.cancel(user, ids, flt, limit)})


ROUTES: list[Route] = [
    ("/v2/messages", ["DELETE"], cancel_messages),
    ("/v2/messages/{id}", ["GET"], get_message),
    ("/v2/messages/{id}", ["DELETE"], cancel_message),
]
