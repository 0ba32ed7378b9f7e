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
| ``autosend_rate_limit``    | ``AUTOSEND_RATE_LIMIT``   | ``2/s`` (``off`` disables)      |
| ``qstash_publish_timeout`` | ``QSTASH_PUBLISH_TIMEOUT``| ``2.0`` seconds, all retries in |
| ``qstash_redact_authorization`` | —                    | on                              |

``QSTASH_DEV=true`` points everything at ``celery-qstash dev`` on this machine,
like the official JS SDK's switch: the emulator's URL and public dev token, and
the sandbox's dev key. Explicit settings still win.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .devserver import AUTOSEND_URL, DEV_AUTOSEND_API_KEY, DEV_TOKEN, EMULATOR_PORT
from .errors import ConfigurationError

__all__ = ["DEFAULT_QSTASH_URL", "Settings", "load_settings"]

DEFAULT_QSTASH_URL = "https://qstash.upstash.io"
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
    rate_limit: str | None = "2/s"
    publish_timeout: float = 2.0
    redact_authorization: bool = True

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
        return (self.qstash_token, self.autosend_api_key)


_spelled: dict[tuple[Any, Any, str], tuple[str, ...]] = {}


def _conf_value(conf: Any, key: str) -> Any:
    if conf is None:
        return None
    spellings = getattr(conf, "_to_keys", None)
    maps = getattr(conf, "maps", None)
    if spellings is None or maps is None:  # a plain mapping
        value = conf.get(key)
        return conf.get(key.upper()) if value is None else value
    # Celery's conf: the lookup its __getitem__ does (namespace prefix, old names), without
    # the KeyError per map and spelling that makes a missing key cost microseconds.
    for name in (key, key.upper()):
        # The spellings depend only on the conf's prefix and renames, not its contents.
        spelled = (getattr(conf, "prefix", None), getattr(conf, "_keys", None), name)
        candidates = _spelled.get(spelled)
        if candidates is None:
            candidates = _spelled[spelled] = tuple(spellings(name))
        for mapping in maps:
            for candidate in candidates:
                if candidate in mapping:
                    value = mapping[candidate]
                    if value is not None:
                        return value
    return None


def _lookup(conf: Any, key: str, env: str) -> Any:
    value = _conf_value(conf, key)
    if value is None:
        value = os.environ.get(env)
    return value


_KEYS = (
    ("qstash_dev", "QSTASH_DEV"), ("qstash_token", "QSTASH_TOKEN"), ("qstash_url", "QSTASH_URL"),
    ("autosend_api_key", "AUTOSEND_API_KEY"), ("autosend_base_url", "AUTOSEND_BASE_URL"),
    ("autosend_rate_limit", "AUTOSEND_RATE_LIMIT"),
    ("qstash_publish_timeout", "QSTASH_PUBLISH_TIMEOUT"),
    ("autosend_default_from", "AUTOSEND_DEFAULT_FROM"),
)


@lru_cache(maxsize=64)
def _resolve(raw: tuple[tuple[str, Any], ...]) -> Settings:
    return _build(dict(raw))


def load_settings(conf: Any = None) -> Settings:
    """Resolve settings from a Celery ``app.conf`` (or ``None``) and the environment.

    Cached on what the conf and environment hold for these keys, so a change between
    two calls is still seen and an unchanged conf is not parsed again.
    """
    if conf is not None:
        # A Celery conf loads its config source (config_from_object, namespace) on its
        # first real lookup; the fast reads below rely on that having happened.
        conf.get("qstash_token")
    raw = (
        *((key, _lookup(conf, key, env)) for key, env in _KEYS),
        ("qstash_redact_authorization", _conf_value(conf, "qstash_redact_authorization")),
    )
    try:
        return _resolve(raw)
    except TypeError:  # an unhashable value somewhere: resolve without the cache
        return _build(dict(raw))


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
    if not str(base).startswith(("http://", "https://")):
        raise ConfigurationError("autosend_base_url", f"must be an http(s) URL, got {base!r}")
    if not str(url).startswith(("http://", "https://")):
        raise ConfigurationError("qstash_url", f"must be an http(s) URL, got {url!r}")

    rate = raw["autosend_rate_limit"]
    if rate is None:
        rate = "2/s"
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

    redact_value = raw["qstash_redact_authorization"]
    redact = True if redact_value is None else _flag(redact_value, "qstash_redact_authorization")
    return Settings(
        qstash_token=token,
        qstash_url=str(url).rstrip("/"),
        autosend_api_key=key,
        autosend_base_url=str(base).rstrip("/"),
        dev=dev,
        default_from=raw["autosend_default_from"],
        rate_limit=rate,
        publish_timeout=timeout,
        redact_authorization=redact,
    )
