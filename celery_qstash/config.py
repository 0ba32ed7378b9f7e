"""Settings, read from the Celery app's conf first and the environment second.

Read at call time (not import time), so a test or a Django settings override
that changes a value between two calls is seen by the next call.

| Celery conf key            | environment variable      | default                         |
|----------------------------|---------------------------|---------------------------------|
| ``qstash_token``           | ``QSTASH_TOKEN``          | required (dev token in dev mode)|
| ``qstash_url``             | ``QSTASH_URL``            | ``https://qstash.upstash.io``   |
| ``qstash_dev``             | ``QSTASH_DEV``            | off                             |
| ``autosend_api_key``       | ``AUTOSEND_API_KEY``      | required (sandbox key in dev)   |
| ``autosend_base_url``      | ``AUTOSEND_BASE_URL``     | ``https://api.autosend.com``    |
| ``autosend_default_from``  | ``AUTOSEND_DEFAULT_FROM`` | none                            |
| ``autosend_rate_limit``    | ``AUTOSEND_RATE_LIMIT``   | ``0.5/s`` (``off`` disables)    |
| ``qstash_publish_timeout`` | ``QSTASH_PUBLISH_TIMEOUT``| ``2.0`` seconds, all retries in |
| ``qstash_redact_authorization`` | —                    | on                              |
| ``qstash_callback_url``    | ``QSTASH_CALLBACK_URL``   | none (the receiver's URL)       |
| ``qstash_receiver_url``    | ``QSTASH_RECEIVER_URL``   | callback URL (deferred tasks)   |
| ``qstash_ledger_url``      | ``QSTASH_LEDGER_URL``     | in-process; redis://, django:// |
| ``qstash_current_signing_key`` | ``…CURRENT_SIGNING_KEY`` | receiver; dev keys in dev mode |
| ``qstash_next_signing_key``    | ``…NEXT_SIGNING_KEY``    | receiver; dev keys in dev mode |
| ``qstash_max_message_bytes`` | ``QSTASH_MAX_MESSAGE_BYTES`` | ``1048576`` (QStash's 1 MB) |
| ``autosend_webhook_secret`` | ``AUTOSEND_WEBHOOK_SECRET`` | none (dev: dev secret); a list |
| ``autosend_event_store_url`` | ``AUTOSEND_EVENT_STORE_URL`` | none; redis://, django://   |

``QSTASH_DEV=true`` points everything at ``celery-qstash dev`` on this machine,
like the official JS SDK's switch: the emulator's URL and public dev token, and
the sandbox's dev key. Explicit settings still win.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from .devserver import (
    AUTOSEND_URL,
    DEV_AUTOSEND_API_KEY,
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    DEV_TOKEN,
    DEV_WEBHOOK_SECRET,
    EMULATOR_PORT,
)
from .errors import ConfigurationError
from .redaction import safe_url

__all__ = ["DEFAULT_QSTASH_URL", "DEFAULT_RATE_LIMIT", "Settings", "http_url_problem",
           "load_settings"]

#: A URL that can travel in a header (``Upstash-Callback``) or QStash's path as it is:
#: printable ASCII, no spaces. A CR or LF would split the header (h11 refuses it only
#: when sending, after the call returned), anything else non-ASCII is not a header value.
_HEADER_SAFE_URL = re.compile(r"https?://[\x21-\x7e]*")


def http_url_problem(value: object) -> str | None:
    """What keeps ``value`` from being an http(s) URL QStash can be given, if anything."""
    text = str(value)
    try:
        host = urlsplit(text).hostname
        shown = repr(safe_url(text))  # errors are read by people: no credentials in them
    except ValueError as exc:  # an unclosed IPv6 bracket, a bad port
        return f"not a URL ({exc})"
    if not text.startswith(("http://", "https://")):
        return f"expected an http(s) URL, got {shown}"
    if not _HEADER_SAFE_URL.fullmatch(text):
        return (f"{shown} has a space, a control character or a non-ASCII character: "
                "percent-encode it")
    return None if host else f"{shown} names no host"


DEFAULT_QSTASH_URL = "https://qstash.upstash.io"
#: The default flow control of AutoSend-bound messages: one request per 2-second period
#: (``parse_rate`` makes it QStash's ``rate=1,period=2s``). AutoSend allows 2 requests per
#: second *and* 50 per minute per key, and QStash takes one rate per period per key. Any
#: 1 s interval meets at most two 2 s periods (so at most 2 requests) and any 60 s interval
#: at most 31 (so at most 31 requests), whether QStash's periods are fixed or sliding. A
#: rate of 2 per 1 s allows 4 within a few milliseconds across a period boundary and 120 a
#: minute; 1 per 1 s allows 61 a minute: both draw 429s. Throughput: 30 emails a minute.
DEFAULT_RATE_LIMIT = "0.5/s"
#: QStash's message size limit on the free plan (1 MB; pay-as-you-go allows 10 MB).
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
DEV_QSTASH_URL = f"http://127.0.0.1:{EMULATOR_PORT}"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", "none", ""}


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Secrets are left out of ``repr``."""

    qstash_token: str | None = field(repr=False)
    qstash_url: str
    autosend_api_key: str | None = field(repr=False)
    autosend_base_url: str = AUTOSEND_URL
    dev: bool = False
    default_from: str | None = None
    rate_limit: str | None = DEFAULT_RATE_LIMIT
    publish_timeout: float = 2.0
    redact_authorization: bool = True
    #: Where QStash reports each outcome (``celery_qstash.receiver``), unless a call says otherwise.
    callback_url: str | None = None
    current_signing_key: str | None = field(default=None, repr=False)
    next_signing_key: str | None = field(default=None, repr=False)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: Where deferred tasks' messages go (the receiver); ``callback_url`` when unset.
    receiver_url: str | None = None
    #: The receiver's delivery ledger: ``None`` (in-process), ``redis://…``, ``django://alias``.
    ledger_url: str | None = field(default=None, repr=False)
    #: What AutoSend's webhooks are signed with (several while a secret is rotated).
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    #: Where AutoSend's email events are kept for status: ``redis://…``, ``django://alias``.
    event_store_url: str | None = field(default=None, repr=False)

    def require_receiver_url(self) -> str:
        url = self.receiver_url or self.callback_url
        if not url:
            raise ConfigurationError(
                "qstash_receiver_url",
                "a deferred task runs on the app's receiver: set the Celery setting "
                "qstash_receiver_url (or QSTASH_RECEIVER_URL) to the public URL where "
                "celery_qstash.receiver is mounted"
                + (" (in dev mode, `celery-qstash dev --app module:app` hosts it and prints "
                   "the line to export; or run `celery-qstash serve`)" if self.dev else ""),
            )
        return url

    def require_token(self) -> str:
        if not self.qstash_token:
            raise ConfigurationError(
                "qstash_token",
                "no QStash token: set the Celery setting qstash_token or the QSTASH_TOKEN "
                "environment variable (or QSTASH_DEV=true to use `celery-qstash dev`)",
            )
        return self.qstash_token

    def require_api_key(self) -> str:
        if not self.autosend_api_key:
            raise ConfigurationError(
                "autosend_api_key",
                "no AutoSend API key: set the Celery setting autosend_api_key or the "
                "AUTOSEND_API_KEY environment variable",
            )
        return self.autosend_api_key

    def key_fingerprint(self) -> str:
        """A non-reversible, stable name for the API key (used as a flow-control key)."""
        digest = hashlib.sha256(self.require_api_key().encode()).hexdigest()
        return digest[:16]

    @property
    def secrets(self) -> tuple[str | None, ...]:
        # The signing keys too: whoever holds one can forge QStash's signature.
        candidates = (self.qstash_token, self.autosend_api_key,
                      self.current_signing_key, self.next_signing_key, *self.webhook_secrets)
        return tuple(s for s in candidates if s)


