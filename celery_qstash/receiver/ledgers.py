"""Delivery ledgers shared by several processes: Redis and Django's cache framework.

:mod:`celery_qstash.receiver.ledger` defines the interface (``begin``/``finish``/
``release``) and the in-process :class:`~celery_qstash.receiver.ledger.MemoryLedger`.
When more than one process receives QStash's deliveries (several web workers, several
machines behind a load balancer), a redelivery may reach another process than the first
delivery, so the ledger must live where every process sees it:

* :class:`RedisLedger`: one key per delivery in Redis (the ``redis`` extra, redis-py);
* :class:`DjangoCacheLedger`: one key per delivery in a Django cache that every process
  shares (Redis, Memcached, the database cache).

:func:`ledger_from_url` reads the ``qstash_ledger_url`` setting: ``redis://``,
``rediss://``, ``unix://`` or ``django://<cache alias>``.

**Whose clock.** The interface passes ``now`` so that :class:`MemoryLedger` runs on a
fake clock in tests. These ledgers do not use it: a lease and a done marker are stored
with a relative expiry (Redis's ``PX``, a Django cache ``timeout``) and the *server*
drops them on its own clock, the one clock every process shares, so two processes'
clock skew never makes a lease look expired to one of them and not the other.

**Whose lease.** :meth:`begin` stores a random token as the lease; this object remembers
the token it holds for each key, and :meth:`release` deletes the key only while it
still holds that token. So a process whose lease expired (a body that ran past it) and
whose key another process has since taken never drops the other process's lease. Within
one process the lease on a key is this object's, whichever caller releases it (as with
``MemoryLedger``).
"""

from __future__ import annotations

import math
import threading
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError, scrub
from .ledger import DEDUP_WINDOW_SECONDS, Claim, DeliveryLedger

if TYPE_CHECKING:
    import redis

__all__ = ["DEFAULT_PREFIX", "DjangoCacheLedger", "RedisLedger", "ledger_from_url"]

#: Every key a ledger writes starts with this, so the ledger can share a Redis database
#: or a cache with the app's own keys.
DEFAULT_PREFIX = "celery-qstash:delivery:"
#: What a finished key holds for the window; a lease holds ``lease:<random token>``.
DONE = "done"
#: How many tokens of running deliveries one object remembers; a caller that neither
#: finishes nor releases (a thread that died mid-body) must not grow it for ever.
MAX_HELD = 100_000
# Compare-and-delete, the script redis-py's own Lock releases with: atomic on the server,
# so nothing can take the key between the comparison and the delete.
_RELEASE_SCRIPT = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
"""
_SETTING = "qstash_ledger_url"


def _positive(name: str, seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {seconds!r}")
    return float(seconds)


def _text(value: Any) -> str | None:
    """A stored value as text: redis-py answers bytes unless ``decode_responses`` is set."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


class _Leases:
    """The tokens this object holds, by key (thread-safe, bounded)."""

    def __init__(self) -> None:
        self._tokens: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def new() -> str:
        return f"lease:{uuid.uuid4().hex}"

    def hold(self, key: str, token: str) -> None:
        with self._lock:
            self._tokens[key] = token
            self._tokens.move_to_end(key)
            while len(self._tokens) > MAX_HELD:
                self._tokens.popitem(last=False)

    def drop(self, key: str) -> str | None:
        with self._lock:
            return self._tokens.pop(key, None)


