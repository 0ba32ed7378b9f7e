"""Email models: what a task returns, validated here, serialised to AutoSend's JSON.

``Email`` is one ``POST /v1/mails/send``; ``BulkEmail`` is one ``POST /v1/mails/bulk``.
The same models validate in the caller's process (before anything is published)
and in the local AutoSend sandbox, so a message the shim accepts is a message the
sandbox accepts, and the other way round.

Serialisation uses AutoSend's camelCase names and drops empty fields, so what is
published is exactly what a hand-written request to AutoSend would carry.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import datetime, timezone
from functools import lru_cache
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .errors import EmailValidationError

__all__ = [
    "BULK_PATH",
    "SEND_PATH",
    "Address",
    "Attachment",
    "BulkEmail",
    "Email",
    "Recipient",
    "coerce_email",
    "splitting_bulk",
    "validation_errors",
    "wire_errors",
]

SEND_PATH = "/v1/mails/send"
BULK_PATH = "/v1/mails/bulk"

MAX_RECIPIENTS = 50  # to + cc + bcc, per AutoSend's send endpoint
MAX_BULK_RECIPIENTS = 100
MAX_SUBJECT = 998  # RFC 5322 line length, AutoSend's documented limit


def _no_newlines(value: str | None) -> str | None:
    # CR/LF in a display name or subject is header injection waiting to happen.
    if value is not None and ("\r" in value or "\n" in value):
        raise ValueError("must not contain CR or LF characters")
    return value


SingleLine = Annotated[str, AfterValidator(_no_newlines)]


@lru_cache(maxsize=4096)
def _full_validation(value: str) -> tuple[str, str | None]:
    """(normalized address, None) or (value, why not): pure, so cached per process."""
    try:
        # No DNS lookups: validation must work offline and in tests.
        return validate_email(value, check_deliverability=False).normalized, None
    except EmailNotValidError as exc:
        return value, str(exc)


@lru_cache(maxsize=1024)
def _validated_domain(domain: str) -> str | None:
    """The normalized domain, if ``domain`` is one email-validator accepts (cached)."""
    normalized, error = _full_validation(f"a@{domain}")
    return None if error else normalized.rpartition("@")[2]


# RFC 5322's dot-atom, ASCII only: a local part email-validator keeps exactly as written.
_DOT_ATOM = re.compile(r"[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+)*\Z")


def _validated_address(value: str) -> tuple[str, str | None]:
    """email-validator's verdict; most addresses (a plain local part at a domain seen
    before) are decided from the cached domain, since the local part needs no work."""
    local, at, domain = value.rpartition("@")
    if at and len(local) <= 64 and len(value) <= 254 and _DOT_ATOM.match(local):
        normalized_domain = _validated_domain(domain)
        if normalized_domain is not None and len(local) + 1 + len(normalized_domain) <= 254:
            return f"{local}@{normalized_domain}", None
    return _full_validation(value)


def _check_address(value: str) -> str:
    normalized, error = _validated_address(value)
    if error is not None:
        raise ValueError(f"invalid email address: {error}")
    return normalized


EmailAddress = Annotated[str, AfterValidator(_check_address)]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise EmailValidationError(validation_errors(exc, type(self))) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise EmailValidationError(validation_errors(exc, cls)) from None

    def to_autosend(self) -> dict[str, Any]:
        """AutoSend's JSON: camelCase keys, empty and default fields left out."""
        data: dict[str, Any] = _drop_empty(
            self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
        )
        return data


# Free-form user data: kept as given, even where it holds empty values.
_OPAQUE_FIELDS = frozenset({"dynamicData"})


_EMPTIABLE = (str, list, dict)
_CONTAINERS = (list, dict)


def _drop_empty(data: Any) -> Any:
    """Leave out fields whose value is ``""``, ``[]`` or ``{}`` (recursively, not in user data).

    ``data`` is ``model_dump(mode="json")`` output: only dicts, lists and JSON scalars,
    so exact type tests suffice, and scalars are kept without a call each.
    """
    if type(data) is dict:
        return {
            key: value if key in _OPAQUE_FIELDS or type(value) not in _CONTAINERS
            else _drop_empty(value)
            for key, value in data.items()
            if value or type(value) not in _EMPTIABLE
        }
    if type(data) is list:
        return [_drop_empty(item) if type(item) in _CONTAINERS else item for item in data]
    return data