_KEYS = (
    ("qstash_dev", "QSTASH_DEV"), ("qstash_token", "QSTASH_TOKEN"), ("qstash_url", "QSTASH_URL"),
    ("autosend_api_key", "AUTOSEND_API_KEY"), ("autosend_base_url", "AUTOSEND_BASE_URL"),
    ("autosend_rate_limit", "AUTOSEND_RATE_LIMIT"),
    ("qstash_publish_timeout", "QSTASH_PUBLISH_TIMEOUT"),
    ("autosend_default_from", "AUTOSEND_DEFAULT_FROM"),
    ("qstash_callback_url", "QSTASH_CALLBACK_URL"),
    ("qstash_receiver_url", "QSTASH_RECEIVER_URL"),
    ("qstash_ledger_url", "QSTASH_LEDGER_URL"),
    ("qstash_current_signing_key", "QSTASH_CURRENT_SIGNING_KEY"),
    ("qstash_next_signing_key", "QSTASH_NEXT_SIGNING_KEY"),
    ("qstash_max_message_bytes", "QSTASH_MAX_MESSAGE_BYTES"),
    ("autosend_webhook_secret", "AUTOSEND_WEBHOOK_SECRET"),
    ("autosend_event_store_url", "AUTOSEND_EVENT_STORE_URL"),
    ("qstash_redact_authorization", None),
)

