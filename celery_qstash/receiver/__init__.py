"""The signed receiver for QStash callbacks: an email's outcome, back in the Celery app.

With QStash the task body runs at call time, so "after the email went out" can only
come from QStash's callbacks. Point ``qstash_callback_url`` at this receiver (every
publish then carries ``Upstash-Callback`` and ``Upstash-Failure-Callback``) and mount it:

    asgi_app(celery_app)                       # any ASGI server or framework
    wsgi_app(celery_app)                       # any WSGI server
    fastapi_route(app, "/qstash/callback", celery_app)    # FastAPI / Starlette
    flask_route(app, "/qstash/callback", celery_app)      # Flask
    path("qstash/callback/", include("celery_qstash.contrib.django.urls"))   # Django

On a delivery the task's ``on_success`` runs, Celery's ``task_success`` is sent, then
:data:`celery_qstash.signals.email_delivered`. When the retries are exhausted (the
failure callback), ``on_failure``, ``task_failure`` with :class:`DeliveryFailed` and
:data:`celery_qstash.signals.email_failed`. A failed attempt with retries left sends
``task_retry``. Handlers run with the task's request pushed (``self.request.id`` works);
``args``/``kwargs`` are empty: they were used up rendering the email and never reach QStash.

One core, thin adapters. :class:`CallbackReceiver` takes a plain :class:`ReceivedRequest`
(method, URL, headers, body) and returns a :class:`ReceiverResponse`; it imports no web
framework. Each request goes through four steps:

1. **verify**: ``Upstash-Signature`` with the SDK's ``qstash.Receiver`` (current and
   next signing keys, the URL the receiver is reached at, the body's hash). Anything
   else is a 401 and nothing runs.
2. **classify**: the verified request becomes a :class:`Delivery` of one *kind*.
3. **deduplicate**: on the callback's own ``Upstash-Message-Id`` (QStash delivers at
   least once) and on the signature's ``jti`` (the message id header is not signed, so
   a replayed request under a new id is caught by its token), within QStash's 10-minute
   deduplication window by default.
4. **dispatch**: the handler registered for that kind in :attr:`CallbackReceiver.handlers`.

Kinds today are ``"email.callback"`` (after each attempt) and ``"email.failure"``
(retries exhausted, message in the DLQ). The dispatch table is how the receiver grows
into running any Celery task's body at delivery time: a publish for an ordinary task
would send the Celery message (name, id, args, kwargs) to this receiver as the
*destination* with a kind header; :func:`classify` returns ``"task.run"`` for it, and a
handler registered under that kind runs the task's body through Celery's tracer
(``task.apply(args, kwargs, task_id=...)``), so signals, ``on_success`` and retries
(a non-2xx answer lets QStash retry) behave as on a worker. Verification and
deduplication already apply to every kind.
"""

from __future__ import annotations

from .adapters import asgi_app, fastapi_route, flask_route, wsgi_app
from .core import CallbackReceiver, classify
from .ledger import DEDUP_WINDOW_SECONDS, DeliveryLedger, MemoryLedger
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
    "asgi_app",
    "classify",
    "fastapi_route",
    "flask_route",
    "wsgi_app",
]
