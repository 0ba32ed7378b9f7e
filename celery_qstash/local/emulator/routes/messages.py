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
    _json_body,
    _multi,
    _segment,
)
from ..errors import NotFound
from ..wire import message_json

__all__ = ["ROUTES"]


async def get_message(api: Api, request: Request, user: str) -> Response:
    return JSONResponse(message_json(api.store.messages.get(user, _segment(request, 3))))


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
    # OAS: the deprecated ``count`` is ignored; every message that matches is cancelled.
    flt = _filter(request, CANCEL_FIELDS)
    return JSONResponse({"cancelled": api.store.messages.cancel(user, ids, flt)})


ROUTES: list[Route] = [
    ("/v2/messages", ["DELETE"], cancel_messages),
    ("/v2/messages/{id}", ["GET"], get_message),
    ("/v2/messages/{id}", ["DELETE"], cancel_message),
]