#: Celery's own settings a call reads, looked up as ``conf.get(name)`` is.
CELERY_KEYS = (
    "task_always_eager", "task_routes", "task_publish_retry", "task_publish_retry_policy",
    "task_eager_propagates",
)

@dataclass(frozen=True)
class _Spelled:
    """How a Celery conf spells the keys (from its prefix and renames, not its contents).

    A key's value sits in a slot: ``2 * i`` for the lower-case spellings of ``_KEYS[i]``,
    ``2 * i + 1`` for the upper-case ones, ``2 * len(_KEYS) + j`` for ``CELERY_KEYS[j]``.
    ``slots`` maps each spelling to its (slot, rank) pairs, rank being its place among
    the spellings Celery tries for that slot.
    """

    every: frozenset[str]
    slots: dict[str, tuple[tuple[int, int], ...]]


_spellings: dict[tuple[Any, Any], _Spelled] = {}


def _spelled(conf: Any) -> _Spelled:
    key = (getattr(conf, "prefix", None), getattr(conf, "_keys", None))
    found = _spellings.get(key)
    if found is None:
        names = [spelling for name, _ in _KEYS for spelling in (name, name.upper())]
        names += CELERY_KEYS
        slots: dict[str, list[tuple[int, int]]] = {}
        for slot, name in enumerate(names):
            for rank, spelling in enumerate(conf._to_keys(name)):
                slots.setdefault(spelling, []).append((slot, rank))
        found = _spellings[key] = _Spelled(
            frozenset(slots), {spelling: tuple(pairs) for spelling, pairs in slots.items()}
        )
    return found


def _reads_map_by_map() -> bool:
    """Whether this Celery looks a conf key up map by map, as the one pass below does.

    Celery 5.7 does (a change beats a namespaced value, and ``_to_keys`` lists the old
    setting names too); before it, each spelling was tried in every map in turn, old
    names last. On such a Celery the conf is read through its own ``get()``.
    """
    import celery

    return tuple(int(part) for part in celery.VERSION[:2]) >= (5, 7)


_MAP_BY_MAP = _reads_map_by_map()


