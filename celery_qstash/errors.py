"""The one exception tree of celery-qstash.

::

    CeleryQStashError
    ├── ConfigurationError     a setting is missing or invalid (names the setting)
    ├── EmailValidationError   the email a task returned is not valid for AutoSend (also ValueError)
    ├── UnsupportedOption      a Celery option that QStash cannot honour (says what to do instead)
    │   └── RetryNotSupported  the task body called self.retry() / raised Retry or Reject
    ├── PublishError           QStash refused or could not be reached (HTTP status + QStash's text)
    └── DeliveryFailed         QStash delivered, AutoSend said no (a task's FAILURE/RETRY result)

Messages never contain a secret: everything that formats an upstream text goes
through :func:`scrub` first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "CeleryQStashError",
    "CeleryQStashWarning",
    "ConfigurationError",
    "DeliveryFailed",
    "EmailValidationError",
    "PublishError",
    "RetryNotSupported",
    "UnsupportedOption",
    "scrub",
    "scrub_data",
]


class CeleryQStashError(Exception):
    """Root of every error raised by celery-qstash."""


class ConfigurationError(CeleryQStashError):
    """A required setting is missing or has an invalid value."""

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        self._message = message
        super().__init__(f"{setting}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles a task's exception (eager results, result backends): rebuild it whole.
        return (type(self), (self.setting, self._message), self.__dict__)


class EmailValidationError(CeleryQStashError, ValueError):
    """The email is not acceptable to AutoSend; nothing was published.

    ``errors`` lists ``{"field": "to.email", "message": "..."}`` items, the same
    shape AutoSend uses for its 400 responses.
    """

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        first = errors[0] if errors else {"field": "email", "message": "invalid"}
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{first['field']}: {first['message']}{more}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors,), self.__dict__)

    @property
    def field(self) -> str:
        return self.errors[0]["field"] if self.errors else "email"


class UnsupportedOption(CeleryQStashError):
    """A Celery option has no QStash equivalent and cannot be dropped silently."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        self._message = message
        super().__init__(f"{option}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.option, self._message), self.__dict__)


RETRY_MESSAGE = (
    "the task body runs at call time, in the caller's process, before anything is "
    "published, so there is nothing to retry yet; QStash retries failed deliveries by "
    "itself. Set max_retries, retry_backoff or retry_kwargs={'countdown': ...} on the task "
    "for the delivery retry schedule. To skip sending, return None or raise Ignore(); to "
    "give up, raise an exception (it reaches the caller and nothing is published)"
)


class RetryNotSupported(UnsupportedOption):
    """The task body asked Celery to retry it (``self.retry()``, ``Retry``, ``Reject``).

    Nothing was published. The option is the call that was made (``self.retry()``,
    ``Retry`` or ``Reject``).
    """

    def __init__(self, option: str = "self.retry()", message: str = RETRY_MESSAGE) -> None:
        super().__init__(option, message)


class PublishError(CeleryQStashError):
    """QStash did not accept the message.

    ``status`` is QStash's HTTP status (``None`` for a network error) and
    ``error`` is QStash's own error text, with any secret removed.
    """

    def __init__(self, message: str, *, status: int | None = None, error: str | None = None):
        self.status = status
        self.error = error
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self.args, self.__dict__)


class DeliveryFailed(CeleryQStashError):
    """AutoSend answered an attempt with an error: the result of a FAILURE (or RETRY) task."""

    def __init__(self, status: int | None = None, message: str = "") -> None:
        self.status = status
        self.message = message
        super().__init__(status, message)

    def __str__(self) -> str:
        where = f"AutoSend answered {self.status}" if self.status else "delivery failed"
        return f"{where}: {self.message}" if self.message else where


class CeleryQStashWarning(UserWarning):
    """An option was accepted but has no effect (said once per option per process)."""


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of a secret in ``text`` by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def scrub_data(value: Any, secrets: Iterable[str | None]) -> Any:
    """:func:`scrub` every string in a JSON-like value (dict keys too); returns a copy.

    Dicts stay dicts, lists and tuples become lists, other values are returned as is.
    """
    secrets = tuple(secrets)
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {scrub_data(k, secrets): scrub_data(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_data(v, secrets) for v in value]
    return value
