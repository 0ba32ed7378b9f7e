"""The email event store: what AutoSend said happened to each email, for status to show.

Written by the webhook endpoint (each event under its ``emailId``) and by the callback
receiver (which email id, or bulk batch id, a task's delivery got back from AutoSend,
so a later webhook finds its task). Read by status: ``AsyncResult(id).info``,
``celery-qstash inspect``, the dashboard and Flower's task info look up the task's
``emailId`` (from QStash's logs) here.

``autosend_event_store_url`` chooses it, with the same choices as the delivery ledger:

* ``redis://…`` (``rediss://``, ``unix://``): :class:`RedisEventStore` (the ``redis`` extra);
* ``django://<cache alias>``: :class:`DjangoCacheEventStore`, a cache every process shares.

Without it, the webhook endpoint keeps a :class:`MemoryEventStore` per app (enough to find
a task within one process) and status shows nothing past AutoSend's answer. Entries
expire after ``ttl`` (30 days by default); an email keeps its last :data:`MAX_EVENTS`.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from ..config import load_settings
from ..errors import ConfigurationError, scrub
from .events import EmailEvent

if TYPE_CHECKING:
    import redis

__all__ = [
    "DEFAULT_TTL", "MAX_EVENTS", "DjangoCacheEventStore", "EventStore", "MemoryEventStore",
    "RedisEventStore", "configured_event_store", "email_fate", "event_store_for",
    "event_store_from_url", "last_event",
]

DEFAULT_TTL = 30 * 24 * 3600.0
#: Events kept per email (opens and clicks can repeat without end).
MAX_EVENTS = 100
PREFIX = "celery-qstash:events:"
_SETTING = "autosend_event_store_url"

log = logging.getLogger("celery_qstash.webhooks")


class EventStore(Protocol):
    """Email events by ``emailId``, and which task an email or bulk batch came from."""

    def add(self, event: EmailEvent) -> None:
        """Keep ``event`` under its ``email_id`` (and its ``batch_id``'s emails)."""

    def events(self, email_id: str) -> list[EmailEvent]:
        """The email's events in the order they were kept."""

    def batch_emails(self, batch_id: str) -> list[str]:
        """The email ids that events of a bulk batch named."""

    def link(self, key: str, task_id: str, task_name: str | None) -> None:
        """``key`` (``email:<id>`` or ``batch:<id>``) came from this task."""

    def task_for(self, key: str) -> tuple[str, str | None] | None:
        """The task ``key`` came from: ``(task id, task name)``."""


def _dump_link(task_id: str, task_name: str | None) -> str:
    return json.dumps({"task_id": task_id, "task_name": task_name})


def _load_link(raw: Any) -> tuple[str, str | None] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return str(data["task_id"]), data.get("task_name")
    except (ValueError, KeyError, TypeError):
        return None


def _load_event(raw: Any) -> EmailEvent | None:
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return EmailEvent.from_record(data) if isinstance(data, Mapping) else None


class MemoryEventStore:
    """One process's store (the default when none is configured, and tests'). Bounded:
    the oldest emails are forgotten past ``max_emails``."""

    def __init__(self, max_emails: int = 100_000) -> None:
        self.max_emails = max_emails
        self._events: OrderedDict[str, list[EmailEvent]] = OrderedDict()
        self._batches: OrderedDict[str, list[str]] = OrderedDict()
        self._links: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def _bound(self, table: OrderedDict[str, Any]) -> None:
        while len(table) > self.max_emails:
            table.popitem(last=False)

    def add(self, event: EmailEvent) -> None:
        if not event.email_id:
            return
        with self._lock:
            kept = self._events.setdefault(event.email_id, [])
            kept.append(event)
            del kept[:-MAX_EVENTS]
            self._events.move_to_end(event.email_id)
            self._bound(self._events)
            if event.batch_id:
                emails = self._batches.setdefault(event.batch_id, [])
                if event.email_id not in emails:
                    emails.append(event.email_id)
                self._bound(self._batches)

    def events(self, email_id: str) -> list[EmailEvent]:
        with self._lock:
            return list(self._events.get(email_id, ()))

    def batch_emails(self, batch_id: str) -> list[str]:
        with self._lock:
            return list(self._batches.get(batch_id, ()))

    def link(self, key: str, task_id: str, task_name: str | None) -> None:
        with self._lock:
            self._links[key] = (task_id, task_name)
            self._links.move_to_end(key)
            self._bound(self._links)

    def task_for(self, key: str) -> tuple[str, str | None] | None:
        with self._lock:
            return self._links.get(key)


class RedisEventStore:
    """The store in Redis: a list of events per email, a set of emails per batch, a key
    per link; each expires ``ttl`` seconds after its last write."""

    def __init__(self, client: redis.Redis, *, ttl: float = DEFAULT_TTL,
                 prefix: str = PREFIX) -> None:
        self.client = client
        self.ttl = int(ttl)
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, *, ttl: float = DEFAULT_TTL, **options: Any) -> RedisEventStore:
        import redis

        return cls(redis.Redis.from_url(url, **options), ttl=ttl)

    def add(self, event: EmailEvent) -> None:
        if not event.email_id:
            return
        key = f"{self.prefix}email:{event.email_id}"
        pipe = self.client.pipeline()
        pipe.rpush(key, json.dumps(event.record()))
        pipe.ltrim(key, -MAX_EVENTS, -1)
        pipe.expire(key, self.ttl)
        if event.batch_id:
            batch = f"{self.prefix}batch-emails:{event.batch_id}"
            pipe.sadd(batch, event.email_id)
            pipe.expire(batch, self.ttl)
        pipe.execute()

    def events(self, email_id: str) -> list[EmailEvent]:
        raw = self.client.lrange(f"{self.prefix}email:{email_id}", 0, -1)
        return [e for e in map(_load_event, raw) if e is not None]

    def batch_emails(self, batch_id: str) -> list[str]:
        members = self.client.smembers(f"{self.prefix}batch-emails:{batch_id}")
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    def link(self, key: str, task_id: str, task_name: str | None) -> None:
        self.client.set(f"{self.prefix}task:{key}", _dump_link(task_id, task_name), ex=self.ttl)

    def task_for(self, key: str) -> tuple[str, str | None] | None:
        return _load_link(self.client.get(f"{self.prefix}task:{key}"))


