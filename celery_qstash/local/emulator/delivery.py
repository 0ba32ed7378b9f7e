"""The delivery loop: send due messages to their destinations, like QStash does.

``tick(now)`` is the whole algorithm in one deterministic step: fire due
schedules, claim what is due (the store enforces queues and flow control),
send every claimed message (in parallel on a small pool), and record every
outcome (DELIVERED, RETRY with its delay, FAILED + DLQ, callbacks) in one
transaction before returning. Tests drive it with a ``FakeClock``.

``start_background()`` runs the same steps on threads, never polling
(``background.py``). One attempt, its retry delay and the recording of outcomes are
in ``attempt.py``; the callback messages in ``callbacks.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import httpx

from celery_qstash.clock import Clock

from .attempt import MAX_RESPONSE_BODY, resolve_route
from .background import PREPARE_AHEAD_MS, Background
from .publish import DEFAULT_MAX_TIMEOUT_MS
from .sender import ClientExchange, CoreExchange, Exchange
from .store import Store

__all__ = ["DEFAULT_CONCURRENCY", "DEFAULT_MAX_TIMEOUT_MS", "MAX_RESPONSE_BODY",
           "PREPARE_AHEAD_MS", "DeliveryLoop", "resolve_route"]

#: Attempt threads kept at all times (``delivery_concurrency``): enough that messages
#: falling due together are not queued behind a few slow destinations, few enough for a
#: laptop. Spares are added while they are all busy (``background.py``).
DEFAULT_CONCURRENCY = 8


class DeliveryLoop(Background):
    def __init__(
        self,
        store: Store,
        clock: Clock,
        http_client_factory: Callable[[], httpx.Client] | None = None,
        routes: Mapping[str, str] | None = None,
        *,
        signing_keys: Callable[[str], tuple[str, str]] | None = None,
        max_timeout_ms: int = DEFAULT_MAX_TIMEOUT_MS,
        workers: int = DEFAULT_CONCURRENCY,
        batch: int = 10_000,
    ) -> None:
        # A caller's client (tests: httpx.MockTransport) is used as it is; otherwise
        # httpcore's pool directly (sender.py says why).
        exchange: Exchange = (
            ClientExchange(http_client_factory()) if http_client_factory is not None
            else CoreExchange(max(1, workers))
        )
        super().__init__(store, clock, exchange, routes, signing_keys=signing_keys,
                         max_timeout_ms=max_timeout_ms)
        self._init_background(workers)
        self.batch = batch

    def tick(self, now: float | None = None) -> int:
        """Deliver everything due at ``now`` (default: the clock); returns attempts made.

        One round: messages that become due because of this round (a freed queue
        slot, a retry with zero delay) go in the next tick. Outcomes are recorded
        together, in the order the messages were claimed.
        """
        now_ms = int((self.clock.now() if now is None else now) * 1000)
        self.store.fire_due_schedules(now_ms)
        claimed = self.store.claim_due(now_ms, self.batch)
        if not claimed:
            return 0
        if len(claimed) == 1:
            outcomes = [self._try(claimed[0], now_ms, None)]
        else:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(claimed)),
                                    thread_name_prefix="qstash-tick") as pool:
                outcomes = list(pool.map(lambda m: self._try(m, now_ms, None), claimed))
        self._record(outcomes)
        return len(claimed)

    def close(self) -> None:
        self.stop()
        self._exchange.close()
