"""The QStash callback receiver as a Django view (see :mod:`celery_qstash.receiver`),
and AutoSend's webhook endpoint (see :mod:`celery_qstash.webhooks`).

Mount them with ``path("qstash/callback/", include("celery_qstash.contrib.django.urls"))``
(and set ``qstash_callback_url`` to that URL) and
``path("autosend/webhooks/", include("celery_qstash.contrib.django.webhook_urls"))``.
The Celery app is Celery's current app (the one your ``celery.py`` makes), unless
:func:`make_view` is given one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from celery_qstash.receiver import CallbackReceiver, ReceivedRequest, ReceiverResponse
from celery_qstash.receiver.adapters import Handles
from celery_qstash.webhooks import WebhookReceiver

__all__ = ["callback_view", "make_view", "webhook_view"]


def make_view(celery_app: Any = None, *, factory: Callable[..., Handles] = CallbackReceiver,
              **options: Any) -> Any:
    """A view for ``celery_app`` (default: Celery's current app, looked up per request);
    ``factory`` builds the handler (the callback receiver, or :class:`WebhookReceiver`)."""
    receivers: dict[int, Any] = {}

    def receiver_for() -> Any:
        if celery_app is not None:
            app = celery_app
        else:
            from celery import current_app

            app = current_app._get_current_object()
        found = receivers.get(id(app))
        if found is None or found.app is not app:
            found = receivers[id(app)] = factory(app, **options)
        return found

    @csrf_exempt  # type: ignore[untyped-decorator]  # no browser calls it: the signature authenticates
    def view(request: HttpRequest) -> HttpResponse:
        receiver = receiver_for()
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > receiver.max_body:
            response = ReceiverResponse(413, {"error": f"body over {receiver.max_body} bytes"})
        else:
            response = receiver.handle(ReceivedRequest(
                request.method or "GET", request.build_absolute_uri(),
                dict(request.headers), request.body,
            ))
        return HttpResponse(response.content, status=response.status,
                            content_type="application/json", headers=dict(response.headers))

    return view


callback_view = make_view()
webhook_view = make_view(factory=WebhookReceiver)
