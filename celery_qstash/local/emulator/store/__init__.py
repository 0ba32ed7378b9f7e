"""The emulator's state in SQLite, one module per resource. No HTTP here.

- ``schema``: the tables and their migrations; ``db``: the shared connection,
  its lock and transactions, the clock;
- ``messages`` (publish, read, cancel), ``attempts`` (due, claim, outcome),
  ``events`` (the log), ``dlq``, ``queues``, ``topics`` (URL groups), ``flow``
  (flow control), ``schedules``, ``keys`` (signing keys).

Each resource is one small class over the shared :class:`~.db.Database`; the
ones that act on another resource are handed it when :class:`Store` wires them
together (imports only flow down: messages -> queues/flow/topics/events, never
back). :class:`Store` is the one object the API and the delivery loop hold: the routes
call its resources (``store.dlq.page(...)``); its few methods are the entry points the
delivery loop and the tests use (publish, claim, finish, list).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from celery_qstash.clock import Clock

from ..publish import PublishOptions
from .attempts import Attempts
from .db import DB_FILENAME, JSON, Database
from .dlq import DLQ_RETENTION_S, DeadLetters
from .events import EventFilter, Events
from .flow import FlowControl
from .keys import SigningKeys
from .messages import DEDUP_WINDOW_MS, Messages, Published
from .queues import Queues
from .results import AttemptResult, CallbackFactory, CallbackSpec
from .schedules import Schedules
from .secrets import Secrets
from .topics import UrlGroups, is_url

__all__ = [
    "DB_FILENAME",
    "DEDUP_WINDOW_MS",
    "DLQ_RETENTION_S",
    "JSON",
    "AttemptResult",
    "CallbackSpec",
    "EventFilter",
    "Published",
    "Store",
    "is_url",
]


class Store:
    """All emulator state. ``path=None`` keeps it in memory."""

    def __init__(self, path: str | Path | None = None, clock: Clock | None = None, *,
                 dlq_retention_s: float = DLQ_RETENTION_S) -> None:
        self.db = Database(path, clock)
        self.clock = self.db.clock
        self.path = self.db.path
        self.events = Events(self.db)
        self.keys = SigningKeys(self.db)
        self.secrets = Secrets(self.db)
        self.queues = Queues(self.db, self.events, self.secrets)
        self.groups = UrlGroups(self.db, self.secrets)
        self.flow = FlowControl(self.db)
        self.messages = Messages(self.db, self.events, self.queues, self.flow, self.groups,
                                 self.secrets)
        self.dlq = DeadLetters(self.db, self.messages, retention_ms=int(dlq_retention_s * 1000))
        self.schedules = Schedules(self.db, self.messages, self.queues, self.groups)
        self.attempts = Attempts(self.db, self.events, self.queues, self.flow, self.messages,
                                 self.dlq, self.schedules)
        self.attempts.recover()

    # -- plumbing ---------------------------------------------------------------

    @property
    def on_change(self) -> Callable[[], None] | None:
        return self.db.on_change

    @on_change.setter
    def on_change(self, callback: Callable[[], None] | None) -> None:
        self.db.on_change = callback

    @property
    def _db(self) -> sqlite3.Connection:  # tests trace the SQL a call runs
        return self.db.conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self.db.tx() as cur:
            yield cur

    def now_ms(self) -> int:
        return self.db.now_ms()

    def close(self) -> None:
        self.db.close()

    def reset(self) -> None:
        self.db.reset()

    def explain_due_query(self) -> str:
        return self.attempts.explain_due_query()

    # -- entry points, by resource ---------------------------------------------

    def signing_keys(self, user: str, default: tuple[str, str] | None = None) -> tuple[str, str]:
        return self.keys.get(user, default)

    def list_events(self, user: str, flt: EventFilter, cursor: str | None,
                    count: int) -> tuple[list[JSON], str | None]:
        return self.events.page(user, flt, cursor, count)

    def publish(self, user: str, destination: str, options: PublishOptions, *,
                queue: str | None = None, schedule_id: str | None = None,
                caller_ip: str | None = None, kind: str = "message",
                now_ms: int | None = None) -> list[Published]:
        return self.messages.publish(user, destination, options, queue=queue,
                                     schedule_id=schedule_id, caller_ip=caller_ip, kind=kind,
                                     now_ms=now_ms)

    def _publish(self, cur: sqlite3.Cursor, user: str, destination: str,
                 options: PublishOptions, *, queue: str | None, schedule_id: str | None,
                 caller_ip: str | None, kind: str, now_ms: int) -> list[Published]:
        """Publish inside the caller's transaction (benchmarks seed many in one)."""
        return self.messages.publish_in(cur, user, destination, options, queue=queue,
                                        schedule_id=schedule_id, caller_ip=caller_ip,
                                        kind=kind, now_ms=now_ms)

    def get_message(self, user: str, message_id: str) -> JSON:
        return self.messages.get(user, message_id)

    def pending_count(self) -> int:
        return self.messages.pending_count()

    def cancel(self, user: str, message_ids: Sequence[str] | None = None,
               flt: EventFilter | None = None) -> int:
        return self.messages.cancel(user, message_ids, flt)

    def next_due_ms(self) -> int | None:
        return self.attempts.next_due_ms()

    def claim_due(self, now_ms: int, limit: int = 256) -> list[JSON]:
        return self.attempts.claim_due(now_ms, limit)

    def claim(self, now_ms: int, limit: int = 256,
              until_ms: int | None = None) -> list[tuple[int, JSON]]:
        return self.attempts.claim(now_ms, limit, until_ms)

    def release(self, claimed: list[JSON], now_ms: int) -> list[JSON]:
        return self.attempts.release(claimed, now_ms)

    def unclaim(self, message_ids: list[str]) -> None:
        self.attempts.unclaim(message_ids)

    def set_aside(self, message_id: str, exc: Exception) -> None:
        self.attempts.set_aside(message_id, exc)

    def finish_attempt(self, message: JSON, result: AttemptResult, now_ms: int,
                       callbacks: CallbackFactory | None = None) -> str:
        return self.attempts.finish_attempt(message, result, now_ms, callbacks)

    def finish_many(self, outcomes: list[tuple[JSON, AttemptResult, int]],
                    callbacks: CallbackFactory | None = None) -> list[str]:
        return self.attempts.finish_many(outcomes, callbacks)

    def list_dlq(self, user: str, flt: EventFilter, cursor: str | None,
                 count: int) -> tuple[list[JSON], str | None]:
        return self.dlq.page(user, flt, cursor, count)

    def upsert_queue(self, user: str, name: str, parallelism: int, paused: bool) -> None:
        self.queues.upsert(user, name, parallelism, paused)

    def list_queues(self, user: str) -> list[JSON]:
        return self.queues.all(user)

    def fire_due_schedules(self, now_ms: int, limit: int = 256) -> int:
        return self.schedules.fire_due(now_ms, limit)
