"""The one exception tree of celery-qstash.

::

    CeleryQStashError
    ├── ConfigurationError     a setting is missing or invalid (names the setting)
    ├── EmailValidationError   the email a task returned is not valid for AutoSend (also ValueError)
    │   └── MessageTooLarge    the email is over QStash's message size limit (.size, .limit)
    ├── UnsupportedOption      a Celery option that QStash cannot honour (says what to do instead)
    │   └── RetryNotSupported  the task body called self.retry() / raised Retry or Reject
    ├── PublishError           QStash refused, could not be reached, or may have stored it
    │                          (HTTP status + QStash's text; .task_id, .outcome_unknown)
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
    "MessageTooLarge",
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


class MessageTooLarge(EmailValidationError):
    """The email, as the JSON body QStash would store, is over QStash's message size
    limit (``qstash_max_message_bytes``); nothing was published.

    ``size`` and ``limit`` are in bytes.
    """

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__([{
            "field": "email",
            "message": (
                f"the email is {size:,} bytes as JSON, over QStash's message size limit of "
                f"{limit:,} bytes: make it smaller (large attachments: link to them instead), "
                "or raise qstash_max_message_bytes if your QStash plan allows larger messages"
            ),
        }])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.size, self.limit), self.__dict__)


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
    "give up, raise an exception (it reaches the caller and nothing is published). To run "
    "the body later and retry it as Celery does, use @autosend_task(deferred=True)"
)


class RetryNotSupported(UnsupportedOption):
    """The task body asked Celery to retry it (``self.retry()``, ``Retry``, ``Reject``).

    Nothing was published. The option is the call that was made (``self.retry()``,
    ``Retry`` or ``Reject``).
    """

    def __init__(self, option: str = "self.retry()", message: str = RETRY_MESSAGE) -> None:
        super().__init__(option, message)


class PublishError(CeleryQStashError):
    """QStash did not accept the message, or it cannot be known whether it did.

    ``status`` is QStash's HTTP status (``None`` for a network error) and
    ``error`` is QStash's own error text, with any secret removed. ``task_id`` is
    the task's id. ``outcome_unknown`` is true when an attempt may have been stored
    but its answer was lost: calling again with the same ``task_id`` is then safe,
    QStash deduplicates it and AutoSend's Idempotency-Key stops a second email.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        task_id: str | None = None,
        outcome_unknown: bool = False,
    ):
        self.status = status
        self.error = error
        self.task_id = task_id
        self.outcome_unknown = outcome_unknown
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
