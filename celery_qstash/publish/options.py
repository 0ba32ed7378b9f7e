"""Celery options -> one QStash publish request: a declarative table and pure functions.

Every option ``apply_async`` can receive, and every task attribute that matters,
has one row in :data:`APPLY_ASYNC_OPTIONS` or :data:`TASK_ATTRIBUTES` with one of
four outcomes:

* ``mapped``: turned into a QStash header or endpoint;
* ``ignored``: accepted, has no meaning without a broker; warned about once per process;
* ``internal``: set by Celery itself (canvas, retries); no effect here, no warning;
* ``rejected``: raises :class:`UnsupportedOption` saying what to do instead.

An option that is in neither table is rejected too: nothing is dropped silently.
Nothing here does I/O or reads the clock; ``now`` is a parameter.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import celery
import kombu

from ..config import Settings
from ..email import AnyEmail
from ..errors import CeleryQStashWarning, MessageTooLarge, UnsupportedOption

__all__ = [
    "APPLY_ASYNC_OPTIONS",
    "TASK_ATTRIBUTES",
    "TASK_NAME_HEADER",
    "FlowControl",
    "Outcome",
    "PublishPlan",
    "PublishRequest",
    "Rule",
    "TaskAttrs",
    "canvas_error",
    "parse_rate",
    "plan_publish",
]


#: Forwarded with every message that has a callback: the registered task name.
TASK_NAME_HEADER = "X-Celery-Task-Name"


class Outcome(str, Enum):
    MAPPED = "mapped"
    IGNORED = "ignored"
    INTERNAL = "internal"
    REJECTED = "rejected"


@dataclass(frozen=True)
class FlowControl:
    key: str
    rate: int | None = None
    period: str | None = None
    parallelism: int | None = None

    def as_sdk(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        if self.rate is not None:
            out["rate"] = self.rate
            out["period"] = self.period or "1s"
        if self.parallelism is not None:
            out["parallelism"] = self.parallelism
        return out


@dataclass(frozen=True)
class PublishRequest:
    """Everything the transport needs for one QStash message. Pure data.

    ``authorization`` (``Bearer <AutoSend key>``) is excluded from ``repr``.
    """

    task_id: str
    task_name: str
    url: str
    body: dict[str, Any]
    authorization: str = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict)  # forwarded to AutoSend
    queue: str | None = None
    delay: int | None = None  # seconds
    not_before: int | None = None  # unix seconds
    retries: int | None = None
    retry_delay: str | None = None  # QStash expression, milliseconds over `retried`
    timeout: int | None = None  # seconds
    flow_control: FlowControl | None = None
    callback: str | None = None
    failure_callback: str | None = None
    deduplication_id: str | None = None
    label: str | None = None
    redact_headers: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return self.url.split("://", 1)[-1].partition("/")[2]

    @property
    def body_text(self) -> str:
        """The body as the SDK sends it (``json.dumps``), serialised once per request."""
        text: str | None = self.__dict__.get("_body_text")
        if text is None:
            text = json.dumps(self.body)
            object.__setattr__(self, "_body_text", text)  # a cache, not a field
        return text


@dataclass(frozen=True)
class TaskAttrs:
    """The task attributes that shape a message; ``declared`` lists those the task set itself."""

    name: str
    max_retries: int | None = 3
    default_retry_delay: float = 180
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    rate_limit: str | float | None = None
    retry_kwargs: Mapping[str, Any] = field(default_factory=dict)
    autoretry_for: tuple[type[BaseException], ...] = ()
    acks_late: bool = False
    declared: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Rule:
    outcome: Outcome
    qstash: str
    note: str
    apply: Callable[[_Draft, Any], None] | None = None


@dataclass
class _Draft:
    settings: Settings
    now: float
    delay: int | None = None
    not_before: int | None = None
    eta_given: bool = False
    countdown_given: bool = False
    expires_at: float | None = None
    queue: str | None = None
    timeout: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    callback: str | None = None
    failure_callback: str | None = None
    ignored: list[str] = field(default_factory=list)


# --- one small pure function per mapped option -------------------------------------------

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
#: Longest task id: QStash's label and deduplication id limit.
MAX_TASK_ID = 256
# Printable ASCII but space and comma (QStash splits labels on commas).
_TASK_ID = re.compile(r"^[\x21-\x2b\x2d-\x7e]{1,256}$")
_RESERVED_FORWARD = {"authorization", "content-type", "idempotency-key", "content-length", "host"}


def _number(option: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnsupportedOption(option, f"expected a number of seconds, got {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise UnsupportedOption(option, f"expected a finite number of seconds, got {value!r}")
    return float(value)


def _to_timestamp(option: str, value: Any) -> float:
    """A datetime or ISO-8601 string as unix seconds; naive means UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise UnsupportedOption(
                option, f"expected a datetime or an ISO-8601 string, got {value!r}"
            ) from None
    if not isinstance(value, datetime):
        raise UnsupportedOption(option, f"expected a datetime or an ISO-8601 string, got {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return float(value.timestamp())


def _countdown(d: _Draft, value: Any) -> None:
    seconds = _number("countdown", value)
    d.countdown_given = bool(seconds)
    # Celery: `if countdown: eta = now + countdown`, so countdown wins over eta, and a
    # countdown of 0 (or less) means "now". QStash delays are whole seconds: round up,
    # because Celery's countdown is an earliest time.
    d.delay = math.ceil(seconds) if seconds > 0 else None
    if d.countdown_given:
        d.not_before = None


def _eta(d: _Draft, value: Any) -> None:
    when = _to_timestamp("eta", value)
    d.eta_given = True
    if not d.countdown_given:
        d.not_before = math.ceil(when)


def _expires(d: _Draft, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        d.expires_at = d.now + max(0.0, _number("expires", value))
    else:
        d.expires_at = _to_timestamp("expires", value)


def _queue(d: _Draft, value: Any) -> None:
    name = getattr(value, "name", value)  # a kombu.Queue works too
    if not isinstance(name, str) or not _QUEUE_NAME.match(name):
        raise UnsupportedOption(
            "queue", f"QStash queue names use letters, digits, '-', '_' and '.'; got {name!r}"
        )
    d.queue = name


def _time_limit(d: _Draft, value: Any) -> None:
    seconds = _number("time_limit", value)
    if seconds <= 0:
        raise UnsupportedOption("time_limit", "must be a positive number of seconds")
    d.timeout = math.ceil(seconds)


def _headers(d: _Draft, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise UnsupportedOption("headers", f"expected a dict of header names to values, got {value!r}")
    for name, item in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise UnsupportedOption("headers", f"{name!r} is not a valid HTTP header name")
        if name.lower().startswith("upstash-"):
            # The SDK would pass an "Upstash-Forward-X" name through as it is, and any
            # other Upstash-* name would configure QStash itself.
            raise UnsupportedOption(
                "headers",
                f"{name}: give the plain header name (X-Foo, not Upstash-Forward-X-Foo); "
                "QStash settings come from the task's options",
            )
        if name.lower() in _RESERVED_FORWARD:
            raise UnsupportedOption(
                "headers",
                f"{name} is set by celery-qstash itself; configure autosend_api_key or "
                "pass task_id instead",
            )
        try:
            text = item if isinstance(item, str) else json.dumps(
                item, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            raise UnsupportedOption(
                "headers",
                f"the value of {name} ({type(item).__name__}) cannot be sent as a header: "
                "give a string or a JSON-serialisable value",
            ) from None
        if "\r" in text or "\n" in text:
            raise UnsupportedOption("headers", f"the value of {name} contains CR or LF")
        d.headers[name] = text


def _callback_url(option: str, value: Any) -> str | None:
    if not value:
        return None
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise UnsupportedOption(
                option, "QStash calls one URL per message; pass a single https:// URL"
            )
        value = value[0]
    if isinstance(value, str):
        if not value.startswith(("http://", "https://")):
            raise UnsupportedOption(option, f"expected an http(s) URL, got {value!r}")
        return value
    raise UnsupportedOption(
        option,
        "a Celery signature needs a worker to run it, and QStash has none. Pass an "
        "https:// URL to receive QStash's callback request instead, or call the follow-up "
        "task yourself where you handle that callback",
    )


def _link(d: _Draft, value: Any) -> None:
    d.callback = _callback_url("link", value)


def _link_error(d: _Draft, value: Any) -> None:
    d.failure_callback = _callback_url("link_error", value)


def _serializer(d: _Draft, value: Any) -> None:
    if value not in (None, "json"):
        raise UnsupportedOption(
            "serializer",
            f"{value!r}: the message body is AutoSend's JSON, so only 'json' is possible",
        )


def _nothing(d: _Draft, value: Any) -> None:
    """Mapped elsewhere (task id, retries of the publish call, ignore_result, shadow)."""


_POLICY_KEYS = ("max_retries", "interval_start", "interval_step", "interval_max", "retry_errors")


def _retry_policy(d: _Draft, value: Any) -> None:
    """Celery's ``retry_policy`` keys, checked here so that a bad one fails before the body
    runs (the transport reads them at publish time)."""
    if not isinstance(value, Mapping):
        raise UnsupportedOption(
            "retry_policy", f"expected a dict with {', '.join(_POLICY_KEYS)}, got {value!r}"
        )
    unknown = sorted(str(k) for k in value if k not in _POLICY_KEYS)
    if unknown:
        raise UnsupportedOption(
            "retry_policy", f"unknown key(s) {unknown}: Celery's are {', '.join(_POLICY_KEYS)}"
        )
    retries = value.get("max_retries")
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or retries < 0
    ):
        raise UnsupportedOption(
            "retry_policy",
            f"max_retries: expected a whole number >= 0 or None, got {retries!r}",
        )
    for key in ("interval_start", "interval_step", "interval_max"):
        number = value.get(key)
        if number is None:
            continue
        if (isinstance(number, bool) or not isinstance(number, (int, float))
                or not math.isfinite(number) or number < 0):
            raise UnsupportedOption(
                "retry_policy", f"{key}: expected seconds >= 0, got {number!r}"
            )


def _shadow(d: _Draft, value: Any) -> None:
    if not isinstance(value, str):
        raise UnsupportedOption(
            "shadow", f"expected the display name as a string, got {type(value).__name__}"
        )


def canvas_error(option: str) -> UnsupportedOption:
    """The error for a chain or chord: the same from ``apply_async`` and from eager canvas."""
    return UnsupportedOption(
        option,
        f"{option}s need a worker to continue them and QStash delivers straight to "
        "AutoSend. Send each email with its own .delay() (a group works), or use "
        "link='https://...' to be called back when the email is accepted",
    )


def _chain(option: str) -> Callable[[_Draft, Any], None]:
    def reject(d: _Draft, value: Any) -> None:
        if value:
            raise canvas_error(option)

    return reject


_NO_BROKER = "there is no broker, so AMQP routing and delivery settings have no meaning"

APPLY_ASYNC_OPTIONS: dict[str, Rule] = {
    "countdown": Rule(Outcome.MAPPED, "Upstash-Delay", "whole seconds, rounded up; wins over eta as in Celery", _countdown),
    "eta": Rule(Outcome.MAPPED, "Upstash-Not-Before", "datetime or ISO string, naive = UTC; unix seconds", _eta),
    "expires": Rule(Outcome.MAPPED, "checked at publish", "QStash has no TTL: already expired at the delivery time -> not published, result REVOKED; otherwise published and not enforced afterwards (warning once)", _expires),
    "queue": Rule(Outcome.MAPPED, "/v2/enqueue/<queue>/...", "with countdown/eta: /v2/publish with flow-control key queue.<name>, parallelism 1", _queue),
    "task_id": Rule(Outcome.MAPPED, "Upstash-Deduplication-Id, Upstash-Label, forwarded Idempotency-Key", "generated when absent", _nothing),
    "headers": Rule(Outcome.MAPPED, "Upstash-Forward-<Name>", "non-string values are JSON-encoded", _headers),
    "link": Rule(Outcome.MAPPED, "Upstash-Callback", "an http(s) URL, default qstash_callback_url (False: none); a Celery signature is rejected", _link),
    "link_error": Rule(Outcome.MAPPED, "Upstash-Failure-Callback", "an http(s) URL, default qstash_callback_url (False: none); a Celery signature is rejected", _link_error),
    "time_limit": Rule(Outcome.MAPPED, "Upstash-Timeout", "whole seconds, rounded up", _time_limit),
    "retry": Rule(Outcome.MAPPED, "retries of the publish call", "network errors and 5xx from QStash, within qstash_publish_timeout", _nothing),
    "retry_policy": Rule(Outcome.MAPPED, "retries of the publish call", "max_retries, interval_start, interval_step, interval_max", _retry_policy),
    "ignore_result": Rule(Outcome.MAPPED, "result.ignored", "get() returns None at once, as in Celery", _nothing),
    "serializer": Rule(Outcome.MAPPED, "Content-Type: application/json", "anything but 'json' is rejected", _serializer),
    "shadow": Rule(Outcome.MAPPED, "X-Celery-Task (display name)", "shown by status, CLI and dashboard", _shadow),
    "chain": Rule(Outcome.REJECTED, "-", "no worker to continue a chain; send each step yourself", _chain("chain")),
    "chord": Rule(Outcome.REJECTED, "-", "no worker to run the chord body", _chain("chord")),
    "priority": Rule(Outcome.IGNORED, "-", "QStash has no priorities; use separate queues"),
    "routing_key": Rule(Outcome.IGNORED, "-", _NO_BROKER),
    "exchange": Rule(Outcome.IGNORED, "-", _NO_BROKER),
    "exchange_type": Rule(Outcome.IGNORED, "-", _NO_BROKER),
    "delivery_mode": Rule(Outcome.IGNORED, "-", _NO_BROKER),
    "mandatory": Rule(Outcome.IGNORED, "-", _NO_BROKER),
    "immediate": Rule(Outcome.IGNORED, "-", _NO_BROKER),
    "declare": Rule(Outcome.IGNORED, "-", _NO_BROKER),
    "compression": Rule(Outcome.IGNORED, "-", "the body is AutoSend's JSON and must stay readable by AutoSend"),
    "producer": Rule(Outcome.IGNORED, "-", "publishing goes through the QStash SDK, not a kombu producer"),
    "publisher": Rule(Outcome.IGNORED, "-", "deprecated alias of producer"),
    "connection": Rule(Outcome.IGNORED, "-", "publishing goes through the QStash SDK, not a kombu connection"),
    "add_to_parent": Rule(Outcome.IGNORED, "-", "only meaningful inside a running worker task"),
    "soft_time_limit": Rule(Outcome.IGNORED, "-", "QStash has one timeout per delivery (time_limit)"),
    # Set by Celery itself (canvas, Task.retry, stamping): nothing to do without a worker.
    **{
        name: Rule(Outcome.INTERNAL, "-", "set by Celery's canvas or retry machinery")
        for name in (
            "group_id", "group_index", "root_id", "parent_id", "reply_to", "retries",
            "replaced_task_nesting", "origin", "stamped_headers", "stamps",
            "argsrepr", "kwargsrepr", "task_type", "result_cls", "router", "route_name",
        )
    },
}

TASK_ATTRIBUTES: dict[str, Rule] = {
    "max_retries": Rule(Outcome.MAPPED, "Upstash-Retries", "None (retry forever) cannot be expressed: QStash's default applies, with a warning"),
    "default_retry_delay": Rule(Outcome.MAPPED, "Upstash-Retry-Delay", "a constant in ms, when the task sets it"),
    "retry_backoff": Rule(Outcome.MAPPED, "Upstash-Retry-Delay", "min(retry_backoff_max, factor * 2^retried) in ms"),
    "retry_backoff_max": Rule(Outcome.MAPPED, "Upstash-Retry-Delay", "the cap of the backoff expression"),
    "retry_kwargs": Rule(Outcome.MAPPED, "Upstash-Retries, Upstash-Retry-Delay", "max_retries and countdown, as Celery's autoretry uses them; other keys are rejected"),
    "autoretry_for": Rule(Outcome.IGNORED, "-", "the body runs at call time, so an exception there reaches the caller and nothing is published; QStash retries every failed delivery anyway"),
    "acks_late": Rule(Outcome.IGNORED, "-", "QStash delivers at least once in any case; AutoSend's Idempotency-Key makes a redelivery send nothing twice"),
    "retry_jitter": Rule(Outcome.IGNORED, "-", "QStash's expression language has no random function; backoff is not jittered"),
    "rate_limit": Rule(Outcome.MAPPED, "Upstash-Flow-Control-Key/-Value", "key celery.<task name>; replaces the AutoSend default (0.5/s: one per 2 s)"),
    "time_limit": Rule(Outcome.MAPPED, "Upstash-Timeout", "whole seconds, rounded up"),
}

#: Options Celery's group passes to every member's apply_async.
_CANVAS_SUPPLIED = frozenset({"producer", "add_to_parent"})

# Header values are ASCII: anything else in a task name travels percent-encoded (and
# "%" itself, so that decoding is exact).
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def encode_header_text(text: str) -> str:
    """``text`` as an HTTP header value: percent-encoded outside printable ASCII."""
    return quote(text, safe=_HEADER_SAFE)


def unknown_option_message(name: str) -> str:
    """Why ``name`` is refused: a likely typo first (difflib over the table), then the header hint."""
    close = difflib.get_close_matches(name, [*APPLY_ASYNC_OPTIONS, "task_id"], n=1, cutoff=0.75)
    hint = f"did you mean `{close[0]}`? Otherwise " if close else ""
    return (
        f"not a Celery option celery-qstash knows; {hint}remove it, or pass it in "
        "headers={...} to forward it to AutoSend"
    )


_warned: set[str] = set()

# Frames in these packages are between the user's call and the warning (Celery's
# delay/signature/canvas, kombu, our own task and options): the warning points past them.
_INTERNAL_DIRS = tuple(
    os.path.dirname(os.path.abspath(module.__file__)) + os.sep
    for module in (celery, kombu, sys.modules[__package__.partition(".")[0]])
    if module.__file__
)


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside Celery, kombu and celery-qstash,
    counted as :func:`warnings.warn` counts from :func:`warn_once`'s caller."""
    frame = sys._getframe(2)  # warn_once's caller
    level = 2
    while frame is not None:
        if not os.path.abspath(frame.f_code.co_filename).startswith(_INTERNAL_DIRS):
            return level
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return 2


def warn_once(option: str, message: str) -> None:
    """One warning per option per process (reset by :func:`reset_warnings` in tests).

    The warning points at the caller's own line (its ``.delay()``, ``.apply_async()``,
    signature or group call), not into Celery or celery-qstash.
    """
    if option in _warned:
        return
    _warned.add(option)
    warnings.warn(
        f"celery-qstash: {option}: {message}", CeleryQStashWarning, stacklevel=_caller_stacklevel()
    )


#: Bumped by :func:`reset_warnings`: a plan cached before it is not reused after it,
#: so the once-per-process warnings its options give are given again.
warnings_generation = 0


def reset_warnings() -> None:
    global warnings_generation
    _warned.clear()
    warnings_generation += 1


# --- task attributes --------------------------------------------------------------------

_RATE_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_rate(value: str | float | int) -> tuple[int, str]:
    """Celery's ``rate_limit`` (``"2/s"``, ``"50/m"``, ``"100/h"``, ``10``) as (rate, period)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ops, unit = float(value), "s"
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*(/\s*[smh])?\s*", value):
        ops_text, _, unit = value.replace(" ", "").partition("/")
        ops, unit = float(ops_text), unit or "s"
    else:
        raise UnsupportedOption(
            "rate_limit", f"expected '<n>/s', '<n>/m', '<n>/h' or a number, got {value!r}"
        )
    if ops <= 0:
        raise UnsupportedOption("rate_limit", "must be positive (remove it for no limit)")
    seconds = _RATE_UNITS[unit]
    if ops == int(ops):
        return int(ops), f"{seconds}s"
    # QStash rates are whole numbers per period: 0.5/s becomes 1 per 2s.
    return 1, f"{max(1, round(seconds / ops))}s"


def _retry_delay(task: TaskAttrs) -> str | None:
    if task.retry_backoff:  # Celery's autoretry: the backoff wins over retry_kwargs' countdown
        factor = int(max(1.0, float(task.retry_backoff)))
        cap_ms = int(task.retry_backoff_max * 1000)
        if task.retry_jitter:
            warn_once("retry_jitter", TASK_ATTRIBUTES["retry_jitter"].note)
        return f"min({cap_ms}, {factor * 1000} * pow(2, retried))"
    countdown = task.retry_kwargs.get("countdown")
    if countdown is not None:
        return str(int(_number("retry_kwargs", countdown) * 1000))
    if "default_retry_delay" in task.declared:
        return str(int(task.default_retry_delay * 1000))
    # Celery's 180 s default only applies to self.retry(); QStash's own backoff fits better.
    return None


@dataclass(frozen=True)
class PublishPlan:
    """Validated options, before the email exists. ``request()`` adds the email."""

    task: TaskAttrs
    task_id: str
    display_name: str
    delay: int | None
    not_before: int | None
    expires_at: float | None
    queue: str | None
    timeout: int | None
    retries: int | None
    retry_delay: str | None
    flow_control: FlowControl | None
    headers: dict[str, str]
    callback: str | None
    failure_callback: str | None
    ignore_result: bool

    def deliver_at(self, now: float) -> float:
        if self.delay:
            return now + self.delay
        if self.not_before is not None:
            return max(now, float(self.not_before))
        return now

    def is_expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= self.deliver_at(now)

    def with_task_id(self, task_id: str) -> PublishPlan:
        """This plan for another task id (checked as :func:`plan_publish` checks it).

        A plan depends on the task id only through the id itself, so a plan cached for
        one call serves the next. Copying the instance dict is what ``dataclasses.replace``
        does without re-running ``__init__`` on every field.
        """
        check_task_id(task_id)
        plan = object.__new__(PublishPlan)
        plan.__dict__.update(self.__dict__)
        plan.__dict__["task_id"] = task_id
        return plan

    def request(
        self,
        email: AnyEmail,
        settings: Settings,
        *,
        eager: bool = False,
        extra_headers: Mapping[str, Any] | None = None,
    ) -> PublishRequest:
        """The full request. ``eager``: tests need no AutoSend key (nothing leaves the process).

        ``extra_headers`` (added by ``before_task_publish`` handlers) are forwarded like
        ``headers=``; one that could not be is skipped with a warning, because failing
        the call over a tracing library's header would be worse.
        """
        key = (settings.autosend_api_key or "eager-mode") if eager else settings.require_api_key()
        forwarded = dict(self.headers)
        for name, value in (extra_headers or {}).items():
            scratch = _Draft(settings=settings, now=0.0)
            try:
                _headers(scratch, {name: value})
            except UnsupportedOption as exc:
                warn_once(f"before_task_publish:{name}", f"header not forwarded: {exc}")
                continue
            forwarded.update(scratch.headers)
        headers = {
            **forwarded,
            # AutoSend replays the first response for a repeated key, so QStash's
            # at-least-once delivery never sends the email twice.
            "Idempotency-Key": self.task_id,
            "X-Celery-Task": _header_text(self.display_name),
        }
        if self.callback or self.failure_callback:
            # QStash's callback body carries the source message's headers: this is how
            # celery_qstash.receiver finds the task (the display name may be a shadow).
            headers[TASK_NAME_HEADER] = _header_text(self.task.name)
        flow = self.flow_control
        if flow is None and settings.rate_limit and not self.queue:
            flow = _autosend_flow(key, settings.rate_limit)
        request = PublishRequest(
            task_id=self.task_id,
            task_name=self.display_name,
            url=settings.autosend_base_url + email.path,
            body=email.to_autosend(),
            authorization=f"Bearer {key}",
            headers=headers,
            queue=self.queue,
            delay=self.delay,
            not_before=self.not_before,
            retries=self.retries,
            retry_delay=self.retry_delay,
            timeout=self.timeout,
            flow_control=flow,
            callback=self.callback,
            failure_callback=self.failure_callback,
            deduplication_id=self.task_id,
            label=self.task_id,
            redact_headers=("Authorization",) if settings.redact_authorization else (),
        )
        # What QStash stores is the body as the SDK sends it (``json.dumps``, ASCII, so
        # characters are bytes); refuse it here, in eager mode too, rather than have
        # QStash answer 413 (or nothing). The text is kept for the transport to send.
        size = len(request.body_text)
        if size > settings.max_message_bytes:
            raise MessageTooLarge(size, settings.max_message_bytes)
        return request


@lru_cache(maxsize=1024)
def _header_text(text: str) -> str:
    return encode_header_text(text)


@lru_cache(maxsize=64)
def _autosend_flow(key: str, rate_limit: str) -> FlowControl:
    """Flow control at AutoSend's rate, keyed by a fingerprint of the API key (pure)."""
    rate, period = parse_rate(rate_limit)
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
    return FlowControl(key=f"autosend.{fingerprint}", rate=rate, period=period)


def check_task_id(task_id: Any) -> None:
    if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
        raise UnsupportedOption(
            "task_id",
            f"{task_id!r}: it becomes QStash's deduplication id and label and AutoSend's "
            "Idempotency-Key, so use 1-256 printable ASCII characters without spaces or commas",
        )


def plan_publish(
    *,
    task: TaskAttrs,
    task_id: str,
    options: Mapping[str, Any],
    settings: Settings,
    now: float,
    link: Any = None,
    link_error: Any = None,
    shadow: str | None = None,
) -> PublishPlan:
    """Check every option against the table and fold them into a :class:`PublishPlan`.

    Raises :class:`UnsupportedOption` naming the option; warns once per ignored option.
    """
    check_task_id(task_id)
    d = _Draft(settings=settings, now=now)
    if shadow is not None:
        _shadow(d, shadow)
    # Set by Celery's stamping (a list of names); anything else stamps nothing.
    raw_stamped = options.get("stamped_headers")
    stamped = ({s for s in raw_stamped if isinstance(s, str)}
               if isinstance(raw_stamped, (list, tuple, set, frozenset)) else set())
    given = {k: v for k, v in options.items() if v is not None}
    # countdown must be seen before eta to win over it.
    for name in sorted(given, key=lambda k: (k != "countdown", k)):
        value = given[name]
        rule = APPLY_ASYNC_OPTIONS.get(name)
        if rule is None:
            if name in stamped:
                continue
            raise UnsupportedOption(name, unknown_option_message(name))
        if rule.outcome is Outcome.IGNORED:
            if name in _CANVAS_SUPPLIED and given.get("group_id"):
                continue  # a group passes these itself; the user did not ask for anything
            warn_once(name, f"ignored: {rule.note}")
        elif rule.apply is not None:
            rule.apply(d, value)
    # qstash_callback_url is the default for both; a call's own link/link_error wins,
    # and link=False / link_error=False turn it off for that call.
    if link is None:
        d.callback = settings.callback_url
    else:
        _link(d, link)
    if link_error is None:
        d.failure_callback = settings.callback_url
    else:
        _link_error(d, link_error)
    policy = given.get("retry_policy")
    if isinstance(policy, Mapping) and policy.get("retry_errors"):
        warn_once(
            "retry_policy.retry_errors",
            "ignored: the publish call retries network errors and 5xx answers from QStash",
        )

    unknown = set(task.retry_kwargs) - {"max_retries", "countdown"}
    if unknown:
        raise UnsupportedOption(
            "retry_kwargs",
            f"only max_retries and countdown have a QStash equivalent, not {sorted(unknown)}",
        )
    if task.autoretry_for:
        warn_once("autoretry_for", TASK_ATTRIBUTES["autoretry_for"].note)
    if task.acks_late:
        warn_once("acks_late", TASK_ATTRIBUTES["acks_late"].note)
    retries: int | None = task.retry_kwargs.get("max_retries", task.max_retries)
    if retries is None:
        warn_once("max_retries", TASK_ATTRIBUTES["max_retries"].note)
    elif isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise UnsupportedOption("max_retries", f"expected a whole number >= 0, got {retries!r}")

    flow: FlowControl | None = None
    rate_pair = parse_rate(task.rate_limit) if task.rate_limit else None
    if rate_pair:
        flow = FlowControl(key=f"celery.{task.name}", rate=rate_pair[0], period=rate_pair[1])
    queue = d.queue
    if queue and (d.delay or d.not_before is not None):
        # QStash's enqueue takes no delay; keep one-at-a-time ordering with flow control,
        # at the task's rate or else AutoSend's.
        pace = rate_pair or (parse_rate(settings.rate_limit) if settings.rate_limit else None)
        flow = FlowControl(
            key=f"queue.{queue}",
            parallelism=1,
            rate=pace[0] if pace else None,
            period=pace[1] if pace else None,
        )
        queue = None
    elif queue and rate_pair:
        raise UnsupportedOption(
            "rate_limit",
            "QStash's enqueue takes no flow control; a queue already delivers one message at "
            "a time (parallelism 1). Drop queue= or drop the task's rate_limit",
        )

    plan = PublishPlan(
        task=task,
        task_id=task_id,
        display_name=shadow or task.name,
        delay=d.delay,
        not_before=d.not_before,
        expires_at=d.expires_at,
        queue=queue,
        timeout=d.timeout,
        retries=retries,
        retry_delay=_retry_delay(task),
        flow_control=flow,
        headers=d.headers,
        callback=d.callback,
        failure_callback=d.failure_callback,
        ignore_result=bool(given.get("ignore_result", False)),
    )
    if plan.expires_at is not None and not plan.is_expired(now):
        warn_once("expires", "checked once at publish time; QStash cannot drop a message later")
    return plan
