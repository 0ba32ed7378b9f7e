"""The Django email backend: each ``EmailMessage`` becomes one QStash message to AutoSend.

Settings come from Django's settings in the ``CELERY_`` namespace Celery users
already have (``CELERY_QSTASH_TOKEN``, ``CELERY_AUTOSEND_API_KEY``, ...), then the
current Celery app's conf, then the environment (``QSTASH_TOKEN``...), exactly as
the shim reads them. Messages are validated with the same models as
``@autosend_task`` before anything is published; inside ``transaction.atomic()``
they are published once the transaction commits (``CELERY_QSTASH_EMAIL_ON_COMMIT``).
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.mime.base import MIMEBase
from typing import Any

from django.conf import settings as django_settings
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction
from kombu.utils.uuid import uuid

from ...config import Settings, load_settings
from ...email import Email
from ...errors import (
    CeleryQStashError,
    ConfigurationError,
    EmailValidationError,
    UnsupportedOption,
)
from ...publish.options import warn_once
from ...publish.plan import plan_publish
from ...publish.request import PublishRequest, TaskAttrs
from ...publish.transports import EagerTransport, get_transport
from ...publish.transports.base import PublishResult
from ...publish.transports.eager import eager_forced
from ...tasks.batch import get_batch_transport

__all__ = ["TASK_NAME", "EmailBackend", "message_to_email"]

logger = logging.getLogger(__name__)

#: The task name status, the CLI and the dashboard show for mail sent by the backend.
TASK_NAME = "django.core.mail"

_HEADER_POLICIES = ("error", "warn")


class DjangoConf:
    """Celery-style ``conf.get(key)`` over Django settings (``CELERY_<KEY>``), then the
    current Celery app's conf, so ``load_settings`` reads a Django project as it reads an app."""

    def get(self, key: str, default: Any = None) -> Any:
        name = key.upper()
        if not name.startswith("CELERY_"):
            name = f"CELERY_{name}"
        value = getattr(django_settings, name, None)
        if value is not None:
            return value
        from celery import current_app

        value = current_app.conf.get(key.lower())
        return default if value is None else value


@dataclass
class _Prepared:
    message: Any  # the django EmailMessage
    email: Email
    task_id: str


def _setting(conf: DjangoConf, key: str, default: Any) -> Any:
    value = conf.get(key)
    return default if value is None else value