# No spaces, quotes, brackets, commas, comments or line breaks: one bare address.
_BARE_ADDRESS = re.compile(r"^[^\s<>\"(),;:\\\[\]@]+@[^\s<>\"(),;:\\\[\]@]+$")


def _address_input(value: Any) -> Any:
    """``"a@b.com"`` and ``"Name <a@b.com>"`` become ``{"email", "name"}``.

    A string holding several addresses is refused, not cut to its first one
    (``parseaddr`` would silently drop the rest).
    """
    if isinstance(value, str):
        if _BARE_ADDRESS.match(value):  # the usual case; what getaddresses would give anyway
            return {"email": value}
        if "\r" in value or "\n" in value:
            # Split "Name <addr>" by hand: email.utils reads such a string differently from
            # one Python release to the next (3.13 refuses it whole), and the refusal must
            # name the part the user wrote the line break in.
            name, bracket, rest = value.rpartition("<")
            if bracket and rest.rstrip().endswith(">"):
                return {"email": rest.rstrip()[:-1], "name": name}  # the name check rejects it
            return {"email": value}  # no display name: the address check rejects it
        pairs = [pair for pair in email.utils.getaddresses([value]) if pair != ("", "")]
        if len(pairs) > 1:
            raise ValueError(
                f"{value!r} holds {len(pairs)} addresses; give one here (use cc/bcc, "
                "a list, or BulkEmail for several)"
            )
        name, addr = pairs[0] if pairs else ("", "")
        if not addr or ("<" in value and not value.rstrip().endswith(">")):
            return {"email": value}
        return {"email": addr, "name": name or None}
    return value


class Address(_Model):
    """``{email, name?}``; accepts ``"a@b.com"``, ``"Name <a@b.com>"``, a dict or an Address."""

    # Addresses are trimmed; bodies and subjects are sent exactly as written.
    model_config = ConfigDict(str_strip_whitespace=True)

    email: EmailAddress
    name: SingleLine | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return _address_input(value)

    @field_validator("name")
    @classmethod
    def _empty_name(cls, value: str | None) -> str | None:
        return value or None

    def __str__(self) -> str:
        return email.utils.formataddr((self.name or "", self.email))


class Recipient(Address):
    """A bulk recipient: an address plus its own ``dynamic_data`` (overrides the root's)."""

    dynamic_data: dict[str, JsonValue] | None = None


class Attachment(_Model):
    """An attachment as AutoSend's API takes it: base64 ``content`` or a ``file_url``."""

    file_name: SingleLine
    content: str | None = None
    file_url: str | None = None
    content_type: str | None = None
    disposition: Literal["attachment", "inline"] | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Attachment:
        if (self.content is None) == (self.file_url is None):
            raise _FieldError("content", "give exactly one of content (base64) or file_url")
        return self


def _address_list(value: Any) -> Any:
    # ``cc="a@b.com"`` is as natural as ``cc=["a@b.com"]``.
    if isinstance(value, (str, Address, Mapping)):
        return [value]
    return value


