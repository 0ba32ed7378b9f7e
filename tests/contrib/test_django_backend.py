"""The Django email backend: Django's mail API on QStash, configured the old way
(``EMAIL_BACKEND``, Django 4.2-6.x) and through Django 6.1's ``MAILERS``."""

from __future__ import annotations

import base64
import itertools
import warnings
from collections.abc import Iterator
from email.mime.text import MIMEText
from typing import Any

import django
import httpx
import pytest
import respx
from celery import Celery

from celery_qstash import (
    CeleryQStashWarning,
    ConfigurationError,
    EmailValidationError,
    PublishError,
    UnsupportedOption,
)

BACKEND = "celery_qstash.contrib.django.EmailBackend"
QSTASH = "http://qstash.backend.test"
HAS_MAILERS = django.VERSION >= (6, 1)
# Every test that takes mail_settings runs with each way this Django has to name the backend.
CONFIGURATIONS = ["EMAIL_BACKEND", "MAILERS"] if HAS_MAILERS else ["EMAIL_BACKEND"]
needs_mailers = pytest.mark.skipif(not HAS_MAILERS, reason="MAILERS arrived in Django 6.1")


@pytest.fixture(autouse=True)
def _django(django_settings: None) -> None:
    """Every test here sends through Django's mail API (tests/conftest.py configures it)."""