class EmailBackend(BaseEmailBackend):  # type: ignore[misc]
    """``EMAIL_BACKEND = "celery_qstash.contrib.django.EmailBackend"``, or on Django 6.1+
    ``MAILERS = {"default": {"BACKEND": "celery_qstash.contrib.django.EmailBackend"}}``
    (``OPTIONS`` are this class's keyword arguments: ``fail_silently``, ``on_commit``,
    ``using``, the database whose transaction is waited for).

    ``send_messages`` validates every message first (a bad one raises
    :class:`~celery_qstash.EmailValidationError` or
    :class:`~celery_qstash.UnsupportedOption` and nothing is published, whatever
    ``fail_silently`` says, as Django's SMTP backend raises ``BadHeaderError``), then
    publishes one QStash message per message, each with its own task id as QStash
    label and deduplication id and as AutoSend's ``Idempotency-Key``. It returns how
    many were accepted. ``fail_silently=True`` swallows publishing errors (QStash
    unreachable, a missing token) as Django's backends swallow SMTP errors.

    After sending, each message carries ``celery_qstash_task_id`` (what
    ``celery-qstash inspect`` and ``QStashAsyncResult`` take) and, once published,
    ``celery_qstash_message_id``.
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        on_commit: bool | None = None,
        using: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Django 6.1 wants a backend that supports fail_silently to keep it itself (passed
        # on, it warns, and MAILERS refuses it as an unknown option); the rest (MAILERS'
        # alias, Django's own bookkeeping) goes to the base class, which checks it.
        super().__init__(**kwargs)
        self.fail_silently = fail_silently
        self.on_commit = on_commit
        self.using = using

    def send_messages(self, email_messages: Sequence[Any]) -> int:
        if not email_messages:
            return 0
        conf = DjangoConf()
        try:
            settings = load_settings(conf)
        except CeleryQStashError:
            if self.fail_silently:
                logger.warning("email not sent: celery-qstash is not configured", exc_info=True)
                return 0
            raise
        policy = str(_setting(conf, "qstash_email_extra_headers", "error")).lower()
        if policy not in _HEADER_POLICIES:
            raise ConfigurationError(
                "CELERY_QSTASH_EMAIL_EXTRA_HEADERS", f"expected 'error' or 'warn', got {policy!r}"
            )
        prepared = [
            _Prepared(
                message,
                message_to_email(message, default_from=settings.default_from, headers=policy),
                uuid(),
            )
            for message in email_messages
            if message.recipients()  # Django's backends skip a message with no recipient
        ]
        for item in prepared:
            item.message.celery_qstash_task_id = item.task_id
        if not prepared:
            return 0
        eager = eager_forced() or bool(conf.get("task_always_eager"))
        wait = self.on_commit
        if wait is None:
            wait = bool(_setting(conf, "qstash_email_on_commit", True))
        if wait and transaction.get_connection(self.using).in_atomic_block:
            transaction.on_commit(
                lambda: self._send(prepared, settings, eager=eager), using=self.using
            )
            return len(prepared)
        return self._send(prepared, settings, eager=eager)

    def _send(self, prepared: list[_Prepared], settings: Settings, *, eager: bool) -> int:
        sent = 0
        for item, outcome in zip(
            prepared, publish_emails(prepared, settings, eager=eager), strict=False
        ):
            if isinstance(outcome, CeleryQStashError):
                if not self.fail_silently:
                    raise outcome
                logger.warning("email %s not sent: %s", item.task_id, outcome)
                continue
            item.message.celery_qstash_message_id = outcome.message_id
            sent += 1
        return sent


def publish_emails(
    prepared: Sequence[_Prepared], settings: Settings, *, eager: bool
) -> list[PublishResult | CeleryQStashError]:
    """Publish each email as its own QStash message; the one place that talks to a transport.

    Several emails (``send_mass_mail``) go through ``/v2/batch``, 100 per request; one
    goes through ``/v2/publish``. An error is returned in that email's place, so the
    others still go out.
    """
    requests: list[PublishRequest | CeleryQStashError] = []
    for item in prepared:
        try:
            plan = plan_publish(
                task=TaskAttrs(name=TASK_NAME),
                task_id=item.task_id,
                options={},
                settings=settings,
                now=time.time(),
            )
            requests.append(plan.request(item.email, settings, eager=eager))
        except CeleryQStashError as exc:
            requests.append(exc)
    ready = [r for r in requests if isinstance(r, PublishRequest)]
    try:
        if eager or len(ready) < 2:
            transport = EagerTransport() if eager else get_transport(settings)
            sent: list[PublishResult | CeleryQStashError] = []
            for request in ready:
                try:
                    sent.append(transport.publish(request))
                except CeleryQStashError as exc:
                    sent.append(exc)
        else:
            sent = list(get_batch_transport(settings).publish_many(ready))
    except CeleryQStashError as exc:  # no transport (a missing token)
        return [django_named(exc)] * len(prepared)
    answers = iter(sent)
    return [django_named(r) if isinstance(r, CeleryQStashError) else next(answers)
            for r in requests]


def django_named(exc: CeleryQStashError) -> CeleryQStashError:
    """A setting error named as a Django project spells the setting
    (``CELERY_QSTASH_TOKEN``), not as a Celery app's conf does (``qstash_token``)."""
    if not isinstance(exc, ConfigurationError) or exc.setting.startswith("CELERY_"):
        return exc
    name = f"CELERY_{exc.setting.upper()}"
    message = str(getattr(exc, "_message", exc)).replace(
        f"the Celery setting {exc.setting}", f"the Django setting {name}")
    return ConfigurationError(name, message)