class RedisLedger:
    """A delivery ledger in Redis, shared by every process that uses the same server.

    ``begin`` is one atomic ``SET key token NX PX lease``: of any number of processes
    asking at once, exactly one gets ``"run"``. The others read the key to tell
    ``"done"`` (a finished delivery's marker) from ``"busy"`` (a lease). ``finish``
    overwrites the key with the done marker for ``window`` seconds; ``release`` deletes
    it only if it still holds this object's lease token (a Lua compare-and-delete).

    ``now`` is not used: expiry is Redis's (see the module docstring). Errors reaching
    Redis propagate as redis-py's exceptions (``redis.exceptions.ConnectionError``…), so
    the receiver answers non-2xx and QStash retries.

    Build it from a client (``RedisLedger(redis.Redis(...))``, any client whose
    commands are ``redis.Redis``'s) or a URL (:meth:`from_url`).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        window: float = DEDUP_WINDOW_SECONDS,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.client = client
        self.window = _positive("window", window)
        self.prefix = prefix
        self._leases = _Leases()
        self._release = client.register_script(_RELEASE_SCRIPT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        window: float = DEDUP_WINDOW_SECONDS,
        prefix: str = DEFAULT_PREFIX,
        **client_options: Any,
    ) -> RedisLedger:
        """A ledger on a new client for ``url`` (``redis://``, ``rediss://`` or
        ``unix://``, as ``redis.Redis.from_url`` reads them, options in the query).
        ``client_options`` go to ``redis.Redis.from_url``."""
        import redis

        return cls(redis.Redis.from_url(url, **client_options), window=window, prefix=prefix)

    def begin(self, key: str, now: float, lease: float) -> Claim:
        """``"run"`` if this call took ``key`` for ``lease`` seconds (of Redis's clock),
        else ``"done"`` or ``"busy"``. ``now`` is not used."""
        milliseconds = math.ceil(_positive("lease", lease) * 1000)
        name = self.prefix + key
        token = self._leases.new()
        # A key can expire between a refused SET and the GET that reads it: take it then.
        for _ in range(3):
            if self.client.set(name, token, nx=True, px=milliseconds):
                self._leases.hold(key, token)
                return "run"
            held = _text(self.client.get(name))
            if held is not None:
                return "done" if held == DONE else "busy"
        return "busy"  # the key keeps coming and going: let QStash ask again later

    def finish(self, key: str, now: float) -> None:
        """Mark ``key`` done for ``window`` seconds (of Redis's clock). ``now`` is not used."""
        self._leases.drop(key)
        self.client.set(self.prefix + key, DONE, px=math.ceil(self.window * 1000))

    def release(self, key: str) -> None:
        """Drop this object's lease on ``key``; a lease another process took since ours
        expired, or a done marker, stays."""
        token = self._leases.drop(key)
        if token is not None:
            self._release(keys=[self.prefix + key], args=[token])


class DjangoCacheLedger:
    """A delivery ledger in a Django cache (``CACHES[alias]``), for a Django project that
    already runs a shared cache and no separate Redis client.

    ``begin`` is ``cache.add(key, token, lease)`` (add stores only if the key is absent:
    one atomic command on Redis and Memcached), then ``cache.get`` tells ``"done"`` from
    ``"busy"``; ``finish`` is ``cache.set(key, "done", window)``; ``release`` gets the key
    and deletes it if it still holds this object's token. Django's cache API has no
    compare-and-delete, so that last step is two commands: a lease that expires and is
    taken by another process in the instant between them is dropped (the other delivery
    still runs once; a third one arriving right then could run too).

    The cache must be one every receiving process shares (Redis, Memcached, the database
    cache). ``LocMemCache`` is per process (enough for one process, and for tests);
    ``DummyCache`` stores nothing and is refused; ``FileBasedCache``'s ``add`` is not
    atomic. Timeouts are whole seconds (rounded up; several backends truncate
    fractions), counted by the cache's clock: ``now`` is not used.
    """

    def __init__(
        self,
        alias: str = "default",
        *,
        window: float = DEDUP_WINDOW_SECONDS,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        from django.core.cache import InvalidCacheBackendError, caches
        from django.core.cache.backends.dummy import DummyCache
        from django.core.exceptions import ImproperlyConfigured

        try:
            cache = caches[alias]
        except InvalidCacheBackendError:
            raise ValueError(f"no Django cache named {alias!r} in settings.CACHES") from None
        except ImproperlyConfigured:
            raise ValueError(
                "Django's settings are not configured (DJANGO_SETTINGS_MODULE): "
                "a django:// ledger reads settings.CACHES"
            ) from None
        if isinstance(cache, DummyCache):
            raise ValueError(
                f"the Django cache {alias!r} is a DummyCache, which stores nothing: every "
                "redelivery would run again; name a shared cache (Redis, Memcached, database)"
            )
        self.alias = alias
        self.window = _positive("window", window)
        self.prefix = prefix
        self._leases = _Leases()

    @property
    def cache(self) -> Any:
        """This thread's connection to the cache (Django hands out one per thread)."""
        from django.core.cache import caches

        return caches[self.alias]

    def begin(self, key: str, now: float, lease: float) -> Claim:
        """``"run"`` if this call took ``key`` for ``lease`` seconds (rounded up to whole
        seconds, of the cache's clock), else ``"done"`` or ``"busy"``. ``now`` is not
        used."""
        seconds = math.ceil(_positive("lease", lease))
        cache = self.cache
        name = self.prefix + key
        token = self._leases.new()
        for _ in range(3):
            if cache.add(name, token, timeout=seconds):
                self._leases.hold(key, token)
                return "run"
            held = cache.get(name)
            if held is not None:
                return "done" if held == DONE else "busy"
        return "busy"

    def finish(self, key: str, now: float) -> None:
        """Mark ``key`` done for ``window`` seconds (rounded up). ``now`` is not used."""
        self._leases.drop(key)
        self.cache.set(self.prefix + key, DONE, timeout=math.ceil(self.window))

    def release(self, key: str) -> None:
        """Drop this object's lease on ``key`` if the cache still holds it."""
        token = self._leases.drop(key)
        if token is None:
            return
        cache = self.cache
        if cache.get(self.prefix + key) == token:
            cache.delete(self.prefix + key)


def ledger_from_url(url: str, *, window: float = DEDUP_WINDOW_SECONDS) -> DeliveryLedger:
    """The shared ledger ``qstash_ledger_url`` names.

    ``redis://…``, ``rediss://…`` and ``unix://…`` give a :class:`RedisLedger` (the
    ``redis`` extra); ``django://<alias>`` a :class:`DjangoCacheLedger` on
    ``CACHES[alias]``. Anything else, or a URL its library cannot use, is a
    :class:`~celery_qstash.errors.ConfigurationError` naming the setting (never the
    URL's password).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        try:
            import redis  # noqa: F401  (the extra's package, asked for by name below)
        except ImportError:
            raise ConfigurationError(
                _SETTING, "a Redis ledger needs redis-py: pip install 'celery-qstash[redis]'"
            ) from None
        try:
            return RedisLedger.from_url(url, window=window)
        except ValueError as exc:
            raise ConfigurationError(
                _SETTING, f"redis-py cannot read this URL: {scrub(str(exc), [parts.password])}"
            ) from None
    if scheme == "django":
        alias = parts.netloc
        if not alias or parts.path.strip("/") or parts.query or parts.fragment:
            raise ConfigurationError(
                _SETTING, "expected django://<cache alias>, e.g. django://default"
            )
        try:
            return DjangoCacheLedger(alias, window=window)
        except ImportError:
            raise ConfigurationError(
                _SETTING, "a django:// ledger needs Django installed and configured"
            ) from None
        except ValueError as exc:
            raise ConfigurationError(_SETTING, str(exc)) from None
    # A scheme starts with a letter: Python 3.10's urlsplit reads "127.0.0.1:6379" as one.
    named = f"{parts.scheme}://" if parts.scheme[:1].isalpha() else "no scheme"
    raise ConfigurationError(
        _SETTING,
        f"unsupported ledger URL ({named}): expected redis://, rediss://, unix:// or "
        "django://<cache alias>",
    )
