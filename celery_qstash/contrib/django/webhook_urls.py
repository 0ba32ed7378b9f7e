"""``path("autosend/webhooks/", include("celery_qstash.contrib.django.webhook_urls"))``."""

from __future__ import annotations

from django.urls import path

from .receiver import webhook_view

app_name = "celery_qstash_webhooks"
urlpatterns = [path("", webhook_view, name="autosend-webhooks")]
