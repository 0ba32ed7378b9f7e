"""Signing keys: ``/v2/keys`` read and rotate."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..api import (
    Api,
    Route,
)

__all__ = ["ROUTES"]


async def get_keys(api: Api, request: Request, user: str) -> Response:
    current, nxt = api.emulator.signing_keys(user)
    return JSONResponse({"current": current, "next": nxt})


async def rotate_keys(api: Api, request: Request, user: str) -> Response:
    api.emulator.signing_keys(user)
    current, nxt = api.store.keys.rotate(user)
    return JSONResponse({"current": current, "next": nxt})


ROUTES: list[Route] = [
    ("/v2/keys", ["GET"], get_keys),
    ("/v2/keys/rotate", ["POST"], rotate_keys),
]