class DjangoCacheEventStore:
    """The store in a Django cache that every process shares. An email's events are
    numbered with the cache's atomic ``incr``, one key each, so two events arriving at
    once are both kept."""

    def __init__(self, alias: str = "default", *, ttl: float = DEFAULT_TTL,
                 prefix: str = PREFIX) -> None:
        from django.core.cache import caches

        try:
            caches[alias]
        except Exception as exc:  # InvalidCacheBackendError, ImproperlyConfigured
            raise ValueError(f"no usable Django cache {alias!r}: {exc}") from None
        self.alias = alias
        self.ttl = int(ttl)
        self.prefix = prefix

    @property
    def cache(self) -> Any:
        from django.core.cache import caches

        return caches[self.alias]

    def _append(self, key: str, value: str) -> None:
        cache = self.cache
        counter = f"{self.prefix}{key}:n"
        cache.add(counter, 0, timeout=self.ttl)
        number = cache.incr(counter)
        cache.touch(counter, timeout=self.ttl)
        cache.set(f"{self.prefix}{key}:{number}", value, timeout=self.ttl)

    def _items(self, key: str) -> list[Any]:
        cache = self.cache
        count = int(cache.get(f"{self.prefix}{key}:n") or 0)
        first = max(1, count - MAX_EVENTS + 1)
        names = [f"{self.prefix}{key}:{n}" for n in range(first, count + 1)]
        found = cache.get_many(names)
        return [found[name] for name in names if name in found]

    def add(self, event: EmailEvent) -> None:
        if not event.email_id:
            return
        self._append(f"email:{event.email_id}", json.dumps(event.record()))
        if event.batch_id and event.email_id not in self.batch_emails(event.batch_id):
            self._append(f"batch-emails:{event.batch_id}", event.email_id)

    def events(self, email_id: str) -> list[EmailEvent]:
        return [e for e in map(_load_event, self._items(f"email:{email_id}")) if e is not None]

    def batch_emails(self, batch_id: str) -> list[str]:
        return list(dict.fromkeys(str(i) for i in self._items(f"batch-emails:{batch_id}")))

    def link(self, key: str, task_id: str, task_name: str | None) -> None:
        self.cache.set(f"{self.prefix}task:{key}", _dump_link(task_id, task_name),
                       timeout=self.ttl)

    def task_for(self, key: str) -> tuple[str, str | None] | None:
        return _load_link(self.cache.get(f"{self.prefix}task:{key}"))