class _Common(_Model):
    from_: Address = Field(alias="from")
    reply_to: Address | None = None
    subject: SingleLine | None = None
    html: str | None = None
    text: str | None = None
    template_id: str | None = None
    dynamic_data: dict[str, JsonValue] | None = None
    categories: list[str] | None = None
    scheduled_at: datetime | None = None
    campaign_name: str | None = None
    unsubscribe_group_id: str | None = None
    attachments: list[Attachment] | None = None
    test: bool = False

    @field_validator("subject")
    @classmethod
    def _subject_length(cls, value: str | None) -> str | None:
        if value is not None and len(value) > MAX_SUBJECT:
            raise ValueError(f"{len(value)} characters; AutoSend allows at most {MAX_SUBJECT}")
        return value

    @field_validator("scheduled_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)  # naive means UTC, as everywhere here
        return value

    @field_serializer("scheduled_at")
    def _iso(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

    @model_validator(mode="after")
    def _content(self) -> _Common:
        if self.template_id:
            return self
        if not self.subject:
            raise _FieldError("subject", "required unless template_id is given")
        if not (self.html or self.text):
            raise _FieldError("html", "give html or text (or a template_id)")
        return self


class _FieldError(ValueError):
    """A cross-field rule that belongs to one named field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class Email(_Common):
    """One email to one primary recipient: ``POST /v1/mails/send``."""

    to: Address
    cc: list[Address] | None = None
    bcc: list[Address] | None = None

    @field_validator("cc", "bcc", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _address_list(value)

    @field_validator("to", mode="before")
    @classmethod
    def _single_to(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) == 1:
                return value[0]
            raise ValueError("one primary recipient per email; use cc/bcc or BulkEmail")
        return value

    @model_validator(mode="after")
    def _recipient_cap(self) -> Email:
        total = 1 + len(self.cc or ()) + len(self.bcc or ())
        if total > MAX_RECIPIENTS:
            raise _FieldError(
                "bcc" if self.bcc else "cc",
                f"{total} recipients across to/cc/bcc; AutoSend allows at most {MAX_RECIPIENTS}",
            )
        return self

    @property
    def path(self) -> str:
        return SEND_PATH

    @property
    def recipients_count(self) -> int:
        return 1 + len(self.cc or ()) + len(self.bcc or ())


class BulkEmail(_Common):
    """The same email to 1-100 recipients: ``POST /v1/mails/bulk``.

    Returned from a task, it may hold more: the task then publishes one message per
    100 recipients (:meth:`split`), each with its own idempotency key.
    """

    recipients: Annotated[list[Recipient], Field(min_length=1)]

    @field_validator("recipients")
    @classmethod
    def _recipient_cap(cls, value: list[Recipient]) -> list[Recipient]:
        if len(value) > MAX_BULK_RECIPIENTS and not _split_bulk.get():
            raise ValueError(
                f"{len(value)} recipients; AutoSend's bulk endpoint takes at most "
                f"{MAX_BULK_RECIPIENTS} (a task returning it publishes one message per "
                f"{MAX_BULK_RECIPIENTS})"
            )
        return value

    def split(self) -> list[BulkEmail]:
        """AutoSend-sized parts: the same email, :data:`MAX_BULK_RECIPIENTS` recipients each."""
        if len(self.recipients) <= MAX_BULK_RECIPIENTS:
            return [self]
        return [
            self.model_copy(update={"recipients": self.recipients[i : i + MAX_BULK_RECIPIENTS]})
            for i in range(0, len(self.recipients), MAX_BULK_RECIPIENTS)
        ]

    @property
    def path(self) -> str:
        return BULK_PATH

    @property
    def recipients_count(self) -> int:
        return len(self.recipients)


AnyEmail = Email | BulkEmail

#: True while a task body runs in the shim: a BulkEmail may then exceed AutoSend's
#: per-request cap, because the shim splits it (the sandbox, like AutoSend, never does).
_split_bulk: ContextVar[bool] = ContextVar("celery_qstash_split_bulk", default=False)


class splitting_bulk:
    """Let a :class:`BulkEmail` built (or coerced) in this block exceed 100 recipients.

    A class rather than ``@contextmanager``: it is entered on every call's path, and a
    generator-based context manager costs several times as much to enter and leave.
    """

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _split_bulk.set(True)

    def __exit__(self, *exc: object) -> None:
        _split_bulk.reset(self._token)


_LOC_RE = re.compile(r"^(function-after|function-before|function-wrap)\[.*\]$")


def _field_name(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, str) and (_LOC_RE.match(part) or part.startswith("str-")):
            continue
        if part == "from_":
            part = "from"
        parts.append(to_camel(part) if isinstance(part, str) and part != "from" else str(part))
    return ".".join(parts)


def validation_errors(exc: ValidationError, model: type[BaseModel]) -> list[dict[str, str]]:
    """pydantic's errors as AutoSend's ``[{"field": "to.email", "message": ...}]``."""
    out: list[dict[str, str]] = []
    for err in exc.errors(include_url=False):
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, EmailValidationError):
            # A nested model's own __init__ already translated its errors.
            prefix = _field_name(tuple(err["loc"]), model) if err["loc"] else ""
            for inner in ctx_error.errors:
                name = "" if inner["field"] == "body" else inner["field"]
                field = ".".join(p for p in (prefix, name) if p)
                out.append({"field": field, "message": inner["message"]})
            continue
        if isinstance(ctx_error, _FieldError):
            out.append({"field": ctx_error.field, "message": str(ctx_error)})
            continue
        message = err["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        out.append({"field": _field_name(tuple(err["loc"]), model), "message": message})
    # A rule about the whole request (an unknown shape, say) has no field; AutoSend says "body".
    return [{**e, "field": e["field"] or "body"} for e in out]


# AutoSend's JSON, field by field: what each documented key must be on the wire.
_OBJ, _ARR, _STR, _BOOL = dict, list, str, bool
_WIRE_COMMON: dict[str, type[Any]] = {
    "from": _OBJ, "replyTo": _OBJ, "subject": _STR, "html": _STR, "text": _STR,
    "templateId": _STR, "dynamicData": _OBJ, "categories": _ARR, "scheduledAt": _STR,
    "campaignName": _STR, "unsubscribeGroupId": _STR, "attachments": _ARR, "test": _BOOL,
}
_WIRE_SEND: dict[str, type[Any]] = {**_WIRE_COMMON, "to": _OBJ, "cc": _ARR, "bcc": _ARR}
_WIRE_BULK: dict[str, type[Any]] = {**_WIRE_COMMON, "recipients": _ARR}
_ADDRESS_KEYS = frozenset({"email", "name"})
#: The keys an object inside a field may have (what nested snake_case would miss).
_WIRE_OBJECT_KEYS: dict[str, frozenset[str]] = {
    "from": _ADDRESS_KEYS, "replyTo": _ADDRESS_KEYS, "to": _ADDRESS_KEYS,
    "cc": _ADDRESS_KEYS, "bcc": _ADDRESS_KEYS,
    "recipients": _ADDRESS_KEYS | {"dynamicData"},
    "attachments": frozenset(
        {"fileName", "content", "fileUrl", "contentType", "disposition", "description"}
    ),
}
_WIRE_NAMES: dict[type[Any], str] = {
    _OBJ: "an object", _ARR: "an array", _STR: "a string", _BOOL: "a boolean",
}


def wire_errors(data: Mapping[str, Any], *, bulk: bool) -> list[dict[str, str]]:
    """Where a JSON request body departs from AutoSend's documented shapes.

    The models take friendlier Python input (``"Name <a@b.com>"`` for an address, a
    single ``cc``, snake_case names); AutoSend's wire format does not. The local
    sandbox checks this first, so a request that passes there passes at AutoSend.
    """
    spec = _WIRE_BULK if bulk else _WIRE_SEND
    errors: list[dict[str, str]] = []

    def check_object(field: str, obj: Any, keys: frozenset[str]) -> None:
        if not isinstance(obj, dict):
            errors.append({"field": field, "message": "must be an object"})
            return
        for name in obj:
            if name not in keys:
                errors.append({"field": f"{field}.{name}", "message": "not a field here"})

    for key, value in data.items():
        expected = spec.get(key)
        keys = _WIRE_OBJECT_KEYS.get(key)
        if expected is None:
            errors.append({"field": key, "message": "not a field of this endpoint"})
        elif value is not None and not isinstance(value, expected):
            errors.append({"field": key, "message": f"must be {_WIRE_NAMES[expected]}"})
        elif keys is not None and isinstance(value, dict):
            check_object(key, value, keys)
        elif keys is not None and isinstance(value, list):
            for i, item in enumerate(value):
                check_object(f"{key}.{i}", item, keys)
    return errors


def coerce_email(value: Any, *, default_from: str | None = None) -> AnyEmail:
    """Turn what a task returned into a validated ``Email`` or ``BulkEmail``.

    Accepts a model instance or a dict of AutoSend fields (camelCase or snake_case;
    a ``recipients`` key means bulk). Raises :class:`EmailValidationError`.
    """
    if isinstance(value, (Email, BulkEmail)):
        return value
    if not isinstance(value, Mapping):
        raise EmailValidationError(
            [
                {
                    "field": "email",
                    "message": "the task must return an Email, a BulkEmail or a dict of "
                    f"AutoSend fields, not {type(value).__name__}",
                }
            ]
        )
    data = dict(value)
    if default_from and "from" not in data and "from_" not in data:
        data["from"] = default_from
    model: type[Email] | type[BulkEmail] = BulkEmail if "recipients" in data else Email
    return model.model_validate(data)  # type: ignore[no-any-return]
