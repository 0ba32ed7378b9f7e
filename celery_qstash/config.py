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
| ``qstash_callback_url``    | ``QSTASH_CALLBACK_URL``   | none (the receiver's URL)       |
| ``qstash_current_signing_key`` | ``…CURRENT_SIGNING_KEY`` | receiver; dev keys in dev mode |
| ``qstash_next_signing_key``    | ``…NEXT_SIGNING_KEY``    | receiver; dev keys in dev mode |
| ``qstash_max_message_bytes`` | ``QSTASH_MAX_MESSAGE_BYTES`` | ``1048576`` (QStash's 1 MB) |

``QSTASH_DEV=true`` points everything at ``celery-qstash dev`` on this machine,
like the official JS SDK's switch: the emulator's URL and public dev token, and
the sandbox's dev key. Explicit settings still win.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from .devserver import (
    AUTOSEND_URL,
    DEV_AUTOSEND_API_KEY,
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    DEV_TOKEN,
    EMULATOR_PORT,
)
from .errors import ConfigurationError

__all__ = ["DEFAULT_QSTASH_URL", "Settings", "load_settings"]

DEFAULT_QSTASH_URL = "https://qstash.upstash.io"
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
    rate_limit: str | None = "2/s"
    publish_timeout: float = 2.0
    redact_authorization: bool = True
    #: Where QStash reports each outcome (``celery_qstash.receiver``), unless a call says otherwise.
    callback_url: str | None = None
    current_signing_key: str | None = field(default=None, repr=False)
    next_signing_key: str | None = field(default=None, repr=False)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

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
                      self.current_signing_key, self.next_signing_key)
        return tuple(s for s in candidates if s)


def _lookup(conf: Any, key: str, env: str) -> Any:
    value = None
    if conf is not None:
        value = conf.get(key)
        if value is None:
            value = conf.get(key.upper())
    if value is None:
        value = os.environ.get(env)
    return value


def _flag(value: Any, setting: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(setting, f"expected true or false, got {value!r}")


def load_settings(conf: Any = None) -> Settings:
    """Resolve settings from a Celery ``app.conf`` (or ``None``) and the environment."""
    dev_value = _lookup(conf, "qstash_dev", "QSTASH_DEV")
    dev = _flag(dev_value, "qstash_dev") if dev_value is not None else False

    token = _lookup(conf, "qstash_token", "QSTASH_TOKEN") or (DEV_TOKEN if dev else None)
    url = _lookup(conf, "qstash_url", "QSTASH_URL") or (
        DEV_QSTASH_URL if dev else DEFAULT_QSTASH_URL
    )
    key = _lookup(conf, "autosend_api_key", "AUTOSEND_API_KEY") or (
        DEV_AUTOSEND_API_KEY if dev else None
    )
    base = _lookup(conf, "autosend_base_url", "AUTOSEND_BASE_URL") or AUTOSEND_URL
    if not str(base).startswith(("http://", "https://")):
        raise ConfigurationError("autosend_base_url", f"must be an http(s) URL, got {base!r}")
    if not str(url).startswith(("http://", "https://")):
        raise ConfigurationError("qstash_url", f"must be an http(s) URL, got {url!r}")

    rate = _lookup(conf, "autosend_rate_limit", "AUTOSEND_RATE_LIMIT")
    if rate is None:
        rate = "2/s"
    elif rate is False or str(rate).strip().lower() in _FALSE:
        rate = None
    else:
        rate = str(rate)

    timeout_value = _lookup(conf, "qstash_publish_timeout", "QSTASH_PUBLISH_TIMEOUT")
    try:
        timeout = float(timeout_value) if timeout_value is not None else 2.0
    except ValueError:
        raise ConfigurationError(
            "qstash_publish_timeout", f"expected seconds, got {timeout_value!r}"
        ) from None
    if timeout <= 0:
        raise ConfigurationError("qstash_publish_timeout", "must be positive")

    size_value = _lookup(conf, "qstash_max_message_bytes", "QSTASH_MAX_MESSAGE_BYTES")
    try:
        max_bytes = int(size_value) if size_value is not None else DEFAULT_MAX_MESSAGE_BYTES
    except (TypeError, ValueError):
        raise ConfigurationError(
            "qstash_max_message_bytes", f"expected a number of bytes, got {size_value!r}"
        ) from None
    if max_bytes <= 0 or isinstance(size_value, bool):
        raise ConfigurationError("qstash_max_message_bytes", "must be a positive number of bytes")

    redact_value = conf.get("qstash_redact_authorization") if conf is not None else None
    redact = True if redact_value is None else _flag(redact_value, "qstash_redact_authorization")

    callback = _lookup(conf, "qstash_callback_url", "QSTASH_CALLBACK_URL") or None
    if callback is not None and not str(callback).startswith(("http://", "https://")):
        raise ConfigurationError(
            "qstash_callback_url", f"must be an http(s) URL (the receiver's), got {callback!r}"
        )
    current = _lookup(conf, "qstash_current_signing_key", "QSTASH_CURRENT_SIGNING_KEY") or (
        DEV_CURRENT_SIGNING_KEY if dev else None
    )
    nxt = _lookup(conf, "qstash_next_signing_key", "QSTASH_NEXT_SIGNING_KEY") or (
        DEV_NEXT_SIGNING_KEY if dev else None
    )
    return Settings(
        qstash_token=token,
        qstash_url=str(url).rstrip("/"),
        autosend_api_key=key,
        autosend_base_url=str(base).rstrip("/"),
        dev=dev,
        default_from=_lookup(conf, "autosend_default_from", "AUTOSEND_DEFAULT_FROM"),
        rate_limit=rate,
        publish_timeout=timeout,
        redact_authorization=redact,
        callback_url=str(callback) if callback is not None else None,
        current_signing_key=current,
        next_signing_key=nxt,
        max_message_bytes=max_bytes,
    )
