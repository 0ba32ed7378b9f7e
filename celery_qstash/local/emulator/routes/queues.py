"""Queues: ``/v2/queues`` create/update, list, read, delete, pause, resume."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..api import (
    Api,
    Route,
    _json_body,
    _segment,
)
from ..errors import BadRequest
from ..publish import (
    MAX_PARALLELISM,
)

__all__ = ["ROUTES"]


async def upsert_queue(api: Api, request: Request, user: str) -> Response:
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
    quotas = api.emulator.quotas
    if quotas is not None:
        names = {q["name"] for q in api.store.queues.all(user)}
        if body["queueName"] not in names:
            quotas.check_cap("queues", len(names), quotas.plan.max_queues)
    api.store.queues.upsert(user, body["queueName"], parallelism, bool(body.get("paused")))
    return Response(status_code=200)


async def list_queues(api: Api, request: Request, user: str) -> Response:
    return JSONResponse(api.store.queues.all(user))


async def get_queue(api: Api, request: Request, user: str) -> Response:
    return JSONResponse(api.store.queues.get(user, _segment(request, 3)))


async def delete_queue(api: Api, request: Request, user: str) -> Response:
    api.store.queues.delete(user, _segment(request, 3))
    return Response(status_code=200)


async def pause_queue(api: Api, request: Request, user: str) -> Response:
    api.store.queues.set_paused(user, _segment(request, 3), True)
    return Response(status_code=200)


async def resume_queue(api: Api, request: Request, user: str) -> Response:
    api.store.queues.set_paused(user, _segment(request, 3), False)
    return Response(status_code=200)


ROUTES: list[Route] = [
    ("/v2/queues", ["POST"], upsert_queue),
    ("/v2/queues", ["GET"], list_queues),
    ("/v2/queues/{name}", ["GET"], get_queue),
    ("/v2/queues/{name}", ["DELETE"], delete_queue),
    ("/v2/queues/{name}/pause", ["POST"], pause_queue),
    ("/v2/queues/{name}/resume", ["POST"], resume_queue),
]
