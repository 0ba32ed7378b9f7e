"""The one polling helper of the tests that watch real servers work in the background.

A bound on real time, never an expectation of one: it returns as soon as the
condition holds, and fails naming what it waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], what: str = "", timeout: float = 20.0) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what or predicate} after {timeout} s")
        time.sleep(0.02)
