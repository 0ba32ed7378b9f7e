"""URL groups (topics): ``/v2/topics`` endpoints, list, read, delete."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..api import (
    JSON,
    Api,
    Route,
    _json_body,
    _segment,
)
from ..errors import BadRequest

__all__ = ["ROUTES"]


async def _endpoints(request: Request) -> list[JSON]:
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("endpoints"), list):
        raise BadRequest("endpoints are required")
    endpoints = [e for e in body["endpoints"] if isinstance(e, dict)]
    if not endpoints:
        raise BadRequest("endpoints are required")
    return endpoints


async def upsert_endpoints(api: Api, request: Request, user: str) -> Response:
    name = _segment(request, 3)
    quotas = api.emulator.quotas
    if quotas is not None:
        names = {g["name"] for g in api.store.groups.all(user)}
        if name not in names:
            quotas.check_cap("URL groups", len(names), quotas.plan.max_url_groups)
    api.store.groups.upsert_endpoints(user, name, await _endpoints(request))
    return Response(status_code=200)


async def remove_endpoints(api: Api, request: Request, user: str) -> Response:
    api.store.groups.remove_endpoints(user, _segment(request, 3), await _endpoints(request))
    return Response(status_code=200)


async def list_topics(api: Api, request: Request, user: str) -> Response:
    return JSONResponse(api.store.groups.all(user))


async def get_topic(api: Api, request: Request, user: str) -> Response:
    return JSONResponse(api.store.groups.get(user, _segment(request, 3)))


async def delete_topic(api: Api, request: Request, user: str) -> Response:
    api.store.groups.delete(user, _segment(request, 3))
    return Response(status_code=200)


async def patch_topic(api: Api, request: Request, user: str) -> Response:
    body = await _json_body(request)
    headers = body.get("headers") if isinstance(body, dict) else None
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise BadRequest("headers must be an object of header names to strings")
    api.store.groups.set_headers(user, _segment(request, 3), headers)
    return Response(status_code=200)


ROUTES: list[Route] = [
    ("/v2/topics", ["GET"], list_topics),
    ("/v2/topics/{name}/endpoints", ["POST"], upsert_endpoints),
    ("/v2/topics/{name}/endpoints", ["DELETE"], remove_endpoints),
    ("/v2/topics/{name}", ["GET"], get_topic),
    ("/v2/topics/{name}", ["DELETE"], delete_topic),
    ("/v2/topics/{name}", ["PATCH"], patch_topic),
]