def _header_refused(name: str, policy: str, why: str) -> None:
    message = (
        f"AutoSend cannot carry the {name!r} header ({why}); remove it from extra_headers, "
        "or set CELERY_QSTASH_EMAIL_EXTRA_HEADERS = 'warn' to send without it"
    )
    if policy == "error":
        raise UnsupportedOption(f"extra_headers[{name!r}]", message)
    warn_once(f"extra_headers:{name.lower()}", f"header dropped: {message}")


def _attachment(item: Any, index: int) -> dict[str, Any]:
    field = f"attachments.{index}"
    if isinstance(item, MIMEBase):
        name = item.get_filename()
        content = item.get_payload(decode=True)
        mimetype: str | None = item.get_content_type()
        disposition = item.get_content_disposition()
    else:
        name, content, mimetype = item[0], item[1], item[2]
        disposition = None
    if not name:
        raise EmailValidationError(
            [{"field": f"{field}.fileName", "message": "AutoSend needs a file name"}]
        )
    if isinstance(content, str):
        content = content.encode("utf-8")
    if not isinstance(content, bytes):
        raise EmailValidationError(
            [{"field": f"{field}.content",
              "message": f"expected str or bytes content, not {type(content).__name__}"}]
        )
    data: dict[str, Any] = {
        "fileName": name,
        "content": base64.b64encode(content).decode("ascii"),
        "contentType": mimetype or mimetypes.guess_type(name)[0] or "application/octet-stream",
    }
    if disposition in ("inline", "attachment"):
        data["disposition"] = disposition
    return data


def message_to_email(
    message: Any, *, default_from: str | None = None, headers: str = "error"
) -> Email:
    """A Django ``EmailMessage`` as AutoSend's send request, validated.

    The body goes to ``text`` (``html`` when ``content_subtype == "html"``), a
    ``text/html`` alternative to ``html``; the first ``to`` is AutoSend's one primary
    recipient and further ``to`` addresses join ``cc`` (everyone still sees them).
    """
    to = list(message.to or ())
    cc = list(message.cc or ())
    bcc = list(message.bcc or ())
    if not to:
        raise UnsupportedOption(
            "to",
            "AutoSend sends to one primary recipient: put an address in to "
            "(a cc/bcc-only message cannot be sent)",
        )
    data: dict[str, Any] = {
        "from": message.from_email or default_from,
        "to": to[0],
        "cc": to[1:] + cc or None,
        "bcc": bcc or None,
        "subject": message.subject,
    }
    body = message.body or None
    if getattr(message, "content_subtype", "plain") == "html":
        data["html"] = body
    else:
        data["text"] = body
    for content, mimetype in getattr(message, "alternatives", None) or ():
        if mimetype != "text/html":
            raise UnsupportedOption(
                "alternatives",
                f"AutoSend takes a text and an html body, not a {mimetype} alternative",
            )
        if data.get("html"):
            raise UnsupportedOption("alternatives", "AutoSend takes one html body, got two")
        data["html"] = content
    reply_to = list(message.reply_to or ())
    for name, value in (message.extra_headers or {}).items():
        lowered = name.lower()
        if lowered == "reply-to":
            reply_to = [value]  # Django lets this header override reply_to too
        elif lowered == "from":
            data["from"] = value
        else:
            _header_refused(name, headers, "its API has no custom headers")
    if len(reply_to) > 1:
        raise UnsupportedOption("reply_to", "AutoSend takes one reply-to address")
    if reply_to:
        data["replyTo"] = reply_to[0]
    attachments = [_attachment(a, i) for i, a in enumerate(message.attachments or ())]
    if attachments:
        data["attachments"] = attachments
    # Email's own validation, as coerce_email does it: EmailValidationError naming the field.
    email: Email = Email.model_validate({k: v for k, v in data.items() if v is not None})
    return email
