"""The message log: ``/v2/events`` and ``/v2/logs`` (same entries, two keys)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..api import (
    JSON,
    Api,
    Route,
    _count,
    _filter,
)

__all__ = ["ROUTES"]


async def events(api: Api, request: Request, user: str) -> Response:
    return _logs(api, request, user, "events")


async def logs(api: Api, request: Request, user: str) -> Response:
    return _logs(api, request, user, "logs")


def _logs(api: Api, request: Request, user: str, key: str) -> Response:
    entries, cursor = api.store.events.page(
        user, _filter(request), request.query_params.get("cursor"), _count(request)
    )
    out: JSON = {key: entries}
    if cursor:
        out["cursor"] = cursor
    return JSONResponse(out)


ROUTES: list[Route] = [
    ("/v2/events", ["GET"], events),
    ("/v2/logs", ["GET"], logs),
]