@pytest.fixture(params=CONFIGURATIONS)
def mail_settings(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Django settings for the backend in the CELERY_ namespace, and a blank current Celery app."""
    from django.test import override_settings

    blank = Celery("blank", set_as_current=True)
    backend: dict[str, Any] = (
        {"MAILERS": {"default": {"BACKEND": BACKEND}}} if request.param == "MAILERS"
        else {"EMAIL_BACKEND": BACKEND}
    )
    values: dict[str, Any] = {
        **backend,
        "DEFAULT_FROM_EMAIL": "Acme <hi@acme.example>",
        "CELERY_QSTASH_TOKEN": "tok-django-S3CRET",
        "CELERY_QSTASH_URL": QSTASH,
        "CELERY_AUTOSEND_API_KEY": "AS_django_S3CRET",
    }
    with override_settings(**values):
        yield values
    blank.close()


@pytest.fixture
def qstash_router() -> Iterator[respx.MockRouter]:
    """``/v2/publish/...`` (route "publish") and ``/v2/batch`` (route "batch") like QStash."""
    import json

    counter = itertools.count(1)
    with respx.mock(assert_all_called=False) as mock:
        mock.post(url__startswith=f"{QSTASH}/v2/publish/", name="publish").mock(
            side_effect=lambda request: httpx.Response(200, json={"messageId": f"msg_{next(counter)}"})
        )
        mock.post(f"{QSTASH}/v2/batch", name="batch").mock(
            side_effect=lambda request: httpx.Response(
                200, json=[{"messageId": f"msg_{next(counter)}"} for _ in json.loads(request.content)]
            )
        )
        yield mock


@pytest.fixture
def qstash(qstash_router: respx.MockRouter) -> respx.Route:
    return qstash_router["publish"]


def _body(route: respx.Route, index: int = -1) -> dict[str, Any]:
    import json

    return json.loads(route.calls[index].request.content)  # type: ignore[no-any-return]


# --- the mapping -------------------------------------------------------------------------


def test_multi_alternatives_map_to_html_and_text_with_cc_bcc_reply_to(mail_settings: dict[str, Any], qstash: respx.Route) -> None:
    from django.core.mail import EmailMultiAlternatives

    msg = EmailMultiAlternatives(
        "Welcome", "Hi Jane", "Acme <hi@acme.example>", ["jane@example.com", "omar@example.com"],
        cc=["li@example.com"], bcc=["audit@acme.example"], reply_to=["help@acme.example"],
    )
    msg.attach_alternative("<p>Hi Jane</p>", "text/html")
    assert msg.send() == 1
    body = _body(qstash)
    assert body["to"] == {"email": "jane@example.com"}
    assert body["cc"] == [{"email": "omar@example.com"}, {"email": "li@example.com"}]  # extra `to`s join cc
    assert body["bcc"] == [{"email": "audit@acme.example"}]
    assert body["replyTo"] == {"email": "help@acme.example"}
    assert body["from"] == {"email": "hi@acme.example", "name": "Acme"}
    assert (body["subject"], body["text"], body["html"]) == ("Welcome", "Hi Jane", "<p>Hi Jane</p>")
    request = qstash.calls.last.request
    assert request.url.path == "/v2/publish/https://api.autosend.com/v1/mails/send"
    assert request.headers["Authorization"] == "Bearer tok-django-S3CRET"
    assert request.headers["Upstash-Forward-Authorization"] == "Bearer AS_django_S3CRET"


def test_html_content_subtype_goes_to_html(mail_settings: dict[str, Any], qstash: respx.Route) -> None:
    from django.core.mail import EmailMessage

    msg = EmailMessage("Hi", "<b>Hi</b>", to=["jane@example.com"])
    msg.content_subtype = "html"
    msg.send()
    body = _body(qstash)
    assert body["html"] == "<b>Hi</b>" and "text" not in body


def test_attachments_are_base64_encoded_as_autosend_takes_them(mail_settings: dict[str, Any], qstash: respx.Route) -> None:
    from django.core.mail import EmailMessage

    msg = EmailMessage("Invoice", "Attached.", to=["jane@example.com"])
    msg.attach("invoice.pdf", b"%PDF-1.4 \x00\xff", "application/pdf")
    msg.attach("notes.txt", "caf\u00e9", None)
    inline = MIMEText("inline text")
    inline.add_header("Content-Disposition", "inline", filename="note.txt")
    msg.attach(inline)
    msg.send()
    pdf, notes, note = _body(qstash)["attachments"]
    assert pdf == {"fileName": "invoice.pdf", "contentType": "application/pdf",
                   "content": base64.b64encode(b"%PDF-1.4 \x00\xff").decode()}
    assert base64.b64decode(notes["content"]) == "caf\u00e9".encode()
    assert notes["contentType"] == "text/plain"  # guessed from the name, as Django does
    assert note["disposition"] == "inline" and base64.b64decode(note["content"]) == b"inline text"


def test_an_extra_header_autosend_cannot_carry_is_refused_and_nothing_is_published(mail_settings: dict[str, Any], qstash: respx.Route) -> None:
    from django.core.mail import EmailMessage, send_mass_mail

    good = EmailMessage("A", "a", to=["a@example.com"])
    bad = EmailMessage("B", "b", to=["b@example.com"], headers={"X-Campaign": "spring"})
    from django.core.mail import get_connection

    with pytest.raises(UnsupportedOption) as info:
        get_connection(fail_silently=True).send_messages([good, bad])
    assert "X-Campaign" in str(info.value) and "CELERY_QSTASH_EMAIL_EXTRA_HEADERS" in str(info.value)
    assert qstash.call_count == 0  # the good one was not published either
    assert send_mass_mail([("C", "c", None, ["c@example.com"])]) == 1


def test_extra_headers_warn_policy_sends_without_them(mail_settings: dict[str, Any], qstash: respx.Route) -> None:
    from django.core.mail import EmailMessage
    from django.test import override_settings

    msg = EmailMessage("Hi", "hi", to=["a@example.com"],
                       headers={"X-Campaign": "spring", "Reply-To": "desk@acme.example"})
    with override_settings(CELERY_QSTASH_EMAIL_EXTRA_HEADERS="warn"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert msg.send() == 1
    assert any(issubclass(w.category, CeleryQStashWarning) and "X-Campaign" in str(w.message) for w in caught)
    body = _body(qstash)
    assert body["replyTo"] == {"email": "desk@acme.example"}  # Reply-To header is carried
    assert "X-Campaign" not in str(body)


def test_a_message_without_a_primary_recipient_is_refused(mail_settings: dict[str, Any], qstash: respx.Route) -> None:
    from django.core.mail import EmailMessage

    with pytest.raises(UnsupportedOption, match="primary recipient"):
        EmailMessage("Hi", "hi", bcc=["a@example.com"]).send()
    assert EmailMessage("Hi", "hi").send() == 0  # no recipient at all: skipped, as Django's backends do
    assert qstash.call_count == 0


def test_an_invalid_address_raises_the_same_error_as_a_task_even_when_failing_silently(mail_settings: dict[str, Any], qstash: respx.Route) -> None:
    from django.core.mail import send_mail

    with pytest.raises(EmailValidationError) as info:
        send_mail("Hi", "hi", None, ["not-an-address"], fail_silently=True)
    assert info.value.field == "to.email"
    assert qstash.call_count == 0


# --- publishing ----------------------------------------------------------------------------


def test_send_mass_mail_publishes_one_message_each_with_its_own_idempotency_key(mail_settings: dict[str, Any], qstash_router: respx.MockRouter) -> None:
    import json

    from django.core.mail import EmailMessage, get_connection, send_mass_mail

    sent = send_mass_mail([
        ("One", "1", None, ["a@example.com"]),
        ("Two", "2", None, ["b@example.com"]),
        ("Three", "3", None, ["c@example.com"]),
    ])
    # Several emails: one /v2/batch request, one message each.
    assert sent == 3 and qstash_router["batch"].call_count == 1
    items = json.loads(qstash_router["batch"].calls.last.request.content)
    assert [json.loads(i["body"])["subject"] for i in items] == ["One", "Two", "Three"]
    keys = [i["headers"]["Upstash-Forward-Idempotency-Key"] for i in items]
    assert len(set(keys)) == 3
    assert [i["headers"]["Upstash-Deduplication-Id"] for i in items] == keys
    assert all(i["headers"]["Upstash-Forward-X-Celery-Task"] == "django.core.mail" for i in items)
    msg = EmailMessage("Four", "4", to=["d@example.com"])
    get_connection().send_messages([msg])
    publish = qstash_router["publish"]
    assert publish.call_count == 1  # a single email: /v2/publish
    assert msg.celery_qstash_task_id == publish.calls.last.request.headers["Upstash-Label"]
    assert msg.celery_qstash_message_id == "msg_4"


def test_settings_can_come_from_the_current_celery_app(qstash: respx.Route) -> None:
    from django.core.mail import send_mail
    from django.test import override_settings

    app = Celery("proj", set_as_current=True)
    app.conf.update(qstash_token="tok-app", qstash_url=QSTASH, autosend_api_key="AS_app")
    try:
        with override_settings(EMAIL_BACKEND=BACKEND):
            assert send_mail("Hi", "hi", "hi@acme.example", ["a@example.com"]) == 1
    finally:
        app.close()
    assert qstash.calls.last.request.headers["Authorization"] == "Bearer tok-app"


def test_missing_token_names_the_setting_unless_failing_silently(mail_settings: dict[str, Any], qstash: respx.Route) -> None:
    from django.core.mail import send_mail
    from django.test import override_settings

    with override_settings(CELERY_QSTASH_TOKEN=None):
        with pytest.raises(ConfigurationError) as info:
            send_mail("Hi", "hi", None, ["a@example.com"])
        # named as a Django project spells it, not as a Celery app's conf does
        assert info.value.setting == "CELERY_QSTASH_TOKEN"
        assert "set the Django setting CELERY_QSTASH_TOKEN or the QSTASH_TOKEN" in str(info.value)
        assert "Celery setting qstash_token" not in str(info.value)
        assert send_mail("Hi", "hi", None, ["a@example.com"], fail_silently=True) == 0
    assert qstash.call_count == 0


def test_fail_silently_swallows_a_publish_error_and_counts_only_what_went_out(mail_settings: dict[str, Any]) -> None:
    from django.core.mail import send_mass_mail

    # QStash refuses the second message of the batch and accepts the first.
    answer = httpx.Response(200, json=[{"messageId": "msg_ok"}, {"error": "bad request"}])
    with respx.mock() as mock:
        mock.post(f"{QSTASH}/v2/batch").mock(return_value=answer)
        datatuple = [("A", "a", None, ["a@example.com"]), ("B", "b", None, ["b@example.com"])]
        assert send_mass_mail(datatuple, fail_silently=True) == 1
    with respx.mock() as mock:
        mock.post(f"{QSTASH}/v2/batch").mock(return_value=httpx.Response(400, text="no"))
        with pytest.raises(PublishError) as info:
            send_mass_mail(datatuple)
    assert "S3CRET" not in str(info.value)


def test_inside_atomic_messages_go_out_after_commit_and_never_on_rollback(mail_settings: dict[str, Any], qstash: respx.Route) -> None:
    from django.core.mail import send_mail
    from django.db import transaction
    from django.test import override_settings

    with transaction.atomic():
        assert send_mail("Hi", "hi", None, ["a@example.com"]) == 1
        assert qstash.call_count == 0
    assert qstash.call_count == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        send_mail("Hi", "hi", None, ["b@example.com"])
        raise RuntimeError("rollback")
    assert qstash.call_count == 1
    with override_settings(CELERY_QSTASH_EMAIL_ON_COMMIT=False), transaction.atomic():
        send_mail("Now", "now", None, ["c@example.com"])
        assert qstash.call_count == 2  # configured to publish at once


def test_eager_mode_fills_the_outbox_without_credentials(autosend_outbox: Any) -> None:
    from django.core.mail import EmailMultiAlternatives
    from django.test import override_settings

    blank = Celery("blank", set_as_current=True)
    try:
        with override_settings(EMAIL_BACKEND=BACKEND):
            msg = EmailMultiAlternatives("Welcome", "Hi", "hi@acme.example", ["jane@example.com"])
            msg.attach_alternative("<p>Hi</p>", "text/html")
            assert msg.send() == 1
    finally:
        blank.close()
    sent = autosend_outbox.assert_sent(to="jane@example.com", subject="Welcome", count=1)
    assert sent[0].request.body["html"] == "<p>Hi</p>"
    assert autosend_outbox.last.request.headers["Idempotency-Key"] == msg.celery_qstash_task_id


def test_send_mail_reaches_the_sandbox_inbox_through_the_emulator(qstash_dev: Any) -> None:
    from django.core.mail import EmailMultiAlternatives
    from django.test import override_settings

    with override_settings(EMAIL_BACKEND=BACKEND):
        msg = EmailMultiAlternatives("Welcome aboard", "Hi Jane", "hi@acme.example",
                                     ["jane@example.com"], cc=["li@example.com"])
        msg.attach_alternative("<p>Hi Jane</p>", "text/html")
        msg.attach("hello.txt", "hello", "text/plain")
        assert msg.send() == 1
    [email] = qstash_dev.assert_sent(to="jane@example.com", subject="Welcome aboard")
    assert email["html"] == "<p>Hi Jane</p>" and email["text"] == "Hi Jane"
    assert [c["email"] for c in email["cc"]] == ["li@example.com"]
    [attachment] = email["attachments"]  # the inbox lists attachments without their content
    assert (attachment["fileName"], attachment["contentType"]) == ("hello.txt", "text/plain")
    assert attachment["size"] == len(base64.b64encode(b"hello"))


# --- Django 6.1's MAILERS -----------------------------------------------------------------


def _ours(caught: list[warnings.WarningMessage]) -> list[str]:
    """The warnings attributed to celery_qstash's own code (Django's point at their caller)."""
    return [f"{w.category.__name__}: {w.message}" for w in caught if "celery_qstash" in w.filename]


def test_the_old_configuration_warns_about_nothing_of_ours(qstash: respx.Route) -> None:
    from django.core.mail import EmailMessage, get_connection, send_mail
    from django.test import override_settings

    app = Celery("proj", set_as_current=True)
    app.conf.update(qstash_token="tok-app", qstash_url=QSTASH, autosend_api_key="AS_app")
    try:
        with override_settings(EMAIL_BACKEND=BACKEND), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert send_mail("Hi", "hi", "hi@acme.example", ["a@example.com"]) == 1
            assert send_mail("Hi", "hi", "hi@acme.example", ["a@example.com"], fail_silently=True) == 1
            connection = get_connection(fail_silently=True, on_commit=False)
            assert connection.send_messages([EmailMessage("Hi", "hi", "hi@acme.example", ["b@example.com"])]) == 1
    finally:
        app.close()
    assert connection.fail_silently is True and connection.on_commit is False
    assert qstash.call_count == 3
    assert _ours(caught) == []


@pytest.fixture
def mailers() -> Iterator[dict[str, Any]]:
    """MAILERS with the backend as default and a second alias carrying OPTIONS."""
    from django.test import override_settings

    blank = Celery("blank", set_as_current=True)
    value = {
        "default": {"BACKEND": BACKEND},
        "transactional": {
            "BACKEND": "celery_qstash.contrib.django.backend.EmailBackend",
            "OPTIONS": {"on_commit": False, "fail_silently": True},
        },
    }
    with override_settings(MAILERS=value, DEFAULT_FROM_EMAIL="hi@acme.example",
                           CELERY_QSTASH_TOKEN="tok-django-S3CRET",
                           CELERY_QSTASH_URL=QSTASH, CELERY_AUTOSEND_API_KEY="AS_django_S3CRET"):
        yield value
    blank.close()


@needs_mailers
def test_mailers_by_name_get_the_backend_with_its_options(mailers: dict[str, Any], qstash: respx.Route) -> None:
    from django.core import mail

    default, named = mail.mailers["default"], mail.mailers["transactional"]
    assert (type(default).__name__, default.alias, default.fail_silently, default.on_commit) == (
        "EmailBackend", "default", False, None)
    assert (named.alias, named.fail_silently, named.on_commit) == ("transactional", True, False)
    assert mail.mailers.default.alias == "default"
    assert named.send_messages([mail.EmailMessage("Hi", "hi", "hi@acme.example", ["a@example.com"])]) == 1
    assert qstash.call_count == 1


@needs_mailers
def test_send_mail_using_an_alias_takes_that_mailers_options(mailers: dict[str, Any], qstash: respx.Route) -> None:
    from django.core.mail import EmailMessage, send_mail
    from django.db import transaction

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with transaction.atomic():
            assert send_mail("Default", "d", None, ["a@example.com"]) == 1
            assert qstash.call_count == 0  # the default mailer waits for the commit
            assert send_mail("Now", "n", None, ["b@example.com"], using="transactional") == 1
            assert qstash.call_count == 1  # OPTIONS on_commit=False: published at once
            assert EmailMessage("Msg", "m", to=["c@example.com"]).send(using="transactional") == 1
            assert qstash.call_count == 2
        assert qstash.call_count == 3
    assert [_body(qstash, i)["subject"] for i in range(3)] == ["Now", "Msg", "Default"]
    assert _ours(caught) == []


@needs_mailers
def test_a_mailers_fail_silently_option_swallows_a_publish_error(mailers: dict[str, Any]) -> None:
    from django.core.mail import send_mail
    from django.test import override_settings

    with override_settings(CELERY_QSTASH_TOKEN=None):
        assert send_mail("Hi", "hi", None, ["a@example.com"], using="transactional") == 0
        with pytest.raises(ConfigurationError):
            send_mail("Hi", "hi", None, ["a@example.com"])


@needs_mailers
def test_an_option_the_backend_does_not_take_is_refused_by_name(mailers: dict[str, Any]) -> None:
    from django.core import mail
    from django.test import override_settings

    wrong = {"default": {"BACKEND": BACKEND, "OPTIONS": {"on_comit": False}}}
    with override_settings(MAILERS=wrong), pytest.raises(mail.InvalidMailer, match="on_comit"):
        mail.mailers["default"]
