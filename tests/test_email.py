"""The email models: every validation rule, and AutoSend's JSON shape."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celery_qstash import (
    Address,
    Attachment,
    BulkEmail,
    CeleryQStashError,
    Email,
    EmailValidationError,
    Recipient,
)
from celery_qstash.email import BULK_PATH, SEND_PATH, coerce_email

BASE: dict[str, Any] = {"from_": "shop@example.com", "subject": "Welcome", "html": "<p>Hi</p>"}


def email(**overrides: Any) -> Email:
    return Email(**{"to": "jane@example.com", **BASE, **overrides})


def bulk(**overrides: Any) -> BulkEmail:
    return BulkEmail(**{"recipients": ["a@example.com"], **BASE, **overrides})


def invalid(make: Any) -> EmailValidationError:
    with pytest.raises(EmailValidationError) as info:
        make()
    return info.value


def addresses(n: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i}@example.com" for i in range(n)]


# --- the error type --------------------------------------------------------------------


def test_email_validation_error_is_a_value_error_and_a_celery_qstash_error() -> None:
    err = invalid(lambda: email(to="not-an-address"))
    assert isinstance(err, ValueError)
    assert isinstance(err, CeleryQStashError)


def test_error_names_the_field_in_message_and_errors() -> None:
    err = invalid(lambda: email(to="not-an-address"))
    assert err.field == "to.email"
    assert str(err).startswith("to.email: ")
    assert err.errors[0]["field"] == "to.email"
    assert "@" in err.errors[0]["message"]


def test_several_errors_are_all_listed() -> None:
    err = invalid(lambda: Email(to="bad", from_="also-bad", subject="s", html="h"))
    fields = {e["field"] for e in err.errors}
    assert fields == {"to.email", "from.email"}
    assert "(and 1 more)" in str(err)


# --- Address ---------------------------------------------------------------------------


def test_address_from_plain_string() -> None:
    assert Address.model_validate("jane@example.com").to_autosend() == {"email": "jane@example.com"}


def test_address_from_name_and_angle_brackets() -> None:
    addr = Address.model_validate("Jane Doe <jane@example.com>")
    assert addr.email == "jane@example.com"
    assert addr.name == "Jane Doe"
    assert addr.to_autosend() == {"email": "jane@example.com", "name": "Jane Doe"}
    assert str(addr) == "Jane Doe <jane@example.com>"


def test_address_from_dict() -> None:
    addr = Address.model_validate({"email": "jane@example.com", "name": "Jane"})
    assert addr.to_autosend() == {"email": "jane@example.com", "name": "Jane"}


def test_address_from_address_instance() -> None:
    original = Address(email="jane@example.com", name="Jane")
    assert Address.model_validate(original) == original
    assert email(to=original).to_autosend()["to"] == {"email": "jane@example.com", "name": "Jane"}


def test_address_keyword_construction_and_empty_name_dropped() -> None:
    addr = Address(email="jane@example.com", name="")
    assert addr.name is None
    assert addr.to_autosend() == {"email": "jane@example.com"}


@pytest.mark.parametrize("value", ["jane", "jane@", "@example.com", "Jane <jane>", "", "a b@example.com"])
def test_invalid_address_rejected(value: str) -> None:
    err = invalid(lambda: Address.model_validate(value))
    assert err.field == "email"


def test_all_accepted_address_forms_in_an_email() -> None:
    out = email(
        to={"email": "jane@example.com", "name": "Jane"},
        from_="Shop <shop@example.com>",
        cc=["c1@example.com", "C Two <c2@example.com>", Address(email="c3@example.com")],
        reply_to={"email": "reply@example.com"},
    ).to_autosend()
    assert out["to"] == {"email": "jane@example.com", "name": "Jane"}
    assert out["from"] == {"email": "shop@example.com", "name": "Shop"}
    assert out["cc"] == [
        {"email": "c1@example.com"},
        {"email": "c2@example.com", "name": "C Two"},
        {"email": "c3@example.com"},
    ]
    assert out["replyTo"] == {"email": "reply@example.com"}


def test_single_string_cc_and_bcc_become_lists() -> None:
    out = email(cc="c@example.com", bcc="Bee <b@example.com>").to_autosend()
    assert out["cc"] == [{"email": "c@example.com"}]
    assert out["bcc"] == [{"email": "b@example.com", "name": "Bee"}]


def test_to_as_one_element_list_is_accepted_but_not_two() -> None:
    assert email(to=["jane@example.com"]).to_autosend()["to"] == {"email": "jane@example.com"}
    err = invalid(lambda: email(to=["a@example.com", "b@example.com"]))
    assert err.field == "to"


# --- CR/LF -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["Jane\r\nBcc: evil@example.com", "Jane\nDoe", "Jane\rDoe"])
def test_crlf_in_display_name_rejected(bad: str) -> None:
    err = invalid(lambda: email(to={"email": "jane@example.com", "name": bad}))
    assert err.field == "to.name"
    assert "CR or LF" in str(err)


# The refusal names the part the line break is in, on every Python (3.13's email.utils
# parses these strings differently, and the field must not change with it).
@pytest.mark.parametrize(("value", "field"), [
    ("Shop\r\nBcc: evil@example.com <shop@example.com>", "from.name"),
    ('"Shop\nX" <shop@example.com>', "from.name"),
    ("Shop\rX <shop@example.com> ", "from.name"),
    ("shop@example.com\r\nBcc: evil@example.com", "from.email"),
    ("Shop <shop@example.com\r\nBcc: evil@example.com>", "from.email"),
])
def test_crlf_in_name_string_form_rejected(value: str, field: str) -> None:
    err = invalid(lambda: email(from_=value))
    assert err.field == field


def test_crlf_in_cc_name_rejected() -> None:
    err = invalid(lambda: email(cc=[{"email": "c@example.com", "name": "C\nX"}]))
    assert err.field == "cc.0.name"


@pytest.mark.parametrize("bad", ["Hello\r\nBcc: evil@example.com", "Hello\nthere", "Hello\rthere"])
def test_crlf_in_subject_rejected(bad: str) -> None:
    err = invalid(lambda: email(subject=bad))
    assert err.field == "subject"
    assert "CR or LF" in err.errors[0]["message"]


def test_crlf_in_bulk_recipient_name_rejected() -> None:
    err = invalid(lambda: bulk(recipients=["a@example.com", {"email": "b@example.com", "name": "B\r\nX"}]))
    assert err.field == "recipients.1.name"


def test_trailing_crlf_is_stripped_as_whitespace_not_kept() -> None:
    out = bulk(recipients=[{"email": "b@example.com", "name": "B\r\n"}]).to_autosend()
    assert out["recipients"] == [{"email": "b@example.com", "name": "B"}]


# --- subject length --------------------------------------------------------------------


def test_subject_998_characters_accepted() -> None:
    assert email(subject="x" * 998).to_autosend()["subject"] == "x" * 998


def test_subject_999_characters_rejected() -> None:
    err = invalid(lambda: email(subject="x" * 999))
    assert err.field == "subject"
    assert "998" in str(err)


# --- content: template_id or subject + html/text ----------------------------------------


def test_template_id_alone_is_enough() -> None:
    out = Email(to="jane@example.com", from_="shop@example.com", template_id="tpl_1").to_autosend()
    assert out == {"to": {"email": "jane@example.com"}, "from": {"email": "shop@example.com"}, "templateId": "tpl_1"}


def test_template_id_with_dynamic_data() -> None:
    out = Email(
        to="jane@example.com", from_="shop@example.com", template_id="tpl_1", dynamic_data={"name": "Jane"}
    ).to_autosend()
    assert out["dynamicData"] == {"name": "Jane"}


def test_subject_with_text_only_is_enough() -> None:
    out = Email(to="jane@example.com", from_="shop@example.com", subject="s", text="plain").to_autosend()
    assert out["text"] == "plain"
    assert "html" not in out


def test_missing_subject_without_template_rejected() -> None:
    err = invalid(lambda: Email(to="jane@example.com", from_="shop@example.com", html="<p>x</p>"))
    assert err.field == "subject"


def test_missing_html_and_text_without_template_rejected() -> None:
    err = invalid(lambda: Email(to="jane@example.com", from_="shop@example.com", subject="s"))
    assert err.field == "html"


def test_empty_html_and_text_count_as_missing() -> None:
    err = invalid(lambda: email(html="", text=""))
    assert err.field == "html"


def test_missing_to_rejected() -> None:
    err = invalid(lambda: Email(**BASE))
    assert err.field == "to"


def test_missing_from_rejected() -> None:
    err = invalid(lambda: Email(to="jane@example.com", subject="s", html="h"))
    assert err.field == "from"


def test_unknown_field_rejected() -> None:
    err = invalid(lambda: email(bogus=1))
    assert err.field == "bogus"


# --- the 50-recipient cap ---------------------------------------------------------------


def test_fifty_recipients_across_to_cc_bcc_accepted() -> None:
    mail = email(cc=addresses(25, "c"), bcc=addresses(24, "b"))
    assert mail.recipients_count == 50


def test_fifty_one_recipients_across_cc_and_bcc_rejected() -> None:
    err = invalid(lambda: email(cc=addresses(25, "c"), bcc=addresses(25, "b")))
    assert err.field == "bcc"
    assert "51" in str(err) and "50" in str(err)


def test_fifty_one_recipients_in_cc_only_rejected() -> None:
    err = invalid(lambda: email(cc=addresses(50, "c")))
    assert err.field == "cc"


def test_fifty_one_recipients_in_bcc_only_rejected() -> None:
    err = invalid(lambda: email(bcc=addresses(50, "b")))
    assert err.field == "bcc"


def test_invalid_cc_entry_named_by_index() -> None:
    err = invalid(lambda: email(cc=["ok@example.com", "broken"]))
    assert err.field == "cc.1.email"


# --- BulkEmail -------------------------------------------------------------------------


def test_bulk_one_recipient_accepted() -> None:
    out = bulk().to_autosend()
    assert out["recipients"] == [{"email": "a@example.com"}]


def test_bulk_hundred_recipients_accepted() -> None:
    mail = bulk(recipients=addresses(100))
    assert mail.recipients_count == 100
    assert len(mail.to_autosend()["recipients"]) == 100


def test_bulk_zero_recipients_rejected() -> None:
    err = invalid(lambda: bulk(recipients=[]))
    assert err.field == "recipients"


def test_bulk_hundred_and_one_recipients_rejected() -> None:
    err = invalid(lambda: bulk(recipients=addresses(101)))
    assert err.field == "recipients"
    assert "100" in str(err)


def test_bulk_invalid_recipient_named_by_index() -> None:
    err = invalid(lambda: bulk(recipients=["a@example.com", "b@example.com", "c@example.com", "nope"]))
    assert err.field == "recipients.3.email"
    assert str(err).startswith("recipients.3.email: ")


def test_bulk_per_recipient_dynamic_data() -> None:
    out = bulk(
        recipients=[
            {"email": "a@example.com", "name": "A", "dynamic_data": {"first": "Ann"}},
            Recipient(email="b@example.com", dynamic_data={"first": "Bob"}),
            "C <c@example.com>",
        ],
        dynamic_data={"shop": "Acme"},
    ).to_autosend()
    assert out["dynamicData"] == {"shop": "Acme"}
    assert out["recipients"] == [
        {"email": "a@example.com", "name": "A", "dynamicData": {"first": "Ann"}},
        {"email": "b@example.com", "dynamicData": {"first": "Bob"}},
        {"email": "c@example.com", "name": "C"},
    ]


def test_bulk_needs_content_too() -> None:
    err = invalid(lambda: BulkEmail(recipients=["a@example.com"], from_="shop@example.com", subject="s"))
    assert err.field == "html"


def test_bulk_has_no_to_field() -> None:
    err = invalid(lambda: bulk(to="x@example.com"))
    assert err.field == "to"


def test_paths() -> None:
    assert email().path == SEND_PATH == "/v1/mails/send"
    assert bulk().path == BULK_PATH == "/v1/mails/bulk"


# --- attachments -----------------------------------------------------------------------


def test_attachment_with_content() -> None:
    out = email(attachments=[{"file_name": "a.txt", "content": "aGk=", "content_type": "text/plain"}]).to_autosend()
    assert out["attachments"] == [{"fileName": "a.txt", "content": "aGk=", "contentType": "text/plain"}]


def test_attachment_with_file_url() -> None:
    out = email(attachments=[Attachment(file_name="a.pdf", file_url="https://files.example.com/a.pdf")]).to_autosend()
    assert out["attachments"] == [{"fileName": "a.pdf", "fileUrl": "https://files.example.com/a.pdf"}]


def test_attachment_with_neither_source_rejected() -> None:
    err = invalid(lambda: email(attachments=[{"file_name": "a.pdf"}]))
    assert err.field == "attachments.0.content"
    assert "exactly one" in str(err)


def test_attachment_with_both_sources_rejected() -> None:
    err = invalid(
        lambda: email(
            attachments=[
                {"file_name": "ok.txt", "content": "aGk="},
                {"file_name": "a.pdf", "content": "aGk=", "file_url": "https://files.example.com/a.pdf"},
            ]
        )
    )
    assert err.field == "attachments.1.content"


def test_attachment_bad_disposition_rejected() -> None:
    err = invalid(lambda: email(attachments=[{"file_name": "a.txt", "content": "aGk=", "disposition": "weird"}]))
    assert err.field.startswith("attachments.0.disposition")


def test_attachment_file_name_no_crlf() -> None:
    err = invalid(lambda: email(attachments=[{"file_name": "a\r\nb.txt", "content": "aGk="}]))
    assert err.field == "attachments.0.fileName"


# --- JSON shape ------------------------------------------------------------------------


def test_full_email_serialises_to_camel_case() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    out = email(
        cc="c@example.com",
        reply_to="reply@example.com",
        text="plain",
        dynamic_data={"a": 1},
        categories=["welcome"],
        scheduled_at=when,
        campaign_name="spring",
        unsubscribe_group_id="grp_1",
        test=True,
    ).to_autosend()
    assert out == {
        "to": {"email": "jane@example.com"},
        "from": {"email": "shop@example.com"},
        "cc": [{"email": "c@example.com"}],
        "replyTo": {"email": "reply@example.com"},
        "subject": "Welcome",
        "html": "<p>Hi</p>",
        "text": "plain",
        "dynamicData": {"a": 1},
        "categories": ["welcome"],
        "scheduledAt": "2030-01-02T01:04:05Z",
        "campaignName": "spring",
        "unsubscribeGroupId": "grp_1",
        "test": True,
    }
    assert "from_" not in out


def test_naive_scheduled_at_means_utc() -> None:
    out = email(scheduled_at=datetime(2030, 1, 2, 3, 4, 5)).to_autosend()
    assert out["scheduledAt"] == "2030-01-02T03:04:05Z"


def test_empty_fields_are_dropped() -> None:
    out = email(
        cc=[], bcc=[], text="", categories=[], dynamic_data={}, attachments=[], campaign_name="", reply_to=None
    ).to_autosend()
    assert out == {
        "to": {"email": "jane@example.com"},
        "from": {"email": "shop@example.com"},
        "subject": "Welcome",
        "html": "<p>Hi</p>",
    }


def test_empty_values_inside_dynamic_data_are_kept() -> None:
    out = email(dynamic_data={"middle_name": "", "tags": []}).to_autosend()
    assert out["dynamicData"] == {"middle_name": "", "tags": []}


def test_test_flag_false_is_dropped() -> None:
    assert "test" not in email(test=False).to_autosend()


def test_camel_case_input_accepted() -> None:
    out = Email.model_validate(
        {"to": "jane@example.com", "from": "shop@example.com", "subject": "s", "html": "h", "replyTo": "r@example.com"}
    ).to_autosend()
    assert out["replyTo"] == {"email": "r@example.com"}


def test_models_are_frozen() -> None:
    mail = email()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError for a frozen model
        mail.subject = "changed"  # type: ignore[misc]
    assert mail.subject == "Welcome"


# --- a plain dict returned by a task ----------------------------------------------------


def test_dict_validated_like_email() -> None:
    mail = coerce_email({"to": "Jane <jane@example.com>", "from": "shop@example.com", "subject": "s", "text": "t"})
    assert isinstance(mail, Email)
    assert mail.to_autosend() == {
        "to": {"email": "jane@example.com", "name": "Jane"},
        "from": {"email": "shop@example.com"},
        "subject": "s",
        "text": "t",
    }


def test_dict_with_snake_case_keys_accepted() -> None:
    mail = coerce_email({"to": "jane@example.com", "from_": "shop@example.com", "template_id": "tpl"})
    assert mail.to_autosend()["templateId"] == "tpl"


def test_dict_with_recipients_is_bulk() -> None:
    mail = coerce_email({"recipients": ["a@example.com"], "from": "shop@example.com", "subject": "s", "html": "h"})
    assert isinstance(mail, BulkEmail)


def test_invalid_dict_raises_the_same_errors() -> None:
    err = invalid(lambda: coerce_email({"to": "nope", "from": "shop@example.com", "subject": "s", "html": "h"}))
    assert err.field == "to.email"
    err = invalid(
        lambda: coerce_email(
            {"recipients": ["a@example.com", "b@example.com", "c@example.com", "x"], "from": "shop@example.com", "subject": "s", "html": "h"}
        )
    )
    assert err.field == "recipients.3.email"
    err = invalid(lambda: coerce_email({"to": "jane@example.com", "from": "shop@example.com", "subject": "a\nb", "html": "h"}))
    assert err.field == "subject"
    err = invalid(lambda: coerce_email({"to": "jane@example.com", "from": "shop@example.com"}))
    assert err.field == "subject"


def test_dict_default_from_applies_only_when_missing() -> None:
    mail = coerce_email({"to": "jane@example.com", "subject": "s", "html": "h"}, default_from="noreply@example.com")
    assert mail.to_autosend()["from"] == {"email": "noreply@example.com"}
    mail = coerce_email(
        {"to": "jane@example.com", "from": "shop@example.com", "subject": "s", "html": "h"},
        default_from="noreply@example.com",
    )
    assert mail.to_autosend()["from"] == {"email": "shop@example.com"}


@pytest.mark.parametrize("value", ["hello", None, 42, ["jane@example.com"]])
def test_non_email_return_value_rejected(value: Any) -> None:
    err = invalid(lambda: coerce_email(value))
    assert err.field == "email"
    assert type(value).__name__ in str(err)


def test_model_instances_pass_through() -> None:
    mail = email()
    assert coerce_email(mail) is mail


# --- AutoSend's wire shapes (what the sandbox holds requests to) --------------------------

from celery_qstash.email import wire_errors  # noqa: E402


def test_what_the_shim_sends_passes_the_wire_check() -> None:
    email = Email(
        to="Ada <ada@example.com>", from_="hi@acme.example", cc="c@example.com", subject="s",
        html="h", dynamic_data={"a": 1}, attachments=[{"file_name": "a.txt", "content": "eA=="}],
        test=True,
    )
    bulk = BulkEmail(
        from_="hi@acme.example", subject="s", text="t",
        recipients=[{"email": "a@example.com", "dynamic_data": {"n": 1}}],
    )
    assert wire_errors(email.to_autosend(), bulk=False) == []
    assert wire_errors(bulk.to_autosend(), bulk=True) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to": "Ada <a@b.co>"}, "to"),
        ({"to": [{"email": "a@b.co"}]}, "to"),
        ({"cc": {"email": "a@b.co"}}, "cc"),
        ({"cc": ["a@b.co"]}, "cc.0"),
        ({"replyTo": "r@d.co"}, "replyTo"),
        ({"test": "yes"}, "test"),
        ({"template_id": "t"}, "template_id"),
        ({"to": {"email": "a@b.co", "full_name": "A"}}, "to.full_name"),
        ({"attachments": [{"file_name": "a.txt"}]}, "attachments.0.file_name"),
    ],
)
def test_wire_departures_are_named(body: dict[str, object], field: str) -> None:
    assert field in [e["field"] for e in wire_errors(body, bulk=False)]


def test_bulk_recipients_must_be_camel_case_objects() -> None:
    errors = wire_errors({"recipients": [{"email": "a@b.co", "dynamic_data": {}}, "b@c.co"]}, bulk=True)
    assert [e["field"] for e in errors] == ["recipients.0.dynamic_data", "recipients.1"]
    assert wire_errors({"to": {"email": "a@b.co"}}, bulk=True)[0]["field"] == "to"
