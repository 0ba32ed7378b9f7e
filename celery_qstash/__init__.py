"""celery-qstash: Celery tasks on Upstash QStash, and their email on AutoSend.

Swap ``@shared_task`` for ``@autosend_task`` on a task that returns an email; call
sites (``.delay()``, ``.apply_async(...)``, ``.s()``, groups) stay as they are.
"""

from .email import Address, Attachment, BulkEmail, Email, Recipient
from .errors import (
    CeleryQStashError,
    CeleryQStashWarning,
    ConfigurationError,
    DeliveryFailed,
    EmailValidationError,
    PublishError,
    RetryNotSupported,
    UnsupportedOption,
)
from .signals import email_delivered, email_event, email_failed
from .status.result import QStashAsyncResult, QStashBackend
from .tasks.decorators import autosend_task, qstash_task
from .tasks.deferred import DeferredTask
from .tasks.task import QStashTask

__version__ = "0.1.0"

__all__ = [
    "Address",
    "Attachment",
    "BulkEmail",
    "CeleryQStashError",
    "CeleryQStashWarning",
    "ConfigurationError",
    "DeferredTask",
    "DeliveryFailed",
    "Email",
    "EmailValidationError",
    "PublishError",
    "QStashAsyncResult",
    "QStashBackend",
    "QStashTask",
    "Recipient",
    "RetryNotSupported",
    "UnsupportedOption",
    "__version__",
    "autosend_task",
    "email_delivered",
    "email_event",
    "email_failed",
    "qstash_task",
]
