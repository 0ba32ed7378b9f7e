"""A small 5-field cron evaluator for QStash schedules.

Why not ``celery.schedules.crontab``: it needs a Celery app for its timezone,
does not understand QStash's ``CRON_TZ=Zone`` prefix, and would make the
emulator depend on Celery. This module is ~150 lines of stdlib (``zoneinfo``).

Supported: ``*``, numbers, lists ``a,b``, ranges ``a-b``, steps ``*/n`` and
``a-b/n``, month and weekday names (``jan``, ``mon``), weekday 7 = Sunday, and
the Vixie rule that when both day-of-month and day-of-week are restricted a day
matching either one fires. Times are evaluated in UTC unless ``CRON_TZ=`` says otherwise.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CronError", "CronExpr", "next_after", "parse_cron"]

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
#: Far enough to cover leap days and "31st of months that have one"; "Feb 30" never fires.
_SEARCH_DAYS = 366 * 8


class CronError(ValueError):
    """The cron expression is invalid (reported as 400)."""


@dataclass(frozen=True)
class CronExpr:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    day_restricted: bool
    weekday_restricted: bool
    tz: dt.tzinfo

    def _day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return dom or dow
        return dom and dow

    def next_after(self, t: float) -> float:
        """The first firing time strictly after ``t`` (epoch seconds)."""
        start = dt.datetime.fromtimestamp(t, dt.timezone.utc).astimezone(self.tz)
        start = start.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        day = start.date()
        for offset in range(_SEARCH_DAYS):
            current = day + dt.timedelta(days=offset)
            if not self._day_matches(current):
                continue
            for hour in sorted(self.hours):
                for minute in sorted(self.minutes):
                    local = dt.datetime(
                        current.year, current.month, current.day, hour, minute, tzinfo=self.tz
                    )
                    # Skip wall times that do not exist (DST gap): they round-trip differently.
                    as_utc = local.astimezone(dt.timezone.utc)
                    if as_utc.astimezone(self.tz).replace(tzinfo=None) != local.replace(
                        tzinfo=None
                    ):
                        continue
                    if local >= start:
                        return as_utc.timestamp()
        raise CronError("cron expression never fires")


def _parse_value(text: str, names: list[str] | None, offset: int) -> int:
    lowered = text.lower()
    if names is not None and lowered in names:
        return names.index(lowered) + offset
    if not text.isdigit():
        raise CronError(f"invalid cron value {text!r}")
    return int(text)


def _parse_field(text: str, low: int, high: int, names: list[str] | None = None,
                 offset: int = 0) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    restricted = text != "*"
    for part in text.split(","):
        if not part:
            raise CronError("empty cron list item")
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"invalid cron step {step_text!r}")
            step = int(step_text)
        if part == "*":
            first, last = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            first, last = _parse_value(a, names, offset), _parse_value(b, names, offset)
        else:
            first = _parse_value(part, names, offset)
            last = high if step != 1 else first
        if first < low or last > high or first > last:
            raise CronError(f"cron value out of range in {text!r}")
        values.update(range(first, last + 1, step))
    return frozenset(values), restricted


def parse_cron(expr: str) -> CronExpr:
    """Parse ``[CRON_TZ=Zone ]m h dom mon dow``; raises :class:`CronError`."""
    fields = expr.split()
    tz: dt.tzinfo = dt.timezone.utc
    if fields and fields[0].upper().startswith(("CRON_TZ=", "TZ=")):
        zone = fields.pop(0).split("=", 1)[1]
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError(f"unknown time zone {zone!r}") from None
    if len(fields) != 5:
        raise CronError("cron expression must have 5 fields")
    minutes, _ = _parse_field(fields[0], 0, 59)
    hours, _ = _parse_field(fields[1], 0, 23)
    days, day_restricted = _parse_field(fields[2], 1, 31)
    months, _ = _parse_field(fields[3], 1, 12, _MONTHS, 1)
    weekdays, weekday_restricted = _parse_field(fields[4], 0, 7, _DAYS, 0)
    if 7 in weekdays:
        weekdays = (weekdays - {7}) | {0}
    return CronExpr(minutes, hours, days, months, weekdays, day_restricted,
                    weekday_restricted, tz)


def next_after(expr: str, t: float) -> float:
    """The first firing time of ``expr`` strictly after ``t`` (epoch seconds)."""
    return parse_cron(expr).next_after(t)
