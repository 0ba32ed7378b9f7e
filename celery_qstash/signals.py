"""Signals celery-qstash sends when QStash reports an email's outcome.

Sent by :mod:`celery_qstash.receiver` after Celery's own ``task_success`` /
``task_failure``, with the task as ``sender``. Connect them as any Celery signal::

    from celery_qstash.signals import email_delivered

    @email_delivered.connect
    def record(sender, task_id, email_id, **kwargs):
        EmailLog.objects.create(task_id=task_id, autosend_id=email_id)

``email_delivered`` kwargs: ``task_id``, ``email_id`` (AutoSend's ``emailId``; ``None``
for a bulk send), ``batch_id`` (bulk), ``response`` (AutoSend's ``data``),
``message_id`` (QStash's id of the source message).

``email_failed`` kwargs: ``task_id``, ``exception`` (:class:`~celery_qstash.DeliveryFailed`),
``status`` (AutoSend's last HTTP status), ``message`` (its error text), ``dlq_id``,
``message_id``.

``email_event`` is AutoSend's signed webhook, normalised (:mod:`celery_qstash.webhooks`,
modelled on django-anymail's ``tracking`` signal). Sent once per event, with the task as
``sender`` when the email came from one of the app's tasks (else ``"autosend"``). Kwargs:
``event`` (AutoSend's type: ``email.delivered``, ``email.bounced``, ``email.opened``…),
``email_id``, ``task_id`` (``None`` when no task sent it, or it could not be found),
``recipient``, ``timestamp`` (an aware UTC ``datetime``), ``bounce_type``
(``Permanent``/``Transient``), ``reason``, ``test``, ``batch_id``, ``delivery_id``,
``raw`` (the whole payload) and ``email_event`` (all of these as one
:class:`~celery_qstash.webhooks.EmailEvent`).
"""

from __future__ import annotations

from celery.utils.dispatch import Signal

__all__ = ["email_delivered", "email_event", "email_failed"]

email_delivered = Signal(name="email_delivered")
email_failed = Signal(name="email_failed")
email_event = Signal(name="email_event")
