"""Helpers for testing apps that use celery-qstash.

``outbox`` is where eager mode (``task_always_eager=True``) puts every email:

    def test_welcome(celery_app):
        outbox.clear()
        send_welcome.delay(42)
        assert outbox.last.to == ["jane@example.com"]
"""

from .clock import FakeClock
from .transports.eager import Outbox, SentEmail, outbox

__all__ = ["FakeClock", "Outbox", "SentEmail", "outbox"]