def event_store_from_url(url: str) -> EventStore:
    """The store ``autosend_event_store_url`` names (:class:`ConfigurationError` naming
    the setting, never the URL's password, for anything else)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        try:
            return RedisEventStore.from_url(url)
        except ImportError:
            raise ConfigurationError(
                _SETTING, "a Redis event store needs redis-py: pip install 'celery-qstash[redis]'"
            ) from None
        except ValueError as exc:
            raise ConfigurationError(
                _SETTING, f"redis-py cannot read this URL: {scrub(str(exc), [parts.password])}"
            ) from None
    if scheme == "django" and parts.netloc and not parts.path.strip("/"):
        try:
            return DjangoCacheEventStore(parts.netloc)
        except (ImportError, ValueError) as exc:
            raise ConfigurationError(_SETTING, f"a django:// event store: {exc}") from None
    raise ConfigurationError(
        _SETTING, "expected redis://, rediss://, unix:// or django://<cache alias>"
    )


_configured: dict[str, EventStore] = {}
_memory: weakref.WeakKeyDictionary[Any, MemoryEventStore] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def configured_event_store(conf: Any) -> EventStore | None:
    """The store the settings name (one per URL per process), or ``None`` without one."""
    url = load_settings(conf).event_store_url
    if not url:
        return None
    with _lock:
        store = _configured.get(url)
        if store is None:
            store = _configured[url] = event_store_from_url(url)
        return store


def event_store_for(celery_app: Any) -> EventStore:
    """Where the webhook endpoint and the callback receiver write: the configured store,
    else this app's in-process one."""
    store = configured_event_store(celery_app.conf)
    if store is not None:
        return store
    with _lock:
        found = _memory.get(celery_app)
        if found is None:
            found = _memory[celery_app] = MemoryEventStore()
        return found


def last_event(store: EventStore, result: Any) -> dict[str, Any] | None:
    """The latest fate of what a task sent (``result`` is AutoSend's ``data``): for one
    email, its newest event; for a bulk batch, also how many emails ended each way."""
    if not isinstance(result, Mapping):
        return None
    email_id, batch_id = result.get("emailId"), result.get("batchId")
    if isinstance(email_id, str) and email_id:
        events = store.events(email_id)
        if not events:
            return None
        newest = max(enumerate(events), key=lambda pair: (pair[1].timestamp, pair[0]))[1]
        return {**_shown(newest), "events": [_shown(e) for e in events]}
    if isinstance(batch_id, str) and batch_id:
        counts: dict[str, int] = {}
        newest_of_all: EmailEvent | None = None
        for one in store.batch_emails(batch_id):
            events = store.events(one)
            if not events:
                continue
            newest = max(enumerate(events), key=lambda pair: (pair[1].timestamp, pair[0]))[1]
            counts[newest.event] = counts.get(newest.event, 0) + 1
            if newest_of_all is None or newest.timestamp >= newest_of_all.timestamp:
                newest_of_all = newest
        if newest_of_all is None:
            return None
        return {**_shown(newest_of_all), "emails": dict(sorted(counts.items()))}
    return None


def _shown(event: EmailEvent) -> dict[str, Any]:
    return {"event": event.event, "fate": event.fate, "timestamp": event.timestamp.isoformat(),
            "recipient": event.recipient, "bounce_type": event.bounce_type,
            "reason": event.reason, "email_id": event.email_id}


def email_fate(conf: Any, result: Any, *, store: EventStore | None = None) -> dict[str, Any] | None:
    """Status's question: what became of the email(s) a SUCCESS task's ``result`` names,
    from ``store`` or the configured one. ``None`` without a store, without events, or when
    the store cannot be read (logged: status still answers from QStash)."""
    try:
        store = store or configured_event_store(conf)
        return last_event(store, result) if store is not None else None
    except Exception as exc:
        log.warning("the email event store could not be read: %s", scrub(str(exc), ()))
        return None
