"""QStash's plan quotas, for an emulator started with ``--plan free|payg|pro`` (off by default).

Figures from upstash.com/pricing/qstash (Free, Pay as You Go, Fixed 1M as "pro") and the
behaviour from QStash's docs ``api/api-ratelimiting``:

- the daily message quota: a publish past it is a **429** carrying ``RateLimit-Limit``,
  ``RateLimit-Remaining`` and ``RateLimit-Reset`` (unix seconds, the next UTC midnight);
- a per-second burst limit on the other, non-publishing endpoints (logs, listings):
  **429** with ``Burst-RateLimit-Limit/Remaining/Reset``; publish, enqueue and batch
  have none;
- the resource caps (queues, schedules, URL groups): creating one more is a **412**,
  as the OAS answers for "exceeded the maximum number of queues/schedules".
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from .errors import ApiError

__all__ = ["PLANS", "Plan", "QuotaExceeded", "Quotas"]


@dataclass(frozen=True)
class Plan:
    name: str
    messages_per_day: int | None  # None: unlimited
    burst_per_second: int
    max_queues: int
    max_schedules: int
    max_url_groups: int


PLANS = {
    "free": Plan("free", 1_000, 100, 10, 10, 1),
    "payg": Plan("payg", None, 100, 100, 1_000, 100),
    "pro": Plan("pro", 1_000_000, 1_000, 1_000, 10_000, 1_000),
}


class QuotaExceeded(ApiError):
    """A plan limit: 429 (rate) or 412 (resource cap), with QStash's headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _next_midnight(now: float) -> int:
    return (int(now) // 86_400 + 1) * 86_400


class Quotas:
    """Counts against one :class:`Plan` (per user); times come from the caller's clock."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._burst: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check_publish(self, published_today: int, count: int, now: float) -> None:
        """Refuse a publish of ``count`` messages past the daily quota."""
        limit = self.plan.messages_per_day
        if limit is None:
            return
        if published_today + count > limit:
            raise QuotaExceeded(429, f"daily message quota of the {self.plan.name} plan "
                                f"({limit}) exceeded", {
                                    "RateLimit-Limit": str(limit),
                                    "RateLimit-Remaining": str(max(0, limit - published_today)),
                                    "RateLimit-Reset": str(_next_midnight(now)),
                                })

    def check_burst(self, user: str, now: float) -> None:
        """One more non-publishing request this second, or a 429."""
        limit = self.plan.burst_per_second
        with self._lock:
            hits = self._burst.setdefault(user, deque())
            while hits and hits[0] <= now - 1.0:
                hits.popleft()
            if len(hits) >= limit:
                raise QuotaExceeded(429, "too many requests per second", {
                    "Burst-RateLimit-Limit": str(limit),
                    "Burst-RateLimit-Remaining": "0",
                    "Burst-RateLimit-Reset": str(int(hits[0]) + 1),
                })
            hits.append(now)

    def check_cap(self, what: str, existing: int, cap: int) -> None:
        if existing >= cap:
            raise QuotaExceeded(412, f"exceeded the maximum number of {what} of the "
                                f"{self.plan.name} plan ({cap})")
