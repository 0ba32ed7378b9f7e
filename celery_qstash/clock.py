"""Time as a parameter.

Everything that waits or schedules (the emulator's delivery loop, the sandbox's
rate limiter, publish retries, result polling) takes a :class:`Clock`, so tests
move time with :class:`FakeClock` instead of sleeping or patching.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timezone
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "utc_moment"]


def utc_moment(ts: float) -> datetime | None:
    """Epoch seconds as an aware UTC datetime; None when no datetime can hold them.

    A time is shown wherever it was stored, and QStash (or a publisher) may store one past
    the year 9999 (``Upstash-Not-Before: 1099511627776``) or none at all (NaN): every page
    and CLI line formats through here and shows the number instead of failing.
    """
    if not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return None
    try:
        return datetime.fromtimestamp(ts, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall clock, UTC)."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; a fake clock advances instead."""


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock that only moves when told to (thread-safe)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        with self._lock:
            self._now = float(when)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)
