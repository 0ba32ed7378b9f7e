"""Errors that become QStash's ``{"error": "..."}`` responses.

Messages never include tokens, signing keys or forwarded header values.
"""

from __future__ import annotations

__all__ = ["ApiError", "BadRequest", "NotFound", "Unauthorized"]


class ApiError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError, ValueError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class NotFound(ApiError):
    status = 404
