"""The duplicate ledger: which deliveries this receiver has already seen."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol

#: QStash's documented deduplication window; a redelivered callback comes within it.
DEDUP_WINDOW_SECONDS = 600.0


class CallbackLedger(Protocol):
    """Remembers callback message ids; share one (Redis, a database) across processes."""

    def claim(self, key: str, now: float) -> bool:
        """True the first time ``key`` is seen within the window, False for a repeat."""


class MemoryLedger:
    """An in-process ledger: enough for one process; bounded by the window and a size cap."""

    def __init__(self, window: float = DEDUP_WINDOW_SECONDS, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, key: str, now: float) -> bool:
        with self._lock:
            while self._seen:
                oldest, at = next(iter(self._seen.items()))
                if at > now - self.window and len(self._seen) < self.max_entries:
                    break
                del self._seen[oldest]
            if key in self._seen:
                return False
            self._seen[key] = now
            return True