def _conf_read(conf: Any) -> tuple[list[Any], list[Any]]:
    """Each key's value in the conf (``None`` when unset): ``conf.get(key)``, else
    ``conf.get(KEY)``, as Celery resolves them (namespace prefix, old names); and each
    of :data:`CELERY_KEYS` as ``conf.get(name)``."""
    if conf is None:
        return [None] * len(_KEYS), [None] * len(CELERY_KEYS)
    if not (_MAP_BY_MAP and hasattr(conf, "_to_keys") and hasattr(conf, "maps")):
        # A plain mapping, or a conf whose Celery reads it spelling by spelling.
        values = []
        for name, _ in _KEYS:
            value = conf.get(name)
            values.append(conf.get(name.upper()) if value is None else value)
        return values, [conf.get(name) for name in CELERY_KEYS]
    # A Celery conf loads its config source (config_from_object, namespace) on its first
    # real lookup, possibly in another thread right now: one real lookup first, as
    # Celery's own attribute access would make, then its maps are read directly.
    conf.get("qstash_token")
    maps = conf.maps
    spelled = _spelled(conf)
    every, slots = spelled.every, spelled.slots
    # Celery's lookup tries every spelling in every map, a KeyError for each miss; here
    # one set operation per map (in C for a dict) finds the few spellings it holds.
    found: dict[int, Any] = {}
    for mapping in maps:
        here = (
            mapping.keys() & every if type(mapping) is dict
            else {name for name in every if name in mapping}
        )
        best: dict[int, tuple[int, str]] = {}
        for name in here:
            for slot, rank in slots[name]:
                if slot not in found and (slot not in best or rank < best[slot][0]):
                    best[slot] = (rank, name)
        for slot, (_, name) in best.items():  # the first map that has it decides
            found[slot] = mapping[name]
    get = found.get
    values = []
    for i in range(len(_KEYS)):
        value = get(2 * i)
        values.append(get(2 * i + 1) if value is None else value)
    base = 2 * len(_KEYS)
    return values, [get(base + j) for j in range(len(CELERY_KEYS))]


def _conf_values(conf: Any) -> list[Any]:
    """Each key's value in the conf (``None`` when unset); see :func:`_conf_read`."""
    return _conf_read(conf)[0]


_ENV_NAMES = tuple(env for _, env in _KEYS if env is not None)
_env_encoded: frozenset[Any] | None = None
_env_of: Any = None


def _environment() -> dict[str, str]:
    """The environment variables of :data:`_KEYS` that are set.

    Usually none are: one set operation on the environment's own dict says so, where
    a lookup each would encode every name and raise a KeyError per unset variable.
    """
    global _env_encoded, _env_of
    environ = os.environ
    if _env_of is not environ:  # first call, or os.environ was replaced
        data = getattr(environ, "_data", None)
        encode = getattr(environ, "encodekey", None)
        _env_encoded = (
            frozenset(encode(name) for name in _ENV_NAMES)
            if type(data) is dict and encode is not None else None
        )
        _env_of = environ
    if _env_encoded is not None and environ._data.keys().isdisjoint(_env_encoded):  # type: ignore[attr-defined]
        return {}
    return {name: value for name in _ENV_NAMES if (value := environ.get(name)) is not None}


@lru_cache(maxsize=64)
def _resolve(raw: tuple[Any, ...]) -> Settings:
    return _build(dict(zip(_NAMES, raw, strict=True)))


_NAMES = tuple(name for name, _ in _KEYS)


class CallConf(NamedTuple):
    """What one call reads from the app's conf: the settings and Celery's own keys."""

    settings: Settings
    always_eager: bool
    routes: Any
    publish_retry: Any
    publish_retry_policy: Any
    eager_propagates: Any


def _settings_from(values: list[Any]) -> Settings:
    environ = _environment()
    raw = tuple(
        environ.get(env) if value is None and env is not None else value
        for (_, env), value in zip(_KEYS, values, strict=True)
    ) if environ else tuple(values)
    try:
        return _resolve(raw)
    except TypeError:  # an unhashable value somewhere: resolve without the cache
        return _build(dict(zip(_NAMES, raw, strict=True)))


def load_settings(conf: Any = None) -> Settings:
    """Resolve settings from a Celery ``app.conf`` (or ``None``) and the environment.

    Cached on what the conf and environment hold for these keys, so a change between
    two calls is still seen and an unchanged conf is not parsed again.
    """
    return _settings_from(_conf_read(conf)[0])


def call_conf(conf: Any) -> CallConf:
    """:func:`load_settings` and the Celery settings a call reads, in one pass over the
    conf (Celery's own attribute lookup costs microseconds per key)."""
    values, (eager, routes, retry, policy, propagates) = _conf_read(conf)
    return CallConf(
        settings=_settings_from(values),
        always_eager=bool(eager),
        routes=routes,
        publish_retry=retry,
        publish_retry_policy=policy,
        eager_propagates=propagates,
    )


