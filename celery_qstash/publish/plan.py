"""Folding a call's options and the task's attributes into a :class:`PublishPlan`.

Every option is checked against the table in :mod:`.options`; the plan is what a
call knows before its email exists, and :meth:`PublishPlan.request` adds the email.
Nothing here does I/O or reads the clock; ``now`` is a parameter.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..config import Settings
from ..email import AnyEmail
from ..errors import MessageTooLarge, UnsupportedOption
from .options import (
    _CANVAS_SUPPLIED,
    APPLY_ASYNC_OPTIONS,
    TASK_ATTRIBUTES,
    Outcome,
    _Draft,
    _headers,
    _link,
    _link_error,
    _number,
    _shadow,
    encode_header_text,
    unknown_option_message,
    warn_once,
)
from .request import TASK_NAME_HEADER, FlowControl, PublishRequest, TaskAttrs

__all__ = ["PublishPlan", "check_task_id", "parse_rate", "plan_publish"]

# Printable ASCII but space and comma (QStash splits labels on commas).
_TASK_ID = re.compile(r"^[\x21-\x2b\x2d-\x7e]{1,256}$")


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
        if task.retry_jitter and not task.deferred:
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
        return _within_limit(request, settings)

    def task_request(
        self, message: dict[str, Any], url: str, settings: Settings, *, attempt: int = 0,
        replaced: int = 0,
    ) -> PublishRequest:
        """A deferred task's publish: the Celery ``message`` to the app's receiver at ``url``.

        ``attempt`` is the Celery retry count: QStash gets what is left of ``max_retries``
        (each QStash retry counts as one, as each ``self.retry()`` does), and each retry's
        deduplication id is its own (the task id is kept, as Celery keeps it). So is a
        ``self.replace()``'s (``replaced``: Celery's replacement nesting), which takes over
        the replaced task's id: under the same deduplication id QStash would drop it.
        """
        budget = None if self.retries is None else max(0, self.retries - attempt)
        deduplication_id = (self.task_id + (f".replaced{replaced}" if replaced else "")
                            + (f".retry{attempt}" if attempt else ""))
        request = PublishRequest(
            task_id=self.task_id,
            task_name=self.display_name,
            url=url,
            body={**message, "retry_budget": budget},
            authorization=None,
            headers={**self.headers, "X-Celery-Task": _header_text(self.display_name)},
            queue=self.queue,
            delay=self.delay,
            not_before=self.not_before,
            retries=budget,
            retry_delay=self.retry_delay,
            timeout=self.timeout,
            # The task's own rate_limit only: AutoSend's pace is for the emails it sends.
            flow_control=self.flow_control,
            deduplication_id=deduplication_id,
            label=self.task_id,
        )
        return _within_limit(request, settings)


def _within_limit(request: PublishRequest, settings: Settings) -> PublishRequest:
    """``request``, if QStash would store it: the body as the SDK sends it (``json.dumps``,
    ASCII, so characters are bytes) within the message limit; refused here, in eager mode
    too, rather than have QStash answer 413 (or nothing). The text is kept for the
    transport to send."""
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
    # Rows that mean something at delivery (TASK_ATTRIBUTES' at_delivery) warn only for
    # a task whose body runs at call time.
    if task.autoretry_for and not task.deferred:
        warn_once("autoretry_for", TASK_ATTRIBUTES["autoretry_for"].note)
    if task.acks_late and not task.deferred:
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
