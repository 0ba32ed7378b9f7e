"""Transports: where a :class:`~celery_qstash.publish.options.PublishRequest` goes.

``QStashTransport`` publishes through the official SDK; ``EagerTransport`` appends
to the in-process outbox (eager mode, tests). Both implement :class:`Transport`.
``batch`` sends many requests through ``/v2/batch``; ``aio`` does both for asyncio.
"""

from .base import PublishResult, Transport
from .eager import EagerTransport, Outbox, SentEmail, outbox
from .qstash import QStashTransport, get_transport

__all__ = [
    "EagerTransport",
    "Outbox",
    "PublishResult",
    "QStashTransport",
    "SentEmail",
    "Transport",
    "get_transport",
    "outbox",
]