def _flag(value: Any, setting: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(setting, f"expected true or false, got {value!r}")


def _build(raw: dict[str, Any]) -> Settings:
    dev_value = raw["qstash_dev"]
    dev = _flag(dev_value, "qstash_dev") if dev_value is not None else False

    token = raw["qstash_token"] or (DEV_TOKEN if dev else None)
    url = raw["qstash_url"] or (
        DEV_QSTASH_URL if dev else DEFAULT_QSTASH_URL
    )
    key = raw["autosend_api_key"] or (
        DEV_AUTOSEND_API_KEY if dev else None
    )
    base = raw["autosend_base_url"] or AUTOSEND_URL
    for name, given in (("autosend_base_url", base), ("qstash_url", url)):
        problem = http_url_problem(given)
        if problem:
            raise ConfigurationError(name, f"must be an http(s) URL: {problem}")

    rate = raw["autosend_rate_limit"]
    if rate is None:
        rate = DEFAULT_RATE_LIMIT
    elif rate is False or str(rate).strip().lower() in _FALSE:
        rate = None
    else:
        rate = str(rate)

    timeout_value = raw["qstash_publish_timeout"]
    try:
        timeout = float(timeout_value) if timeout_value is not None else 2.0
    except ValueError:
        raise ConfigurationError(
            "qstash_publish_timeout", f"expected seconds, got {timeout_value!r}"
        ) from None
    if timeout <= 0:
        raise ConfigurationError("qstash_publish_timeout", "must be positive")

    size_value = raw["qstash_max_message_bytes"]
    try:
        max_bytes = int(size_value) if size_value is not None else DEFAULT_MAX_MESSAGE_BYTES
    except (TypeError, ValueError):
        raise ConfigurationError(
            "qstash_max_message_bytes", f"expected a number of bytes, got {size_value!r}"
        ) from None
    if max_bytes <= 0 or isinstance(size_value, bool):
        raise ConfigurationError("qstash_max_message_bytes", "must be a positive number of bytes")

    redact_value = raw["qstash_redact_authorization"]
    redact = True if redact_value is None else _flag(redact_value, "qstash_redact_authorization")

    callback = raw["qstash_callback_url"] or None
    receiver = raw["qstash_receiver_url"] or None
    for name, given in (("qstash_callback_url", callback), ("qstash_receiver_url", receiver)):
        problem = http_url_problem(given) if given is not None else None
        if problem:
            raise ConfigurationError(name, f"must be the receiver's http(s) URL: {problem}")
    ledger = raw["qstash_ledger_url"] or None
    current = raw["qstash_current_signing_key"] or (
        DEV_CURRENT_SIGNING_KEY if dev else None
    )
    nxt = raw["qstash_next_signing_key"] or (
        DEV_NEXT_SIGNING_KEY if dev else None
    )
    return Settings(
        webhook_secrets=_webhook_secrets(raw["autosend_webhook_secret"], dev),
        event_store_url=str(raw["autosend_event_store_url"] or "") or None,
        qstash_token=token,
        qstash_url=str(url).rstrip("/"),
        autosend_api_key=key,
        autosend_base_url=str(base).rstrip("/"),
        dev=dev,
        default_from=raw["autosend_default_from"],
        rate_limit=rate,
        publish_timeout=timeout,
        redact_authorization=redact,
        callback_url=str(callback) if callback is not None else None,
        current_signing_key=current,
        next_signing_key=nxt,
        max_message_bytes=max_bytes,
        receiver_url=str(receiver) if receiver is not None else None,
        ledger_url=str(ledger) if ledger is not None else None,
    )


def _webhook_secrets(value: Any, dev: bool) -> tuple[str, ...]:
    """``autosend_webhook_secret``: one secret, or several while one is rotated (a list,
    or a comma/space-separated string, as the environment gives it)."""
    if value is None or value == "":
        return (DEV_WEBHOOK_SECRET,) if dev else ()
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ConfigurationError(
            "autosend_webhook_secret",
            f"expected a string or a list of strings, got {type(value).__name__}",
        )
    secrets = tuple(i.strip() for i in items if i.strip())
    if not secrets:
        raise ConfigurationError("autosend_webhook_secret", "no secret in the setting")
    return secrets
