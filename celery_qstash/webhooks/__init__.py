"""AutoSend's signed webhooks: delivered, bounced, opened... as a signal and as status.

QStash's logs end where AutoSend's answer ends (SUCCESS means AutoSend said 2xx). What
happened next (the recipient's server accepted or bounced the email, it was opened,
reported as spam) AutoSend tells the app through signed webhooks. Mount this endpoint
and give AutoSend its URL::

    asgi_app(celery_app)                                  # any ASGI server
    wsgi_app(celery_app)                                  # any WSGI server
    fastapi_route(api, "/autosend/webhooks", celery_app)  # FastAPI / Starlette
    flask_route(flask_app, "/autosend/webhooks", celery_app)   # Flask
    path("autosend/webhooks/", include("celery_qstash.contrib.django.webhook_urls"))

with ``autosend_webhook_secret`` set (a list while rotating). Each event is verified
(:mod:`.core`), normalised into an :class:`EmailEvent` (:mod:`.events`), linked to the
task that sent the email (:mod:`.resolve`), kept in the event store (:mod:`.store`) and
sent as :data:`celery_qstash.signals.email_event`::

    @email_event.connect
    def on_email_event(sender, event, recipient, bounce_type, **kwargs):
        if event == "email.bounced" and bounce_type == "Permanent":
            User.objects.filter(email=recipient).update(email_bad=True)

The plumbing is the callback receiver's (:mod:`celery_qstash.receiver.adapters`): one
ASGI/WSGI/Flask adapter serves both.
"""

from __future__ import annotations

from typing import Any

from ..receiver.adapters import (
    ReceiverASGI,
    WSGIApp,
    add_asgi_route,
    add_flask_route,
    wsgi_adapter,
)
from .core import DEFAULT_TOLERANCE, MAX_WEBHOOK_BODY, WebhookReceiver
from .events import EVENT_TYPES, EmailEvent, WebhookPayloadError, parse_event
from .signing import signature, signed_request
from .store import (
    DjangoCacheEventStore,
    EventStore,
    MemoryEventStore,
    RedisEventStore,
    configured_event_store,
    event_store_for,
    last_event,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "EVENT_TYPES",
    "MAX_WEBHOOK_BODY",
    "DjangoCacheEventStore",
    "EmailEvent",
    "EventStore",
    "MemoryEventStore",
    "RedisEventStore",
    "WebhookPayloadError",
    "WebhookReceiver",
    "asgi_app",
    "configured_event_store",
    "event_store_for",
    "fastapi_route",
    "flask_route",
    "last_event",
    "parse_event",
    "signature",
    "signed_request",
    "wsgi_app",
]


def asgi_app(celery_app: Any, **options: Any) -> ReceiverASGI:
    """The webhook endpoint as an ASGI app; ``options`` go to :class:`WebhookReceiver`."""
    return ReceiverASGI(WebhookReceiver(celery_app, **options))


def wsgi_app(celery_app: Any, **options: Any) -> WSGIApp:
    """The webhook endpoint as a WSGI app; ``options`` go to :class:`WebhookReceiver`."""
    return wsgi_adapter(WebhookReceiver(celery_app, **options))


def fastapi_route(app: Any, path: str, celery_app: Any, **options: Any) -> ReceiverASGI:
    """Add the webhook endpoint as a POST route to a FastAPI (or Starlette) app or router."""
    return add_asgi_route(app, path, asgi_app(celery_app, **options))


def flask_route(app: Any, path: str, celery_app: Any, *,
                endpoint: str = "celery_qstash_autosend_webhooks",
                **options: Any) -> WebhookReceiver:
    """Add the webhook endpoint as a POST view to a Flask app or blueprint."""
    receiver = WebhookReceiver(celery_app, **options)
    add_flask_route(app, path, receiver, endpoint=endpoint)
    return receiver
