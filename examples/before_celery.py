"""BEFORE: a typical Celery email task. It needs a broker (Redis/RabbitMQ) and a worker
process running ``celery -A examples.before_celery worker`` just to send email."""

from __future__ import annotations

from celery import Celery, shared_task
from django.core.mail import send_mail  # or an ESP SDK

app = Celery("shop", broker="redis://localhost:6379/0")


@shared_task(bind=True, max_retries=5, default_retry_delay=30, rate_limit="2/s")
def send_welcome(self, user_id: int, email: str, first_name: str) -> None:
    try:
        send_mail(
            subject=f"Welcome to Acme, {first_name}!",
            message=f"Hi {first_name}, thanks for signing up.",
            from_email="Acme <hello@acme.example>",
            recipient_list=[email],
        )
    except Exception as exc:
        raise self.retry(exc=exc) from exc


# Call sites, unchanged after the move:
#   send_welcome.delay(user.id, user.email, user.first_name)
#   send_welcome.apply_async((user.id, user.email, user.first_name), countdown=90)
