"""The delivery ledger: which QStash deliveries are done, and which are running now.

QStash delivers at least once, so the receiver asks the ledger before it runs anything
and tells it afterwards. The rule every anchor that got it right follows: a delivery is
recorded as **done only after its handler succeeded**, never "seen" before it.

:meth:`DeliveryLedger.begin` atomically takes a short *lease* on a key:

* ``"run"``: the lease is ours: run the handler, then :meth:`~DeliveryLedger.finish`
  (success) or :meth:`~DeliveryLedger.release` (failure, so QStash's retry runs again);
* ``"done"``: an earlier delivery succeeded: answer 2xx, run nothing;
* ``"busy"``: another delivery of the same message is running right now: answer
  non-2xx so QStash retries later (a 2xx here would record success before the first
  delivery knows it succeeded).

The key comes from the signed body (:func:`celery_qstash.receiver.core.delivery_key`): a
task message's per-publish nonce (every ``self.retry()`` publishes anew, so a Celery
retry, which keeps its task id, is never taken for a duplicate; a schedule's firings add
their message id), a callback's source message and attempt. A captured request replayed
under a fresh ``Upstash-Message-Id``, which is not signed, is still the same delivery.
A lease expires by itself, so a process killed mid-body leaves the message to QStash's
next retry.

:class:`MemoryLedger` serves one process. Several processes behind a load balancer
share :class:`celery_qstash.receiver.ledgers.RedisLedger` or
:class:`celery_qstash.receiver.ledgers.DjangoCacheLedger`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Literal, Protocol

from ..config import load_settings

__all__ = ["DEDUP_WINDOW_SECONDS", "DEFAULT_LEASE_SECONDS", "Claim", "DeliveryLedger",
           "MemoryLedger", "claim_once", "ledger_from_settings"]

#: QStash's documented deduplication window; a redelivered message comes within it.
DEDUP_WINDOW_SECONDS = 600.0
#: How long a running delivery holds its key when the task sets no time limit. QStash's
#: own request timeout is at most this long on the free plan; a task with a longer
#: ``time_limit`` holds its key for that long.
DEFAULT_LEASE_SECONDS = 300.0

Claim = Literal["run", "done", "busy"]


class DeliveryLedger(Protocol):
    """Leases and done markers for delivery keys; share one across processes."""

    def begin(self, key: str, now: float, lease: float) -> Claim:
        """Take ``key`` for ``lease`` seconds (``"run"``), or say why not."""

    def finish(self, key: str, now: float) -> None:
        """``key`` succeeded: later deliveries get ``"done"`` for the window."""

    def release(self, key: str) -> None:
        """``key`` failed: drop our lease so QStash's retry runs it again."""


class MemoryLedger:
    """An in-process ledger: enough for one process; bounded by the window and a size cap.

    ``window`` is how long a done marker is kept (QStash's deduplication window).
    """

    def __init__(self, window: float = DEDUP_WINDOW_SECONDS, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        # key -> (state, until): state "done" until the window ends, "lease" until it expires
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._entries:
            oldest, (_, until) = next(iter(self._entries.items()))
            if until > now and len(self._entries) < self.max_entries:
                break
            del self._entries[oldest]

    def begin(self, key: str, now: float, lease: float) -> Claim:
        with self._lock:
            self._expire(now)
            entry = self._entries.get(key)
            if entry is not None and entry[1] > now:
                return "done" if entry[0] == "done" else "busy"
            self._entries[key] = ("lease", now + lease)
            self._entries.move_to_end(key)
            return "run"

    def finish(self, key: str, now: float) -> None:
        with self._lock:
            self._entries[key] = ("done", now + self.window)
            self._entries.move_to_end(key)

    def release(self, key: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == "lease":
                del self._entries[key]


def claim_once(ledger: DeliveryLedger, key: str, now: float) -> bool:
    """Take and finish ``key`` at once: for a key that guards nothing that can fail (a
    signature's token id, which only stops a captured request from being replayed)."""
    if ledger.begin(key, now, DEDUP_WINDOW_SECONDS) != "run":
        return False
    ledger.finish(key, now)
    return True


def ledger_from_settings(celery_app: Any) -> DeliveryLedger:
    """The ledger ``qstash_ledger_url`` names: in-process by default, ``redis://…`` (a
    :class:`~celery_qstash.receiver.ledgers.RedisLedger`, the ``redis`` extra) or
    ``django://alias`` (Django's cache framework) when several processes receive."""
    url = load_settings(celery_app.conf).ledger_url
    if not url:
        return MemoryLedger()
    import importlib

    # Only when asked for: redis-py is an extra.
    ledgers = importlib.import_module("celery_qstash.receiver.ledgers")
    ledger: DeliveryLedger = ledgers.ledger_from_url(url)
    return ledger
