"""From a publish request's ``Upstash-*`` headers to validated, storable options.

Pure functions and dataclasses, no HTTP framework and no state: ``routes/`` feeds
in the headers (``validate.py`` checks each value), ``store/`` persists the result
as JSON, ``delivery.py`` reads it back. Every validation error is a
:class:`BadRequest` that names the header, as QStash's 400 responses do.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from celery_qstash.clock import Clock
from celery_qstash.redaction import is_secret_name

from .cron import CronError, next_after
from .errors import BadRequest
from .validate import (
    check_header_name,
    check_header_value,
    check_retry_delay,
    check_url,
    format_ms,
    parse_bool,
    parse_duration_ms,
    parse_int,
    parse_method,
)

__all__ = [
    "DEFAULT_MAX_TIMEOUT_MS",
    "DEFAULT_RETRIES",
    "MAX_DELAY_MS",
    "BadRequest",
    "CallbackOptions",
    "FlowControl",
    "Limits",
    "PublishOptions",
    "Redaction",
    "ScheduleOptions",
    "check_header_value",
    "check_url",
    "content_dedup_id",
    "parse_duration_ms",
    "parse_publish_headers",
    "parse_schedule_headers",
]

DEFAULT_RETRIES = 3
#: The highest plan's retry maximum (QStash pricing, "Max Retry Count": Free 3,
#: pay-as-you-go 5, Pro/Enterprise 20): more is refused, as QStash refuses it.
MAX_RETRIES = 20
MAX_PERIOD_SECONDS = 7 * 86_400
#: Longest ``Upstash-Delay``, and furthest ``Upstash-Not-Before`` from now, by default:
#: QStash's pay-as-you-go maximum delay, 1 year (upstash.com/pricing/qstash, "Max
#: Delay"). ``--max-delay`` changes it.
MAX_DELAY_MS = 365 * 86_400_000
#: The plan maximum "HTTP response duration" we emulate (Free plan: 15 minutes).
DEFAULT_MAX_TIMEOUT_MS = 15 * 60 * 1000
MAX_PARALLELISM = 10_000
MAX_RATE = 1_000_000

#: Request headers never forwarded by ``Upstash-Header-Forward: true``: hop-by-hop
#: headers, and the publisher's own credentials (the QStash token is a secret).
_NOT_FORWARDED = {
    "authorization", "host", "content-length", "connection", "accept-encoding",
    "transfer-encoding", "user-agent", "keep-alive", "te", "upgrade", "expect",
}


Headers = list[tuple[str, str]]


@lru_cache(maxsize=1024)
def canonical(name: str) -> str:
    """Go-style canonical header name (``x-api-key`` -> ``X-Api-Key``), as QStash shows them;
    ASGI servers hand us lower-cased names. Pure, so cached: the same few names come
    with every message."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


@dataclass
class CallbackOptions:
    url: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    method: str | None = None
    timeout_ms: int | None = None
    retries: int | None = None
    retry_delay: str | None = None
    delay_ms: int | None = None


@dataclass
class FlowControl:
    key: str
    parallelism: int | None = None
    rate: int | None = None
    period_s: int = 1


@dataclass
class Redaction:
    body: bool = False
    all_headers: bool = False
    headers: list[str] = field(default_factory=list)  # lower-case names
    #: Base64 fields of a JSON body shown as ``REDACTED:<sha256 of the decoded bytes>``
    #: (a callback's ``sourceBody`` when its source message redacts its body).
    body_fields: list[str] = field(default_factory=list)

    def hides_header(self, name: str) -> bool:
        return self.all_headers or name.lower() in self.headers


def _headers_copy(headers: dict[str, list[str]]) -> dict[str, list[str]]:
    return {name: list(values) for name, values in headers.items()}


def _callback_dict(cb: CallbackOptions | None) -> dict[str, Any] | None:
    if cb is None:
        return None
    return {"url": cb.url, "headers": _headers_copy(cb.headers), "method": cb.method,
            "timeout_ms": cb.timeout_ms, "retries": cb.retries, "retry_delay": cb.retry_delay,
            "delay_ms": cb.delay_ms}


