"""Schedules: ``/v2/schedules`` create, list, read, delete, pause, resume."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..api import (
    Api,
    Route,
    _client_ip,
    _destination,
    _headers,
    _segment,
)
from ..publish import (
    merge_query,
    parse_schedule_headers,
)

__all__ = ["ROUTES"]


async def create_schedule(api: Api, request: Request, user: str) -> Response:
    destination, query_options = _destination(request, 3)
    headers = merge_query(_headers(request), query_options)
    schedule = parse_schedule_headers(headers, await request.body(),
                                      api.emulator.clock.now(),
                                      limits=api.limits)
    quotas = api.emulator.quotas
    if quotas is not None:
        ids = {s["scheduleId"] for s in api.store.schedules.all(user)}
        if schedule.schedule_id not in ids:
            quotas.check_cap("schedules", len(ids), quotas.plan.max_schedules)
    schedule_id = api.store.schedules.upsert(user, destination, schedule,
                                             caller_ip=_client_ip(request))
    return JSONResponse({"scheduleId": schedule_id})


async def list_schedules(api: Api, request: Request, user: str) -> Response:
    return JSONResponse(api.store.schedules.all(user))


async def get_schedule(api: Api, request: Request, user: str) -> Response:
    return JSONResponse(api.store.schedules.get(user, _segment(request, 3)))


async def delete_schedule(api: Api, request: Request, user: str) -> Response:
    api.store.schedules.delete(user, _segment(request, 3))
    return Response(status_code=200)


async def pause_schedule(api: Api, request: Request, user: str) -> Response:
    api.store.schedules.set_paused(user, _segment(request, 3), True)
    return Response(status_code=200)


async def resume_schedule(api: Api, request: Request, user: str) -> Response:
    api.store.schedules.set_paused(user, _segment(request, 3), False)
    return Response(status_code=200)


ROUTES: list[Route] = [
    ("/v2/schedules", ["GET"], list_schedules),
    ("/v2/schedules/{id}/pause", ["POST", "PATCH"], pause_schedule),
    ("/v2/schedules/{id}/resume", ["POST", "PATCH"], resume_schedule),
    ("/v2/schedules/{id}", ["GET"], get_schedule),
    ("/v2/schedules/{id}", ["DELETE"], delete_schedule),
    ("/v2/schedules/{destination:qstash_path}", ["POST"], create_schedule),
]
