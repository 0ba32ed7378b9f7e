"""Flow control: ``/v2/flowControl`` list, read, actions; ``/v2/globalParallelism``."""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..api import (
    Api,
    Route,
    _int_param,
    _segment,
)
from ..errors import BadRequest
from ..publish import (
    MAX_PARALLELISM,
    MAX_PERIOD_SECONDS,
    MAX_RATE,
    parse_duration_ms,
)

__all__ = ["ROUTES"]


async def list_flows(api: Api, request: Request, user: str) -> Response:
    return JSONResponse(api.store.flow.all(user, request.query_params.get("search")))


async def get_flow(api: Api, request: Request, user: str) -> Response:
    return JSONResponse(api.store.flow.get(user, _segment(request, 3)))


async def flow_action(api: Api, request: Request, user: str) -> Response:
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
    # Applied after the messages already due are claimed, as QStash would have sent them
    # by now (``DeliveryLoop.settle``): a reset never precedes an earlier publish's count.
    await anyio.to_thread.run_sync(api.emulator.loop.settle)
    api.store.flow.update(
        user, key, action,
        parallelism=_int_param(q.get("parallelism"), "parallelism", low=1,
                               high=MAX_PARALLELISM) if pin else None,
        rate=_int_param(q.get("rate"), "rate", low=1, high=MAX_RATE) if pin else None,
        period_s=period_s,
        unpin_parallelism=q.get("parallelism", "").lower() == "true",
        unpin_rate=q.get("rate", "").lower() == "true",
    )
    return Response(status_code=200)


async def global_parallelism(api: Api, request: Request, user: str) -> Response:
    return JSONResponse(api.store.flow.global_parallelism(user))


ROUTES: list[Route] = [
    ("/v2/flowControl", ["GET"], list_flows),
    ("/v2/flowControl/{key}", ["GET"], get_flow),
    ("/v2/flowControl/{key}/{action}", ["POST"], flow_action),
    ("/v2/globalParallelism", ["GET"], global_parallelism),
]