@dataclass
class PublishOptions:
    """Everything a publish configures, in storable form (see :meth:`to_dict`)."""

    body: bytes = b""
    method: str = "POST"
    #: What the destination receives (Content-Type plus forwarded headers, prefix stripped).
    headers: dict[str, list[str]] = field(default_factory=dict)
    retries: int = DEFAULT_RETRIES
    retry_delay: str | None = None
    timeout_ms: int | None = None
    delay_ms: int = 0
    not_before_ms: int | None = None
    callback: CallbackOptions | None = None
    failure_callback: CallbackOptions | None = None
    dedup_id: str | None = None
    content_dedup: bool = False
    flow_control: FlowControl | None = None
    labels: list[str] = field(default_factory=list)
    redact: Redaction = field(default_factory=Redaction)

    def to_dict(self) -> dict[str, Any]:
        """``dataclasses.asdict`` with the body in base64, written out field by field: on
        every publish, and ``asdict``'s generic walk (and deep copy of every string) was a
        tenth of a batch's ingest. Fresh dicts and lists, shared immutable leaves
        (``test_publish_options_to_dict_is_asdict`` keeps the two equal)."""
        fc, redact = self.flow_control, self.redact
        return {
            "body": base64.b64encode(self.body).decode("ascii"),
            "method": self.method,
            "headers": _headers_copy(self.headers),
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "timeout_ms": self.timeout_ms,
            "delay_ms": self.delay_ms,
            "not_before_ms": self.not_before_ms,
            "callback": _callback_dict(self.callback),
            "failure_callback": _callback_dict(self.failure_callback),
            "dedup_id": self.dedup_id,
            "content_dedup": self.content_dedup,
            "flow_control": None if fc is None else {
                "key": fc.key, "parallelism": fc.parallelism, "rate": fc.rate,
                "period_s": fc.period_s,
            },
            "labels": list(self.labels),
            "redact": {"body": redact.body, "all_headers": redact.all_headers,
                       "headers": list(redact.headers), "body_fields": list(redact.body_fields)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PublishOptions:
        values = dict(data)
        values["body"] = base64.b64decode(values.get("body") or "")
        for name in ("callback", "failure_callback"):
            if values.get(name) is not None:
                values[name] = CallbackOptions(**values[name])
        if values.get("flow_control") is not None:
            values["flow_control"] = FlowControl(**values["flow_control"])
        values["redact"] = Redaction(**(values.get("redact") or {}))
        return cls(**values)


@dataclass
class ScheduleOptions:
    cron: str
    schedule_id: str | None
    queue: str | None
    publish: PublishOptions


@dataclass(frozen=True)
class Limits:
    """The emulator's bounds on what a publish may ask: the plan's longest response time,
    the longest delay (``--max-delay``), whether destinations may be link-local
    (``--allow-link-local``), and the clock a not-before is measured from."""

    max_timeout_ms: int = DEFAULT_MAX_TIMEOUT_MS
    max_delay_ms: int = MAX_DELAY_MS
    allow_link_local: bool = False
    #: None: a not-before is only checked for its syntax (no "now" to measure from).
    clock: Clock | None = None


DEFAULT_LIMITS = Limits()


def _timeout_ms(text: str, header: str, plan_maximum: int) -> int:
    """``Upstash-Timeout`` "can only shorten the plan maximum": a longer one is capped,
    not refused (a Celery ``time_limit`` of an hour should not fail the publish)."""
    return min(parse_duration_ms(text, header, MAX_DELAY_MS, strict=True), plan_maximum)


def _not_before_ms(text: str, limits: Limits) -> int:
    """``Upstash-Not-Before`` (unix seconds) in ms, no further from now than the longest
    delay: a time in the year 36812 is a 400 here, never a stored value every page must
    survive."""
    seconds = parse_int(text, "Upstash-Not-Before", 0, 2**40)
    if limits.clock is not None:
        now_s = limits.clock.now()
        if seconds - now_s > limits.max_delay_ms / 1000:
            raise BadRequest(
                f"invalid Upstash-Not-Before header: {seconds} is more than the maximum "
                f"delay ({format_ms(limits.max_delay_ms)}, the emulator's --max-delay) "
                "from now"
            )
    return seconds * 1000


def _parse_flow_control(key: str, value: str) -> FlowControl:
    """A fresh :class:`FlowControl` from the two headers (parsed once per distinct pair:
    every message a task publishes carries the same ones)."""
    return dataclasses.replace(_flow_control(key, value))


@lru_cache(maxsize=256)
def _flow_control(key: str, value: str) -> FlowControl:
    if not key.strip():
        raise BadRequest("invalid Upstash-Flow-Control-Key header: empty key")
    fc = FlowControl(key=key.strip())
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip().lower()
        if not sep:
            raise BadRequest(f"invalid Upstash-Flow-Control-Value header: {item!r}")
        if name == "parallelism":
            fc.parallelism = parse_int(raw, "Upstash-Flow-Control-Value parallelism", 1,
                                        MAX_PARALLELISM)
        elif name in ("rate", "ratepersecond"):
            fc.rate = parse_int(raw, "Upstash-Flow-Control-Value rate", 1, MAX_RATE)
        elif name == "period":
            period_ms = parse_duration_ms(raw, "Upstash-Flow-Control-Value period")
            if not 1000 <= period_ms <= MAX_PERIOD_SECONDS * 1000:
                raise BadRequest("invalid Upstash-Flow-Control-Value period: 1s to 1 week")
            fc.period_s = period_ms // 1000
        else:
            raise BadRequest(f"invalid Upstash-Flow-Control-Value header: unknown key {name!r}")
    return fc


_REDACT_HEADER = re.compile(r"headers?\[([^\]]+)\]", flags=re.IGNORECASE)


def _parse_redact(text: str) -> Redaction:
    """A fresh :class:`Redaction` (its lists are its own: a publish may extend them)."""
    cached = _redaction(text)
    return Redaction(body=cached.body, all_headers=cached.all_headers,
                     headers=list(cached.headers), body_fields=list(cached.body_fields))


@lru_cache(maxsize=256)
def _redaction(text: str) -> Redaction:
    redaction = Redaction()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _REDACT_HEADER.fullmatch(item)
        if item.lower() == "body":
            redaction.body = True
        elif item.lower() in ("header", "headers"):
            redaction.all_headers = True
        elif match:
            redaction.headers.append(match.group(1).strip().lower())
        else:
            raise BadRequest(f"invalid Upstash-Redact-Fields header: unknown field {item!r}")
    return redaction


def _callback_options(
    prefix: str, url: str | None, headers: Headers, base: CallbackOptions | None,
    limits: Limits,
) -> CallbackOptions | None:
    """Collect ``Upstash-Callback-*`` or ``Upstash-Failure-Callback-*`` settings (none
    without a callback URL: its other headers are then not looked at)."""
    if url is None and base is None:
        return None
    options = dataclasses.replace(base) if base is not None else None
    if url is not None:
        url = check_url(url.strip(), prefix, allow_link_local=limits.allow_link_local)
        options = dataclasses.replace(options, url=url) if options else CallbackOptions(url=url)
    forward_prefix = f"{prefix}-forward-".lower()
    for name, value in headers:
        lowered = name.lower()
        if not lowered.startswith(prefix.lower() + "-") or options is None:
            continue
        if lowered.startswith(forward_prefix):
            forwarded = check_header_name(name[len(forward_prefix):], name)
            check_header_value(value, canonical(name))
            options.headers.setdefault(canonical(forwarded), []).append(value)
            continue
        setting = lowered[len(prefix) + 1:]
        header = canonical(name)
        if setting == "method":
            options.method = parse_method(value, header)
        elif setting == "timeout":
            options.timeout_ms = _timeout_ms(value, header, limits.max_timeout_ms)
        elif setting == "retries":
            options.retries = parse_int(value, header, 0, MAX_RETRIES)
        elif setting == "retry-delay":
            options.retry_delay = check_retry_delay(value, header)
        elif setting == "delay":
            # QStash dropped callback delays (March 2025); the OAS lists only Method,
            # Timeout, Retries and Retry-Delay for callbacks. Refused, never ignored.
            raise BadRequest(f"{header} is not supported: QStash no longer delays callbacks; "
                             "remove the header (the callback is published when the "
                             "message finishes)")
    return options


def merge_query(headers: Headers, query: Iterable[tuple[str, str]]) -> Headers:
    """QStash accepts any ``upstash-*`` header as a lower-case query parameter too."""
    merged = list(headers)
    query = list(query)
    if not query:  # the usual publish: options in headers only
        return merged
    present = {name.lower() for name, _ in headers}
    for name, value in query:
        if name.lower().startswith("upstash-") and name.lower() not in present:
            merged.append((name, value))
    return merged


def parse_publish_headers(
    headers: Headers, body: bytes, base: PublishOptions | None = None, *,
    limits: Limits = DEFAULT_LIMITS,
) -> PublishOptions:
    """Validate the request headers of a publish (or a DLQ retry, overriding ``base``).

    Everything that will travel as an HTTP header must be sendable (printable
    ASCII values, token names) and every duration bounded, so a stored message
    can always be attempted: bad input is a 400 here, never a stuck message later.
    """
    options = dataclasses.replace(base) if base is not None else PublishOptions()
    options.body = body if base is None else base.body
    options.headers = {k: list(v) for k, v in options.headers.items()}
    single: dict[str, str] = {}  # the first value of each header, by lower-case name
    forwards: Headers = []  # the Upstash-Forward-* headers, in order
    for name, value in headers:
        lowered = name.lower()
        if lowered not in single:
            single[lowered] = value
        if lowered.startswith("upstash-forward-"):
            forwards.append((name, value))

    if base is None and "content-type" in single:
        options.headers["Content-Type"] = [check_header_value(single["content-type"],
                                                              "Content-Type")]
    if single.get("upstash-header-forward", "").strip().lower() == "true":
        for name, value in headers:
            lowered = name.lower()
            if lowered.startswith("upstash-") or lowered in _NOT_FORWARDED:
                continue
            check_header_name(name, name)
            check_header_value(value, canonical(name))
            options.headers.setdefault(canonical(name), []).append(value)
    for name, value in forwards:
        check_header_name(name[len("upstash-forward-"):], name)
        check_header_value(value, canonical(name))
        forwarded = canonical(name[len("upstash-forward-"):])
        if forwarded == "Content-Type":  # one content type, the explicit one wins
            options.headers[forwarded] = [value]
        else:
            options.headers.setdefault(forwarded, []).append(value)

    if "upstash-method" in single:
        options.method = parse_method(single["upstash-method"], "Upstash-Method")
    if "upstash-retries" in single:
        options.retries = parse_int(single["upstash-retries"], "Upstash-Retries", 0, MAX_RETRIES)
    if "upstash-retry-delay" in single:
        options.retry_delay = check_retry_delay(
            single["upstash-retry-delay"], "Upstash-Retry-Delay"
        )
    if "upstash-timeout" in single:
        options.timeout_ms = _timeout_ms(single["upstash-timeout"], "Upstash-Timeout",
                                         limits.max_timeout_ms)
    if "upstash-delay" in single:
        options.delay_ms = parse_duration_ms(single["upstash-delay"], "Upstash-Delay",
                                             limits.max_delay_ms, strict=True)
    if "upstash-not-before" in single:
        options.not_before_ms = _not_before_ms(single["upstash-not-before"], limits)
    if "upstash-deduplication-id" in single:
        options.dedup_id = single["upstash-deduplication-id"].strip() or None
    if "upstash-content-based-deduplication" in single:
        options.content_dedup = parse_bool(
            single["upstash-content-based-deduplication"], "Upstash-Content-Based-Deduplication"
        )
    if "upstash-flow-control-key" in single:
        options.flow_control = _parse_flow_control(
            single["upstash-flow-control-key"], single.get("upstash-flow-control-value", "")
        )
    elif "upstash-flow-control-value" in single:
        raise BadRequest("Upstash-Flow-Control-Value requires Upstash-Flow-Control-Key")
    if "upstash-label" in single:
        options.labels = [x.strip() for x in single["upstash-label"].split(",") if x.strip()]
    if "upstash-redact-fields" in single:
        options.redact = _parse_redact(single["upstash-redact-fields"])

    options.callback = _callback_options(
        "Upstash-Callback", single.get("upstash-callback"), headers, options.callback,
        limits,
    )
    options.failure_callback = _callback_options(
        "Upstash-Failure-Callback", single.get("upstash-failure-callback"), headers,
        options.failure_callback, limits,
    )
    _redact_credentials(options)
    return options


def _redact_credentials(options: PublishOptions) -> None:
    """A forwarded credential (``Authorization``: the AutoSend key; ``X-Api-Key``, a
    cookie, anything the one rule of :mod:`celery_qstash.redaction` calls secret) is
    redacted even unasked: shown redacted in logs, the DLQ and listings, stored apart
    (``store/secrets.py``), and still delivered as sent."""
    if options.redact.all_headers:
        return
    for headers in (options.headers, options.callback and options.callback.headers,
                    options.failure_callback and options.failure_callback.headers):
        for name in headers or ():
            if is_secret_name(name) and not options.redact.hides_header(name):
                options.redact.headers = [*options.redact.headers, name.lower()]


def parse_schedule_headers(headers: Headers, body: bytes, now: float | None = None, *,
                           limits: Limits = DEFAULT_LIMITS) -> ScheduleOptions:
    single = {name.lower(): value for name, value in reversed(headers)}
    cron = single.get("upstash-cron", "").strip()
    if not cron:
        raise BadRequest("Upstash-Cron header is required")
    try:
        # Evaluating (not only parsing) rejects expressions that never fire (``0 0 30 2 *``).
        next_after(cron, 0.0 if now is None else now)
    except CronError as exc:
        raise BadRequest(f"invalid Upstash-Cron header: {exc}") from None
    schedule_id = single.get("upstash-schedule-id", "").strip() or None
    if schedule_id is not None and not re.fullmatch(r"[A-Za-z0-9_.\-]{1,256}", schedule_id):
        raise BadRequest("invalid Upstash-Schedule-Id header")
    queue = single.get("upstash-queue-name", "").strip() or None
    return ScheduleOptions(
        cron=cron, schedule_id=schedule_id, queue=queue,
        publish=parse_publish_headers(headers, body, limits=limits),
    )


def content_dedup_id(url: str, options: PublishOptions) -> str:
    """Hash of destination, body, Content-Type and forwarded headers (QStash's definition)."""
    digest = hashlib.sha256()
    digest.update(url.encode())
    digest.update(b"\0")
    digest.update(options.body)
    for name in sorted(options.headers, key=str.lower):
        for value in options.headers[name]:
            digest.update(b"\0" + name.lower().encode() + b"=" + value.encode())
    return "content:" + digest.hexdigest()
