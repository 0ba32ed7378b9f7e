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
from typing import Any
from urllib.parse import quote

import celery
import kombu

from ..config import Settings, http_url_problem
from ..errors import CeleryQStashWarning, UnsupportedOption

__all__ = [
    "APPLY_ASYNC_OPTIONS",
    "TASK_ATTRIBUTES",
    "Outcome",
    "Rule",
    "canvas_error",
    "encode_header_text",
    "unknown_option_message",
    "warn_once",
]


class Outcome(str, Enum):
    MAPPED = "mapped"
    IGNORED = "ignored"
    INTERNAL = "internal"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Rule:
    outcome: Outcome
    qstash: str
    note: str
    apply: Callable[[_Draft, Any], None] | None = None
    #: For a deferred task (its body runs at delivery, on the receiver), where this row
    #: means something else: what it does there. ``None``: the same as for an email task.
    at_delivery: str | None = None


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
        problem = http_url_problem(value)
        if problem:
            raise UnsupportedOption(option, problem)
        return value
    raise UnsupportedOption(
        option,
        "a Celery signature needs a worker to run it, and QStash has none. Pass an "
        "https:// URL to receive QStash's callback request instead, or call the follow-up "
        "task yourself where you handle that callback; deferred tasks (@qstash_task, "
        "@autosend_task(deferred=True)) take signatures",
    )


def _link(d: _Draft, value: Any) -> None:
    d.callback = _callback_url("link", value)


def _link_error(d: _Draft, value: Any) -> None:
    d.failure_callback = _callback_url("link_error", value)


def _serializer(d: _Draft, value: Any) -> None:
    if value not in (None, "json"):
        raise UnsupportedOption(
            "serializer",
            f"{value!r}: QStash carries the message as JSON, so only 'json' is possible. "
            "Without serializer= in the call it is the task's serializer attribute or the "
            "app's task_serializer setting (CELERY_TASK_SERIALIZER under Django): set it to "
            "'json', Celery's default",
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
        "link='https://...' to be called back when the email is accepted; deferred tasks "
        "(@qstash_task, @autosend_task(deferred=True)) chain on the app's receiver",
    )


def chord_backend_error(backend: str) -> UnsupportedOption:
    """The error for a chord of deferred tasks on a result backend that cannot join it;
    ``backend`` says what the app has ("qstash:// cannot", "none is set")."""
    return UnsupportedOption(
        "chord",
        f"a chord needs a result backend that counts its parts as they finish ({backend}): "
        "set result_backend to Redis (redis://...) or a cache backend "
        "(cache+memcached://...), or run the body as a link of a group's last task, or "
        "collect the group's results with GroupResult.get()",
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
    "chain": Rule(Outcome.REJECTED, "-", "no worker to continue a chain; send each step yourself", _chain("chain"),
                  at_delivery="travels in the message: the receiver continues the chain as a worker does"),
    "chord": Rule(Outcome.REJECTED, "-", "no worker to run the chord body", _chain("chord"),
                  at_delivery="travels in the message when the result backend counts a chord's parts (Redis, a cache); refused otherwise"),
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
    "autoretry_for": Rule(Outcome.IGNORED, "-", "the body runs at call time, so an exception there reaches the caller and nothing is published; QStash retries every failed delivery anyway",
                          at_delivery="Celery's autoretry runs at delivery: self.retry() publishes the next attempt"),
    "acks_late": Rule(Outcome.IGNORED, "-", "QStash delivers at least once in any case; AutoSend's Idempotency-Key makes a redelivery send nothing twice",
                      at_delivery="always so: a delivery is done only after its body succeeded (the receiver's ledger)"),
    "retry_jitter": Rule(Outcome.IGNORED, "-", "QStash's expression language has no random function; backoff is not jittered",
                         at_delivery="jitters autoretry's countdown as in Celery; QStash's own retries of a raising body are not jittered"),
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

