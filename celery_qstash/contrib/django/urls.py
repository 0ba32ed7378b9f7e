"""``path("qstash/callback/", include("celery_qstash.contrib.django.urls"))``."""

from __future__ import annotations

from django.urls import path

from .receiver import callback_view

app_name = "celery_qstash"
urlpatterns = [path("", callback_view, name="callback")]
