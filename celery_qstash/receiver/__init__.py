"""The app's signed receiver: where QStash's deliveries come back into the Celery app.

Two kinds of delivery arrive here:

* **deferred tasks** (``@qstash_task``, ``DeferredTask``, ``@autosend_task(deferred=True)``):
  the Celery message, published to ``qstash_receiver_url``. The body runs now, through
  Celery's worker tracer (:mod:`.execute`), with a worker's request, signals, retries,
  chains, links and results;
* **email callbacks** (``qstash_callback_url``): AutoSend's answer to an email task's
  message. ``on_success`` / ``task_success`` / :data:`celery_qstash.signals.email_delivered`
  after a delivery; ``on_failure`` / ``task_failure`` with :class:`DeliveryFailed` /
  ``email_failed`` when the retries are exhausted; ``task_retry`` after a failed attempt
  with retries left (:mod:`.callbacks`).

Mount it in the app's web server, or run it on its own with ``celery-qstash serve``:

    asgi_app(celery_app)                       # any ASGI server or framework
    wsgi_app(celery_app)                       # any WSGI server
    fastapi_route(app, "/qstash/receive", celery_app)    # FastAPI / Starlette
    flask_route(app, "/qstash/receive", celery_app)      # Flask
    path("qstash/receive/", include("celery_qstash.contrib.django.urls"))   # Django

One core, thin adapters. :class:`CallbackReceiver` takes a plain :class:`ReceivedRequest`
(method, URL, headers, body) and returns a :class:`ReceiverResponse`; it imports no web
framework. Each request goes through four steps:

1. **verify**: ``Upstash-Signature``, as the SDK's ``qstash.Receiver`` checks it (current
   and next signing keys, the configured URL, the body's hash), on the receiver's own
   clock (:mod:`.signature`). Anything else is a 401 and nothing runs.
2. **classify**: the verified body becomes a :class:`Delivery` of one kind
   (``"task.run"``, ``"email.callback"``, ``"email.failure"``).
3. **deduplicate**: a :class:`DeliveryLedger` lease on a key from the signed body
   (:mod:`.ledger`): done only after the handler succeeded; a duplicate running elsewhere
   gets a 409, a ledger that cannot be reached a 503, and nothing runs twice. Share a
   :class:`~.ledgers.RedisLedger` across processes behind a load balancer.
4. **dispatch**: the handler registered for that kind in :attr:`CallbackReceiver.handlers`.

A process that runs deferred bodies can tell the app it starts and stops as a worker
does (:func:`worker_lifecycle`: ``worker_init``, ``worker_process_init``...); ``serve``
does.
"""

from __future__ import annotations

from .adapters import asgi_app, fastapi_route, flask_route, wsgi_app
from .core import CallbackReceiver, classify
from .ledger import DEDUP_WINDOW_SECONDS, DeliveryLedger, MemoryLedger
from .lifecycle import ReceiverWorker, worker_lifecycle
from .request import MAX_BODY_BYTES, Delivery, ReceivedRequest, ReceiverResponse

__all__ = [
    "DEDUP_WINDOW_SECONDS",
    "MAX_BODY_BYTES",
    "CallbackReceiver",
    "Delivery",
    "DeliveryLedger",
    "MemoryLedger",
    "ReceivedRequest",
    "ReceiverResponse",
    "ReceiverWorker",
    "asgi_app",
    "classify",
    "fastapi_route",
    "flask_route",
    "worker_lifecycle",
    "wsgi_app",
]
